"""What this machine can honour of an app's limits: CPUs, memory nodes, parameters, files.

The CPUs and memory nodes the node's group may use, the parameters the hierarchy holding each
controller can express, and the limit files the kernel offers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cocaine_cgroups.cgroupfs import read
from cocaine_cgroups.cpulists import format_cpulist, parse_cpulist
from cocaine_cgroups.hierarchy import V1, Hierarchy, Layout
from cocaine_cgroups.parameters import PARAMETERS, Limits, problem_path
from cocaine_cgroups.translation import Write, render
from cocaine_core.errors import Problem


def available(layout: Layout, what: str) -> tuple[frozenset[int] | None, str]:
    """The CPUs (``what="cpus"``) or memory nodes (``"mems"``) the node's cgroup may use,
    and the file that says so; None where the machine does not say (not Linux)."""
    hierarchy = layout.hierarchy_of("cpuset")
    candidates: list[Path] = []
    if hierarchy is not None:
        if hierarchy.version == V1:
            candidates += [hierarchy.own / f"cpuset.effective_{what}", hierarchy.own /
                           f"cpuset.{what}"]
        else:
            candidates.append(hierarchy.own / f"cpuset.{what}.effective")
    system = "cpu" if what == "cpus" else "node"
    candidates.append(Path(f"/sys/devices/system/{system}/online"))
    for path in candidates:
        text = read(path)
        if text:
            try:
                return parse_cpulist(text), str(path)
            except ValueError:
                continue
    if what == "mems" and Path("/sys/devices/system/cpu").is_dir():
        # A Linux kernel without NUMA support has one memory node and no node folder.
        return frozenset({0}), "a kernel without NUMA: one memory node"
    return None, "nothing: this machine does not say"


def check_machine(limits: Limits, layout: Layout) -> list[Problem]:
    """Problems with values this machine cannot honour: CPUs or memory nodes it lacks,
    parameters the hierarchy holding their controller cannot express, and files its kernel
    does not offer."""
    problems: list[Problem] = []
    cpuset = limits.values.get("cpuset", {})
    for name, what, noun in (("cpuset.cpus", "cpus", "CPU"),
                             ("cpuset.mems", "mems", "memory node")):
        if name not in cpuset:
            continue
        have, source = available(layout, what)
        lacking = parse_cpulist(cpuset[name]) - have if have is not None else None
        if have is not None and lacking:
            many = len(lacking) > 1
            problems.append(Problem(problem_path("cpuset", name), (
                f"{noun}{'s' if many else ''} {format_cpulist(lacking)} "
                f"{'are' if many else 'is'} not available on this machine, which has "
                f"{noun}{'s' if len(have) > 1 else ''} {format_cpulist(have) or 'none'} for "
                f"the node (from {source})")))
    for controller, values in limits.values.items():
        hierarchy = layout.hierarchy_of(controller)
        if hierarchy is None:
            continue  # said at start, where the message can say how to grant it
        writes, render_problems = render(controller, values, hierarchy.version)
        problems.extend(Problem(problem_path(controller, name), message)
                        for name, message in render_problems)
        problems.extend(_missing_files(controller, values, writes, hierarchy))
    return problems


def _missing_files(controller: str, values: Mapping[str, Any], writes: list[Write],
                   hierarchy: Hierarchy) -> list[Problem]:
    """Files the kernel does not offer, judged by the node's own group (a root group lacks
    some limit files, pids.max for one, so it proves nothing)."""
    if hierarchy.own == hierarchy.mountpoint:
        return []
    if not (hierarchy.own / "cgroup.procs").exists():
        return []
    problems: list[Problem] = []
    for file, _text in writes:
        if (hierarchy.own / file).exists():
            continue
        name = next((n for n in values if file in (PARAMETERS[n].v1, PARAMETERS[n].v2)),
                    next(iter(values)))
        hint = ("; swap accounting is off: boot with swapaccount=1, or leave swap unlimited"
                if "memsw" in file else "; it may be too old for this parameter")
        problems.append(Problem(problem_path(controller, name), (
            f"this machine's kernel offers no {file} in {hierarchy.describe()}{hint}")))
    return problems
