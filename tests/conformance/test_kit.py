"""``cocaine conformance`` (``cocaine_core/conformance/``): it passes a worker that keeps the
protocol and fails, naming the rule, each worker that breaks one.

The workers are real programs: cocaine-python's conformance app run by
``python -m cocaine_python.worker``, and small raw-pyzmq workers written from
docs/protocol.md alone (``workers/``), each bad one breaking one rule. Every run goes through
the ``cocaine`` script of the venv, with ``--json``; the kit's temporary folder goes to a
folder of the test's own (``TMPDIR``), which must be empty afterwards.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cocaine_core.conformance import RULES
from cocaine_core.testing import process_gone, wait_until
from tests import distributions

ROOT = Path(__file__).resolve().parents[2]
WORKERS = Path(__file__).resolve().parent / "workers"
PYTHON_APP = ROOT / "plugins/cocaine_python/src/cocaine_python/conformance_app.py"
NAMES = [name for name, *_ in RULES]
#: The optional rules: skipped, not failed, when they cannot run.
OPTIONAL = {"flow", "streamed body", "headers", "batch"}


def kit(*command: str, tmp: Path, options: tuple[str, ...] = ("--json",),
        ) -> subprocess.CompletedProcess[str]:
    """Run ``cocaine conformance`` on ``command``; check it left nothing in its temp folder."""
    tmp.mkdir(exist_ok=True)
    result = distributions.run_cocaine("conformance", *options, "--", *command,
                                       env={"COCAINE_LOAD_PLUGINS": "", "TMPDIR": str(tmp)},
                                       timeout=120)
    assert list(tmp.iterdir()) == [], "the kit left files behind"
    return result


def verdicts(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    """The kit's JSON results by rule name, in order (every rule, exactly once)."""
    results = json.loads(result.stdout)
    assert [r["rule"] for r in results] == NAMES, result.stdout
    return {r["rule"]: r for r in results}


def failed(result: subprocess.CompletedProcess[str]) -> set[str]:
    """The names of the rules that failed."""
    return {name for name, r in verdicts(result).items() if r["status"] == "fail"}


def raw(worker: str) -> list[str]:
    """The command of one of the raw workers."""
    return [sys.executable, str(WORKERS / f"{worker}.py")]


