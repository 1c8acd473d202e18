"""An app's cgroup: one directory per hierarchy it needs, made, joined, measured and removed.

Every group lives at ``<the node's own group>/cocaine/<node>:<app>`` in each hierarchy (see
``placement``), never at a hierarchy's root. Besides the hierarchies of the controllers the
manifest limits, the group is made (when it can be) in the hierarchies that only count:
``memory``, ``pids`` and ``cpuacct`` on v1, and the v2 tree, whose ``cpu.stat`` counts CPU
time and whose ``cgroup.kill`` ends every process of the group at once. What the group counts
is read by ``accounting``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from pathlib import Path
from typing import Any

from cocaine_cgroups import accounting, ownership
from cocaine_cgroups.cgroupfs import REMOVE_TIMEOUT, cgroup_error, make_dir, remove_dir, write
from cocaine_cgroups.delegation import enable_controllers, inherit_cpuset
from cocaine_cgroups.errors import CgroupError
from cocaine_cgroups.hierarchy import V1, V2, Hierarchy, Layout
from cocaine_cgroups.parameters import KEY_PATH, Limits
from cocaine_cgroups.placement import PARENT, GroupPart, group_name
from cocaine_cgroups.translation import render

log = logging.getLogger("cocaine.cgroups")

#: Controllers joined for what they count, even when the manifest does not limit them.
ACCOUNTING = ("memory", "pids", "cpuacct")
#: Names tried for one app's group (``<node>:<app>``, then ``:2``…) before giving up.
GENERATIONS = 100


class _NameTaken(Exception):
    """The group's name is held in some hierarchy: try the next one."""


