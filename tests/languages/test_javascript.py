"""The JavaScript worker (workers/javascript, npm ``cocaine-worker``) against the engine ↔ slave
protocol: each test plays the engine itself (a ROUTER on ipc, pyzmq) and runs the worker as a
real ``node`` process: handshake, configure, ready, heartbeats from the second socket (also
while a handler awaits), answers (one CHOKE, streams in order, errors with codes), flow (credit
and cancel), streamed request bodies (credit granted as the handler reads, cancel mid-body),
HEADERS (``Response``), concurrency, bad messages, terminate and a parent that goes away.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cocaine_core.client import Client
from cocaine_core.errors import ServiceError
from cocaine_core.testing import free_port, process_gone, wait_until

from .fake_engine import SLAVE_ID as ID
from .fake_engine import FakeEngine, StreamedJob, uploads_through_a_node

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "workers" / "javascript"
CONFORMANCE = WORKER / "conformance.js"

#: A test app with the handlers the conformance app lacks; MARKS is a folder it writes to.
APP = """
const fs = require('node:fs');
const path = require('node:path');
const { Worker, Response } = require(WORKER_PATH);
const marks = process.env.MARKS;
const gates = [];
const worker = new Worker();
worker.on('sync-gen', function* (req) {
  yield 'a'; yield Buffer.from('b'); yield null; yield new Uint8Array([99]);
});
worker.on('number', () => 42);
worker.on('nothing', () => undefined);
worker.on('throw-string', () => { throw 'plain string'; });
worker.on('big', () => Buffer.alloc(5000, 120));
worker.on('forever', async function* (req) {
  let i = 0;
  try { for (;;) yield String(i++); }
  finally { fs.writeFileSync(path.join(marks, `closed-${req.id}`), String(i)); }
});
worker.on('gate', (req) => new Promise((resolve) => gates.push(() => resolve('opened'))));
worker.on('release', () => {
  const n = gates.length; gates.splice(0).forEach((open) => open()); return String(n);
});
worker.on('upload', async (req) => {
  try {
    return await req.read();
  } catch (err) {
    fs.writeFileSync(path.join(marks, `upload-${req.id}`), err.name);
    throw err;
  }
});
worker.on('body', (req) => req.body);
worker.on('kinds', async (req) => {
  const pieces = [];
  for await (const piece of req.stream) pieces.push(piece.length);
  return `${req.streamed} ${pieces.join(',')} ${(await req.read()).length}`;
});
worker.on('head-gen', function* () {
  yield new Response(null, { status: 202, headers: [['A', '1'], ['B', '2']] });
  yield 'x';
});
worker.on('bad-head', (req) => {
  const kind = req.body.toString();
  if (kind === 'crlf') return new Response('no', { headers: { 'X-Bad': 'a\\r\\nInjected: 1' } });
  const many = Array.from({ length: 65 }, (_, i) => [`h${i}`, 'v']);
  if (kind === 'many') return new Response('no', { headers: many });
  if (kind === 'name') return new Response('no', { headers: { 'bad name': 'v' } });
  return new Response('no', { status: 42 });
});
worker.on('late-head', function* () { yield 'a'; yield new Response(null, { status: 201 }); });
worker.on('block', () => {
  const end = Date.now() + 1500; while (Date.now() < end); return 'done';
});
worker.run();
"""


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    """The worker's npm packages (zeromq, @msgpack/msgpack), installed if missing or stale."""
    subprocess.run(["sh", str(WORKER / "install.sh")], check=True, timeout=600)


def start_app(engine: FakeEngine, **settings: Any) -> None:
    """Start the test app (APP) and make it ready."""
    script = engine.folder / "app.js"
    script.write_text(APP.replace("WORKER_PATH", repr(str(WORKER / "lib"))))
    (engine.folder / "marks").mkdir()
    engine.start(["node", str(script)], MARKS=str(engine.folder / "marks"))
    engine.ready(**settings)


