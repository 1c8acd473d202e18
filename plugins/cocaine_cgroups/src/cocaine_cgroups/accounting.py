"""What an app's group counts: memory, processes, CPU time, and the OOM kills behind deaths.

Each figure comes from the part of the group whose hierarchy counts it: memory and OOM kills
from ``memory``, processes from ``pids``, CPU time from the v2 tree's ``cpu.stat`` or else v1's
``cpuacct``. The count of OOM kills tells a process the kernel killed at the app's memory limit
from one that died otherwise.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from typing import Any

import attrs

from cocaine_cgroups.cgroupfs import read, read_keyed
from cocaine_cgroups.hierarchy import V1, V2
from cocaine_cgroups.parameters import KEY_PATH
from cocaine_cgroups.placement import GroupPart


def part_for(parts: Sequence[GroupPart], controller: str) -> GroupPart | None:
    """The part among ``parts`` in the hierarchy of ``controller``, if made."""
    return next((p for p in parts if controller in p.controllers), None)


def oom_kills(parts: Sequence[GroupPart]) -> int | None:
    """How many of the group's processes the kernel has killed for memory, if it says."""
    part = part_for(parts, "memory")
    if part is None:
        return None
    name = "memory.oom_control" if part.hierarchy.version == V1 else "memory.events"
    counts = read_keyed(part.path / name)
    return counts.get("oom_kill")


def memory_failcnt(parts: Sequence[GroupPart]) -> int | None:
    """How often the group hit its v1 memory limit (``memory.failcnt``); None on v2."""
    part = part_for(parts, "memory")
    if part is None or part.hierarchy.version != V1:
        return None
    return _int(read(part.path / "memory.failcnt"))


@attrs.define
class OomCounter:
    """The kernel's memory kills in a group already explained, so each explains one death.

    Each OOM kill the kernel counted explains one SIGKILLed process. Kernels before 4.13
    count no kills on v1; there a rise of ``memory.failcnt`` is taken as the sign.
    """

    kills_seen: int = 0
    failcnt_seen: int = 0

    def start(self, parts: Sequence[GroupPart]) -> None:
        """Take the counts of a group just made as the baseline."""
        self.kills_seen = oom_kills(parts) or 0
        self.failcnt_seen = memory_failcnt(parts) or 0

    def explain_exit(self, status: int, parts: Sequence[GroupPart],
                     limit: int | None) -> str | None:
        """Why a process of the group ended with ``status``, if the kernel's counters say so;
        ``limit`` is the app's memory limit in bytes, if it has one."""
        if status != -signal.SIGKILL:
            return None
        limit_text = f" of {_mebibytes(limit)} ({KEY_PATH}.memory)" if limit is not None else ""
        kills = oom_kills(parts)
        if kills is None:
            failcnt = memory_failcnt(parts)
            if failcnt is None or failcnt <= self.failcnt_seen:
                return None
            self.failcnt_seen = failcnt
            return f"out of memory, most likely: the app reached its memory limit{limit_text}"
        if kills <= self.kills_seen:
            return None
        self.kills_seen += 1
        if limit is None:
            return ("out of memory: the kernel's OOM killer ended it (the machine or the "
                    "node's own cgroup ran out of memory)")
        return f"out of memory: the kernel killed it at the app's memory limit{limit_text}"


def usage(parts: Sequence[GroupPart]) -> dict[str, Any]:
    """The group's current memory, processes and CPU time, as far as its parts count."""
    counted: dict[str, Any] = {}
    memory = part_for(parts, "memory")
    if memory is not None:
        v1 = memory.hierarchy.version == V1
        current = read(memory.path / ("memory.usage_in_bytes" if v1 else "memory.current"))
        peak = read(memory.path / ("memory.max_usage_in_bytes" if v1 else "memory.peak"))
        counted["memory-bytes"] = _int(current)
        if peak is not None:
            counted["memory-peak-bytes"] = _int(peak)
        counted["oom-kills"] = oom_kills(parts)
    pids = part_for(parts, "pids")
    if pids is not None:
        counted["pids"] = _int(read(pids.path / "pids.current"))
    counted["cpu-seconds"] = cpu_seconds(parts)
    cpu = part_for(parts, "cpu")
    if cpu is not None:
        stat = read_keyed(cpu.path / "cpu.stat")
        if "nr_throttled" in stat:
            counted["cpu-throttled-periods"] = stat["nr_throttled"]
    return counted


def cpu_seconds(parts: Sequence[GroupPart]) -> float | None:
    """The CPU time the group's processes have used: from the v2 tree, else from cpuacct."""
    for part in parts:
        if part.hierarchy.version == V2:
            stat = read_keyed(part.path / "cpu.stat")
            if "usage_usec" in stat:
                return round(stat["usage_usec"] / 1e6, 3)
    cpuacct = part_for(parts, "cpuacct")
    if cpuacct is not None:
        nanoseconds = _int(read(cpuacct.path / "cpuacct.usage"))
        if nanoseconds is not None:
            return round(nanoseconds / 1e9, 3)
    return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _mebibytes(size: int) -> str:
    if size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    return f"{size / (1 << 20):.1f} MiB"
