"""The engine's side of the engine ↔ slave protocol, for the tests of the worker libraries.

A ``FakeEngine`` binds a ROUTER on ipc in a short folder of its own, starts a real worker
process (C++, JavaScript, ...) with the variables the node gives an exec slave, and lets a test
play the engine by hand: take the handshake, configure, invoke, read chunks and ends, grant
credit, cancel, terminate, and send a body in pieces within the window as the worker grants
them back (``send_body``). Heartbeats from the worker's second socket (``<id>/hb``) are counted
apart, with the time each arrived, so a test can check they keep coming. The ``engine`` fixture
(conftest.py) makes one per test and cleans it up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

#: The slave id the fake engine gives its worker: the routing identity of its main socket.
SLAVE_ID = "slave-1"


class FakeEngine:
    """The engine's side of the protocol: a ROUTER on ipc and the worker process it started."""

    def __init__(self, folder: Path, slave_id: str = SLAVE_ID) -> None:
        self.folder = folder
        self.slave_id = slave_id
        self.endpoint = f"ipc://{folder}/engine"
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(self.endpoint)
        self.beats: list[float] = []  # when each heartbeat arrived on the heartbeat socket
        self.process: subprocess.Popen[bytes] | None = None
        self.settings: dict[str, Any] = {}

    def environment(self, **env: str) -> dict[str, str]:
        """The variables the node gives an exec slave, MARKS (the engine's folder, where test
        apps leave files for the test to find) and ``env`` over them."""
        return {**os.environ, "COCAINE_ENDPOINT": self.endpoint,
                "COCAINE_SLAVE_ID": self.slave_id, "COCAINE_APP": "test",
                "MARKS": str(self.folder), **env}

    def start(self, command: list[str], stdin: int | None = subprocess.DEVNULL,
              **env: str) -> subprocess.Popen[bytes]:
        """Start the worker in the engine's folder with ``environment(**env)``; its stdout and
        stderr go to the files ``stdout`` and ``stderr`` there."""
        with open(self.folder / "stdout", "wb") as out, open(self.folder / "stderr", "wb") as err:
            self.process = subprocess.Popen(command, env=self.environment(**env),
                                            cwd=self.folder, stdin=stdin, stdout=out, stderr=err)
        return self.process

    def stdout(self) -> str:
        """What the worker wrote to stdout so far."""
        return (self.folder / "stdout").read_text(errors="replace")

    def stderr(self) -> str:
        """What the worker wrote to stderr so far."""
        return (self.folder / "stderr").read_text(errors="replace")

    def recv(self, timeout: float = 10.0) -> tuple[list[Any], bytes | None]:
        """The next message from the main socket, as (header fields, payload or None);
        heartbeats on the other socket are counted meanwhile. Fails (AssertionError, with the
        worker's stderr) when none comes within ``timeout`` seconds, or when a message comes
        from another identity or has more than one payload frame."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.router.poll(int(left * 1000)):
                raise AssertionError(f"no message from the worker within {timeout} s; "
                                     f"stderr: {self.stderr()[-2000:]}")
            identity, head, *rest = self.router.recv_multipart()
            fields = msgpack.unpackb(head, raw=False)
            if identity == f"{self.slave_id}/hb".encode():
                assert fields == [3, self.slave_id]
                self.beats.append(time.monotonic())
                continue
            assert identity == self.slave_id.encode(), identity
            assert len(rest) <= 1, f"a message of {len(rest) + 1} frames: {fields}"
            return fields, rest[0] if rest else None

    def quiet(self, seconds: float) -> list[list[Any]]:
        """The header fields of what arrives on the main socket within ``seconds`` (heartbeats
        counted apart): ``[]`` when the worker sent nothing."""
        seen: list[list[Any]] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                seen.append(self.recv(timeout=left)[0])
            except AssertionError:
                break
        return seen

    def send(self, *fields: Any, payload: bytes | None = None) -> None:
        """Send a message (header ``fields``, then ``payload`` if any) to the worker's main
        socket."""
        frames = [self.slave_id.encode(), msgpack.packb(list(fields), use_bin_type=True)]
        self.router.send_multipart(frames + ([payload] if payload is not None else []))

    def ready(self, handshake_pid: int | None = None, **settings: Any) -> None:
        """Take the HANDSHAKE ``[1, id, pid, {flow: true, stream: true}]`` (``pid``:
        ``handshake_pid``, by default the started process's), send CONFIGURE (test defaults,
        ``settings`` over them) and take the first HEARTBEAT on the main socket (ready)."""
        fields, _ = self.recv()
        pid = handshake_pid if handshake_pid is not None else (
            self.process.pid if self.process else None)
        assert fields == [1, self.slave_id, pid, {"flow": True, "stream": True}], fields
        self.settings = {"app": "test", "concurrency": 4, "heartbeat_interval": 0.2,
                         "credit": 8, "max_message": 256 * 2**20, **settings}
        self.send(2, self.settings)
        assert self.recv()[0] == [3, self.slave_id]

    def call(self, job_id: int, event: str, body: bytes = b"", meta: Any = None,
             timeout: float = 10.0) -> tuple[list[bytes], list[Any]]:
        """Invoke a job (``meta``: ``{}`` unless given) and read its whole answer, granting
        credit as its chunks arrive: (chunks, the final header: CHOKE or ERROR)."""
        self.send(4, job_id, event, meta if meta is not None else {}, payload=body)
        return self.answer(job_id, timeout)

    def answer(self, job_id: int, timeout: float = 10.0) -> tuple[list[bytes], list[Any]]:
        """The rest of job ``job_id``'s answer, granting a credit for each CHUNK (other jobs'
        messages are not expected): (chunks, the final header: CHOKE or ERROR). A CHOKE's
        payload, if any, is the last chunk."""
        chunks: list[bytes] = []
        while True:
            fields, payload = self.recv(timeout)
            assert fields[1] == job_id, fields
            if fields[0] == 5:
                assert payload is not None, fields
                chunks.append(payload)
                self.send(12, job_id, 1)
                continue
            if fields[0] == 6 and payload is not None:
                chunks.append(payload)
            return chunks, fields

    def send_body(self, job_id: int, event: str, pieces: list[bytes], *, first: bytes = b"",
                  window: int = 8, end: bool = True, timeout: float = 10.0) -> StreamedJob:
        """Invoke a streamed job (``first`` rides on the INVOKE), send ``pieces`` within the
        window (at most ``window`` sent and not granted back), then the end (``end``); read
        what the worker sends meanwhile, granting answer credit for each chunk. Returns when
        every piece is sent (the answer may still be on its way: ``finish``). Fails if the
        worker grants more than it was sent, or stalls."""
        job = StreamedJob(self, job_id, sent=1 if first else 0)
        self.send(4, job_id, event, {}, {"stream": True}, payload=first)
        for piece in pieces:
            while job.sent - job.granted >= window and job.end is None:
                job.take(self.recv(timeout))
            if job.end is not None:
                break
            self.send(5, job_id, payload=piece)
            job.sent += 1
        if end and job.end is None:
            self.send(6, job_id)
        return job

    def close(self) -> None:
        """Kill the worker (by pid) and close the socket."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.router.close(linger=0)
        self.context.term()