def start_conformance(engine: FakeEngine, **settings: Any) -> None:
    """Start workers/javascript/conformance.js and make it ready."""
    engine.start(["node", str(CONFORMANCE)])
    engine.ready(**settings)


def test_handshake_configure_ready_and_heartbeats(engine: FakeEngine) -> None:
    """HANDSHAKE [1, id, pid, {flow: true}]; after CONFIGURE the first HEARTBEAT (ready) on the
    main socket, then one every heartbeat_interval from the `<id>/hb` socket."""
    process = engine.start(["node", str(CONFORMANCE)])
    fields, payload = engine.recv()
    assert fields == [1, ID, process.pid, {"flow": True, "stream": True}] and payload is None
    assert not engine.beats, "no heartbeat before CONFIGURE"
    engine.send(2, {"app": "test", "concurrency": 1, "heartbeat_interval": 0.1, "credit": 8,
                    "max_message": 2**28})
    assert engine.recv()[0] == [3, ID]
    started = time.monotonic()
    while len(engine.beats) < 6:
        with pytest.raises(AssertionError):
            engine.recv(timeout=0.2)  # counts the heartbeats meanwhile
    assert time.monotonic() - started < 3, "heartbeats far slower than heartbeat_interval"


def test_echo_is_one_choke_and_binary_safe(engine: FakeEngine) -> None:
    """A one-chunk answer is one CHOKE carrying the chunk; bytes come back unchanged, from
    0 bytes to several MiB."""
    start_conformance(engine)
    for job_id, body in enumerate([b"hello", b"", bytes(range(256)) * 4, os.urandom(3 * 2**20)],
                                  start=1):
        engine.send(4, job_id, "echo", {}, payload=body)
        fields, payload = engine.recv()
        assert fields == [6, job_id]
        assert payload == body


def test_stream_chunks_in_order_within_credit(engine: FakeEngine) -> None:
    """A generator's yields are CHUNKs in order; with its credit (8) used up it waits for
    CREDIT (heartbeats go on), then goes on; the stream ends with a CHOKE."""
    start_conformance(engine, credit=8)
    engine.send(4, 7, "stream", {}, payload=b"20")
    firsts = [engine.recv() for _ in range(8)]
    assert [(f[0], f[1], p) for f, p in firsts] == [(5, 7, str(i).encode()) for i in range(8)]
    beats = len(engine.beats)
    while len(engine.beats) < beats + 2:  # the worker is alive and beating, and sends no chunk
        with pytest.raises(AssertionError):
            engine.recv(timeout=0.1)
    engine.send(12, 7, 4)
    more = [engine.recv()[1] for _ in range(4)]
    assert more == [b"8", b"9", b"10", b"11"]
    engine.send(12, 7, 100)
    chunks, end = engine.answer(7)
    assert chunks == [str(i).encode() for i in range(12, 20)] and end == [6, 7]
    chunks, end = engine.call(8, "stream", b"0")
    assert chunks == [] and end == [6, 8]


def test_errors_with_codes(engine: FakeEngine) -> None:
    """A handler that throws: 502 with its message and stack; an event without a handler: 404."""
    start_conformance(engine)
    chunks, end = engine.call(1, "fail", "the body ✓".encode())
    assert chunks == [] and end[:3] == [7, 1, 502]
    assert "the body ✓" in end[3] and "conformance.js" in end[4]
    chunks, end = engine.call(2, "nope")
    assert end == [7, 2, 404, "no handler for event 'nope'", ""]
    chunks, end = engine.call(3, "fail", b"x" * 10_000)
    assert end[2] == 502 and "bytes cut]" in end[3] and len(end[3].encode()) <= 4096
    chunks, end = engine.call(4, "echo", b"still serving")
    assert end == [6, 4] and chunks == [b"still serving"]


