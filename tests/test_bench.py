"""The benchmark suite keeps working: ``bench/run.py --quick`` exits 0 and reports every
scenario (CI runs this; it asserts nothing about speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cocaine_core.testing import leftover_slaves, process_gone, wait_until

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {"throughput", "latency", "curve", "growth", "timer", "fsmonitor", "memory", "overload",
             "chaos", "soak", "cluster", "languages", "http"}
#: Scenarios with a quick test of their own (test_bench_languages.py, test_bench_http.py): not
#: run twice.
OWN_TESTS = {"languages", "http"}


@pytest.mark.timeout(400)
def test_quick_bench_runs_every_scenario_and_leaves_nothing_behind(tmp_path: Path) -> None:
    results = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--rounds", "1", "--quiet",
         "--json", str(results), "--plot", str(tmp_path / "bench.png"),
         *(f"--only={name}" for name in sorted(SCENARIOS - OWN_TESTS))],
        capture_output=True, timeout=360, cwd=ROOT)
    output = done.stdout.decode() + done.stderr.decode()
    failed = {}
    if results.exists():
        document = json.loads(results.read_text())
        failed = {name: s["reason"] for name, s in document["scenarios"].items()
                  if s["status"] == "failed"}
    assert done.returncode == 0, f"bench/run.py --quick failed:\n{output}\n{failed}"

    document = json.loads(results.read_text())
    assert set(document["scenarios"]) == SCENARIOS - OWN_TESTS
    for name, scenario in document["scenarios"].items():
        assert scenario["status"] in ("ok", "skipped"), (name, scenario["reason"])
        if scenario["status"] == "skipped":
            assert scenario["reason"].startswith("skipped: "), name
            continue
        assert scenario["figures"], name
        for figure in scenario["figures"]:
            assert figure["rounds"], f"{name}: '{figure['name']}' has no value"
    assert document["targets"], "the targets are reported"
    assert all(t["passed"] in (True, False, None) for t in document["targets"])
    assert "throughput" in output and "targets" in output  # the table was printed

    for pid in document["pids"]:
        wait_until(lambda pid=pid: process_gone(pid), timeout=10,
                   message=f"process {pid} started by the bench to exit")
        assert not leftover_slaves(pid), f"slaves of node {pid} outlived the bench"
