"""The C++ worker (workers/cpp, header-only ``cocaine/worker.hpp``) against the engine ↔ slave
protocol: each test plays the engine itself (a ROUTER on ipc, pyzmq) and runs a real worker
binary built with make: handshake, configure, ready, heartbeats from the second socket (also
while a handler sleeps), answers (one CHOKE, streams in order, binary and 1 MiB bodies), errors
with codes, flow (credit and cancel), streamed request bodies (credit granted as the handler
reads, cancel mid-body, on the reading thread and on handler threads), HEADERS
(``response::head``), concurrency on threads, malformed messages, terminate and a parent that
goes away. The last test runs examples/cpp with ``cocaine run``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from cocaine_core.testing import free_port, process_gone, wait_until

from .fake_engine import SLAVE_ID as ID
from .fake_engine import FakeEngine, StreamedJob, uploads_through_a_node

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "workers" / "cpp"
CONFORMANCE = WORKER / "build" / "conformance"
TEST_APP = WORKER / "build" / "test_app"
EXAMPLE = ROOT / "examples" / "cpp"
#: Concurrency 1 runs handlers on the thread that reads the engine; more, on handler threads.
BOTH_MODES = pytest.mark.parametrize("concurrency", [1, 4])

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("g++") is None,
                                reason="the C++ worker needs make and g++ (scripts/test "
                                       "installs them)")


@pytest.fixture(scope="session", autouse=True)
def built() -> None:
    """workers/cpp's binaries, built (make is quick when they are up to date)."""
    result = subprocess.run(["make", "-j2", "-C", str(WORKER)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"make -C workers/cpp failed:\n{result.stdout}{result.stderr}"


def start(engine: FakeEngine, binary: Path = TEST_APP, **settings: Any) -> None:
    """Start a worker binary and make it ready."""
    engine.start([str(binary)])
    engine.ready(**settings)


# -- start-up -----------------------------------------------------------------------------------


def test_handshake_configure_ready(engine: FakeEngine) -> None:
    """HANDSHAKE [1, id, pid, {flow: true, stream: true}] on the main socket, then after
    CONFIGURE the first HEARTBEAT there (ready), then heartbeats from ``<id>/hb`` every
    interval."""
    start(engine, CONFORMANCE, heartbeat_interval=0.1)
    wait_until(lambda: engine.quiet(0.1) == [] and len(engine.beats) >= 5, timeout=10,
               message="five heartbeats from the heartbeat socket")
    gaps = [b - a for a, b in zip(engine.beats, engine.beats[1:], strict=False)]
    assert min(gaps) > 0.05, gaps  # about every 0.1 s, not a flood


def test_missing_environment_is_named(tmp_path: Path) -> None:
    """Without the node's variables the worker exits 1 naming each one missing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCAINE_")}
    env["COCAINE_APP"] = "x"
    result = subprocess.run([str(CONFORMANCE)], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 1
    assert "COCAINE_ENDPOINT, COCAINE_SLAVE_ID" in result.stderr, result.stderr
    assert "COCAINE_APP" not in result.stderr.split("lacks")[1].split(":")[0]


def test_settings_missing_or_unknown_are_tolerated(engine: FakeEngine) -> None:
    """CONFIGURE with only unknown keys: defaults are used (no flow window, concurrency 1)."""
    engine.start([str(TEST_APP)])
    assert engine.recv()[0][0] == 1
    engine.send(2, {"future": [1, 2], 7: "x"})
    assert engine.recv()[0] == [3, ID]
    assert engine.call(1, "two") == ([b"a", b"\0b"], [6, 1])


def test_terminate_before_configure_exits_zero(engine: FakeEngine) -> None:
    """TERMINATE instead of CONFIGURE: the worker exits 0 without starting."""
    process = engine.start([str(CONFORMANCE)])
    assert engine.recv()[0][0] == 1
    engine.send(8, "not needed")
    assert process.wait(timeout=10) == 0


# -- answers ------------------------------------------------------------------------------------


@BOTH_MODES
def test_echo_is_binary_safe(engine: FakeEngine, concurrency: int) -> None:
    """echo answers every byte value, nothing at all and 1 MiB unchanged, as one CHOKE."""
    start(engine, CONFORMANCE, concurrency=concurrency)
    everything = bytes(range(256)) * 4
    assert engine.call(1, "echo", everything) == ([everything], [6, 1])
    assert engine.call(2, "echo", b"") == ([b""], [6, 2])
    big = os.urandom(2**20)
    chunks, end = engine.call(3, "echo", big)
    assert end == [6, 3] and chunks == [big]


@BOTH_MODES
def test_write_sends_chunks_and_return_chokes(engine: FakeEngine, concurrency: int) -> None:
    """Each res.write is a CHUNK; returning ends with a CHOKE; a handler that writes nothing
    answers a bare CHOKE; meta strings reach the handler."""
    start(engine, concurrency=concurrency)
    engine.send(4, 1, "two", {}, payload=b"")
    assert engine.recv() == ([5, 1], b"a")
    assert engine.recv() == ([5, 1], b"\0b")
    assert engine.recv() == ([6, 1], None)
    assert engine.call(2, "nothing") == ([], [6, 2])
    assert engine.call(3, "meta", meta={"method": "PUT", "n": 3}) == ([b"PUT"], [6, 3])
    assert engine.call(4, "meta", meta=None) == ([b"none"], [6, 4])


@BOTH_MODES
def test_stream_chunks_in_order(engine: FakeEngine, concurrency: int) -> None:
    """stream n answers n chunks "0".."n-1" in order, then a CHOKE."""
    start(engine, CONFORMANCE, concurrency=concurrency)
    chunks, end = engine.call(1, "stream", b"1000")
    assert end == [6, 1]
    assert chunks == [str(i).encode() for i in range(1000)]
    assert engine.call(2, "stream", b"0") == ([], [6, 2])


@BOTH_MODES
def test_errors_with_codes(engine: FakeEngine, concurrency: int) -> None:
    """A thrown exception is 502 with its what(); cocaine::error gives its code; an unknown
    event is 404; an answer already begun ends with the ERROR after its chunks."""
    start(engine, concurrency=concurrency)
    _, end = engine.call(1, "error-code", b"user 7")
    assert end[:4] == [7, 1, 409, "conflict: user 7"] and "cocaine::error 409" in end[4]
    _, end = engine.call(2, "no-such-event")
    assert end[:3] == [7, 2, 404] and "no-such-event" in end[3]
    _, end = engine.call(3, "bad-code")
    assert end[:3] == [7, 3, 502] and "42 is not an error code" in end[3]
    assert "std::invalid_argument" in end[4]
    _, end = engine.call(4, "throw-int")
    assert end[:3] == [7, 4, 502] and "not a std::exception" in end[3]
    chunks, end = engine.call(5, "write-then-fail")
    assert chunks == [b"partial"] and end[:4] == [7, 5, 502, "failed after a chunk"]
    assert engine.call(6, "end-then-throw") == ([b"done"], [6, 6])
    wait_until(lambda: "thrown after the end" in engine.stderr(), timeout=5,
               message="the late exception reported on stderr")


def test_conformance_fail_and_bad_number(engine: FakeEngine) -> None:
    """The conformance app's fail is 502 with the body; a stream count that is no number is
    a 400 saying what it wants."""
    start(engine, CONFORMANCE)
    _, end = engine.call(1, "fail", b"the body says why")
    assert end[:3] == [7, 1, 502] and "the body says why" in end[3]
    _, end = engine.call(2, "stream", b"-3")
    assert end[:3] == [7, 2, 400] and "decimal number from 0 to 100000" in end[3]


def test_error_text_is_valid_utf8_and_cut(engine: FakeEngine) -> None:
    """An error message with invalid UTF-8 and 10 KB arrives escaped and cut to 4 KiB."""
    start(engine)
    engine.send(4, 1, "huge-error", {}, payload=b"")
    fields, _ = engine.recv()  # unpacking would have refused invalid UTF-8 in a str
    assert fields[:3] == [7, 1, 502]
    message = fields[3]
    assert message.startswith("\\xff\\xfe invalid xxx")
    assert len(message.encode()) <= 4096 and "bytes cut]" in message


def test_chunk_over_max_message_fails_the_job(engine: FakeEngine) -> None:
    """A chunk larger than CONFIGURE's max_message is refused by the worker itself: 502."""
    start(engine, max_message=4096)
    _, end = engine.call(1, "big", b"5000")
    assert end[:3] == [7, 1, 502] and "smaller chunks" in end[3]
    assert engine.call(2, "big", b"100") == ([b"b" * 100], [6, 2])


def test_malformed_messages_are_reported_and_ignored(engine: FakeEngine) -> None:
    """Garbage, wrong shapes and unknown codes from the engine: each a line on stderr, never a
    crash; the worker goes on answering."""
    start(engine, CONFORMANCE)
    engine.router.send_multipart([ID.encode(), b"\xc1 not msgpack"])
    engine.router.send_multipart([ID.encode(), msgpack.packb({"a": 1})])
    engine.send(4, "not an id", "echo", {})
    engine.send(4, 1)
    engine.send(12, 5)
    engine.send(99, "future")
    assert engine.call(7, "echo", b"still here") == ([b"still here"], [6, 7])
    wait_until(lambda: engine.stderr().count("cocaine worker: ignoring") >= 6, timeout=5,
               message=f"six reports on stderr, got: {engine.stderr()}")
    assert engine.process is not None and engine.process.poll() is None


# -- heartbeats and concurrency -----------------------------------------------------------------


def test_heartbeats_keep_coming_during_a_long_job(engine: FakeEngine) -> None:
    """A 1.5 s sleep does not stop the heartbeats (their own thread and socket)."""
    start(engine, CONFORMANCE, heartbeat_interval=0.1, concurrency=1)
    engine.send(4, 1, "sleep", {}, payload=b"1500")
    sent = time.monotonic()
    assert engine.recv(timeout=15) == ([6, 1], b"slept")
    done = time.monotonic()
    during = [t for t in engine.beats if sent < t < done]
    assert len(during) >= 5, f"{len(during)} heartbeats in {done - sent:.2f} s"
    gaps = [b - a for a, b in zip([sent, *during], [*during, done], strict=False)]
    assert max(gaps) < 1.0, gaps


def test_handlers_run_at_once_up_to_concurrency(engine: FakeEngine) -> None:
    """With concurrency 4, four jobs run at the same time: a barrier for four opens."""
    start(engine, concurrency=4)
    for job in range(1, 5):
        engine.send(4, job, "barrier", {}, payload=b"4")
    answers = {}
    for _ in range(4):
        fields, payload = engine.recv(timeout=20)
        answers[fields[1]] = (fields[0], payload)
    assert answers == {job: (6, b"met") for job in range(1, 5)}


def test_four_sleeps_in_parallel(engine: FakeEngine) -> None:
    """Four 500 ms sleeps with concurrency 4 take far less than 2 s (one after another)."""
    start(engine, CONFORMANCE, concurrency=4)
    begun = time.monotonic()
    for job in range(1, 5):
        engine.send(4, job, "sleep", {}, payload=b"500")
    assert sorted(engine.recv(timeout=10)[0][1] for _ in range(4)) == [1, 2, 3, 4]
    assert time.monotonic() - begun < 1.9


def test_concurrency_one_runs_jobs_in_turn(engine: FakeEngine) -> None:
    """With concurrency 1 a second job waits for the first: a barrier for two stays shut."""
    start(engine, concurrency=1)
    engine.send(4, 1, "barrier", {}, payload=b"2")
    engine.send(4, 2, "echo", {}, payload=b"after")
    assert engine.quiet(0.5) == []  # job 2 waits for the only thread
    assert engine.recv(timeout=20) == ([6, 1], b"alone")
    assert engine.recv() == ([5, 2], b"after")



def test_concurrent_streams_each_keep_their_order(engine: FakeEngine) -> None:
    """Four streams on four threads interleave, each job's chunks in order."""
    start(engine, CONFORMANCE, concurrency=4)
    for job in range(1, 5):
        engine.send(4, job, "stream", {}, payload=b"2000")
    chunks: dict[int, list[bytes]] = {job: [] for job in range(1, 5)}
    ended: set[int] = set()
    while len(ended) < 4:
        fields, payload = engine.recv()
        assert fields[1] not in ended, fields
        if fields[0] == 5:
            assert payload is not None
            chunks[fields[1]].append(payload)
            engine.send(12, fields[1], 1)
        else:
            assert fields == [6, fields[1]], fields
            ended.add(fields[1])
    expected = [str(i).encode() for i in range(2000)]
    assert all(chunks[job] == expected for job in range(1, 5))

# -- flow ---------------------------------------------------------------------------------------


@BOTH_MODES
def test_writes_wait_for_credit(engine: FakeEngine, concurrency: int) -> None:
    """With credit 2 a stream sends two chunks, then waits (heartbeats go on) until CREDIT."""
    start(engine, CONFORMANCE, credit=2, heartbeat_interval=0.1, concurrency=concurrency)
    engine.send(4, 1, "stream", {}, payload=b"10")
    assert [engine.recv()[0] for _ in range(2)] == [[5, 1], [5, 1]]
    beats = len(engine.beats)
    assert engine.quiet(0.5) == []
    assert len(engine.beats) > beats  # still alive while it waits
    engine.send(12, 1, 3)
    assert [engine.recv()[1] for _ in range(3)] == [b"2", b"3", b"4"]
    assert engine.quiet(0.3) == []
    engine.send(12, 1, 100)
    rest = [engine.recv() for _ in range(6)]
    assert [payload for _, payload in rest[:5]] == [b"5", b"6", b"7", b"8", b"9"]
    assert rest[5] == ([6, 1], None)


@BOTH_MODES
def test_cancel_stops_a_stream_with_a_choke(engine: FakeEngine, concurrency: int) -> None:
    """CANCEL makes the next write throw cocaine::cancelled: the handler unwinds (its
    destructors run) and the job ends with a CHOKE; other jobs go on."""
    start(engine, credit=4, concurrency=concurrency)
    engine.send(4, 1, "forever", {}, payload=b"")
    assert [engine.recv()[1] for _ in range(4)] == [b"0", b"1", b"2", b"3"]
    engine.send(11, 1)
    assert engine.recv() == ([6, 1], None)
    wait_until(lambda: (engine.folder / "closed-1").exists(), timeout=5,
               message="the handler's destructors to run")
    assert engine.call(2, "echo", b"next") == ([b"next"], [6, 2])


@BOTH_MODES
def test_cancel_is_visible_to_a_handler_that_does_not_write(engine: FakeEngine,
                                                            concurrency: int) -> None:
    """response::is_cancelled() turns true after CANCEL."""
    start(engine, concurrency=concurrency)
    engine.send(4, 1, "until-cancelled", {}, payload=b"")
    assert engine.quiet(0.2) == []
    engine.send(11, 1)
    assert engine.recv() == ([6, 1], None)
    assert (engine.folder / "stopped-1").exists()



def test_a_job_cancelled_while_queued_never_runs(engine: FakeEngine) -> None:
    """CANCEL for a job still waiting for a thread: it ends with a bare CHOKE, unrun."""
    start(engine, concurrency=1)
    engine.send(4, 1, "until-cancelled", {}, payload=b"")
    engine.send(4, 2, "forever", {}, payload=b"")
    engine.send(11, 2)
    engine.send(11, 1)
    assert engine.recv() == ([6, 1], None)
    assert engine.recv() == ([6, 2], None)
    assert not (engine.folder / "closed-2").exists()

# -- streamed bodies and headers ---------------------------------------------------------------


@BOTH_MODES
def test_a_streamed_body_is_read_whole_with_credit_granted_as_it_is_read(
        engine: FakeEngine, concurrency: int) -> None:
    """A streamed echo of 30 pieces: the worker grants them back 4 at a time (or fewer before
    it waits), never more than it was sent; the answer is the whole body, in order; pieces of
    an ended job, or of a job never sent, are dropped."""
    start(engine, CONFORMANCE, concurrency=concurrency)
    pieces = [os.urandom(1 + i * 997) for i in range(30)]
    job = engine.send_body(1, "echo", pieces, first=b"first").finish()
    assert job.end == [6, 1] and b"".join(job.chunks) == b"first" + b"".join(pieces)
    assert all(1 <= n <= 4 for n in job.grants), job.grants
    assert job.granted >= job.sent - 4, (job.granted, job.sent)
    engine.send(5, 1, payload=b"late")
    engine.send(6, 1)
    engine.send(5, 999, payload=b"nobody's")
    assert engine.call(2, "echo", b"still serving") == ([b"still serving"], [6, 2])


@BOTH_MODES
def test_sizes_grants_only_what_its_handler_read(engine: FakeEngine, concurrency: int) -> None:
    """`sizes` writes a chunk per piece as it reads: with its answer's credit held (8), the
    handler stops reading, and the worker grants no piece it has not read."""
    start(engine, CONFORMANCE, credit=8, concurrency=concurrency)
    engine.send(4, 1, "sizes", {}, {"stream": True}, payload=b"a")
    for i in range(15):
        engine.send(5, 1, payload=b"b" * (i + 2))
    seen = engine.quiet(0.5)
    chunks = [f for f in seen if f[0] == 5]
    grants = sum(f[2] for f in seen if f[0] == 12)
    assert len(chunks) == 8 and grants <= 9, seen
    engine.send(12, 1, 100)
    engine.send(6, 1)
    job = StreamedJob(engine, 1, sent=16).finish()
    assert job.end == [6, 1] and job.chunks == [str(n).encode() for n in range(9, 17)]
    assert grants + job.granted <= 16


def test_plain_bodies_read_through_read_piece_and_read_all(engine: FakeEngine) -> None:
    """A plain body is one piece (none if empty) and read_all the whole body; a streamed
    request says streamed(), its body arrives piece by piece, and read_all is the rest."""
    start(engine)
    assert engine.call(1, "kinds", b"abc") == ([b"false 3 3"], [6, 1])
    assert engine.call(2, "kinds", b"") == ([b"false  0"], [6, 2])
    job = engine.send_body(3, "kinds", [b"xy", b"z"], first=b"w").finish()
    assert job.chunks == [b"true 1,2,1 0"] and job.end == [6, 3]


@BOTH_MODES
def test_cancel_mid_body_throws_cancelled_and_ends_with_a_choke(engine: FakeEngine,
                                                                concurrency: int) -> None:
    """CANCEL while the handler waits for a piece: read_all throws cocaine::cancelled, the job
    ends with a CHOKE, and the worker serves on."""
    start(engine, concurrency=concurrency)
    job = engine.send_body(1, "upload", [b"two"], first=b"one", end=False)
    while not job.grants:  # it read both and waits for more: it grants them first
        job.take(engine.recv())
    engine.send(11, 1)
    job.finish()
    assert job.end == [6, 1] and job.chunks == []
    wait_until(lambda: (engine.folder / "upload-1").exists(), timeout=5,
               message="the handler to see the cancel")
    assert engine.call(2, "upload", b"plain") == ([b"plain"], [6, 2])


@BOTH_MODES
def test_head_sends_headers_before_the_answer(engine: FakeEngine, concurrency: int) -> None:
    """res.head(status, headers) sends HEADERS before the first chunk."""
    start(engine, concurrency=concurrency)
    engine.send(4, 1, "head", {}, payload=b"")
    assert engine.recv() == ([13, 1, {"status": 202, "headers": [["A", "1"], ["B", "2"]]}],
                             None)
    assert engine.answer(1) == ([b"x"], [6, 1])


def test_bad_headers_and_a_late_head_fail_with_502(engine: FakeEngine) -> None:
    """CR/LF in a value, 65 headers, a bad name, head twice, status 42, or head after a write:
    ERROR 502 saying what is wrong, and no HEADERS for the bad ones."""
    start(engine)
    for job_id, (kind, words) in enumerate([("crlf", "line break"), ("many", "at most 64"),
                                            ("name", "is not valid"),
                                            ("twice", "were sent already"),
                                            ("status", "not an HTTP status")], start=1):
        engine.send(4, job_id, "bad-head", {}, payload=kind.encode())
        fields, _ = engine.recv()
        if kind == "twice":  # the first head went out
            assert fields[0] == 13, fields
            fields, _ = engine.recv()
        assert fields[:3] == [7, job_id, 502] and words in fields[3], fields
    chunks, end = engine.call(9, "late-head")
    assert chunks == [b"a"] and end[2] == 502 and "has started" in end[3]


def test_the_conformance_app_answers_status_with_headers(engine: FakeEngine) -> None:
    """The conformance app's `status 201`: HEADERS then `status 201` on the CHOKE."""
    start(engine, CONFORMANCE)
    engine.send(4, 1, "status", {}, payload=b"201")
    assert engine.recv() == ([13, 1, {"status": 201, "headers": [["X-Conformance", "yes"]]}],
                             None)
    assert engine.recv() == ([6, 1], b"status 201")


def test_streamed_requests_reach_the_worker_through_a_node(tmp_path: Path) -> None:
    """Client.open through `cocaine run`: an 8 MiB body streams to the conformance app's echo
    and comes back whole; `sizes` sees the client's pieces as written."""
    uploads_through_a_node(tmp_path, [str(CONFORMANCE)])


# -- the end ------------------------------------------------------------------------------------


@BOTH_MODES
def test_terminate_exits_zero_after_running_jobs(engine: FakeEngine, concurrency: int) -> None:
    """TERMINATE while a job runs: the job is answered, then the worker exits 0."""
    start(engine, CONFORMANCE, concurrency=concurrency)
    engine.send(4, 1, "sleep", {}, payload=b"300")
    engine.send(8, "shutdown")
    assert engine.recv() == ([6, 1], b"slept")
    assert engine.process is not None and engine.process.wait(timeout=10) == 0


def test_terminate_when_idle_exits_zero(engine: FakeEngine) -> None:
    """TERMINATE with nothing running: exit 0 at once."""
    start(engine, CONFORMANCE)
    engine.send(8, "shutdown")
    assert engine.process is not None and engine.process.wait(timeout=10) == 0



def test_terminate_gives_running_jobs_a_grace_then_exits(engine: FakeEngine) -> None:
    """A job that outlasts the 5 s grace after TERMINATE does not keep the worker alive
    (handler threads: with concurrency 1 the reading thread runs the handler, and sees the
    TERMINATE once the handler returns or writes; the engine kills it after its own
    termination-timeout)."""
    start(engine, CONFORMANCE, concurrency=2)
    engine.send(4, 1, "sleep", {}, payload=b"60000")
    engine.send(8, "shutdown")
    begun = time.monotonic()
    assert engine.process is not None and engine.process.wait(timeout=30) == 0
    assert 4.5 < time.monotonic() - begun < 20
    assert "job(s) still running 5 s after TERMINATE" in engine.stderr()

def test_exits_when_its_parent_dies(engine: FakeEngine) -> None:
    """A worker whose parent (the node) is killed exits by itself."""
    launcher = ("import subprocess, sys, time\n"
                "child = subprocess.Popen(sys.argv[1:])\n"
                "print(child.pid, flush=True)\n"
                "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", launcher, str(CONFORMANCE)],
                              env=engine.environment(), stdout=subprocess.PIPE)
    worker_pid = 0
    try:
        assert parent.stdout is not None
        worker_pid = int(parent.stdout.readline())
        engine.ready(handshake_pid=worker_pid, concurrency=1, heartbeat_interval=0.1)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        wait_until(lambda: process_gone(worker_pid), timeout=10,
                   message="the worker to exit after its parent died")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        if worker_pid and not process_gone(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)


def test_make_is_quick_when_up_to_date() -> None:
    """The session's build left nothing to do: make -q says so."""
    assert subprocess.run(["make", "-q", "-C", str(WORKER)], timeout=60).returncode == 0


# -- the example, under a real node -------------------------------------------------------------


def _running(binary: Path) -> list[int]:
    """The pids of processes running ``binary``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "exe") == str(binary):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_example_answers_cocaine_call(tmp_path: Path) -> None:
    """make -C examples/cpp, cocaine run examples/cpp/manifest.json: cocaine call cpp echo and
    count answer (README's steps); Ctrl-C stops it and its slaves."""
    build = subprocess.run(["make", "-C", str(EXAMPLE)], capture_output=True, text=True,
                           timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    binary = (EXAMPLE / "build" / "app").resolve()
    cocaine = str(Path(sys.executable).with_name("cocaine"))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        node = subprocess.Popen([cocaine, "run", str(EXAMPLE / "manifest.json"), "--listen",
                                 endpoint, "--log-format", "plain"], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "serving app 'cpp'" in log.read_text() or node.poll() is not None,
                   timeout=60, message="cocaine run to serve the app")
        assert node.poll() is None, log.read_text()

        def call(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([cocaine, "call", "cpp", *args, "--node", endpoint],
                                  capture_output=True, text=True, timeout=60)

        echo = call("echo", "world")
        assert (echo.returncode, echo.stdout) == (0, "world"), echo.stderr + log.read_text()
        count = call("count", "5")
        assert (count.returncode, count.stdout) == (0, "1\n2\n3\n4\n5\n"), (
            count.stderr + log.read_text())
        bad = call("count", "many")
        assert bad.returncode != 0 and "error 400" in bad.stdout + bad.stderr, (
            bad.stdout + bad.stderr + log.read_text())
        assert _running(binary), f"no slave runs {binary}: {log.read_text()}"
        node.send_signal(signal.SIGINT)
        assert node.wait(timeout=60) == 0, log.read_text()
        wait_until(lambda: not _running(binary), timeout=15,
                   message="the example's slaves to exit with the node")
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(timeout=30)
        for pid in _running(binary):
            os.kill(pid, signal.SIGKILL)