def test_a_streamed_body_is_read_whole_with_credit_granted_as_it_is_read(engine: FakeEngine
                                                                         ) -> None:
    """A streamed echo of 30 pieces: the worker grants them back 4 at a time (or fewer before
    it waits), never more than it was sent, so the window of 8 keeps moving; the answer is
    the whole body, in order."""
    start_conformance(engine)
    pieces = [os.urandom(1 + i * 997) for i in range(30)]
    job = engine.send_body(1, "echo", pieces, first=b"first").finish()
    assert job.end == [6, 1] and b"".join(job.chunks) == b"first" + b"".join(pieces)
    assert all(1 <= n <= 4 for n in job.grants), job.grants
    assert job.granted >= job.sent - 4, (job.granted, job.sent)
    # the pieces of a job that has ended, and of one never sent, are dropped
    engine.send(5, 1, payload=b"late")
    engine.send(6, 1)
    engine.send(5, 999, payload=b"nobody's")
    assert engine.call(2, "echo", b"still serving") == ([b"still serving"], [6, 2])


def test_sizes_grants_only_what_its_handler_read(engine: FakeEngine) -> None:
    """`sizes` answers a chunk per piece as it reads: with its answer's credit held (8), the
    handler stops reading, and the worker grants no piece it has not read."""
    start_conformance(engine, credit=8)
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


def test_plain_bodies_read_through_stream_and_read(engine: FakeEngine) -> None:
    """A plain request's body is one piece of req.stream (none if empty), and req.read() is
    the body; a streamed one says req.streamed."""
    start_app(engine)
    assert engine.call(1, "kinds", b"abc") == ([b"false 3 3"], [6, 1])
    assert engine.call(2, "kinds", b"") == ([b"false  0"], [6, 2])
    job = engine.send_body(3, "kinds", [b"xy", b"z"], first=b"w").finish()
    assert job.chunks == [b"true 1,2,1 0"] and job.end == [6, 3]


def test_req_body_of_a_streamed_request_says_how_to_read_it(engine: FakeEngine) -> None:
    """req.body of a streamed request throws: ERROR 502 naming req.read() and req.stream."""
    start_app(engine)
    job = engine.send_body(1, "body", [b"x"]).finish()
    assert job.end is not None and job.end[2] == 502
    assert "streams in pieces" in job.end[3] and "req.read()" in job.end[3]


def test_cancel_mid_body_throws_cancelled_and_ends_with_a_choke(engine: FakeEngine) -> None:
    """CANCEL while the handler waits for a piece: the job ends with a CHOKE, the read throws
    Cancelled in the handler, and the worker serves on."""
    start_app(engine)
    job = engine.send_body(1, "upload", [b"two"], first=b"one", end=False)
    while not job.grants:  # it read both and waits for more: it grants them first
        job.take(engine.recv())
    engine.send(11, 1)
    job.finish()
    assert job.end == [6, 1] and job.chunks == []
    mark = engine.folder / "marks" / "upload-1"
    wait_until(mark.exists, timeout=5, message="the handler to see the cancel")
    assert mark.read_text() == "Cancelled"
    assert engine.call(2, "upload", b"plain") == ([b"plain"], [6, 2])


def test_a_response_sends_headers_before_its_answer(engine: FakeEngine) -> None:
    """A returned Response: HEADERS then its body on the CHOKE; a generator's first yield may
    be a Response without body (HEADERS, then the chunks)."""
    start_conformance(engine)
    engine.send(4, 1, "status", {}, payload=b"201")
    assert engine.recv() == ([13, 1, {"status": 201, "headers": [["X-Conformance", "yes"]]}],
                             None)
    assert engine.recv() == ([6, 1], b"status 201")