class AppGroup:
    """One app's cgroup across every hierarchy it needs.

    Its name is ``<node>:<app>``, or ``<node>:<app>:2`` (``:3``…) when a live process holds
    the plain name: a running version of the same app (a redeploy starts the new version
    before the old one has drained), or a live node of the same name; ``create`` settles it.
    """

    def __init__(self, node: str, app: str, limits: Limits, layout: Layout) -> None:
        self.base = group_name(node, app)
        self.name = self.base
        self.limits = limits
        self.layout = layout
        self.parts: list[GroupPart] = []
        self._oom = accounting.OomCounter()
        #: The locks that say the group's folders are this process's, by folder.
        self._held: dict[Path, int] = {}
        self._plan()

    def _plan(self) -> None:
        missing = [c for c in self.limits.controllers if self.layout.hierarchy_of(c) is None]
        if missing:
            reasons = "; ".join(f"{c}: {self.layout.missing_reason(c)}" for c in missing)
            raise CgroupError(f"{KEY_PATH} needs the {', '.join(missing)} controller"
                              f"{'s' if len(missing) > 1 else ''}, which this machine does "
                              f"not offer the node: {reasons}")
        problems: list[str] = []
        for controller in self.limits.controllers:
            hierarchy = self.layout.hierarchy_of(controller)
            assert hierarchy is not None
            writes, unsupported = render(controller, self.limits.values[controller],
                                         hierarchy.version)
            problems += [f"{KEY_PATH}.{controller}.{name}: {why}" for name, why in unsupported]
            part = self._part(hierarchy, required=True)
            part.controllers.append(controller)
            part.writes += writes
        if problems:
            raise CgroupError("; ".join(problems))
        for controller in ACCOUNTING:
            hierarchy = self.layout.hierarchy_of(controller)
            if hierarchy is not None:
                part = self._part(hierarchy, required=False)
                if controller not in part.controllers:
                    part.controllers.append(controller)
        if self.layout.unified is not None:
            self._part(self.layout.unified, required=False)

    def _part(self, hierarchy: Hierarchy, *, required: bool) -> GroupPart:
        for part in self.parts:
            if part.hierarchy.mountpoint == hierarchy.mountpoint:
                part.required = part.required or required
                return part
        part = GroupPart(hierarchy, hierarchy.own / PARENT / self.name, [], required=required)
        self.parts.append(part)
        return part

    # -- life --------------------------------------------------------------------------------------

    def create(self) -> None:
        """Make the group in every hierarchy, under the first name no live process holds,
        and apply the limits; on failure undo it all."""
        names = (self.base if n == 1 else f"{self.base}:{n}" for n in range(1, GENERATIONS + 1))
        for name in names:
            self._rename(name)
            try:
                self._create_parts()
            except _NameTaken:
                self._undo_all()
                continue
            except BaseException:
                self._undo_all()
                raise
            self._oom.start(self.parts)
            return
        raise CgroupError(f"the cgroups {self.base} to {self.base}:{GENERATIONS} are all held "
                          f"by live processes; give each node on this machine its own name")

    def _rename(self, name: str) -> None:
        self.name = name
        for part in self.parts:
            part.path = part.path.with_name(name)

    def _create_parts(self) -> None:
        for part in list(self.parts):
            try:
                self._create_part(part)
            except CgroupError as exc:
                if part.required:
                    raise
                log.debug("cgroup %s: not counting in %s: %s", self.name,
                          part.hierarchy.describe(), exc)
                self._undo(part)
                self.parts.remove(part)

    def _undo_all(self) -> None:
        for part in self.parts:
            self._undo(part)

    def _undo(self, part: GroupPart) -> None:
        if part.made:
            remove_dir(part.path, timeout=1.0)
            part.made = False
        ownership.let_go(self._held.pop(part.path, None))
        with contextlib.suppress(OSError):
            part.path.parent.rmdir()

    def _create_part(self, part: GroupPart) -> None:
        hierarchy, parent = part.hierarchy, part.path.parent
        v2_controllers = [c for c in part.controllers if c in hierarchy.controllers]
        if hierarchy.version == V2:
            enable_controllers(hierarchy.own, v2_controllers, node_group=hierarchy.own)
        for attempt in range(3):  # another node may remove the empty parent in between
            make_dir(parent)
            if hierarchy.version == V1 and "cpuset" in hierarchy.controllers:
                inherit_cpuset(parent, hierarchy.own)
            if hierarchy.version == V2:
                enable_controllers(parent, v2_controllers)
            try:
                made = make_dir(part.path)
                break
            except CgroupError:
                if attempt == 2 or parent.exists():
                    raise
        if not made:
            raise _NameTaken(part.path)
        part.made = True
        held = ownership.hold(part.path)
        if held is None:  # a sweeper took it for a leftover in the instant before the lock
            raise _NameTaken(part.path)
        self._held[part.path] = held
        for file, value in part.writes:
            write(part.path / file, value)
        if hierarchy.version == V1 and "cpuset" in hierarchy.controllers:
            inherit_cpuset(part.path, parent)

    def join(self, pid: int) -> None:
        """Move process ``pid`` (with its threads) into the group in every hierarchy.

        A process that has already ended needs no confining: its exit is reported anyway.
        """
        for part in self.parts:
            try:
                with open(part.path / "cgroup.procs", "w") as f:
                    f.write(str(pid))
            except OSError as exc:
                if exc.errno == errno.ESRCH:
                    log.debug("process %d ended before it could join %s", pid, part.path)
                    return
                raise cgroup_error(f"move process {pid} into", part.path, exc) from None

    def remove(self, timeout: float = REMOVE_TIMEOUT) -> bool:
        """Kill whatever is left in the group, remove it, and its parent if now empty.

        The locks go too: a folder that would not go is a leftover for the next sweep."""
        removed = True
        for part in self.parts:
            removed = remove_dir(part.path, timeout) and removed
            ownership.let_go(self._held.pop(part.path, None))
            with contextlib.suppress(OSError):
                part.path.parent.rmdir()  # only succeeds when no other app group is left
        return removed

    # -- what it counts ----------------------------------------------------------------------------

    def part_for(self, controller: str) -> GroupPart | None:
        """The part of the group in the hierarchy of ``controller``, if made."""
        return accounting.part_for(self.parts, controller)

    def oom_kills(self) -> int | None:
        """How many of the group's processes the kernel has killed for memory, if it says."""
        return accounting.oom_kills(self.parts)

    def explain_exit(self, status: int) -> str | None:
        """Why a process of the group ended with ``status``, if the kernel's counters say so
        (see ``accounting.OomCounter``)."""
        return self._oom.explain_exit(status, self.parts, self.memory_limit())

    def memory_limit(self) -> int | None:
        """The memory limit the manifest set, in bytes, if any."""
        memory = self.limits.values.get("memory", {})
        return memory.get("memory.limit_in_bytes", memory.get("memory.max"))

    def usage(self) -> dict[str, Any]:
        """The group's current memory, processes and CPU time, as far as its parts count."""
        return accounting.usage(self.parts)

    def describe(self) -> dict[str, Any]:
        """The group for ``cocaine info``: its name, folders, limits and usage."""
        return {
            "group": f"{PARENT}/{self.name}",
            "paths": {part.label: str(part.path) for part in self.parts},
            "hierarchies": {part.label: f"v{part.hierarchy.version}" for part in self.parts},
            "usage": self.usage(),
        }


def sweep_stale(layout: Layout, node: str) -> list[Path]:
    """Remove the groups named after node ``node`` that no live process holds (a node of
    that name died and left them), killing what is still in them; return them."""
    removed: list[Path] = []
    for hierarchy in layout.hierarchies:
        parent = hierarchy.own / PARENT
        try:
            children = [c for c in parent.iterdir() if c.is_dir()]
        except OSError:
            continue
        for child in children:
            if not ownership.is_ours(child.name, node):
                continue
            try:
                held = ownership.hold(child)
            except OSError as exc:
                log.debug("cannot tell whether %s is a leftover: %s", child, exc)
                continue
            if held is None:
                continue  # a live process's: this node's other apps, or a live twin's
            try:
                if remove_dir(child):
                    log.warning("removed the cgroup %s, left by a node that is no longer "
                                "running", child)
                    removed.append(child)
            finally:
                ownership.let_go(held)
        with contextlib.suppress(OSError):
            if removed:
                parent.rmdir()
    return removed
