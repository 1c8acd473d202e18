"""An app's cgroup: one directory per hierarchy it needs, made, joined, measured and removed.

Every group lives at ``<the node's own group>/cocaine/<node>:<app>`` in each hierarchy, never
at a hierarchy's root. Besides the hierarchies of the controllers the manifest limits, the
group is made (when it can be) in the hierarchies that only count: ``memory``, ``pids`` and
``cpuacct`` on v1, and the v2 tree, whose ``cpu.stat`` counts CPU time and whose
``cgroup.kill`` ends every process of the group at once.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import attrs

from cocaine_cgroups.errors import CgroupError
from cocaine_cgroups.hierarchy import V1, V2, Hierarchy, Layout
from cocaine_cgroups.parameters import KEY_PATH, Limits, Write, render

log = logging.getLogger("cocaine.cgroups")

#: The folder under the node's own group that holds every app group.
PARENT = "cocaine"
#: On cgroup v2 a node whose group must hand controllers down moves itself here (see docs).
NODE_LEAF = "node"
#: Controllers joined for what they count, even when the manifest does not limit them.
ACCOUNTING = ("memory", "pids", "cpuacct")
#: How long removing a group waits for its processes to die.
REMOVE_TIMEOUT = 5.0

DOCS = "see docs/resource-limits.md"


def safe_name(name: str) -> str:
    """``name`` with anything but letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "_"


def group_name(node: str, app: str) -> str:
    """The plain name of an app's group: ``<node>:<app>`` (``node`` is used as given: see
    ``ownership.prefix``)."""
    return f"{node}:{safe_name(app)}"


# -- the filesystem, with errors that say what to do ----------------------------------------