def test_headers_from_a_generator_and_bad_headers_fail_with_502(engine: FakeEngine) -> None:
    """A generator yields the head first; CR/LF in a value, 65 headers, a bad name, status 42,
    or a Response after the first chunk: ERROR 502 saying what is wrong, no HEADERS sent."""
    start_app(engine)
    engine.send(4, 1, "head-gen", {}, payload=b"")
    assert engine.recv() == ([13, 1, {"status": 202, "headers": [["A", "1"], ["B", "2"]]}],
                             None)
    assert engine.answer(1) == ([b"x"], [6, 1])
    for job_id, (kind, words) in enumerate([("crlf", "line break"), ("many", "at most 64"),
                                            ("name", "is not valid"),
                                            ("status", "not an HTTP status")], start=2):
        chunks, end = engine.call(job_id, "bad-head", kind.encode())
        assert end[:3] == [7, job_id, 502] and words in end[3], end
    chunks, end = engine.call(9, "late-head")
    assert chunks == [b"a"] and end[2] == 502 and "after the answer had started" in end[3]


def test_streamed_requests_reach_the_worker_through_a_node(tmp_path: Path) -> None:
    """Client.open through `cocaine run`: an 8 MiB body streams to conformance.js's echo and
    comes back whole; `sizes` sees the client's pieces as written."""
    uploads_through_a_node(tmp_path, ["node", str(CONFORMANCE)])


def test_handler_kinds_and_bad_answers(engine: FakeEngine) -> None:
    """Sync generators stream too (null yields skipped); undefined answers nothing; a number,
    a thrown string and a chunk over max_message fail the job with 502 saying why."""
    start_app(engine, max_message=4096)
    assert engine.call(1, "sync-gen") == ([b"a", b"b", b"c"], [6, 1])
    assert engine.call(2, "nothing") == ([], [6, 2])
    _, end = engine.call(3, "number")
    assert end[2] == 502 and "answered a number" in end[3]
    _, end = engine.call(4, "throw-string")
    assert end[2] == 502 and "plain string" in end[3]
    _, end = engine.call(5, "big")
    assert end[2] == 502 and "5000 bytes" in end[3] and "smaller chunks" in end[3]


def test_cancel_closes_the_generator(engine: FakeEngine) -> None:
    """CANCEL of a stream waiting for credit: the generator's finally runs, the job ends with
    a CHOKE, and the worker serves on."""
    start_app(engine, credit=4)
    engine.send(4, 1, "forever", {}, payload=b"")
    assert [engine.recv()[0][0] for _ in range(4)] == [5, 5, 5, 5]
    engine.send(11, 1)
    assert engine.recv()[0] == [6, 1]
    closed = engine.folder / "marks" / "closed-1"
    wait_until(closed.exists, timeout=5, message="the generator's finally block")
    # 4 sent; the 5th made and held for credit, unless the CANCEL came first; none more
    assert closed.read_text() in ("4", "5")
    assert engine.call(2, "sync-gen")[1] == [6, 2]


def test_concurrency_interleaves_jobs_up_to_the_limit(engine: FakeEngine) -> None:
    """Up to `concurrency` jobs run at once on the event loop; one more waits for a slot
    (here: until a cancelled job frees one)."""
    start_app(engine, concurrency=2)
    engine.send(4, 1, "gate", {}, payload=b"")
    engine.send(4, 2, "gate", {}, payload=b"")
    engine.send(4, 3, "release", {}, payload=b"")  # a third job: waits for a slot
    beats = len(engine.beats)
    while len(engine.beats) < beats + 3:
        with pytest.raises(AssertionError):
            engine.recv(timeout=0.1)
    engine.send(11, 1)  # cancel gate 1: its slot goes to release, which opens gate 2
    answers: dict[int, tuple[list[Any], bytes | None]] = {}
    while len(answers) < 3:
        fields, payload = engine.recv()
        answers[fields[1]] = (fields, payload)
    assert answers[3] == ([6, 3], b"2")
    assert answers[2] == ([6, 2], b"opened")
    assert answers[1][0] == [6, 1]  # the cancelled job: a CHOKE, its answer dropped