def test_the_python_conformance_app_passes_every_rule_flow_and_streams_included(tmp_path):
    result = kit(sys.executable, "-m", "cocaine_python.worker", str(PYTHON_APP), tmp=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {name: r["status"] for name, r in verdicts(result).items()} == dict.fromkeys(
        NAMES, "ok")
    detail = verdicts(result)["handshake"]["detail"]
    assert "features {'flow': True, 'stream': True, 'batch': True}" in detail
    assert "credit 8, batch)" in verdicts(result)["configure"]["detail"]
    detail = verdicts(result)["batch"]["detail"]
    assert "an INVOKE_BATCH of 4 `echo` jobs" in detail, detail
    assert "each answered once, with its own body" in detail, detail


def test_a_raw_worker_written_from_the_protocol_passes_and_flow_is_skipped(tmp_path):
    result = kit(*raw("raw_worker"), tmp=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = verdicts(result)
    assert found["flow"] == {"rule": "flow", "status": "skip",
                             "detail": "the worker does not claim flow (features.flow)"}
    for name in ("streamed body", "headers"):
        assert found[name] == {"rule": name, "status": "skip", "detail": "the worker does not "
                               "claim streamed bodies (features.stream)"}
    assert found["batch"] == {"rule": "batch", "status": "skip",
                              "detail": "the worker does not claim batch (features.batch)"}
    assert "batch" not in found["configure"]["detail"]  # nor does CONFIGURE say it
    assert all(r["status"] == "ok" for name, r in found.items() if name not in OPTIONAL)


def test_a_raw_worker_that_claims_batch_passes_answering_with_choke_batches(tmp_path):
    # It answers the INVOKE_BATCH with one CHOKE_BATCH, and the `concurrency` rule's four
    # sleeps too: a CHOKE_BATCH counts as the CHOKEs it stands for in every rule.
    result = kit(*raw("batches"), tmp=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = verdicts(result)
    assert "credit 8, batch)" in found["configure"]["detail"]
    assert found["concurrency"]["status"] == "ok", found["concurrency"]
    assert found["batch"]["status"] == "ok", found["batch"]
    assert found["batch"]["detail"].endswith("4 as entries of a CHOKE_BATCH, 0 by CHOKE")
    assert all(r["status"] == "ok" for name, r in found.items() if name not in OPTIONAL)


@pytest.mark.parametrize(("worker", "expected"), [
    ("answers_a_batch_job_twice", ["in the CHOKE_BATCH [15, [[{0}, True], [{1}, False], "
                                   "[{2}, True], [{3}, True], [{0}, True]]]: a CHOKE for job "
                                   "{0} (echo) after it had ended"]),
    ("mixes_up_batch_answers", ["job {0} (entry 0 of the INVOKE_BATCH, 11 B) was answered "
                                "with the body of job {3}, not its own"]),
    ("sends_a_bad_choke_batch", ["a malformed CHOKE_BATCH", "entry 1 [{1}] is not [job_id: "
                                 "int, with_last: bool]"]),
    ("drops_a_batch_job", ["within 2 s for job(s) {3} (1 of 4)"]),
])
def test_a_worker_that_claims_batch_and_answers_a_batch_wrongly_fails_batch(
        tmp_path, worker, expected):
    result = kit(*raw(worker), tmp=tmp_path, options=("--json", "--timeout", "2"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert failed(result) == {"batch"}
    detail = verdicts(result)["batch"]["detail"]
    jobs = re.match(r"an INVOKE_BATCH of 4 `echo` jobs \((\d+), (\d+), (\d+), (\d+); ",
                    detail)
    assert jobs is not None, detail
    for text in expected:
        assert text.format(*jobs.groups()) in detail, detail


def test_a_choke_batch_from_a_worker_not_told_batch_fails_the_rule_being_checked(tmp_path):
    result = kit(*raw("batches_unasked"), tmp=tmp_path)
    assert result.returncode == 1
    assert failed(result) == {"concurrency"}
    detail = verdicts(result)["concurrency"]["detail"]
    assert "a CHOKE_BATCH [15, [[" in detail and "but CONFIGURE did not say batch" in detail
    assert verdicts(result)["batch"]["status"] == "skip"


def test_a_worker_that_skips_heartbeats_during_jobs_fails_that_rule_only(tmp_path):
    result = kit(*raw("skips_heartbeats"), tmp=tmp_path)
    assert result.returncode == 1
    assert failed(result) == {"heartbeats during a long job"}
    detail = verdicts(result)["heartbeats during a long job"]["detail"]
    gap = float(re.search(r"no HEARTBEAT for ([\d.]+) s", detail).group(1))
    assert gap > 1.0, detail  # the longest gap is named: about the job's 1.5 s


def test_chunks_out_of_order_fail_chunks_in_order(tmp_path):
    result = kit(*raw("chunks_out_of_order"), tmp=tmp_path)
    assert result.returncode == 1
    assert failed(result) == {"chunks in order"}
    assert "chunk 1 was b'2', expected b'1'" in verdicts(result)["chunks in order"]["detail"]


def test_wrong_error_codes_fail_errors_with_codes(tmp_path):
    result = kit(*raw("wrong_error_codes"), tmp=tmp_path)
    assert result.returncode == 1
    assert failed(result) == {"errors with codes"}
    detail = verdicts(result)["errors with codes"]["detail"]
    assert "ERROR 500" in detail and "expected ERROR 502" in detail
    assert "ERROR 400" in detail and "expected ERROR 404" in detail


def test_a_worker_that_never_handshakes_fails_with_its_status_and_output(tmp_path):
    result = kit(*raw("never_handshakes"), tmp=tmp_path)
    assert result.returncode == 1
    found = verdicts(result)
    assert "exited with status 3" in found["handshake"]["detail"]
    assert found["handshake"]["status"] == "fail"
    for name in NAMES[1:]:
        assert found[name]["status"] == ("skip" if name in OPTIONAL else "fail")
        assert found[name]["detail"].startswith("not reached"), found[name]
    assert "leaving before the handshake" in result.stderr  # the output's tail


def test_a_worker_that_ignores_terminate_fails_and_is_killed(tmp_path):
    result = kit(*raw("ignores_terminate"), tmp=tmp_path)
    assert result.returncode == 1
    assert failed(result) == {"terminate and exit"}
    detail = verdicts(result)["terminate and exit"]["detail"]
    assert "still running 5 s after TERMINATE" in detail
    pid = int(re.search(r"pid (\d+)", verdicts(result)["handshake"]["detail"]).group(1))
    assert process_gone(pid), "the kit left the worker running"


def test_a_worker_that_grants_no_piece_before_the_body_ends_fails_as_a_stall(tmp_path):
    result = kit(*raw("hoards_pieces"), tmp=tmp_path, options=("--json", "--timeout", "3"))
    assert result.returncode == 1
    assert failed(result) == {"streamed body"}
    detail = verdicts(result)["streamed body"]["detail"]
    assert "the body stalled: the kit sent 8 pieces, the worker granted 0" in detail, detail
    assert verdicts(result)["headers"]["status"] == "ok"


def test_a_worker_that_grants_pieces_as_they_arrive_fails_streamed_body(tmp_path):
    # It grants each piece as it comes and answers `sizes` only at the body's end: CREDIT for
    # pieces its handler has not read (answered) is caught as it arrives.
    result = kit(*raw("grants_on_arrival"), tmp=tmp_path)
    assert result.returncode == 1
    assert failed(result) == {"streamed body"}
    detail = verdicts(result)["streamed body"]["detail"]
    assert "(sizes): CREDIT for 2 pieces in all" in detail and "had answered 0" in detail, detail


def test_a_malformed_message_fails_the_rule_being_checked_naming_it(tmp_path):
    result = kit(*raw("sends_garbage"), tmp=tmp_path)
    assert failed(result) == {"echo"}
    detail = verdicts(result)["echo"]["detail"]
    assert "not a msgpack array" in detail and "not msgpack" in detail, detail


def test_a_worker_started_through_a_shell_is_named_and_its_group_killed(tmp_path):
    # The shell stays (the worker is its child): the pid in the handshake is not the one the
    # kit started, and killing the group at the end takes both.
    command = f"{sys.executable} {WORKERS / 'ignores_terminate.py'}; sleep 600"
    result = kit("sh", "-c", command, tmp=tmp_path, options=("--json", "--timeout", "20"))
    detail = verdicts(result)["handshake"]["detail"]
    assert "a descendant of the process started" in detail, detail
    pid = int(re.search(r"pid (\d+)", detail).group(1))
    wait_until(lambda: process_gone(pid), message="the shell's child gone")
    wait_until(lambda: not _running(str(WORKERS / "ignores_terminate.py")),
               message="every process of the group gone")


def _running(needle: str) -> list[int]:
    """Live processes whose command line holds ``needle``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and not process_gone(int(proc.name)):
            try:
                if needle.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_the_text_report_shows_each_rule_and_the_output_tail_on_failure(tmp_path):
    result = kit(*raw("never_handshakes"), tmp=tmp_path, options=())
    lines = result.stdout.splitlines()
    assert lines[0].startswith("FAIL handshake: the worker exited with status 3")
    assert lines[8] == "skip flow: not reached (the worker exited with status 3 during " \
                       "'handshake')"
    assert "  [stderr] never_handshakes: leaving before the handshake" in lines
    assert lines[-1] == "the worker does not conform: 0 ok, 9 failed, 4 skipped"


def test_ctrl_c_kills_the_worker_and_cleans_up(tmp_path):
    env = distributions.clean_environment(extra={"COCAINE_LOAD_PLUGINS": "",
                                                 "TMPDIR": str(tmp_path)})
    kit_process = subprocess.Popen(
        [str(distributions.COCAINE), "conformance", "--", *raw("ignores_terminate")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert kit_process.stdout is not None
        first = kit_process.stdout.readline()  # the handshake's line: the worker runs
        pid = int(re.search(r"pid (\d+)", first).group(1))
        assert Path(f"/proc/{pid}").exists()
        kit_process.send_signal(signal.SIGINT)
        assert kit_process.wait(timeout=30) == 130
    finally:
        kit_process.kill()
        kit_process.wait(timeout=10)
    wait_until(lambda: process_gone(pid), message="the worker gone after the kit's Ctrl-C")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "message"), [
    ((), "give the worker's command after --"),
    (("--", "no-such-program-anywhere"), "'no-such-program-anywhere' is not found on PATH"),
    (("--", "./not/here"), "'./not/here' does not exist"),
    (("--timeout", "0.1", "--", "true"), "'--timeout'"),
])
def test_usage_errors_exit_2_saying_what_is_wrong(args, message):
    result = distributions.run_cocaine("conformance", *args,
                                       env={"COCAINE_LOAD_PLUGINS": ""}, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr


def test_the_rules_are_the_ones_the_docs_name():
    assert NAMES == ["handshake", "configure", "heartbeats", "echo", "chunks in order",
                     "errors with codes", "heartbeats during a long job", "concurrency",
                     "flow", "streamed body", "headers", "batch", "terminate and exit"]
    assert os.path.isfile(PYTHON_APP)


def test_a_worker_that_floods_an_answer_fails_the_rule_and_the_kit_keeps_little(tmp_path):
    result = kit(*raw("floods_answers"), tmp=tmp_path / "tmp")
    assert "echo" in failed(result)
    assert "more than 4 MiB" in verdicts(result)["echo"]["detail"]


def test_a_process_the_worker_moved_out_of_its_group_is_killed_too(tmp_path):
    marker = tmp_path / "left-behind"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    result = distributions.run_cocaine(
        "conformance", "--json", "--", *raw("leaves_a_daemon"),
        env={"COCAINE_LOAD_PLUGINS": "", "TMPDIR": str(tmp), "LEFT_BEHIND": str(marker)},
        timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    child = int(marker.read_text())
    wait_until(lambda: process_gone(child), timeout=10, message="the worker's daemon to die")
