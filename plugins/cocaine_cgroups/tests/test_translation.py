"""The v1/v2 translation table: rendered for both versions, and written to the live trees."""

from __future__ import annotations

from typing import Any

import pytest
from cocaine_cgroups.groups import AppGroup
from cocaine_cgroups.hierarchy import V1, V2, Layout
from cocaine_cgroups.parameters import parse_limits
from cocaine_cgroups.translation import render

from .conftest import NODE_NAME, require

M = 1 << 20

#: (limits as a manifest gives them, files written on v1, files written on v2), in order.
CASES: list[tuple[dict[str, Any], dict[str, str], dict[str, str]]] = [
    ({"memory": {"memory.limit_in_bytes": "64M"}},
     {"memory.limit_in_bytes": str(64 * M)}, {"memory.max": str(64 * M)}),
    ({"memory": {"memory.max": "max"}}, {"memory.limit_in_bytes": "-1"}, {"memory.max": "max"}),
    ({"memory": {"memory.max": "64M", "memory.memsw.limit_in_bytes": "96M"}},
     {"memory.limit_in_bytes": str(64 * M), "memory.memsw.limit_in_bytes": str(96 * M)},
     {"memory.max": str(64 * M), "memory.swap.max": str(32 * M)}),
    ({"memory": {"memory.limit_in_bytes": "64M", "memory.swap.max": 0}},
     {"memory.limit_in_bytes": str(64 * M), "memory.memsw.limit_in_bytes": str(64 * M)},
     {"memory.max": str(64 * M), "memory.swap.max": "0"}),
    ({"memory": {"memory.soft_limit_in_bytes": "16M"}},
     {"memory.soft_limit_in_bytes": str(16 * M)}, {"memory.low": str(16 * M)}),
    ({"memory": {"memory.low": "16M"}},
     {"memory.soft_limit_in_bytes": str(16 * M)}, {"memory.low": str(16 * M)}),
    ({"cpu": {"cpu.shares": 1024}}, {"cpu.shares": "1024"}, {"cpu.weight": "100"}),
    ({"cpu": {"cpu.weight": 100}}, {"cpu.shares": "1024"}, {"cpu.weight": "100"}),
    ({"cpu": {"cpu.cfs_quota_us": 50000, "cpu.cfs_period_us": 100000}},
     {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "50000"},
     {"cpu.max": "50000 100000"}),
    ({"cpu": {"cpu.cfs_quota_us": 25000}}, {"cpu.cfs_quota_us": "25000"},
     {"cpu.max": "25000 100000"}),
    ({"cpu": {"cpu.max": "20000 50000"}},
     {"cpu.cfs_period_us": "50000", "cpu.cfs_quota_us": "20000"}, {"cpu.max": "20000 50000"}),
    ({"cpu": {"cpu.max": "max"}}, {"cpu.cfs_quota_us": "-1"}, {"cpu.max": "max 100000"}),
    ({"cpu": {"cpu.cfs_quota_us": 50000, "cpu.cfs_burst_us": 10000}},
     {"cpu.cfs_quota_us": "50000", "cpu.cfs_burst_us": "10000"},
     {"cpu.max": "50000 100000", "cpu.max.burst": "10000"}),
    ({"cpuset": {"cpuset.cpus": 0}}, {"cpuset.cpus": "0"}, {"cpuset.cpus": "0"}),
    ({"cpuset": {"cpuset.mems": "0"}}, {"cpuset.mems": "0"}, {"cpuset.mems": "0"}),
    ({"pids": {"pids.max": 100}}, {"pids.max": "100"}, {"pids.max": "100"}),
    ({"pids": {"pids.max": "max"}}, {"pids.max": "max"}, {"pids.max": "max"}),
]
IDS = [",".join(f"{k}={v}" for c in case[0].values() for k, v in c.items()) for case in CASES]


def rendered(limits: dict[str, Any], version: int) -> dict[str, str]:
    parsed, problems = parse_limits(limits)
    assert not problems
    out: dict[str, str] = {}
    for controller, values in parsed.values.items():
        writes, unsupported = render(controller, values, version)
        assert not unsupported
        out.update(writes)
    return out


@pytest.mark.parametrize(("limits", "v1", "v2"), CASES, ids=IDS)
def test_table(limits: dict[str, Any], v1: dict[str, str], v2: dict[str, str]) -> None:
    assert list(rendered(limits, V1).items()) == list(v1.items())
    assert list(rendered(limits, V2).items()) == list(v2.items())


@pytest.mark.parametrize(("limits", "version", "message"), [
    ({"memory": {"memory.swappiness": 10}}, V2, "has no cgroup v2 equivalent"),
    ({"memory": {"memory.high": "1G"}}, V1, "has no cgroup v1 equivalent"),
    ({"memory": {"memory.min": "1G"}}, V1, "has no cgroup v1 equivalent"),
    ({"memory": {"memory.swap.max": "1G"}}, V1, "needs a memory limit"),
    ({"memory": {"memory.memsw.limit_in_bytes": "1G"}}, V2, "add memory.limit_in_bytes"),
])
def test_no_equivalent(limits: dict[str, Any], version: int, message: str) -> None:
    parsed, _ = parse_limits(limits)
    (controller, values), = parsed.values.items()
    _writes, problems = render(controller, values, version)
    assert message in problems[0][1]


def _live_value(file: str, expected: str) -> str:
    # cgroup v1 reads "no limit" back as the largest page-aligned number.
    if expected == "-1" and file.startswith("memory."):
        return str(2**63 - 4096)
    return expected


def _on_version(layout: Layout, limits: dict[str, Any], version: int) -> None:
    require(layout, *limits)
    for controller in limits:
        hierarchy = layout.hierarchy_of(controller)
        assert hierarchy is not None
        if hierarchy.version != version:
            unified = layout.unified
            offered = " ".join(sorted(unified.controllers)) if unified else "not mounted"
            pytest.skip(f"the {controller} controller is on cgroup v{hierarchy.version} here; "
                        f"the v{version} tree offers the node only: {offered or 'nothing'}")


@pytest.mark.parametrize("version", [V1, V2], ids=["v1", "v2"])
@pytest.mark.parametrize(("limits", "v1", "v2"), CASES, ids=IDS)
def test_live(layout: Layout, version: int, limits: dict[str, Any], v1: dict[str, str],
              v2: dict[str, str]) -> None:
    """Each case written to a real group of this machine and read back from the kernel."""
    _on_version(layout, limits, version)
    expected = v1 if version == V1 else v2
    parsed, _ = parse_limits(limits)
    group = AppGroup(NODE_NAME, f"translate-v{version}", parsed, layout)
    try:
        group.create()
        for controller in limits:
            part = group.part_for(controller)
            assert part is not None
            for file, value in expected.items():
                assert (part.path / file).read_text().strip() == _live_value(file, value)
    finally:
        group.remove()