def test_heartbeats_go_on_while_a_handler_awaits(engine: FakeEngine) -> None:
    """`sleep` awaits a timer: heartbeats keep coming and other jobs are answered meanwhile."""
    start_conformance(engine, heartbeat_interval=0.1)
    engine.send(4, 1, "sleep", {}, payload=b"1500")
    engine.send(4, 2, "echo", {}, payload=b"meanwhile")
    assert engine.recv() == ([6, 2], b"meanwhile")
    beats = len(engine.beats)
    assert engine.recv() == ([6, 1], b"slept")
    assert len(engine.beats) - beats >= 5


def test_a_blocking_handler_stops_heartbeats(engine: FakeEngine) -> None:
    """What the docs warn of: a handler that blocks the event loop stops the heartbeats."""
    start_app(engine, heartbeat_interval=0.05)
    engine.send(4, 1, "block", {}, payload=b"")
    started = time.monotonic()
    assert engine.recv() == ([6, 1], b"done")
    beats = len(engine.beats)
    while len(engine.beats) < beats + 2:  # beating again after the block
        with pytest.raises(AssertionError):
            engine.recv(timeout=0.1)
    times = [started, *(t for t in engine.beats if t > started)]
    longest = max(later - earlier for earlier, later in itertools.pairwise(times))
    assert longest > 1.0, f"heartbeats every {longest:.2f} s at most while the loop was blocked"


def test_bad_messages_are_logged_and_ignored(engine: FakeEngine) -> None:
    """A header that is not msgpack, a code nobody knows, an INVOKE without an id, a CREDIT
    for no job: each is one line on stderr, and the worker serves on."""
    start_conformance(engine)
    engine.router.send_multipart([ID.encode(), b"\xc1garbage"])
    engine.send(99, "what")
    engine.send(4, "one", "echo", {}, payload=b"x")
    engine.send(4, 5, "echo", "meta", payload=b"x")
    engine.send(12, 12345, 4)
    engine.send(11, 12345)
    assert engine.call(1, "echo", b"fine") == ([b"fine"], [6, 1])
    wait_until(lambda: engine.stderr().count("cocaine-worker: ignored") >= 4, timeout=5,
               message="a stderr line for each bad message")
    assert engine.process is not None and engine.process.poll() is None


def test_bad_settings_fall_back_to_defaults(engine: FakeEngine) -> None:
    """CONFIGURE values out of range or of the wrong type: a stderr line each naming the
    setting, its default used (heartbeat every 1 s), and the worker still serves."""
    engine.start(["node", str(CONFORMANCE)])
    assert engine.recv()[0][0] == 1
    engine.send(2, {"concurrency": "four", "heartbeat_interval": 0, "credit": 1.5})
    assert engine.recv()[0] == [3, ID]
    assert engine.call(1, "stream", b"3") == ([b"0", b"1", b"2"], [6, 1])
    wait_until(lambda: engine.stderr().count("using ") >= 3, timeout=5,
               message="a stderr line for each bad setting")
    text = engine.stderr()
    assert "concurrency" in text and "heartbeat_interval" in text and "credit" in text
    engine.send(2, {"concurrency": 2})
    wait_until(lambda: "second CONFIGURE" in engine.stderr(), timeout=5,
               message="the second CONFIGURE to be ignored")
    first = len(engine.beats)
    started = time.monotonic()
    while len(engine.beats) < first + 2:
        with pytest.raises(AssertionError):
            engine.recv(timeout=0.2)
    assert time.monotonic() - started > 0.9, "beats every 1 s (the default), not 0"


def test_terminate_exits_0(engine: FakeEngine) -> None:
    """TERMINATE: the worker exits with status 0 (also before CONFIGURE)."""
    start_conformance(engine)
    assert engine.call(1, "echo", b"x")[1] == [6, 1]
    engine.send(8, "the app stops")
    assert engine.process is not None and engine.process.wait(timeout=10) == 0


