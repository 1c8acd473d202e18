"""Streamed request bodies in the python slave: ``request.stream``, ``request.data``, CREDIT.

Each test plays the engine with a ZeroMQ ROUTER on ``ipc://`` in a short temporary folder and
runs a real slave process (``serve`` with a ``SlaveChannel``), as ``test_runtime.py`` does. The
fake engine keeps the engine's promise for streamed bodies (docs/protocol.md): at most
``WINDOW`` pieces of a job's body sent and not yet granted back by the slave's CREDIT (the
INVOKE's first piece counts if not empty). A slave that does not grant stalls its stream, and
the test fails on its bounded wait.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
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

#: Every wait is bounded by this many seconds (a busy machine is slow, not stuck).
WAIT = 30.0
#: Pieces of a body the engine sends ahead of the slave's CREDIT (as the real engine).
WINDOW = 8

SLAVE = """
import json, sys
from cocaine_core.slave_channel import SlaveChannel
from cocaine_python.runtime import load, serve

config = json.loads(sys.argv[1])
app = load(config)
sys.exit(serve(app, SlaveChannel(config["endpoint"], config["slave_id"])))
"""

APP = '''
import asyncio
import hashlib
import os
import time

from cocaine_python import JobCancelled


def _digest(pieces):
    digest, count, size = hashlib.sha256(), 0, 0
    for piece in pieces:
        assert isinstance(piece, bytes) and piece, piece
        digest.update(piece)
        count += 1
        size += len(piece)
    return {"pieces": count, "size": size, "sha256": digest.hexdigest()}


def total(request):
    return {"streamed": request.streamed, **_digest(request.stream)}


async def async_total(request):
    digest, count = hashlib.sha256(), 0
    async for piece in request.stream:
        digest.update(piece)
        count += 1
        await asyncio.sleep(0)
    return {"streamed": request.streamed, "pieces": count, "sha256": digest.hexdigest()}


def whole(request):
    data = request.data
    assert request.data is data  # gathered once
    return {"streamed": request.streamed, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "again": len(list(request.stream))}


async def async_gather(request):
    data = await request.stream.gather()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "data_too": request.data == data}


def json_body(request):
    return {"sum": sum(request.json()["numbers"])}


def mixed(request):
    first = next(iter(request.stream))
    return request.data  # raises: part of the stream is gone


def cancelled(request):
    seen = 0
    try:
        for piece in request.stream:
            seen += 1
    except JobCancelled:
        print(f"cancelled after {seen} pieces")
        raise
    return b"the body ended"


async def async_cancelled(request):
    seen = 0
    try:
        async for piece in request.stream:
            seen += 1
    except JobCancelled:
        print(f"async cancelled after {seen} pieces")
        raise
    return b"the body ended"


def ignore(request):
    return b"not read"


def echo(request):
    return request.data


def pieces(request):
    return {"streamed": request.streamed, "pieces": list(request.stream)}


async def async_pieces(request):
    return {"streamed": request.streamed, "pieces": [p async for p in request.stream]}


def reads_then_streams(request):
    """A generator that reads the body as it answers: a chunk per piece."""
    for piece in request.stream:
        yield piece.upper()
'''

EVENTS = ["total", "async_total", "whole", "async_gather", "json_body", "mixed", "cancelled",
          "async_cancelled", "ignore", "echo", "pieces", "async_pieces", "reads_then_streams"]


@dataclass
class Job:
    """One job as the fake engine sees it: the body still to send, and what came back."""

    pieces: list[bytes] = field(default_factory=list)  # still to send
    end: bool = True  # send the body's end (CHOKE) once ``pieces`` are sent
    ended: bool = False  # the body's end was sent
    unread: int = 0  # pieces sent and not granted back (the window's use)
    granted: list[int] = field(default_factory=list)  # each CREDIT's n
    headers: list[dict[str, Any]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    done: bool = False
    error: tuple[int, str, str] | None = None
    order: list[str] = field(default_factory=list)  # codes as they came: head, chunk, choke

    @property
    def over(self) -> bool:
        """Whether the job has ended (CHOKE or ERROR)."""
        return self.done or self.error is not None


class StreamEngine:
    """The engine's side of one slave, with streamed bodies and a window per job."""

    def __init__(self, folder: Path, concurrency: int) -> None:
        self.folder = folder
        self.concurrency = concurrency
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"ipc://{folder / 'engine'}"
        self.socket.bind(self.endpoint)
        self.identity = b"slave-1"
        self.process: subprocess.Popen[bytes] | None = None
        self.features: Any = None
        self.jobs: dict[int, Job] = {}
        self.logs: list[str] = []
        self.feeding = True  # send pieces as the window allows
        self._next_job = 1

    def start(self, code: str = APP, events: list[str] | None = None) -> None:
        """Start the slave, take its handshake, configure it, wait until it is ready."""
        (self.folder / "app.py").write_text(textwrap.dedent(code))
        config = {"args": {"source": "app.py"}, "root": str(self.folder),
                  "events": events or EVENTS, "endpoint": self.endpoint,
                  "slave_id": self.identity.decode()}
        self.process = subprocess.Popen([sys.executable, "-c", SLAVE, json.dumps(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        fields, _ = self.receive()
        assert fields[:2] == [Code.HANDSHAKE, "slave-1"], fields
        self.features = fields[3] if len(fields) > 3 else None
        self.send(Code.CONFIGURE, {"app": "test", "concurrency": self.concurrency,
                                   "heartbeat_interval": 0.1, "credit": 8,
                                   "max_message": 256 * 2**20})
        fields, _ = self.receive()
        assert fields == [Code.HEARTBEAT, "slave-1"], fields

    def close(self) -> None:
        """Terminate the slave (kill it if it does not exit), close the socket."""
        if self.process is not None and self.process.poll() is None:
            self.send(Code.TERMINATE, "test over")
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=WAIT)
        self.socket.close()
        self.context.term()

    # -- messages ---------------------------------------------------------------------------

    def send(self, *fields: Any, body: bytes | None = None) -> None:
        """A message to the slave's main socket."""
        frames = [self.identity, protocol.pack(*fields)]
        self.socket.send_multipart(frames + ([body] if body is not None else []))

    def receive(self, timeout: float = WAIT) -> tuple[list[Any], bytes | None]:
        """The next message from the slave's main socket, or fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.socket.poll(int(left * 1000)):
                raise AssertionError(f"no message from the slave within {timeout:g} s (its "
                                     f"exit code: {self.process and self.process.poll()})")
            if (message := self._next()) is not None:
                return message

    def _next(self) -> tuple[list[Any], bytes | None] | None:
        """The message waiting, or None if it came from the slave's heartbeat socket (its
        log lines are kept)."""
        identity, header, *rest = self.socket.recv_multipart()
        fields = protocol.unpack(header)
        if identity == self.identity + b"/hb":
            if fields[0] == Code.LOG and fields[3]:
                self.logs.append(fields[3])
            return None
        return fields, (rest[0] if rest else None)

    def invoke(self, event: str, pieces: list[bytes] | None = None, *, first: bytes = b"",
               stream: bool = True, end: bool = True, meta: dict[str, Any] | None = None) -> int:
        """Send a job: a streamed INVOKE with ``first`` as frame 1, then (as the window
        allows, while ``pump`` runs) ``pieces`` and, if ``end``, the body's end; with
        ``stream`` False, a plain INVOKE of ``first``."""
        job_id = self._next_job
        self._next_job += 1
        job = self.jobs[job_id] = Job(list(pieces or []), end=end, unread=1 if first else 0)
        if stream:
            self.send(Code.INVOKE, job_id, event, meta or {}, {"stream": True}, body=first)
        else:
            job.ended = True
            self.send(Code.INVOKE, job_id, event, meta or {}, body=first)
        return job_id

    def feed(self) -> None:
        """Send every piece the windows allow, and the end of each body sent whole."""
        if not self.feeding:
            return
        for job_id, job in self.jobs.items():
            if job.over or job.ended:
                continue
            while job.pieces and job.unread < WINDOW:
                self.send(Code.CHUNK, job_id, body=job.pieces.pop(0))
                job.unread += 1
            if not job.pieces and job.end:
                self.send(Code.CHOKE, job_id)
                job.ended = True

    def pump(self, timeout: float) -> None:
        """Feed, then take what the slave sends within ``timeout``, feeding as credit comes."""
        self.feed()
        while self.socket.poll(int(timeout * 1000)):
            if (message := self._next()) is not None:
                self.take(*message)
            self.feed()
            timeout = 0

    def take(self, fields: list[Any], payload: bytes | None) -> None:
        """File one message from the slave's main socket."""
        code, job = fields[0], self.jobs.get(fields[1]) if len(fields) > 1 else None
        if code == Code.HEARTBEAT:
            return
        assert job is not None, f"a message for no job: {fields}"
        if code == Code.CREDIT:
            n = fields[2]
            assert 1 <= n <= 4, f"CREDIT {n}: the slave holds back at most 4 pieces"
            assert n <= job.unread, f"CREDIT {n} for {job.unread} pieces sent and unread"
            job.unread -= n
            job.granted.append(n)
            return
        assert not job.over, f"a message after the job ended: {fields}"
        if code == Code.HEADERS:
            job.headers.append(fields[2])
            job.order.append("head")
        elif code == Code.CHUNK:
            job.chunks.append(payload or b"")
            job.order.append("chunk")
            self.send(Code.CREDIT, fields[1], 1)  # the answer's chunks: taken at once
        elif code == Code.CHOKE:
            if payload is not None:
                job.chunks.append(payload)
            job.done = True
            job.order.append("choke")
        elif code == Code.ERROR:
            job.error = (fields[2], fields[3], fields[4])
            job.order.append("error")
        else:
            raise AssertionError(f"unexpected message from the slave: {fields}")

    def answer(self, job_id: int, timeout: float = WAIT) -> Job:
        """Wait (bounded) until job ``job_id`` has ended."""
        deadline = time.monotonic() + timeout
        job = self.jobs[job_id]
        while not job.over:
            left = deadline - time.monotonic()
            assert left > 0, (f"job {job_id} did not end within {timeout:g} s: "
                              f"{len(job.pieces)} pieces unsent, {job.unread} unread, "
                              f"granted {sum(job.granted)}")
            self.pump(min(left, 0.1))
        return job

    def value(self, job_id: int) -> Any:
        """Job ``job_id``'s answer, one msgpack chunk, decoded (it must have succeeded)."""
        job = self.answer(job_id)
        assert job.done and len(job.chunks) == 1, (job.error, job.chunks)
        return msgpack.unpackb(job.chunks[0])

    def wait_log(self, text: str) -> None:
        """Wait (bounded) until the slave has logged a line holding ``text``."""
        deadline = time.monotonic() + WAIT
        while not any(text in line for line in self.logs):
            assert time.monotonic() < deadline, f"never logged {text!r}: {self.logs}"
            self.pump(0.1)


@pytest.fixture
def engine_for() -> Iterator[Any]:
    """``engine_for(concurrency)``: a started slave and the engine that drives it."""
    folder = Path(tempfile.mkdtemp(prefix="cps-"))  # ipc paths are short
    engines: list[StreamEngine] = []

    def start(concurrency: int = 1, code: str = APP, events: list[str] | None = None
              ) -> StreamEngine:
        engine = StreamEngine(folder, concurrency)
        engines.append(engine)
        engine.start(code, events)
        return engine

    try:
        yield start
    finally:
        for engine in engines:
            engine.close()
        shutil.rmtree(folder, ignore_errors=True)


def body(count: int, size: int = 1000) -> list[bytes]:
    """``count`` pieces of ``size`` bytes, each different."""
    return [bytes([i % 251]) * (size - 4) + i.to_bytes(4, "big") for i in range(count)]


def digest(pieces: list[bytes]) -> str:
    return hashlib.sha256(b"".join(pieces)).hexdigest()


#: Both loops: blocking (concurrency 1) and asyncio (above 1, the app has async handlers).
LOOPS = pytest.mark.parametrize("concurrency", [1, 4], ids=["blocking", "asyncio"])


@LOOPS
def test_a_sync_handler_reads_a_long_stream_as_credit_flows_back(engine_for, concurrency):
    """200 pieces through a window of 8: the engine sends only as the slave grants, so the
    body arrives whole only if the slave grants what its handler read (never more)."""
    engine = engine_for(concurrency)
    assert engine.features == {"flow": True, "stream": True, "batch": True}
    pieces = body(200)
    job_id = engine.invoke("total", pieces[1:], first=pieces[0])
    assert engine.value(job_id) == {"streamed": True, "pieces": 200, "size": 200_000,
                                    "sha256": digest(pieces)}
    job = engine.jobs[job_id]
    assert sum(job.granted) >= 200 - 4  # all but at most a step held back at the end
    assert job.order == ["choke"]


@LOOPS
def test_an_async_handler_reads_with_async_for(engine_for, concurrency):
    """``async for piece in request.stream``; an empty first piece is no piece."""
    engine = engine_for(concurrency)
    pieces = body(60, 5000)
    job_id = engine.invoke("async_total", pieces)
    assert engine.value(job_id) == {"streamed": True, "pieces": 60, "sha256": digest(pieces)}


def test_two_streams_interleave_with_concurrency_4(engine_for):
    """Two async jobs read their streams at once: the second's body is sent whole and
    answered while the first's is still open (a slave reading one job at a time would wait
    for the first's end, which is only sent after the second's answer)."""
    engine = engine_for(4)
    first, second = body(30, 700), body(40, 900)
    one = engine.invoke("async_total", first[:15], end=False)
    two = engine.invoke("async_total", second)
    assert engine.value(two) == {"streamed": True, "pieces": 40, "sha256": digest(second)}
    assert not engine.jobs[one].over
    engine.jobs[one].pieces.extend(first[15:])
    engine.jobs[one].end = True
    assert engine.value(one) == {"streamed": True, "pieces": 30, "sha256": digest(first)}


def test_a_sync_and_an_async_stream_on_the_async_loop(engine_for):
    """A sync handler reading its stream in place, while an async job's pieces arrive: both
    bodies arrive whole, none confused with the other."""
    engine = engine_for(4)
    first, second = body(50, 300), body(50, 400)
    one = engine.invoke("async_total", first)
    two = engine.invoke("total", second)
    assert engine.value(two) == {"streamed": True, "pieces": 50, "size": 20_000,
                                 "sha256": digest(second)}
    assert engine.value(one) == {"streamed": True, "pieces": 50, "sha256": digest(first)}


@LOOPS
def test_request_data_gathers_the_stream(engine_for, concurrency):
    """``request.data`` waits for every piece (once); the stream then yields it as one
    piece; ``json()`` works on a streamed body; ``await stream.gather()`` too."""
    engine = engine_for(concurrency)
    pieces = body(50, 2000)
    assert engine.value(engine.invoke("whole", pieces[1:], first=pieces[0])) == {
        "streamed": True, "size": 100_000, "sha256": digest(pieces), "again": 1}
    numbers = json.dumps({"numbers": list(range(1000))}).encode()
    split = [numbers[i:i + 100] for i in range(0, len(numbers), 100)]
    assert engine.value(engine.invoke("json_body", split)) == {"sum": 499500}
    assert engine.value(engine.invoke("async_gather", pieces)) == {
        "size": 100_000, "sha256": digest(pieces), "data_too": True}


def test_data_after_reading_the_stream_is_a_clear_502(engine_for):
    engine = engine_for()
    job = engine.answer(engine.invoke("mixed", body(3)))
    assert job.error is not None and job.error[0] == Status.APP_ERROR
    assert job.error[1].startswith("RuntimeError: request.data: 1 piece(s) of this streamed "
                                   "body were already read from request.stream")
    assert engine.value(engine.invoke("total", body(5))) == {
        "streamed": True, "pieces": 5, "size": 5000, "sha256": digest(body(5))}


@pytest.mark.parametrize("concurrency,event", [(1, "cancelled"), (4, "async_cancelled")],
                         ids=["sync", "async"])
def test_cancel_mid_body_raises_in_the_handler(engine_for, concurrency, event):
    """CANCEL while the handler waits for pieces: its read raises JobCancelled, and the job
    ends with a CHOKE (no answer); the slave serves the next job."""
    engine = engine_for(concurrency)
    job_id = engine.invoke(event, body(3), end=False)
    deadline = time.monotonic() + WAIT
    while sum(engine.jobs[job_id].granted) < 3:  # the handler has read all three
        assert time.monotonic() < deadline, "the handler never read the pieces"
        engine.pump(0.1)
    engine.send(Code.CANCEL, job_id)
    job = engine.answer(job_id)
    assert job.done and job.error is None and job.chunks == []
    engine.wait_log("cancelled after 3 pieces")
    assert engine.value(engine.invoke("pieces", [b"a", b"b"])) == {
        "streamed": True, "pieces": [b"a", b"b"]}


@LOOPS
def test_a_handler_that_does_not_read_its_body(engine_for, concurrency):
    """The handler answers at once; the pieces sent after are dropped (never taken for
    another job's), and the next streamed and plain jobs are served right."""
    engine = engine_for(concurrency)
    job_id = engine.invoke("ignore", first=b"first", end=False)
    job = engine.answer(job_id)
    assert job.chunks == [b"not read"] and job.done
    for piece in body(6):  # late pieces, and the body's end, for the job that ended
        engine.send(Code.CHUNK, job_id, body=piece)
    engine.send(Code.CHOKE, job_id)
    assert engine.value(engine.invoke("pieces", [b"x", b"y"], first=b"w")) == {
        "streamed": True, "pieces": [b"w", b"x", b"y"]}
    assert engine.answer(engine.invoke("echo", first=b"plain", stream=False)).chunks == [
        b"plain"]
    assert engine.jobs[job_id].granted == []  # nothing said about the dropped pieces


@LOOPS
def test_a_generator_answers_as_it_reads(engine_for, concurrency):
    """A generator reading the stream and yielding a chunk per piece."""
    engine = engine_for(concurrency)
    job = engine.answer(engine.invoke("reads_then_streams", [b"b", b"c"], first=b"a"))
    assert job.done and job.chunks == [b"A", b"B", b"C"]


@pytest.mark.parametrize("event", ["pieces", "async_pieces"])
@LOOPS
def test_plain_requests_are_one_piece(engine_for, concurrency, event):
    """A plain INVOKE: ``streamed`` False, its body one piece (none when empty)."""
    engine = engine_for(concurrency)
    assert engine.value(engine.invoke(event, first=b"all of it", stream=False)) == {
        "streamed": False, "pieces": [b"all of it"]}
    assert engine.value(engine.invoke(event, stream=False)) == {
        "streamed": False, "pieces": []}
    assert engine.answer(engine.invoke("echo", first=b"same", stream=False)).chunks == [
        b"same"]
