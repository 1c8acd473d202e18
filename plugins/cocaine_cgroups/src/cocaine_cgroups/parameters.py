"""The parameters of ``engine.resource-limits``: how each is checked and written on v1 and v2.

A manifest gives ``{controller: {parameter: value}}`` in the spelling of either hierarchy (the
original cocaine's v1 names, ``memory.limit_in_bytes``, or v2's, ``memory.max``). Each
parameter is parsed once into a plain value (bytes, microseconds, a CPU list…) and rendered
for the hierarchy that holds its controller on the running machine: ``render()`` returns the
files to write, in order, and a problem for each parameter that hierarchy cannot express.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from cocaine_cgroups.cpulists import format_cpulist, parse_cpulist
from cocaine_cgroups.hierarchy import V1, Hierarchy, Layout
from cocaine_core.errors import Problem
from cocaine_core.schema import Invalid, did_you_mean, show

#: Where the key lives in a manifest, for problem paths.
KEY_PATH = "engine.resource-limits"

#: Controllers a manifest may limit.
CONTROLLERS = ("cpu", "cpuset", "memory", "pids")

#: Controllers the kernel has that this plugin does not manage (named as such in errors).
UNSUPPORTED = ("blkio", "io", "devices", "freezer", "hugetlb", "net_cls", "net_prio",
               "perf_event", "rdma", "misc", "cpuacct")

#: The default CFS period (µs) the kernel uses; cpu.max needs one when only a quota is given.
DEFAULT_PERIOD = 100_000

#: Marks a setting the manifest does not give (None already means "no limit").
UNSET: Any = object()

Kind = Callable[[Any], Any]


# -- value kinds ---------------------------------------------------------------------------------

_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _unlimited(value: Any) -> bool:
    return value == -1 or (isinstance(value, str) and value.strip().lower() in ("max", "-1"))


def _bytes(value: Any, *, zero: bool) -> int | None:
    if _unlimited(value):
        return None
    size: int | None = None
    if _is_int(value):
        size = int(value)
    elif isinstance(value, str):
        match = _BYTES.match(value)
        if match:
            size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size is not None and (size > 0 or (zero and size == 0)):
        return size
    least = "of 0 or more" if zero else "above 0"
    raise Invalid(f"must be a size in bytes {least} (67108864, \"64M\", \"1G\") or \"max\", "
                  f"got {show(value)}")


def memory_bytes(value: Any) -> int | None:
    """A size in bytes above 0: ``67108864``, ``"64M"``, ``"1.5G"``; ``"max"`` or -1 for none."""
    return _bytes(value, zero=False)


def memory_bytes_or_zero(value: Any) -> int | None:
    """A size in bytes, 0 allowed (no swap, no protection); ``"max"`` or -1 for none."""
    return _bytes(value, zero=True)


def int_between(low: int, high: int, *, unlimited: bool = False) -> Kind:
    """A kind accepting integers from ``low`` to ``high`` (and ``"max"``/-1 if ``unlimited``)."""

    def check(value: Any) -> int | None:
        if unlimited and _unlimited(value):
            return None
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if _is_int(value) and low <= value <= high:
            return int(value)
        extra = ", or \"max\" (or -1) for none" if unlimited else ""
        raise Invalid(f"must be an integer from {low} to {high}{extra}, got {show(value)}")

    check.__doc__ = f"an integer from {low} to {high}" + (" or max" if unlimited else "")
    return check


def cpu_list(value: Any) -> str:
    """CPUs or memory nodes: ``"0-3,8"``, or one number."""
    if _is_int(value) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.strip():
        try:
            numbers = parse_cpulist(value)
        except ValueError as exc:
            raise Invalid(f"must be a list like \"0-3,8\": {exc}") from None
        return format_cpulist(numbers)
    raise Invalid(f"must be a list like \"0-3,8\" (or one number), got {show(value)}")


QUOTA = int_between(1000, 2**43, unlimited=True)
PERIOD = int_between(1000, 1_000_000)


def cpu_max(value: Any) -> tuple[int | None, int | None]:
    """cgroup v2's ``cpu.max``: ``"max"``, ``"50000"`` or ``"50000 100000"`` (quota period)."""
    if _is_int(value):
        value = str(value)
    if isinstance(value, str) and 1 <= len(value.split()) <= 2:
        quota_text, *period_text = value.split()
        try:
            quota = QUOTA(quota_text)
            period = PERIOD(period_text[0]) if period_text else None
        except Invalid:
            pass
        else:
            return quota, period
    raise Invalid("must be \"QUOTA PERIOD\" in microseconds, e.g. \"50000 100000\" for half a "
                  f"CPU (QUOTA 1000 or more, or max; PERIOD 1000 to 1000000), got {show(value)}")


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


def _path(*parts: str) -> str:
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
            problems.append(Problem(_path(controller), what))
            continue
        if not isinstance(params, dict):
            problems.append(Problem(_path(controller), "must be an object of parameters, e.g. "
                                    f"{{\"{_example(controller)}\": ...}}, got {show(params)}"))
            continue
        parsed: dict[str, Any] = {}
        slots: dict[str, str] = {}
        for name, value in params.items():
            where = _path(controller, name)
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
                f"{_path(parameter.controller)}")
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
        return [Problem(_path("memory", "memory.memsw.limit_in_bytes"),
                        "counts memory plus swap, so it must be at least the memory limit "
                        f"({'max' if limit is None else limit})")]
    return []


# -- rendering for a hierarchy ---------------------------------------------------------------------


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


# -- what the machine can honour ---------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


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
        text = _read(path)
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
            problems.append(Problem(_path("cpuset", name), (
                f"{noun}{'s' if many else ''} {format_cpulist(lacking)} "
                f"{'are' if many else 'is'} not available on this machine, which has "
                f"{noun}{'s' if len(have) > 1 else ''} {format_cpulist(have) or 'none'} for "
                f"the node (from {source})")))
    for controller, values in limits.values.items():
        hierarchy = layout.hierarchy_of(controller)
        if hierarchy is None:
            continue  # said at start, where the message can say how to grant it
        writes, render_problems = render(controller, values, hierarchy.version)
        problems.extend(Problem(_path(controller, name), message)
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
        problems.append(Problem(_path(controller, name), (
            f"this machine's kernel offers no {file} in {hierarchy.describe()}{hint}")))
    return problems
