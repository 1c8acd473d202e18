"""Letting an app's group use the controllers its parents hold, on cgroup v2 and v1 alike.

On cgroup v2 a group hands controllers to its children through ``cgroup.subtree_control``,
which a group other than the root may only do while no process sits in it: so the node may
move itself into a leaf of its own group first. On cgroup v1 a new cpuset group starts with no
CPUs and no memory nodes, and takes its parent's.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from cocaine_cgroups.cgroupfs import DOCS, cgroup_error, make_dir, read, read_pids, write
from cocaine_cgroups.errors import CgroupError
from cocaine_cgroups.placement import PARENT

log = logging.getLogger("cocaine.cgroups")

#: On cgroup v2 a node whose group must hand controllers down moves itself here (see docs).
NODE_LEAF = "node"


def enable_controllers(group: Path, controllers: Iterable[str], node_group: Path | None = None,
                       ) -> None:
    """On cgroup v2, let ``group``'s children use ``controllers`` (``cgroup.subtree_control``).

    cgroup v2 lets a group other than the root hand controllers down only when it holds no
    process. If ``group`` is ``node_group`` and only this process is in it, the node moves
    itself into ``<group>/cocaine/node`` first.
    """
    wanted = set(controllers) - set((read(group / "cgroup.subtree_control") or "").split())
    if not wanted:
        return
    text = " ".join(f"+{c}" for c in sorted(wanted))
    try:
        with open(group / "cgroup.subtree_control", "w") as f:
            f.write(text)
        return
    except OSError as exc:
        if exc.errno != errno.EBUSY or group != node_group:
            raise cgroup_error("enable controllers in", group / "cgroup.subtree_control", exc,
                               text) from None
    move_node_out_of(group)
    write(group / "cgroup.subtree_control", text)


def move_node_out_of(group: Path) -> None:
    """Move this process from ``group`` into the leaf ``group/cocaine/node`` (cgroup v2's
    no-internal-processes rule), or raise if other processes share ``group``."""
    others = [pid for pid in read_pids(group / "cgroup.procs") if pid != os.getpid()]
    if others:
        raise CgroupError(
            f"the node's cgroup {group} holds other processes too ({', '.join(map(str, others))})"
            f"; cgroup v2 lets a group hand controllers to its children only when no process "
            f"sits in it, so run the node in a cgroup of its own (systemd-run -p Delegate=yes "
            f"cocaine node), {DOCS}")
    leaf = group / PARENT / NODE_LEAF
    make_dir(group / PARENT)
    make_dir(leaf)
    write(leaf / "cgroup.procs", str(os.getpid()))
    log.info("moved the node into %s: cgroup v2 hands controllers down only from groups "
             "without processes", leaf)


def inherit_cpuset(group: Path, parent: Path) -> None:
    """Fill a v1 cpuset group's empty ``cpuset.cpus``/``cpuset.mems`` from its parent.

    cgroup v1 starts a cpuset group with neither, and refuses tasks until both are set.
    """
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not read(group / name):
            value = read(parent / name)
            if value:
                write(group / name, value)
