"""The bench's ``http`` scenario keeps working: ``bench/run.py --quick --only http --rounds 1``
drives cocaine's http-server, uvicorn and gunicorn with wrk, reports their rates, latencies
and the ratios the issue sets targets on, and leaves no process behind. It asserts nothing
about speed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cocaine_core.testing import leftover_slaves, process_gone, wait_until

ROOT = Path(__file__).resolve().parents[1]
PAYLOADS = ("100 B", "64 KiB")
BASELINES = ("uvicorn", "gunicorn")


def run_quick(tmp_path: Path) -> dict[str, Any]:
    """``bench/run.py --quick --only http --rounds 1``; its JSON and output, once it exited 0."""
    results = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--quiet", "--only", "http",
         "--rounds", "1", "--json", str(results), "--plot", str(tmp_path / "bench.png")],
        capture_output=True, timeout=120, cwd=ROOT)
    output = done.stdout.decode() + done.stderr.decode()
    reason = ""
    if results.exists():
        reason = json.loads(results.read_text())["scenarios"].get("http", {}).get("reason")
    assert done.returncode == 0, f"bench/run.py --quick --only http failed:\n{output}\n{reason}"
    document: dict[str, Any] = json.loads(results.read_text())
    assert set(document["scenarios"]) == {"http"}
    document["output"] = output
    return document


def http_server_installed() -> bool:
    """Whether a plugin registers the ``http-server`` driver (``cocaine plugins --json``)."""
    sys.path.insert(0, str(ROOT))
    try:
        from bench.nodes import installed_drivers
    finally:
        sys.path.remove(str(ROOT))
    return "http-server" in installed_drivers()


@pytest.mark.timeout(150)
def test_quick_http_measures_cocaine_uvicorn_and_gunicorn_with_wrk(tmp_path: Path) -> None:
    document = run_quick(tmp_path)
    scenario = document["scenarios"]["http"]
    if shutil.which("wrk") is None:
        assert scenario["status"] == "skipped"
        assert "apt-get install wrk" in scenario["reason"]
        return
    assert scenario["status"] == "ok", scenario["reason"]
    rounds = {f["name"]: f["rounds"] for f in scenario["figures"] + scenario["ratios"]}
    servers = [*BASELINES, *(["cocaine"] if http_server_installed() else [])]
    for server in servers:
        assert server not in scenario["skipped_parts"], scenario["skipped_parts"]
        assert scenario["details"]["servers"][server], "what ran is said"
        for size in PAYLOADS:
            rate = rounds[f"{server}, {size}"]
            assert len(rate) == 1 and rate[0] > 0, (server, size, rate)
            latency = scenario["details"]["latency_ms"]
            assert latency[f"{server}, {size}: p50"]["rounds"][0] > 0
            assert (latency[f"{server}, {size}: p99"]["rounds"][0]
                    >= latency[f"{server}, {size}: p50"]["rounds"][0])
            cpu = scenario["details"]["cpu_us_per_request"][f"{server}, {size}"]
            assert cpu["workers"]["rounds"][0] > 0 and cpu["wrk"]["rounds"][0] > 0
    assert "uvicorn" in scenario["details"]["servers"]["uvicorn"]  # what ran is named
    assert "httptools" in scenario["details"]["servers"]["uvicorn"]
    assert "sync" in scenario["details"]["servers"]["gunicorn"]
    # Every request of every server was answered 200 (wrk counts anything else as an error).
    assert "problems" not in scenario["details"], scenario["details"]["problems"]
    targets = {t["what"]: t for t in document["targets"]}
    assert len(targets) == 4, targets
    if "cocaine" in servers:
        for size in PAYLOADS:
            for other in BASELINES:
                ratio = rounds[f"cocaine / {other}, {size}"]
                assert len(ratio) == 1 and ratio[0] > 0, (other, size)
        assert all(t["value"] and t["passed"] in (True, False) for t in targets.values())
        assert "cocaine / gunicorn, 100 B" in document["output"]
    else:
        assert scenario["skipped_parts"]["cocaine"].startswith("skipped: no installed plugin")
        assert all(t["passed"] is None for t in targets.values()), "n/a without cocaine"
    assert "cocaine / uvicorn" in document["output"] or "cocaine" not in servers
    assert "Latency under load" in document["output"]

    started = document["pids"] + scenario["details"]["processes"]
    assert len(scenario["details"]["processes"]) >= 3 * len(servers), "main + 2 workers each"
    for pid in started:
        wait_until(lambda pid=pid: process_gone(pid), timeout=10,
                   message=f"process {pid} started by the bench to exit")
        assert not leftover_slaves(pid), f"slaves of {pid} outlived the bench"
