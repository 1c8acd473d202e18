"""Every resource-limits number has a range (issue 13): sizes past 64 TiB and CPU numbers past
the kernel's most were accepted, to fail only when written to the kernel at app start."""

from __future__ import annotations

from typing import Any

import pytest
from cocaine_cgroups.parameters import PARAMETERS, parse_limits


def problems_of(name: str, value: Any) -> dict[str, str]:
    """The problems by key path of one parameter."""
    controller = PARAMETERS[name].controller
    _limits, problems = parse_limits({controller: {name: value}})
    return {p.path: p.message for p in problems}


@pytest.mark.parametrize(("name", "value"), [
    ("memory.max", "99999999T"), ("memory.max", 2**80), ("memory.limit_in_bytes", "65T"),
    ("memory.swap.max", 10**30), ("memory.low", "1000000000G"), ("memory.high", 2**63),
])
def test_sizes_past_64_tib_are_refused_naming_the_range(name, value):
    found = problems_of(name, value)
    where = f"engine.resource-limits.memory.{name}"
    assert "to 64 TiB" in found[where], found


@pytest.mark.parametrize(("name", "value"), [("memory.max", "64T"), ("memory.swap.max", 0)])
def test_sizes_up_to_64_tib_are_accepted(name, value):
    assert problems_of(name, value) == {}


@pytest.mark.parametrize(("name", "value"), [
    ("cpuset.cpus", 10**12), ("cpuset.cpus", "99999999"), ("cpuset.cpus", "0,8192"),
    ("cpuset.mems", "100000-100003"),
])
def test_cpu_numbers_past_the_kernels_most_are_refused(name, value):
    found = problems_of(name, value)
    assert "from 0 to 8191" in found[f"engine.resource-limits.cpuset.{name}"], found


@pytest.mark.parametrize("value", ["\u00b2", "\u00b2\u00b3"])
def test_a_superscript_digit_is_no_number(value):
    """``"²".isdigit()`` is true but ``int("²")`` raises: the check must say so, not crash."""
    found = problems_of("pids.max", value)
    assert found["engine.resource-limits.pids.pids.max"].startswith(
        "must be an integer from 1 to 4194304"), found
