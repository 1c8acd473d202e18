"""The parameters of ``engine.resource-limits``: the table of them, and a manifest's checked.

A manifest gives ``{controller: {parameter: value}}`` in the spelling of either hierarchy (the
original cocaine's v1 names, ``memory.limit_in_bytes``, or v2's, ``memory.max``). Each
parameter is parsed once into a plain value (bytes, microseconds, a CPU list…: see
``value_kinds``) and rendered later for the hierarchy that holds its controller on the running
machine (see ``translation``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from cocaine_cgroups.value_kinds import (
    PERIOD,
    QUOTA,
    Kind,
    cpu_list,
    cpu_max,
    int_between,
    memory_bytes,
    memory_bytes_or_zero,
)
from cocaine_core.errors import Problem
from cocaine_core.schema import Invalid, did_you_mean, show

#: Where the key lives in a manifest, for problem paths.
KEY_PATH = "engine.resource-limits"

#: Controllers a manifest may limit.
CONTROLLERS = ("cpu", "cpuset", "memory", "pids")

#: Controllers the kernel has that this plugin does not manage (named as such in errors).
UNSUPPORTED = ("blkio", "io", "devices", "freezer", "hugetlb", "net_cls", "net_prio",
               "perf_event", "rdma", "misc", "cpuacct")


# -- the table -----------------------------------------------------------------------------------


@attrs.frozen
class Parameter:
    """One parameter a manifest may give: its check, what it sets, its files on v1 and v2."""

    name: str
    controller: str
    kind: Kind
    #: What it sets; two parameters that share a slot are the same setting spelled twice.
    slot: str
    #: Its file on cgroup v1 and v2 (None: no equivalent on that version).
    v1: str | None
    v2: str | None
    help: str
    #: How the value changes on the way to the other version, for the docs.
    translation: str = ""


PARAMETERS: dict[str, Parameter] = {p.name: p for p in (
    Parameter("cpuset.cpus", "cpuset", cpu_list, "cpus", "cpuset.cpus", "cpuset.cpus",
              "the CPUs the app's processes may run on"),
    Parameter("cpuset.mems", "cpuset", cpu_list, "mems", "cpuset.mems", "cpuset.mems",
              "the NUMA memory nodes the app may allocate from"),
    Parameter("cpu.shares", "cpu", int_between(2, 262144), "weight", "cpu.shares",
              "cpu.weight", "relative CPU weight under contention (default 1024)",
              "weight = 10^((log2(shares)^2 + 125·log2(shares)) / 612 - 7/34), "
              "so 2 → 1, 1024 → 100, 262144 → 10000"),
    Parameter("cpu.weight", "cpu", int_between(1, 10000), "weight", "cpu.shares",
              "cpu.weight", "relative CPU weight under contention (default 100)",
              "the inverse of the cpu.shares formula"),
    Parameter("cpu.cfs_quota_us", "cpu", QUOTA, "quota", "cpu.cfs_quota_us", "cpu.max",
              "CPU time (µs) the app may use per period; -1 or \"max\" for no limit",
              "first field of cpu.max"),
    Parameter("cpu.cfs_period_us", "cpu", PERIOD, "period", "cpu.cfs_period_us", "cpu.max",
              "the length (µs) of the quota's period (default 100000)",
              "second field of cpu.max"),
    Parameter("cpu.max", "cpu", cpu_max, "bandwidth", "cpu.cfs_quota_us", "cpu.max",
              "\"QUOTA PERIOD\" in µs: \"50000 100000\" is half a CPU",
              "cpu.cfs_quota_us (max → -1) and cpu.cfs_period_us"),
    Parameter("cpu.cfs_burst_us", "cpu", int_between(0, 2**43), "burst", "cpu.cfs_burst_us",
              "cpu.max.burst", "unused quota (µs) the app may carry into a later period"),
    Parameter("cpu.max.burst", "cpu", int_between(0, 2**43), "burst", "cpu.cfs_burst_us",
              "cpu.max.burst", "unused quota (µs) the app may carry into a later period"),
    Parameter("memory.limit_in_bytes", "memory", memory_bytes, "limit",
              "memory.limit_in_bytes", "memory.max",
              "the most memory the app's processes may use together; past it the kernel "
              "reclaims, then kills one (out of memory)", "-1 ↔ max"),
    Parameter("memory.max", "memory", memory_bytes, "limit", "memory.limit_in_bytes",
              "memory.max", "the most memory the app's processes may use together",
              "max ↔ -1"),
    Parameter("memory.memsw.limit_in_bytes", "memory", memory_bytes, "swap",
              "memory.memsw.limit_in_bytes", "memory.swap.max",
              "memory plus swap; set it equal to the memory limit to forbid swapping",
              "memory.swap.max = this - the memory limit (needs the memory limit)"),
    Parameter("memory.swap.max", "memory", memory_bytes_or_zero, "swap",
              "memory.memsw.limit_in_bytes", "memory.swap.max", "the most swap the app may use",
              "memory.memsw.limit_in_bytes = the memory limit + this (needs the memory "
              "limit)"),
    Parameter("memory.soft_limit_in_bytes", "memory", memory_bytes_or_zero, "low",
              "memory.soft_limit_in_bytes", "memory.low",
              "memory the kernel tries to leave the app under memory pressure"),
    Parameter("memory.low", "memory", memory_bytes_or_zero, "low", "memory.soft_limit_in_bytes",
              "memory.low", "memory the kernel tries to leave the app under memory pressure"),
    Parameter("memory.high", "memory", memory_bytes, "high", None, "memory.high",
              "above it the app is throttled and reclaimed hard, but not killed"),
    Parameter("memory.min", "memory", memory_bytes_or_zero, "min", None, "memory.min",
              "memory the kernel never reclaims from the app"),
    Parameter("memory.swappiness", "memory", int_between(0, 200), "swappiness",
              "memory.swappiness", None, "how eagerly the app's memory is swapped (0-200)"),
    Parameter("pids.max", "pids", int_between(1, 2**22, unlimited=True), "max", "pids.max",
              "pids.max", "the most processes and threads the app may have at once "
              "(the template, its slaves and every thread they start)"),
)}


# -- a manifest's limits, checked against the table ----------------------------------------------


@attrs.frozen
class Limits:
    """A checked ``engine.resource-limits``: controller → parameter name → parsed value."""

    values: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    @property
    def controllers(self) -> list[str]:
        """The controllers given, sorted."""
        return sorted(self.values)

    def __bool__(self) -> bool:
        return any(self.values.values())


def problem_path(*parts: str) -> str:
    """Where a problem lies: ``engine.resource-limits.<parts>``."""
    return ".".join((KEY_PATH, *parts))


def parse_limits(raw: Mapping[str, Any] | None) -> tuple[Limits, list[Problem]]:
    """Check ``engine.resource-limits`` as written; return the parsed limits and problems."""
    values: dict[str, dict[str, Any]] = {}
    problems: list[Problem] = []
    for controller, params in (raw or {}).items():
        if controller not in CONTROLLERS:
            if controller in UNSUPPORTED:
                what = (f"the {controller} controller is not managed by cocaine-cgroups; "
                        f"supported: {', '.join(CONTROLLERS)}")
            else:
                what = "unknown controller" + (did_you_mean(str(controller), CONTROLLERS) or
                                               f"; supported: {', '.join(CONTROLLERS)}")
            problems.append(Problem(problem_path(controller), what))
            continue
        if not isinstance(params, dict):
            problems.append(Problem(problem_path(controller), (
                "must be an object of parameters, e.g. "
                f"{{\"{_example(controller)}\": ...}}, got {show(params)}")))
            continue
        parsed: dict[str, Any] = {}
        slots: dict[str, str] = {}
        for name, value in params.items():
            where = problem_path(controller, name)
            parameter = PARAMETERS.get(name)
            if parameter is None or parameter.controller != controller:
                problems.append(Problem(where, _unknown_parameter(controller, name)))
                continue
            try:
                parsed[name] = parameter.kind(value)
            except Invalid as exc:
                problems.append(Problem(where, str(exc)))
                continue
            for slot in _slots(parameter):
                if slot in slots:
                    problems.append(Problem(where, f"sets the same thing as {slots[slot]}; "
                                                   f"give only one"))
                slots[slot] = name
        problems.extend(_check_together(controller, parsed))
        values[controller] = parsed
    return Limits(values), problems


def _slots(parameter: Parameter) -> tuple[str, ...]:
    return ("quota", "period") if parameter.slot == "bandwidth" else (parameter.slot,)


def _example(controller: str) -> str:
    return next(p.name for p in PARAMETERS.values() if p.controller == controller)


def _unknown_parameter(controller: str, name: str) -> str:
    parameter = PARAMETERS.get(name)
    if parameter is not None:
        return (f"belongs to the {parameter.controller} controller; move it under "
                f"{problem_path(parameter.controller)}")
    known = sorted(p.name for p in PARAMETERS.values() if p.controller == controller)
    prefixed = [k for k in known if k.startswith(name)]
    hint = (f"; did you mean '{prefixed[0]}'?" if len(prefixed) == 1 else
            did_you_mean(name, known)) or f"; supported: {', '.join(known)}"
    return f"unknown parameter of the {controller} controller{hint}"


def _check_together(controller: str, values: dict[str, Any]) -> list[Problem]:
    if controller != "memory":
        return []
    limit = values.get("memory.limit_in_bytes", values.get("memory.max"))
    has_limit = "memory.limit_in_bytes" in values or "memory.max" in values
    memsw = values.get("memory.memsw.limit_in_bytes")
    if memsw is not None and has_limit and (limit is None or memsw < limit):
        return [Problem(problem_path("memory", "memory.memsw.limit_in_bytes"),
                        "counts memory plus swap, so it must be at least the memory limit "
                        f"({'max' if limit is None else limit})")]
    return []