def _permission_hint(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return ("the cgroup filesystem is mounted read-only (as in most containers); give "
                "the node a writable, delegated cgroup: run the container with a private "
                f"cgroup namespace and a writable /sys/fs/cgroup, {DOCS}")
    return (f"permission denied to uid {os.geteuid()}; managing cgroups needs root, or a "
            f"cgroup v2 subtree delegated to the node's user (systemd-run --user -p "
            f"Delegate=yes cocaine node, or chown the node's cgroup folder to its user), "
            f"{DOCS}")


def _fail(action: str, path: Path, exc: OSError, value: str | None = None) -> CgroupError:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CgroupError(f"cannot {action} {path}: {_permission_hint(exc)}")
    if exc.errno == errno.ENOENT and value is not None:
        return CgroupError(f"cannot write {path}: the kernel offers no {path.name} there")
    if exc.errno == errno.EINVAL and value is not None:
        return CgroupError(f"the kernel refused {value!r} for {path} (invalid argument: out "
                           f"of range, or beyond what the node's own group allows)")
    return CgroupError(f"cannot {action} {path}: {exc.strerror or exc}")


def write(path: Path, value: str) -> None:
    """Write ``value`` to a cgroup file, or raise ``CgroupError`` saying what to fix."""
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise _fail("write", path, exc, value) from None


def read(path: Path) -> str | None:
    """A cgroup file's text, stripped, or None if it cannot be read."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def read_pids(path: Path) -> list[int]:
    """The processes listed in a ``cgroup.procs`` file."""
    return [int(line) for line in (read(path) or "").split() if line.isdigit()]


def read_keyed(path: Path) -> dict[str, int]:
    """A file of ``key value`` lines (``memory.events``, ``cpu.stat``) as a dict."""
    out: dict[str, int] = {}
    for line in (read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def make_dir(path: Path) -> bool:
    """Make a group folder; True if it was made now, False if it was there already."""
    try:
        path.mkdir()
    except FileExistsError:
        return False
    except OSError as exc:
        raise _fail("create the cgroup", path, exc) from None
    return True


def empty_group(path: Path, timeout: float = REMOVE_TIMEOUT) -> bool:
    """SIGKILL every process in the group at ``path`` until none is left; False on timeout."""
    deadline = time.monotonic() + timeout
    kill_file = path / "cgroup.kill"
    while True:
        pids = read_pids(path / "cgroup.procs")
        if not pids:
            return True
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        else:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def remove_dir(path: Path, timeout: float = REMOVE_TIMEOUT) -> bool:
    """Kill what is left in the group at ``path`` and remove it; False if it stays."""
    if not path.is_dir():
        return True
    if not empty_group(path, timeout):
        log.warning("cgroup %s still has processes %s after %g s of SIGKILL; left in place",
                    path, read_pids(path / "cgroup.procs"), timeout)
        return False
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                log.warning("cannot remove cgroup %s: %s", path, exc.strerror or exc)
                return False
        time.sleep(0.01)


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
            raise _fail("enable controllers in", group / "cgroup.subtree_control", exc,
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


# -- one app's group -------------------------------------------------------------------------------


@attrs.define
class GroupPart:
    """The app's group in one hierarchy: where, for which controllers, what to write."""

    hierarchy: Hierarchy
    path: Path
    controllers: list[str]
    writes: list[Write] = attrs.field(factory=list)
    #: False for a part made only to count (made when possible, skipped when not).
    required: bool = True
    #: Whether this process made the folder (and so may remove it).
    made: bool = False

    @property
    def label(self) -> str:
        """The controllers this part serves, or ``v2`` for the counting-only v2 part."""
        return ",".join(self.controllers) or f"v{self.hierarchy.version}"


class AppGroup:
    """One app's cgroup across every hierarchy it needs.

    Its name is ``<node>:<app>``, or ``<node>:<app>:2`` (``:3``…) when a running version of
    the same app holds the plain name (a redeploy starts the new version before the old one
    has drained); ``taken`` lists the names running apps of this process hold.
    """

    def __init__(self, node: str, app: str, limits: Limits, layout: Layout,
                 taken: Collection[str] = ()) -> None:
        base = group_name(node, app)
        self.name = base
        for generation in itertools.count(2):
            if self.name not in taken:
                break
            self.name = f"{base}:{generation}"
        self.limits = limits
        self.layout = layout
        self.parts: list[GroupPart] = []
        self._oom_seen = 0
        self._failcnt_seen = 0
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
        """Make the group in every hierarchy and apply the limits; on failure undo it all."""
        try:
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
        except BaseException:
            for part in self.parts:
                self._undo(part)
            raise
        self._oom_seen = self.oom_kills() or 0
        self._failcnt_seen = self._failcnt() or 0

    @staticmethod
    def _undo(part: GroupPart) -> None:
        if part.made:
            remove_dir(part.path, timeout=1.0)
            part.made = False
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
            if part.path.exists():
                raise CgroupError(f"the cgroup {part.path} is in use by another app of the "
                                  f"same name on a node of the same name; give each node on "
                                  f"this machine its own name")
            try:
                part.made = make_dir(part.path)
                break
            except CgroupError:
                if attempt == 2 or parent.exists():
                    raise
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
                raise _fail(f"move process {pid} into", part.path, exc) from None

    def remove(self, timeout: float = REMOVE_TIMEOUT) -> bool:
        """Kill whatever is left in the group, remove it, and its parent if now empty."""
        removed = True
        for part in self.parts:
            removed = remove_dir(part.path, timeout) and removed
            with contextlib.suppress(OSError):
                part.path.parent.rmdir()  # only succeeds when no other app group is left
        return removed

    # -- what it counts ----------------------------------------------------------------------------

    def part_for(self, controller: str) -> GroupPart | None:
        """The part of the group in the hierarchy of ``controller``, if made."""
        return next((p for p in self.parts if controller in p.controllers), None)

    def oom_kills(self) -> int | None:
        """How many of the group's processes the kernel has killed for memory, if it says."""
        part = self.part_for("memory")
        if part is None:
            return None
        name = "memory.oom_control" if part.hierarchy.version == V1 else "memory.events"
        counts = read_keyed(part.path / name)
        return counts.get("oom_kill")

    def _failcnt(self) -> int | None:
        part = self.part_for("memory")
        if part is None or part.hierarchy.version != V1:
            return None
        return _int(read(part.path / "memory.failcnt"))

    def explain_exit(self, status: int) -> str | None:
        """Why a process of the group ended with ``status``, if the kernel's counters say so.

        Each OOM kill the kernel counted explains one SIGKILLed process. Kernels before 4.13
        count no kills on v1; there a rise of ``memory.failcnt`` is taken as the sign.
        """
        if status != -signal.SIGKILL:
            return None
        limit = self.memory_limit()
        limit_text = f" of {_mebibytes(limit)} ({KEY_PATH}.memory)" if limit is not None else ""
        kills = self.oom_kills()
        if kills is None:
            failcnt = self._failcnt()
            if failcnt is None or failcnt <= self._failcnt_seen:
                return None
            self._failcnt_seen = failcnt
            return f"out of memory, most likely: the app reached its memory limit{limit_text}"
        if kills <= self._oom_seen:
            return None
        self._oom_seen += 1
        if limit is None:
            return ("out of memory: the kernel's OOM killer ended it (the machine or the "
                    "node's own cgroup ran out of memory)")
        return f"out of memory: the kernel killed it at the app's memory limit{limit_text}"

    def memory_limit(self) -> int | None:
        """The memory limit the manifest set, in bytes, if any."""
        memory = self.limits.values.get("memory", {})
        return memory.get("memory.limit_in_bytes", memory.get("memory.max"))

    def usage(self) -> dict[str, Any]:
        """The group's current memory, processes and CPU time, as far as its parts count."""
        usage: dict[str, Any] = {}
        memory = self.part_for("memory")
        if memory is not None:
            v1 = memory.hierarchy.version == V1
            current = read(memory.path / ("memory.usage_in_bytes" if v1 else "memory.current"))
            peak = read(memory.path / ("memory.max_usage_in_bytes" if v1 else "memory.peak"))
            usage["memory-bytes"] = _int(current)
            if peak is not None:
                usage["memory-peak-bytes"] = _int(peak)
            usage["oom-kills"] = self.oom_kills()
        pids = self.part_for("pids")
        if pids is not None:
            usage["pids"] = _int(read(pids.path / "pids.current"))
        usage["cpu-seconds"] = self._cpu_seconds()
        cpu = self.part_for("cpu")
        if cpu is not None:
            stat = read_keyed(cpu.path / "cpu.stat")
            if "nr_throttled" in stat:
                usage["cpu-throttled-periods"] = stat["nr_throttled"]
        return usage

    def _cpu_seconds(self) -> float | None:
        for part in self.parts:
            if part.hierarchy.version == V2:
                stat = read_keyed(part.path / "cpu.stat")
                if "usage_usec" in stat:
                    return round(stat["usage_usec"] / 1e6, 3)
        cpuacct = self.part_for("cpuacct")
        if cpuacct is not None:
            nanoseconds = _int(read(cpuacct.path / "cpuacct.usage"))
            if nanoseconds is not None:
                return round(nanoseconds / 1e9, 3)
        return None

    def describe(self) -> dict[str, Any]:
        """The group for ``cocaine info``: its name, folders, limits and usage."""
        return {
            "group": f"{PARENT}/{self.name}",
            "paths": {part.label: str(part.path) for part in self.parts},
            "hierarchies": {part.label: f"v{part.hierarchy.version}" for part in self.parts},
            "usage": self.usage(),
        }


def inherit_cpuset(group: Path, parent: Path) -> None:
    """Fill a v1 cpuset group's empty ``cpuset.cpus``/``cpuset.mems`` from its parent.

    cgroup v1 starts a cpuset group with neither, and refuses tasks until both are set.
    """
    for name in ("cpuset.cpus", "cpuset.mems"):
        if not read(group / name):
            value = read(parent / name)
            if value:
                write(group / name, value)


def sweep_stale(layout: Layout, stale: Callable[[str], bool], keep: Iterable[Path]) -> list[Path]:
    """Remove the app groups whose name ``stale`` says a dead node left; return them.

    ``keep`` names the group folders apps of this process own: never removed.
    """
    keep = set(keep)
    removed: list[Path] = []
    for hierarchy in layout.hierarchies:
        parent = hierarchy.own / PARENT
        try:
            children = [c for c in parent.iterdir() if c.is_dir()]
        except OSError:
            continue
        for child in children:
            if child not in keep and stale(child.name) and remove_dir(child):
                log.warning("removed the cgroup %s, left by a node that is no longer running",
                            child)
                removed.append(child)
        with contextlib.suppress(OSError):
            if removed:
                parent.rmdir()
    return removed


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _mebibytes(size: int) -> str:
    if size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    return f"{size / (1 << 20):.1f} MiB"
