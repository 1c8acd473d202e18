"""The v1/v2 translation: the files to write that apply a controller's parsed limits.

``render()`` returns the files to write, in order, and a problem for each parameter that
hierarchy cannot express. A parameter spelled for either version is translated to the other:
``cpu.shares`` to ``cpu.weight``, ``memory.memsw.limit_in_bytes`` to ``memory.swap.max``…
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cocaine_cgroups.hierarchy import V1
from cocaine_cgroups.parameters import PARAMETERS

#: The default CFS period (µs) the kernel uses; cpu.max needs one when only a quota is given.
DEFAULT_PERIOD = 100_000

#: Marks a setting the manifest does not give (None already means "no limit").
UNSET: Any = object()

#: A file to write in the app's group and the text to write, in order.
Write = tuple[str, str]


def render(controller: str, values: Mapping[str, Any],
           version: int) -> tuple[list[Write], list[tuple[str, str]]]:
    """The writes that apply ``values`` on cgroup ``version``, and ``(parameter, problem)``
    for each parameter that version cannot express."""
    writes: list[Write] = []
    problems: list[tuple[str, str]] = []
    for name in values:
        parameter = PARAMETERS[name]
        if (parameter.v1 if version == V1 else parameter.v2) is None:
            problems.append((name, f"has no cgroup v{version} equivalent, and this machine has "
                                   f"the {controller} controller on cgroup v{version}; "
                                   f"remove it"))
    if controller == "memory":
        _render_memory(values, version, writes, problems)
    elif controller == "cpu":
        _render_cpu(values, version, writes)
    elif controller == "cpuset":
        writes.extend((name, values[name]) for name in ("cpuset.cpus", "cpuset.mems")
                      if name in values)
    elif controller == "pids" and "pids.max" in values:
        writes.append(("pids.max", _v2_number(values["pids.max"])))
    return writes, problems


def _v1_number(value: int | None) -> str:
    return "-1" if value is None else str(value)


def _v2_number(value: int | None) -> str:
    return "max" if value is None else str(value)


def _render_memory(values: Mapping[str, Any], version: int, writes: list[Write],
                   problems: list[tuple[str, str]]) -> None:
    has_limit = "memory.limit_in_bytes" in values or "memory.max" in values
    limit = values.get("memory.limit_in_bytes", values.get("memory.max"))
    low = next((values[n] for n in ("memory.soft_limit_in_bytes", "memory.low")
                if n in values), UNSET)
    if version == V1:
        if has_limit:
            writes.append(("memory.limit_in_bytes", _v1_number(limit)))
        if "memory.memsw.limit_in_bytes" in values:
            writes.append(("memory.memsw.limit_in_bytes",
                           _v1_number(values["memory.memsw.limit_in_bytes"])))
        elif "memory.swap.max" in values:
            swap = values["memory.swap.max"]
            if swap is not None and limit is None:
                problems.append(("memory.swap.max", "cgroup v1 limits swap together with "
                                 "memory (memory.memsw.limit_in_bytes = memory + swap), so "
                                 "it needs a memory limit: add memory.limit_in_bytes"))
            else:
                writes.append(("memory.memsw.limit_in_bytes",
                               _v1_number(None if swap is None else limit + swap)))
        if low is not UNSET:
            writes.append(("memory.soft_limit_in_bytes", _v1_number(low)))
        if "memory.swappiness" in values:
            writes.append(("memory.swappiness", str(values["memory.swappiness"])))
        return
    if has_limit:
        writes.append(("memory.max", _v2_number(limit)))
    if "memory.swap.max" in values:
        writes.append(("memory.swap.max", _v2_number(values["memory.swap.max"])))
    elif "memory.memsw.limit_in_bytes" in values:
        memsw = values["memory.memsw.limit_in_bytes"]
        if memsw is not None and limit is None:
            problems.append(("memory.memsw.limit_in_bytes", "counts memory plus swap; on "
                             "cgroup v2 it becomes memory.swap.max only next to a memory "
                             "limit: add memory.limit_in_bytes"))
        else:
            writes.append(("memory.swap.max",
                           _v2_number(None if memsw is None else max(0, memsw - limit))))
    if low is not UNSET:
        writes.append(("memory.low", _v2_number(low)))
    for name in ("memory.min", "memory.high"):
        if name in values:
            writes.append((name, _v2_number(values[name])))


def shares_to_weight(shares: int) -> int:
    """cgroup v1 ``cpu.shares`` (2-262144) as v2 ``cpu.weight`` (1-10000).

    The formula crun uses: it maps both defaults onto each other (1024 → 100) and both ends.
    """
    exponent = math.log2(max(2, min(262144, shares)))
    weight = 10 ** ((exponent ** 2 + 125 * exponent) / 612 - 7 / 34)
    return max(1, min(10000, round(weight)))


def weight_to_shares(weight: int) -> int:
    """cgroup v2 ``cpu.weight`` (1-10000) as v1 ``cpu.shares``: the inverse of the above."""
    y = 612 * (math.log10(max(1, min(10000, weight))) + 7 / 34)
    exponent = (-125 + math.sqrt(125 ** 2 + 4 * y)) / 2
    return max(2, min(262144, round(2 ** exponent)))


def _render_cpu(values: Mapping[str, Any], version: int, writes: list[Write]) -> None:
    quota: Any = values.get("cpu.cfs_quota_us", UNSET)
    period: Any = values.get("cpu.cfs_period_us", UNSET)
    if "cpu.max" in values:
        quota, period = values["cpu.max"]
        period = UNSET if period is None else period
    burst = next((values[n] for n in ("cpu.cfs_burst_us", "cpu.max.burst") if n in values),
                 UNSET)
    if version == V1:
        if "cpu.shares" in values:
            writes.append(("cpu.shares", str(values["cpu.shares"])))
        elif "cpu.weight" in values:
            writes.append(("cpu.shares", str(weight_to_shares(values["cpu.weight"]))))
        if period is not UNSET:
            writes.append(("cpu.cfs_period_us", str(period)))
        if quota is not UNSET:
            writes.append(("cpu.cfs_quota_us", _v1_number(quota)))
        if burst is not UNSET:
            writes.append(("cpu.cfs_burst_us", str(burst)))
        return
    if "cpu.weight" in values:
        writes.append(("cpu.weight", str(values["cpu.weight"])))
    elif "cpu.shares" in values:
        writes.append(("cpu.weight", str(shares_to_weight(values["cpu.shares"]))))
    if quota is not UNSET or period is not UNSET:
        quota_text = "max" if quota is UNSET else _v2_number(quota)
        period_text = DEFAULT_PERIOD if period is UNSET else period
        writes.append(("cpu.max", f"{quota_text} {period_text}"))
    if burst is not UNSET:
        writes.append(("cpu.max.burst", str(burst)))
