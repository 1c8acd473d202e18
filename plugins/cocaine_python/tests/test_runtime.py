"""``serve(app, channel)``: the python slave, driven by a test that plays the engine.

Each test binds a ZeroMQ ROUTER on an ``ipc://`` endpoint in its temporary folder, starts a
process that loads an app and runs ``serve`` with a ``SlaveChannel`` connected to it, and speaks
the engine ↔ slave protocol (docs/protocol.md) frame by frame: configure, invoke, read the
chunks, choke or error, terminate. A process of its own, because ``serve`` takes over the
process's stdout and stderr, as it does in a real slave.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from cocaine_core import protocol
from cocaine_core.protocol import Code, Status

#: Every wait of these tests is bounded by this many seconds (a busy machine is slow, not
#: stuck); a test fails with a message, never hangs.
WAIT = 30.0

#: The slave process: load the app as a template would, then serve as a forked slave would.
SLAVE = """
import json, sys
from cocaine_core import slave_batch
from cocaine_core.slave_channel import SlaveChannel
from cocaine_python.runtime import load, serve

config = json.loads(sys.argv[1])
slave_batch.HOLD = config.get("hold", slave_batch.HOLD)  # a busy machine: never time-bound
app = load(config)
sys.exit(serve(app, SlaveChannel(config["endpoint"], config["slave_id"])))
"""

APP = '''
import asyncio
import os
import time


def echo(request):
    return request.data


def text(request):
    return "naïve " + request.text()


def nothing(request):
    return None


def packed(request):
    return {"event": request.event, "meta": request.meta, "list": [1, 2.5, None, True]}


def unpackable(request):
    return object()


def count(request):
    for i in range(3):
        yield f"chunk {i}"
    yield None  # no chunk
    yield b"last"


async def later(request):
    await asyncio.sleep(0)
    return b"async " + request.data


async def stream(request):
    for i in range(3):
        await asyncio.sleep(0)
        yield str(i)


def boom(request):
    raise ValueError("the handler broke: " + request.text())


async def async_boom(request):
    await asyncio.sleep(0)
    raise KeyError("missing")


def from_json(request):
    return {"sum": sum(request.json()["numbers"])}


def from_msgpack(request):
    value = request.unpack()
    return value["name"].upper()


def noisy(request):
    print("printed by the handler")
    print("to stderr", file=__import__("sys").stderr)
    return b"the answer"


STARTED = 0


async def together(request):
    """Waits (bounded) until two jobs have started: 'together' only if they run at once."""
    global STARTED
    STARTED += 1
    deadline = time.monotonic() + 25
    while STARTED < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return "together" if STARTED >= 2 else "alone"


async def held(request):
    """Waits (bounded) until the file named by the body exists."""
    deadline = time.monotonic() + 30
    while not os.path.exists(request.text()) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return b"released"
'''

EVENTS = ["echo", "text", "nothing", "packed", "unpackable", "count", "later", "stream",
          "boom", "async_boom", "from_json", "from_msgpack", "noisy", "together", "held"]


@dataclass
class Answer:
    """How a job ended: its chunks, then ``done`` (choke) or ``error`` (code, message, tb)."""

    chunks: list[bytes] = field(default_factory=list)
    done: bool = False
    error: tuple[int, str, str] | None = None


class FakeEngine:
    """The engine's side of one slave: a ROUTER, the slave process, and what it sent."""

    def __init__(self, folder: Path, concurrency: int, batch: bool = False) -> None:
        self.folder = folder
        self.concurrency = concurrency
        self.batch = batch
        #: The number of answers in each CHOKE or CHOKE_BATCH received, in order.
        self.chokes: list[int] = []
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"ipc://{folder / 'engine.sock'}"
        self.socket.bind(self.endpoint)
        self.slave_id = "slave-1"
        self.identity = self.slave_id.encode()
        self.process: subprocess.Popen[bytes] | None = None
        self.logs: list[tuple[str, str]] = []
        self.answers: dict[int, Answer] = {}
        self.heartbeats = 0
        self.handshake: dict[str, Any] = {}
        self._next_job = 1

    # -- life -------------------------------------------------------------------------------

    def start(self, code: str = APP) -> None:
        """Start the slave; handshake, configure, wait until ready."""
        (self.folder / "app.py").write_text(textwrap.dedent(code))
        config = {"args": {"source": "app.py"}, "root": str(self.folder), "events": EVENTS,
                  "endpoint": self.endpoint, "slave_id": self.slave_id, "hold": 60.0}
        self.process = subprocess.Popen([sys.executable, "-c", SLAVE, json.dumps(config)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        identity, fields, _ = self.receive()
        assert identity == self.identity and fields[0] == Code.HANDSHAKE, fields
        self.handshake = {"slave_id": fields[1], "pid": fields[2]}
        self.features = fields[3]
        settings = {"app": "test", "concurrency": self.concurrency, "heartbeat_interval": 0.1}
        self.send(Code.CONFIGURE, {**settings, "batch": True} if self.batch else settings)
        identity, fields, _ = self.receive()
        assert identity == self.identity and fields == [Code.HEARTBEAT, self.slave_id], fields

    def terminate(self) -> int:
        """Send TERMINATE; wait for the process to exit; its exit code."""
        self.send(Code.TERMINATE, "test over")
        return self.wait_exit()

    def wait_exit(self) -> int:
        """Wait (bounded) for the slave to exit, reading what it still sends meanwhile."""
        assert self.process is not None
        deadline = time.monotonic() + WAIT
        while self.process.poll() is None:
            assert time.monotonic() < deadline, "the slave did not exit"
            self.pump(0.05)
        self.pump(0)
        return self.process.returncode

    def close(self) -> None:
        """Kill the slave if it still runs; close the socket."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.communicate(timeout=WAIT)
        self.socket.close()
        self.context.term()

    def output(self) -> tuple[bytes, bytes]:
        """What the (exited) slave wrote to its real stdout and stderr."""
        assert self.process is not None and self.process.poll() is not None
        out, err = self.process.communicate(timeout=WAIT)
        return out, err

    # -- messages ---------------------------------------------------------------------------

    def send(self, *fields: Any, body: bytes | None = None) -> None:
        """Send a message to the slave's main socket."""
        frames = [self.identity, protocol.pack(*fields)]
        if body is not None:
            frames.append(body)
        self.socket.send_multipart(frames)

    def receive(self, timeout: float = WAIT) -> tuple[bytes, list[Any], bytes | None]:
        """The next message from the slave, or fail after ``timeout``."""
        if not self.socket.poll(int(timeout * 1000)):
            assert self.process is not None
            raise AssertionError(f"no message from the slave within {timeout:g} s (its exit "
                                 f"code: {self.process.poll()})")
        identity, header, *rest = self.socket.recv_multipart()
        fields = protocol.unpack(header)
        if fields[0] == Code.CHOKE_BATCH:  # several CHOKEs: filed one by one
            self.chokes.append(len(fields[1]))
            lasts = iter(rest)
            for job_id, with_last in fields[1]:
                self.take([Code.CHOKE, job_id, "batched"], next(lasts) if with_last else None)
            return identity, [Code.HEARTBEAT, self.slave_id], None  # filed: nothing more
        return identity, fields, (rest[0] if rest else None)

    def pump(self, timeout: float) -> None:
        """Take in every message that arrives within ``timeout``: answers, logs, beats."""
        while self.socket.poll(int(timeout * 1000)):
            _, fields, payload = self.receive(0)
            self.take(fields, payload)
            timeout = 0

    def take(self, fields: list[Any], payload: bytes | None) -> None:
        """File one message from the slave."""
        code = fields[0]
        if code == Code.HEARTBEAT:
            self.heartbeats += 1
        elif code == Code.LOG:
            assert fields[1] == self.slave_id
            self.logs.append((fields[2], fields[3]))
        elif code == Code.CHUNK:
            self.answers[fields[1]].chunks.append(payload or b"")
        elif code == Code.CHOKE:
            if len(fields) < 3:
                self.chokes.append(1)
            answer = self.answers[fields[1]]
            if payload is not None:
                answer.chunks.append(payload)
            answer.done = True
        elif code == Code.ERROR:
            self.answers[fields[1]].error = (fields[2], fields[3], fields[4])
        else:
            raise AssertionError(f"unexpected message from the slave: {fields}")

    def invoke(self, event: str, body: bytes = b"", meta: dict[str, Any] | None = None) -> int:
        """Send a job; its id."""
        job_id = self._next_job
        self._next_job += 1
        self.answers[job_id] = Answer()
        self.send(Code.INVOKE, job_id, event, meta or {}, body=body)
        return job_id

    def answer(self, job_id: int, timeout: float = WAIT) -> Answer:
        """Wait (bounded) until job ``job_id`` has ended; its answer."""
        deadline = time.monotonic() + timeout
        answer = self.answers[job_id]
        while not answer.done and answer.error is None:
            left = deadline - time.monotonic()
            assert left > 0, f"job {job_id} did not end within {timeout:g} s"
            self.pump(min(left, 0.1))
        return answer

    def invoke_batch(self, jobs: list[tuple[str, bytes]]) -> list[int]:
        """Send several jobs (event, body) in one INVOKE_BATCH; their ids."""
        ids = list(range(self._next_job, self._next_job + len(jobs)))
        self._next_job += len(jobs)
        for job_id in ids:
            self.answers[job_id] = Answer()
        header = protocol.pack(Code.INVOKE_BATCH, [[job_id, event, {}] for job_id, (event, _)
                                                   in zip(ids, jobs, strict=True)])
        self.socket.send_multipart([self.identity, header, *[body for _, body in jobs]])
        return ids

    def call(self, event: str, body: bytes = b"", meta: dict[str, Any] | None = None) -> Answer:
        """Invoke and wait for the answer."""
        return self.answer(self.invoke(event, body, meta))


@pytest.fixture
def engine_for(tmp_path: Path) -> Iterator[Any]:
    """``engine_for(concurrency=1)``: a started slave and the fake engine that drives it."""
    engines: list[FakeEngine] = []

    def start(concurrency: int = 1, code: str = APP, batch: bool = False) -> FakeEngine:
        engine = FakeEngine(tmp_path, concurrency, batch)
        engines.append(engine)
        engine.start(code)
        return engine

    yield start
    for engine in engines:
        engine.close()


#: Both of the runtime's loops: the blocking one (concurrency 1) and the asyncio one (above 1,
#: chosen because the app has async handlers).
LOOPS = pytest.mark.parametrize("concurrency", [1, 2], ids=["blocking", "asyncio"])


@LOOPS
def test_handshake_then_ready(engine_for, concurrency):
    """The slave introduces itself with its id and pid, and is ready after configure."""
    engine = engine_for(concurrency)
    assert engine.process is not None
    assert engine.handshake == {"slave_id": "slave-1", "pid": engine.process.pid}
    assert engine.terminate() == 0


@LOOPS
def test_return_types(engine_for, concurrency):
    """bytes as is, str as UTF-8, None as no chunk, anything else msgpack: each answer is one
    CHOKE carrying its only chunk."""
    engine = engine_for(concurrency)
    assert engine.call("echo", b"\x00raw\xff") == Answer([b"\x00raw\xff"], done=True)
    assert engine.call("text", "é".encode()) == Answer(["naïve é".encode()], done=True)
    assert engine.call("nothing") == Answer([], done=True)
    answer = engine.call("packed", meta={"k": "v"})
    assert answer.done and len(answer.chunks) == 1
    assert msgpack.unpackb(answer.chunks[0]) == {"event": "packed", "meta": {"k": "v"},
                                                 "list": [1, 2.5, None, True]}
    assert engine.terminate() == 0


@LOOPS
def test_generators_and_async_handlers(engine_for, concurrency):
    """Generators stream their chunks in order (None yields nothing); async def and async
    generators work in either loop."""
    engine = engine_for(concurrency)
    assert engine.call("count") == Answer([b"chunk 0", b"chunk 1", b"chunk 2", b"last"],
                                          done=True)
    assert engine.call("later", b"hi") == Answer([b"async hi"], done=True)
    assert engine.call("stream") == Answer([b"0", b"1", b"2"], done=True)
    assert engine.terminate() == 0


@LOOPS
def test_a_handler_exception_is_a_502_with_its_traceback(engine_for, concurrency):
    """The exception's type and message, and a traceback naming the app's line; the slave
    serves the next job."""
    engine = engine_for(concurrency)
    for event, message, line in [
            ("boom", "ValueError: the handler broke: now", 'raise ValueError("the handler'),
            ("async_boom", "KeyError: 'missing'", 'raise KeyError("missing")')]:
        answer = engine.call(event, b"now")
        assert answer.error is not None and not answer.done, answer
        code, text, traceback = answer.error
        assert (code, text) == (Status.APP_ERROR, message)
        assert traceback.startswith("Traceback (most recent call last):")
        assert "app.py" in traceback and line in traceback
    assert engine.call("echo", b"still here") == Answer([b"still here"], done=True)
    assert engine.terminate() == 0


@LOOPS
def test_an_answer_that_cannot_be_encoded_is_a_502(engine_for, concurrency):
    engine = engine_for(concurrency)
    answer = engine.call("unpackable")
    assert answer.error is not None
    code, text, _ = answer.error
    assert code == Status.APP_ERROR
    assert text.startswith("TypeError: the handler returned a object, which is not bytes, str, "
                           "None or msgpack-able")
    assert engine.terminate() == 0


def test_an_unknown_event_is_a_404(engine_for):
    engine = engine_for()
    answer = engine.call("no_such_event")
    assert answer.error is not None
    assert answer.error[:2] == (Status.NOT_FOUND, "this app has no handler for 'no_such_event'")
    assert engine.terminate() == 0


def test_request_json_and_unpack(engine_for):
    engine = engine_for()
    answer = engine.call("from_json", json.dumps({"numbers": [1, 2, 39]}).encode())
    assert answer.done and msgpack.unpackb(answer.chunks[0]) == {"sum": 42}
    answer = engine.call("from_msgpack", msgpack.packb({"name": "cocaine"}))
    assert answer == Answer([b"COCAINE"], done=True)
    bad = engine.call("from_json", b"{not json")
    assert bad.error is not None and bad.error[0] == Status.APP_ERROR
    assert bad.error[1].startswith("JSONDecodeError: ")
    assert engine.terminate() == 0


@LOOPS
def test_printing_goes_to_log_messages_not_the_answer(engine_for, concurrency):
    """print() to stdout and stderr becomes LOG messages, one per line; the answer is only
    what the handler returned, and nothing reaches the process's real stdout."""
    engine = engine_for(concurrency)
    assert engine.call("noisy") == Answer([b"the answer"], done=True)
    deadline = time.monotonic() + WAIT
    wanted = [("stdout", "printed by the handler"), ("stderr", "to stderr")]
    while not all(line in engine.logs for line in wanted):
        assert time.monotonic() < deadline, f"log lines never came: {engine.logs}"
        engine.pump(0.1)
    assert engine.terminate() == 0
    out, _ = engine.output()
    assert out == b""


def test_concurrency_runs_async_jobs_together(engine_for):
    """With concurrency 2 and async handlers, two jobs run at once: each sees the other
    start (the handler waits, bounded, for that)."""
    engine = engine_for(2)
    first, second = engine.invoke("together"), engine.invoke("together")
    assert engine.answer(first) == Answer([b"together"], done=True)
    assert engine.answer(second) == Answer([b"together"], done=True)
    assert engine.terminate() == 0


def test_terminate_lets_async_jobs_in_flight_finish(engine_for, tmp_path):
    """TERMINATE while an async job runs: the job still answers, then serve returns 0."""
    engine = engine_for(2)
    release = tmp_path / "release"
    job = engine.invoke("held", str(release).encode())
    engine.send(Code.TERMINATE, "test over")
    release.touch()
    assert engine.wait_exit() == 0
    assert engine.answers[job] == Answer([b"released"], done=True)


def test_terminate_between_jobs_exits_0(engine_for):
    engine = engine_for()
    assert engine.call("echo", b"one") == Answer([b"one"], done=True)
    assert engine.terminate() == 0
    out, err = engine.output()
    assert (out, err) == (b"", b"")


@LOOPS
def test_a_batch_of_jobs_is_answered_in_one_message(engine_for, concurrency):
    """An INVOKE_BATCH runs as the INVOKEs it holds; once CONFIGURE said batch, the answers
    of the jobs that came together go back in one CHOKE_BATCH (an error alone, in order)."""
    engine = engine_for(concurrency, batch=True)
    assert engine.features["batch"] is True
    assert engine.call("echo", b"warm") == Answer([b"warm"], done=True)  # echo known quick
    assert engine.call("nothing") == Answer([], done=True)
    ids = engine.invoke_batch([("echo", str(i).encode()) for i in range(5)] + [("nothing", b"")])
    answers = [engine.answer(job_id) for job_id in ids]
    assert answers == [Answer([str(i).encode()], done=True) for i in range(5)] + [Answer(
        [], done=True)]
    assert engine.chokes == [1, 1, 6], "the warm-ups alone, then the batch in one message"
    ids = engine.invoke_batch([("echo", b"a"), ("boom", b"b"), ("echo", b"c")])
    assert engine.answer(ids[1]).error is not None and engine.answer(ids[1]).error[0] == 502
    assert engine.answer(ids[0]) == Answer([b"a"], done=True)
    assert engine.answer(ids[2]) == Answer([b"c"], done=True)
    assert engine.terminate() == 0


@LOOPS
def test_without_batch_in_configure_every_answer_is_its_own_choke(engine_for, concurrency):
    """An engine that did not say batch (an older one) gets one CHOKE per job."""
    engine = engine_for(concurrency)
    for i in range(3):
        engine.invoke("echo", str(i).encode())
    assert [engine.answer(job_id) for job_id in (1, 2, 3)] == [
        Answer([str(i).encode()], done=True) for i in range(3)]
    assert engine.chokes == [1, 1, 1]
    assert engine.terminate() == 0
