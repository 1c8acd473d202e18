"""The bench's ``languages`` scenario keeps working: ``bench/run.py --quick --only languages``
measures the Python, JavaScript and C++ echo apps side by side (each language whose tools are
installed), says which tool is missing for the others, and leaves no process behind. It
asserts nothing about speed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cocaine_core.testing import leftover_slaves, process_gone, wait_until

ROOT = Path(__file__).resolve().parents[1]
PAYLOADS = ("100 B", "64 KiB")


def run_quick(tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``bench/run.py --quick --only languages``; its JSON, once it exited 0."""
    results = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--quiet", "--only",
         "languages", "--json", str(results), "--plot", str(tmp_path / "bench.png")],
        capture_output=True, timeout=600, cwd=ROOT, env=env)
    output = done.stdout.decode() + done.stderr.decode()
    reason = ""
    if results.exists():
        reason = json.loads(results.read_text())["scenarios"].get("languages", {}).get("reason")
    assert done.returncode == 0, f"bench/run.py --quick --only languages failed:\n{output}\n" \
                                 f"{reason}"
    document: dict[str, Any] = json.loads(results.read_text())
    assert set(document["scenarios"]) == {"languages"}
    document["output"] = output
    return document


def assert_nothing_left(document: dict[str, Any]) -> None:
    """Every process the bench started has exited, and no slave outlived its node."""
    assert document["pids"], "the bench started its nodes"
    for pid in document["pids"]:
        wait_until(lambda pid=pid: process_gone(pid), timeout=10,
                   message=f"process {pid} started by the bench to exit")
        assert not leftover_slaves(pid), f"slaves of node {pid} outlived the bench"


def medians(scenario: dict[str, Any]) -> dict[str, list[float]]:
    """Each figure's and ratio's rounds, by name."""
    return {f["name"]: f["rounds"] for f in scenario["figures"] + scenario["ratios"]}


@pytest.mark.timeout(660)
def test_quick_languages_measures_python_javascript_and_cpp_side_by_side(
        tmp_path: Path) -> None:
    document = run_quick(tmp_path)
    scenario = document["scenarios"]["languages"]
    assert scenario["status"] == "ok", scenario["reason"]
    rounds = medians(scenario)
    expected = {"Python": True,
                "JavaScript": bool(shutil.which("node") and shutil.which("npm")),
                "C++": bool(shutil.which(os.environ.get("CXX") or "g++")
                            and shutil.which("make"))}
    for label, present in expected.items():
        if not present:
            assert scenario["skipped_parts"][label].startswith("skipped: "), label
            assert "is not installed" in scenario["skipped_parts"][label], label
            continue
        assert label not in scenario["skipped_parts"], scenario["skipped_parts"]
        for size in PAYLOADS:
            values = rounds[f"{label}, {size}"]
            assert len(values) == 2 and all(v > 0 for v in values), (label, size, values)
            if label != "Python":
                ratio = rounds[f"{label} / Python, {size}"]
                assert len(ratio) == 2 and all(v > 0 for v in ratio), (label, size, ratio)
            cpu = scenario["details"]["cpu_us_per_request"][f"{label}, {size}"]
            assert all(cpu[part]["rounds"] for part in ("node", "slaves", "bench process"))
    # Every echo came back whole and no request failed, in every language.
    assert "problems" not in scenario["details"], scenario["details"]["problems"]
    assert scenario["targets"] == [], "the issue sets no target: figures are reported"
    assert "JavaScript / Python" in document["output"] or not expected["JavaScript"]
    assert_nothing_left(document)


@pytest.mark.timeout(300)
def test_without_node_or_a_compiler_the_scenario_says_which_and_measures_python(
        tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CXX"}
    env["PATH"] = str(empty)  # a machine with neither Node.js nor g++ nor make
    document = run_quick(tmp_path, env)
    scenario = document["scenarios"]["languages"]
    assert scenario["status"] == "ok", scenario["reason"]
    skipped = scenario["skipped_parts"]
    assert skipped["JavaScript"].startswith("skipped: node is not installed")
    assert "apt-get install nodejs npm" in skipped["JavaScript"]
    assert skipped["C++"].startswith("skipped: g++ is not installed")
    assert "cppzmq-dev" in skipped["C++"]
    rounds = medians(scenario)
    assert all(rounds[f"Python, {size}"] for size in PAYLOADS)
    assert not any(name.startswith(("JavaScript", "C++")) for name in rounds), rounds
    assert "node is not installed" in document["output"]  # printed with the table
    assert_nothing_left(document)