def test_terminate_lets_a_job_in_flight_finish(engine: FakeEngine) -> None:
    """TERMINATE with a job in flight: the job is still answered, then the worker exits 0."""
    start_conformance(engine)
    engine.send(4, 1, "sleep", {}, payload=b"300")
    engine.send(8, "the pool shrinks")
    assert engine.recv() == ([6, 1], b"slept")
    assert engine.process is not None and engine.process.wait(timeout=10) == 0


def test_terminate_before_configure_exits_0(engine: FakeEngine) -> None:
    """A spare slave told to go before it was configured exits 0 too."""
    process = engine.start(["node", str(CONFORMANCE)])
    assert engine.recv()[0][0] == 1
    engine.send(8, "not needed")
    assert process.wait(timeout=10) == 0


def test_the_worker_exits_when_its_parent_goes(engine: FakeEngine) -> None:
    """A worker whose parent dies (a killed node) exits by itself within a second or so."""
    launcher = ("import subprocess, sys\n"
                "child = subprocess.Popen(sys.argv[1:])\n"
                "print(child.pid, flush=True)\n"
                "sys.stdin.read()\n")
    parent = engine.start([sys.executable, "-c", launcher, "node", str(CONFORMANCE)],
                          stdin=subprocess.PIPE)  # the launcher lives until killed
    worker_pid = int(wait_until(lambda: engine.stdout().strip(),
                                message="the launcher to print the worker's pid"))
    try:
        engine.ready(handshake_pid=worker_pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        wait_until(lambda: process_gone(worker_pid), timeout=10,
                   message="the orphaned worker to exit")
    finally:
        if parent.stdin is not None:
            parent.stdin.close()
        if not process_gone(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)
    assert "parent process is gone" in engine.stderr()


def test_missing_variables_are_named(tmp_path: Path) -> None:
    """Started by hand without the variables: a clear error naming the one missing, status 1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCAINE_")}
    done = subprocess.run(["node", str(CONFORMANCE)], env=env, capture_output=True, text=True,
                          timeout=30, cwd=tmp_path)
    assert done.returncode == 1
    assert "COCAINE_ENDPOINT is not set" in done.stderr and "exec" in done.stderr


# -- the example app, served by a node ------------------------------------------------------

EXAMPLE = ROOT / "examples" / "javascript" / "manifest.json"


def test_the_example_answers_under_cocaine_run(tmp_path: Path) -> None:
    """`cocaine run examples/javascript/manifest.json` serves the app `javascript` (named after
    its folder): echo answers the body, count streams 1..N a line a chunk."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cocaine = str(Path(sys.executable).with_name("cocaine"))
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([cocaine, "run", str(EXAMPLE), "--listen", endpoint,
                                    "--log-format", "plain"], stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        def answers() -> bytes | None:
            assert process.poll() is None, f"cocaine run exited:\n{log.read_text()}"
            with Client(endpoint, wait=2) as client:
                try:
                    return client.call("javascript", "echo", b"hello")
                except (ServiceError, TimeoutError):
                    return None

        assert wait_until(answers, timeout=60, message="the example to answer") == b"hello"
        with Client(endpoint, wait=30) as client:
            assert list(client.stream("javascript", "count", b"5")) == [
                f"{i}\n".encode() for i in range(1, 6)]
            assert client.call("javascript", "count") == b"1\n2\n3\n"
            blob = os.urandom(2**20)
            assert client.call("javascript", "echo", blob) == blob
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_example_deploys_to_a_node(node_process: Any) -> None:
    """`cocaine app deploy` packs the example's folder, its node_modules included (the worker
    copied in, not linked out of it), and the node runs it."""
    node = node_process()
    try:
        node.cli("app", "deploy", str(EXAMPLE))
        with node.client(wait=30) as client:
            assert client.call("javascript", "echo", b"deployed") == b"deployed"
            assert client.call("javascript", "count", b"2") == b"1\n2\n"
    except (AssertionError, ServiceError) as exc:
        raise AssertionError(f"{exc}\nthe node's log:\n{node.log.read_text()[-6000:]}") from exc
