"""The kinds of value a resource-limits parameter takes: sizes, integers, CPU lists, cpu.max.

A kind is a function that turns what a manifest gives into a plain value (bytes,
microseconds, a CPU list in the kernel's spelling…), None meaning "no limit", or raises
``Invalid`` saying what it wants.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from cocaine_cgroups.cpulists import format_cpulist, parse_cpulist
from cocaine_core.schema import Invalid, show

#: A kind: takes what a manifest gives, returns the parsed value or raises ``Invalid``.
Kind = Callable[[Any], Any]

_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
#: The largest memory size a limit may give (no machine has more for one app): 64 TiB.
MAX_BYTES = 64 << 40
#: The largest CPU or memory-node number (the kernel's own most, NR_CPUS with MAXSMP, is 8192).
MAX_CPU = 8191


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
    if size is not None and (size > 0 or (zero and size == 0)) and size <= MAX_BYTES:
        return size
    least = "from 0" if zero else "from 1"
    raise Invalid(f"must be a size in bytes {least} to 64 TiB (67108864, \"64M\", \"1G\") or "
                  f"\"max\", got {show(value)}")


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
        if isinstance(value, str) and value.strip().isdecimal():
            value = int(value.strip())
        if _is_int(value) and low <= value <= high:
            return int(value)
        extra = ", or \"max\" (or -1) for none" if unlimited else ""
        raise Invalid(f"must be an integer from {low} to {high}{extra}, got {show(value)}")

    check.__doc__ = f"an integer from {low} to {high}" + (" or max" if unlimited else "")
    return check


def cpu_list(value: Any) -> str:
    """CPUs or memory nodes: ``"0-3,8"``, or one number."""
    if _is_int(value) and 0 <= value <= MAX_CPU:
        return str(value)
    if isinstance(value, str) and value.strip():
        try:
            numbers = parse_cpulist(value)
        except ValueError as exc:
            raise Invalid(f"must be a list like \"0-3,8\": {exc}") from None
        if numbers and max(numbers) > MAX_CPU:
            raise Invalid(f"must be a list like \"0-3,8\" of numbers from 0 to {MAX_CPU}, "
                          f"got {show(value)}")
        return format_cpulist(numbers)
    raise Invalid(f"must be a list like \"0-3,8\" (or one number from 0 to {MAX_CPU}), "
                  f"got {show(value)}")


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
