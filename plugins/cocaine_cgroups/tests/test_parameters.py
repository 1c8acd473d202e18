"""engine.resource-limits as a manifest gives it: names, values, and what the machine honours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cocaine_cgroups.cpulists import format_cpulist
from cocaine_cgroups.machine import available
from cocaine_cgroups.parameters import PARAMETERS, parse_limits
from cocaine_cgroups.translation import shares_to_weight, weight_to_shares

from cocaine_core.errors import ManifestError
from cocaine_core.jsontext import loads_lenient
from cocaine_core.manifest import parse_manifest
from cocaine_core.plugins import PluginHost, get_host

#: The example manifest of the original README, as written (trailing commas included), with
#: only its tasks cut down to what this test needs.
ORIGINAL = """{
    "type": "python",
    "args": {"source": "app.py"},
    "engine": {
        "heartbeat-timeout": 60,
        "pool-limit": 20,
        "queue-limit": 5,
        "resource-limits": {
            "cpuset": {
                "cpuset.cpus": "0-3",
                "cpuset.mems": "1",
            }
        }
    },
    "tasks": {"event": {"type": "native-server"}}
}"""


def problems_of(limits: dict[str, Any]) -> dict[str, str]:
    """Problems of ``limits`` alone, by key path."""
    return {p.path: p.message for p in parse_limits(limits)[1]}


def check(tmp_path: Path, limits: Any, host: PluginHost | None = None) -> Any:
    (tmp_path / "app.py").write_text("def event(request):\n    return b''\n")
    data = {"type": "python", "args": {"source": "app.py"},
            "engine": {"resource-limits": limits}, "tasks": {"event": {"type": "native-server"}}}
    return parse_manifest(data, root=tmp_path, host=host)


def test_every_kind_of_mistake_is_reported_at_once() -> None:
    found = problems_of({
        "memory": {"memory.limit": 5, "memory.max": "12 parsecs", "cpu.shares": 100},
        "cpu": {"cpu.max": "50000 100000", "cpu.cfs_quota_us": 20000},
        "io": {"io.max": "8:0 rbps=1"},
        "cpuz": {},
        "pids": 7,
    })
    prefix = "engine.resource-limits"
    assert "did you mean 'memory.limit_in_bytes'" in found[f"{prefix}.memory.memory.limit"]
    assert "must be a size in bytes" in found[f"{prefix}.memory.memory.max"]
    assert "belongs to the cpu controller" in found[f"{prefix}.memory.cpu.shares"]
    assert "same thing as cpu.max" in found[f"{prefix}.cpu.cpu.cfs_quota_us"]
    assert "not managed by cocaine-cgroups" in found[f"{prefix}.io"]
    assert "did you mean 'cpu'" in found[f"{prefix}.cpuz"]
    assert "must be an object of parameters" in found[f"{prefix}.pids"]


@pytest.mark.parametrize(("name", "value"), [
    ("cpu.shares", 1), ("cpu.shares", "lots"), ("cpu.weight", 10001), ("cpu.cfs_quota_us", 10),
    ("cpu.cfs_period_us", 5_000_000), ("cpu.max", "50000 100000 7"), ("cpu.max", "half"),
    ("memory.limit_in_bytes", 0), ("memory.limit_in_bytes", "-5M"), ("memory.swappiness", 300),
    ("pids.max", 0), ("pids.max", True), ("cpuset.cpus", "0-"), ("cpuset.mems", ""),
])
def test_malformed_values(name: str, value: Any) -> None:
    controller = PARAMETERS[name].controller
    assert f"engine.resource-limits.{controller}.{name}" in problems_of(
        {controller: {name: value}})


@pytest.mark.parametrize(("name", "value", "parsed"), [
    ("memory.limit_in_bytes", "64M", 64 << 20), ("memory.limit_in_bytes", "1.5G", 3 << 29),
    ("memory.limit_in_bytes", "512KiB", 512 << 10), ("memory.limit_in_bytes", 4096, 4096),
    ("memory.max", "max", None), ("memory.limit_in_bytes", -1, None), ("memory.swap.max", 0, 0),
    ("cpu.cfs_quota_us", -1, None), ("cpu.max", "max", (None, None)),
    ("cpu.max", "20000 50000", (20000, 50000)), ("cpu.max", 30000, (30000, None)),
    ("cpuset.cpus", "3,0-1", "0-1,3"), ("cpuset.mems", 0, "0"), ("pids.max", "max", None),
])
def test_values(name: str, value: Any, parsed: Any) -> None:
    controller = PARAMETERS[name].controller
    limits, problems = parse_limits({controller: {name: value}})
    assert not problems
    assert limits.values[controller][name] == parsed


def test_memsw_must_cover_the_memory_limit() -> None:
    found = problems_of({"memory": {"memory.limit_in_bytes": "64M",
                                    "memory.memsw.limit_in_bytes": "32M"}})
    assert "at least the memory limit" in found[
        "engine.resource-limits.memory.memory.memsw.limit_in_bytes"]


@pytest.mark.parametrize(("shares", "weight"), [(2, 1), (1024, 100), (262144, 10000),
                                                (512, 58), (2048, 173)])
def test_shares_and_weight(shares: int, weight: int) -> None:
    assert shares_to_weight(shares) == weight
    assert abs(weight_to_shares(weight) - shares) <= shares * 0.02


def test_the_original_readme_manifest_names_the_nodes_this_machine_has(tmp_path: Path,
                                                                         layout: Any) -> None:
    (tmp_path / "app.py").write_text("def event(request):\n    return b''\n")
    mems, _ = available(layout, "mems")
    cpus, _ = available(layout, "cpus")
    assert mems is not None and cpus is not None  # Linux says
    if 1 in mems:
        pytest.skip("this machine has memory node 1, so the original's cpuset.mems is fine")
    with pytest.raises(ManifestError) as caught:
        parse_manifest(loads_lenient(ORIGINAL), root=tmp_path)
    found = {p.path: p.message for p in caught.value.problems}
    message = found["engine.resource-limits.cpuset.cpuset.mems"]
    assert "memory node 1 is not available" in message
    assert f"memory node{'s' if len(mems) > 1 else ''} {format_cpulist(mems)}" in message
    if not {0, 1, 2, 3} <= cpus:
        assert format_cpulist(cpus) in found["engine.resource-limits.cpuset.cpuset.cpus"]


def test_the_key_is_registered_with_a_default(tmp_path: Path) -> None:
    owner = get_host().registry("engine_keys").owner("resource-limits")
    assert owner is not None and owner.distribution == "cocaine-cgroups"
    (tmp_path / "app.py").write_text("def event(request):\n    return b''\n")
    manifest = parse_manifest({"type": "python", "args": {"source": "app.py"},
                               "tasks": {"event": {"type": "native-server"}}}, root=tmp_path)
    assert manifest.engine.extra["resource-limits"] == {}
    assert check(tmp_path, {"pids": {"pids.max": 10}}).engine.extra["resource-limits"] == {
        "pids": {"pids.max": 10}}


def test_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"engine\.resource-limits: must be an object"):
        check(tmp_path, ["memory"])


def test_without_the_plugin_the_core_names_it(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COCAINE_DISABLE_PLUGINS", "cgroups")
    host = PluginHost().load()
    with pytest.raises(ManifestError) as caught:
        check(tmp_path, {"memory": {"memory.limit_in_bytes": "64M"}}, host=host)
    assert "engine.resource-limits: is provided by cocaine-cgroups, which is not installed" in \
        str(caught.value)


def test_manifest_check_on_the_command_line(tmp_path: Path, layout: Any) -> None:
    mems, _ = available(layout, "mems")
    assert mems is not None
    if 1 in mems:
        pytest.skip("this machine has memory node 1, so the original's cpuset.mems is fine")
    (tmp_path / "app.py").write_text("def event(request):\n    return b''\n")
    (tmp_path / "manifest.json").write_text(ORIGINAL)
    cocaine = Path(sys.executable).with_name("cocaine")
    result = subprocess.run([str(cocaine), "manifest", "check", str(tmp_path / "manifest.json")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "engine.resource-limits.cpuset.cpuset.mems: memory node 1 is not available" in \
        result.stdout + result.stderr


def test_the_docs_name_every_parameter() -> None:
    docs = (Path(__file__).parents[3] / "docs" / "resource-limits.md").read_text()
    for parameter in PARAMETERS.values():
        for name in filter(None, (parameter.name, parameter.v1, parameter.v2)):
            assert f"`{name}`" in docs, name
