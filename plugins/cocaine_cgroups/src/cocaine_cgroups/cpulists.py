"""Kernel CPU and memory-node lists (``"0-3,8"``): parse, check, format.

The kernel prints sets of CPUs and memory nodes this way (``cpuset.cpus``,
``/sys/devices/system/cpu/online``) and reads them back the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_cpulist(text: str) -> frozenset[int]:
    """The numbers in a list like ``"0-3,8"``; raise ``ValueError`` saying what is wrong."""
    numbers: set[int] = set()
    text = text.strip()
    if not text:
        return frozenset()
    for part in text.split(","):
        match = _RANGE.match(part.strip())
        if match is None:
            raise ValueError(f"'{part.strip()}' is not a number or a range like 0-3")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise ValueError(f"the range '{part.strip()}' runs backwards")
        if last - first > 65536:
            raise ValueError(f"the range '{part.strip()}' is implausibly large")
        numbers.update(range(first, last + 1))
    return frozenset(numbers)


def format_cpulist(numbers: Iterable[int]) -> str:
    """The kernel's spelling of a set of numbers: ``{0, 1, 2, 8}`` → ``"0-2,8"``."""
    ordered = sorted(set(numbers))
    parts: list[str] = []
    first = 0
    while first < len(ordered):
        last = first
        while last + 1 < len(ordered) and ordered[last + 1] == ordered[last] + 1:
            last += 1
        parts.append(_span(ordered[first], ordered[last]))
        first = last + 1
    return ",".join(parts)


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"
