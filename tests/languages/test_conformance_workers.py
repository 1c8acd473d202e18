"""The conformance kit passes for the three workers we ship (issue 17: Python, JavaScript and
C++), each run exactly as a user would run it, and names the rule a worker that skips
heartbeats breaks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COCAINE = str(Path(sys.executable).with_name("cocaine"))
RULES = ["handshake", "configure", "heartbeats", "echo", "chunks in order", "errors with codes",
         "heartbeats during a long job", "concurrency", "flow", "streamed body", "headers",
         "batch", "terminate and exit"]
WORKERS = {
    "python": [sys.executable, "-m", "cocaine_python.worker",
               str(ROOT / "plugins/cocaine_python/src/cocaine_python/conformance_app.py")],
    "javascript": ["node", str(ROOT / "workers/javascript/conformance.js")],
    "cpp": [str(ROOT / "workers/cpp/build/conformance")],
}
#: The optional rules each worker skips, not claiming their feature (and why).
SKIPS = {"python": {},
         "javascript": {"batch": "the worker does not claim batch (features.batch)"},
         "cpp": {"batch": "the worker does not claim batch (features.batch)"}}


@pytest.fixture(scope="module")
def built() -> None:
    """The JavaScript worker's packages and the C++ conformance app, as scripts/test makes
    them (nothing is done when they are up to date)."""
    subprocess.run(["sh", str(ROOT / "workers/javascript/install.sh")], check=True, timeout=600)
    subprocess.run(["make", "--quiet", "-C", str(ROOT / "workers/cpp")], check=True,
                   timeout=600)


def start(*command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([COCAINE, "conformance", "--json", "--", *command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[bytes]) -> tuple[int, dict[str, dict[str, str]]]:
    try:
        out, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    return process.returncode, {entry["rule"]: entry for entry in json.loads(out)}


SKIPS_HEARTBEATS = ROOT / "tests/conformance/workers/skips_heartbeats.py"


@pytest.fixture(scope="module")
def results(built: None) -> dict[str, tuple[int, dict[str, dict[str, str]]]]:
    """Every kit run of this module, made at once (each mostly waits on its rules' clocks)."""
    runs = {name: start(*command) for name, command in WORKERS.items()}
    runs["skips heartbeats"] = start(sys.executable, str(SKIPS_HEARTBEATS))
    return {name: finish(process) for name, process in runs.items()}


@pytest.mark.parametrize("language", sorted(WORKERS))
def test_the_worker_passes_every_rule(results, language):
    status, rules = results[language]
    assert list(rules) == RULES
    failed = {name: rule["detail"] for name, rule in rules.items()
              if rule["status"] != "ok" and name not in SKIPS[language]}
    assert not failed and status == 0, failed
    for name, why in SKIPS[language].items():
        assert (rules[name]["status"], rules[name]["detail"]) == ("skip", why)


def test_a_worker_that_skips_heartbeats_fails_naming_the_rule(results):
    status, rules = results["skips heartbeats"]
    assert status == 1
    assert rules["heartbeats during a long job"]["status"] == "fail"
    assert "gap" in rules["heartbeats during a long job"]["detail"]
    assert rules["echo"]["status"] == "ok"