class StreamedJob:
    """A job whose body the fake engine sends in pieces: what the worker granted and answered."""

    def __init__(self, engine: FakeEngine, job_id: int, sent: int) -> None:
        self.engine = engine
        self.job_id = job_id
        self.sent = sent  # pieces sent (the INVOKE's, if not empty, included)
        self.grants: list[int] = []  # each CREDIT's n, in order
        self.chunks: list[bytes] = []
        self.head: dict[str, Any] | None = None
        self.end: list[Any] | None = None  # the CHOKE or ERROR header

    @property
    def granted(self) -> int:
        """Pieces granted back in all."""
        return sum(self.grants)

    def take(self, message: tuple[list[Any], bytes | None]) -> None:
        """Record one message of this job (CREDIT, HEADERS, CHUNK, CHOKE or ERROR)."""
        fields, payload = message
        assert fields[1] == self.job_id, fields
        assert self.end is None, f"a message after the job's end: {fields}"
        if fields[0] == 12:
            self.grants.append(fields[2])
            assert self.granted <= self.sent, f"granted {self.granted}, sent {self.sent}"
        elif fields[0] == 13:
            assert self.head is None and not self.chunks, fields
            self.head = fields[2]
        elif fields[0] == 5:
            assert payload is not None
            self.chunks.append(payload)
            self.engine.send(12, self.job_id, 1)
        else:
            if fields[0] == 6 and payload is not None:
                self.chunks.append(payload)
            self.end = fields

    def finish(self, timeout: float = 10.0) -> StreamedJob:
        """Read until the job has ended; this job."""
        while self.end is None:
            self.take(self.engine.recv(timeout))
        return self


def uploads_through_a_node(folder: Path, command: list[str]) -> None:
    """Serve ``command`` (a conformance app) as the exec app ``up`` under ``cocaine run`` and
    send it streamed requests with ``Client.open``: an 8 MiB echo comes back whole, and
    ``sizes`` answers one size per piece as the client wrote it (pieces pass the node as they
    are). Fails (AssertionError, with the run's log) otherwise; the run is stopped at the end."""
    from cocaine_core.client import Client
    from cocaine_core.errors import ServiceError
    from cocaine_core.testing import free_port, wait_until

    app = folder / "up"
    app.mkdir()
    (app / "manifest.json").write_text(json.dumps({
        "type": "exec", "args": {"command": command}, "engine": {"pool-limit": 1},
        "tasks": {"echo": {"type": "native-server"}, "sizes": {"type": "native-server"}}}))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cocaine = str(Path(sys.executable).with_name("cocaine"))
    log = folder / "run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([cocaine, "run", str(app / "manifest.json"), "--listen",
                                    endpoint, "--log-format", "plain"],
                                   stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, cwd=folder)
    try:
        def answers() -> bytes | None:
            assert process.poll() is None, f"cocaine run exited:\n{log.read_text()}"
            with Client(endpoint, wait=2) as client:
                try:
                    return client.call("up", "echo", b"ready")
                except (ServiceError, TimeoutError):
                    return None

        assert wait_until(answers, timeout=60, message="the app to answer") == b"ready"
        body = os.urandom(8 * 2**20)
        with Client(endpoint, wait=30) as client:
            with client.open("up", "echo") as request:
                for at in range(0, len(body), 300 * 1024):
                    request.write(body[at:at + 300 * 1024])
                request.end()
                assert request.read() == body, "the streamed echo came back changed"
            with client.open("up", "sizes") as request:
                for size in (300 * 1024, 400 * 1024, 500 * 1024):
                    request.write(b"s" * size)
                request.end()
                assert list(request) == [b"307200", b"409600", b"512000"]
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nthe run's log:\n{log.read_text()[-4000:]}") from exc
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
