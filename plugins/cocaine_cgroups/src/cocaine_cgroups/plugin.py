"""The cocaine-cgroups plugin: ``engine.resource-limits`` through Linux cgroups (v1 and v2).

The hooks, in the order an app meets them:

- ``cocaine_register_engine_keys``: the manifest key ``engine.resource-limits``.
- ``cocaine_validate_manifest``: unknown controllers and parameters, bad values, and values
  this machine cannot honour (CPUs or memory nodes it lacks, v1-only parameters on v2…).
- ``cocaine_app_starting``: removes the groups a dead node of the same name left (those no
  live process holds a lock on: see ``ownership``), then makes the app's group and applies
  its limits; a missing controller or permission fails the start.
- ``cocaine_slave_spawned``: moves the template (before it imports the app) and each slave
  into the group.
- ``cocaine_slave_exited``: explains a process the kernel killed for memory.
- ``cocaine_app_info``: the group, its folders and its usage, for ``cocaine info``.
- ``cocaine_app_stopped``: kills what is left in the group and removes it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from cocaine_cgroups.errors import CgroupError
from cocaine_cgroups.groups import AppGroup, sweep_stale
from cocaine_cgroups.hierarchy import Layout, detect
from cocaine_cgroups.machine import check_machine
from cocaine_cgroups.parameters import Limits, parse_limits
from cocaine_cgroups.placement import safe_name
from cocaine_core import hookimpl, schema

if TYPE_CHECKING:
    from cocaine_core.appinfo import AppInfo, SlaveInfo
    from cocaine_core.errors import Problem
    from cocaine_core.manifest import Manifest
    from cocaine_core.plugins import BoundRegistry

#: The engine key this plugin owns.
KEY = "resource-limits"
#: Where an app's group is kept in ``AppInfo.extra``.
STATE = "cgroups"

_lock = threading.Lock()
_layout: Layout | None = None


def machine_layout() -> Layout:
    """The cgroup layout of this machine, read once per process.

    Read once because the node's own group must stay the one it started in: on cgroup v2 the
    node may move itself into a leaf below it (see ``delegation.move_node_out_of``).
    """
    global _layout
    with _lock:
        if _layout is None:
            _layout = detect()
        return _layout


def use_layout(layout: Layout | None) -> None:
    """Use ``layout`` instead of the detected one (tests); None detects again on next use."""
    global _layout
    with _lock:
        _layout = layout


def app_limits(app: AppInfo) -> Limits:
    """The app's checked ``engine.resource-limits`` (empty when it gives none)."""
    limits, problems = parse_limits(app.manifest.engine.extra.get(KEY) or {})
    if problems:
        raise CgroupError("; ".join(map(str, problems)))
    return limits


@hookimpl
def cocaine_register_engine_keys(registry: BoundRegistry) -> None:
    """Declare ``engine.resource-limits``: an object, ``{}`` by default."""
    registry.add(KEY, schema.Key(KEY, schema.mapping, {},
                                 "cgroup limits: {controller: {parameter: value}}"))


@hookimpl
def cocaine_validate_manifest(manifest: Manifest) -> list[Problem]:
    """Check ``engine.resource-limits``: names, values, and what this machine can honour."""
    limits, problems = parse_limits(manifest.engine.extra.get(KEY) or {})
    if limits:
        problems += check_machine(limits, machine_layout())
    return problems


@hookimpl
def cocaine_app_starting(app: AppInfo) -> None:
    """Make the app's group (after sweeping this node's stale ones) and apply its limits."""
    limits = app_limits(app)
    if not limits:
        return
    layout = machine_layout()
    group = AppGroup(safe_name(app.node), app.name, limits, layout)
    sweep_stale(layout, app.node)
    group.create()
    app.extra[STATE] = group


@hookimpl
def cocaine_slave_spawned(app: AppInfo, slave: SlaveInfo) -> None:
    """Move the new process (template or slave) into the app's group before it is configured."""
    group: AppGroup | None = app.extra.get(STATE)
    if group is not None:
        group.join(slave.pid)


@hookimpl
def cocaine_slave_exited(app: AppInfo, slave: SlaveInfo, status: int) -> str | None:
    """Say "out of memory" when the kernel killed the process at the app's memory limit."""
    group: AppGroup | None = app.extra.get(STATE)
    return group.explain_exit(status) if group is not None else None


@hookimpl
def cocaine_app_info(app: AppInfo) -> dict[str, Any] | None:
    """The app's group, its folders, limits and current usage."""
    group: AppGroup | None = app.extra.get(STATE)
    if group is None:
        return None
    return {**group.describe(), "limits": app.manifest.engine.extra.get(KEY) or {}}


@hookimpl
def cocaine_app_stopped(app: AppInfo) -> None:
    """Kill whatever is left in the app's group and remove it."""
    group: AppGroup | None = app.extra.pop(STATE, None)
    if group is not None:
        group.remove()
