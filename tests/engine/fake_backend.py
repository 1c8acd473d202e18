"""A slave backend without processes, for exact and fast tests of the engine's rules.

``FakeBackend`` follows the ``SlaveBackend`` contract; each slave it "spawns" is a ``FakeSlave``:
a real ZeroMQ DEALER in the test's own process that speaks the real engine ↔ slave protocol
to the engine's real channel, and that the test drives by hand: answer a job, fail it, stop
heart-beating, crash. Only the processes are missing, so nothing here waits on a fork.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import zmq

from cocaine_core import hookimpl, protocol
from cocaine_core.backends import SlaveBackend
from cocaine_core.engine import Engine, Job
from cocaine_core.errors import AppLoadError
from cocaine_core.protocol import Code
from cocaine_core.zmqloop import SocketReader

_pids = itertools.count(900_000)


class FakeSlave:
    """One pretend slave: a DEALER the test answers jobs on."""

    def __init__(self, backend: FakeBackend, slave_id: str, pid: int) -> None:
        self.backend = backend
        self.id = slave_id
        self.pid = pid
        self.jobs: dict[int, bytes] = {}
        self.served = 0
        self.configured = False
        self.beating = True
        self.alive = True
        self.socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.ROUTING_ID, slave_id.encode())
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(backend.endpoint)
        self.reader = SocketReader(self.socket, self._on_message)
        self._beat: asyncio.Task[None] | None = None
        #: The number of jobs in each INVOKE or INVOKE_BATCH received, in order.
        self.invokes: list[int] = []
        #: What CONFIGURE said; the jobs the engine sent CANCEL for.
        self.settings: dict[str, Any] = {}
        self.cancelled: list[int] = []
        features = {"flow": True, "batch": True} if FakeBackend.batch else {}
        self._send(protocol.pack(Code.HANDSHAKE, slave_id, pid, features))

    def _send(self, *frames: bytes) -> None:
        if self.alive:
            self.reader.send(list(frames))

    def _on_message(self, frames: list[bytes]) -> None:
        fields = protocol.unpack(frames[0])
        if fields[0] == Code.CONFIGURE:
            if FakeBackend.fail_starts > 0:  # dies before it is ready (a killer, a limit)
                FakeBackend.fail_starts -= 1
                self.exit(-9)
                return
            self.configured = True
            self.settings = fields[1]
            self._send(protocol.pack(Code.HEARTBEAT, self.id))
            self._beat = asyncio.get_running_loop().create_task(self._heartbeats())
        elif fields[0] == Code.INVOKE:
            job_id = fields[1]
            self.invokes.append(1)
            self.jobs[job_id] = frames[1] if len(frames) > 1 else b""
            self.backend.on_invoke(self, job_id)
        elif fields[0] == Code.INVOKE_BATCH:
            self.invokes.append(len(fields[1]))
            for (job_id, *_), body in zip(fields[1], frames[1:], strict=True):
                self.jobs[job_id] = body
            for job_id, *_ in fields[1]:
                self.backend.on_invoke(self, job_id)
        elif fields[0] == Code.CANCEL:
            self.cancelled.append(fields[1])
        elif fields[0] == Code.TERMINATE:
            self.exit(0)

    async def _heartbeats(self) -> None:
        while self.alive:
            if self.beating:
                self._send(protocol.pack(Code.HEARTBEAT, self.id))
            await asyncio.sleep(0.05)

    # -- what a test does with a slave ----------------------------------------------------------

    def answer(self, job_id: int, data: bytes | None = None) -> None:
        """Finish a job, with ``data`` (default: the request body) as its one chunk."""
        body = self.jobs.pop(job_id)
        self.served += 1
        self._send(protocol.pack(Code.CHOKE, job_id), body if data is None else data)

    def answer_all(self) -> None:
        """Finish every job this slave holds."""
        for job_id in list(self.jobs):
            self.answer(job_id)

    def answer_batch(self, job_ids: list[int], data: dict[int, bytes | None] | None = None,
                     ) -> None:
        """Finish jobs in one CHOKE_BATCH, each with its body as its last chunk (or
        ``data[job_id]``; None: no last chunk)."""
        lasts: dict[int, bytes | None] = {job_id: self.jobs.pop(job_id) for job_id in job_ids}
        lasts.update(data or {})
        self.served += len(job_ids)
        entries = [[job_id, lasts[job_id] is not None] for job_id in job_ids]
        frames = [last for last in lasts.values() if last is not None]
        self._send(protocol.pack(Code.CHOKE_BATCH, entries), *frames)

    def chunk(self, job_id: int, data: bytes) -> None:
        """Send one chunk of a job's answer (the job goes on)."""
        self._send(protocol.pack(Code.CHUNK, job_id), data)

    def fail(self, job_id: int, message: str = "it broke") -> None:
        """Fail a job as a handler exception does (502)."""
        self.jobs.pop(job_id)
        self._send(protocol.pack(Code.ERROR, job_id, 502, message, "Traceback: ..."))

    def exit(self, status: int) -> None:
        """End this slave as a process exiting with ``status`` would (minus a signal)."""
        if not self.alive:
            return
        self.alive = False
        if self._beat is not None:
            self._beat.cancel()
        self.reader.close()
        self.socket.close(linger=0)
        self.backend.slaves.pop(self.id, None)
        asyncio.get_running_loop().call_soon(self.backend.events.slave_exited, self.id, status)


class FakeBackend:
    """Spawns ``FakeSlave`` objects; every instance is kept in ``FakeBackend.made``."""

    made: list[FakeBackend] = []
    #: Set by a test before the engine starts: called with each invoked (slave, job id);
    #: the default answers at once with the request body.
    behaviour: Callable[[FakeSlave, int], None] | None = None
    #: Set by a test: ``start`` raises AppLoadError with this reason (``load_failures`` more
    #: times, or always when None), the code's fault unless ``load_fault_of_code`` is false.
    load_error: str | None = None
    load_failures: int | None = None
    load_fault_of_code = True
    #: Set by a test: that many slaves die on configure, before they are ready.
    fail_starts = 0
    #: Set by a test: the pid every slave reports (default: a made-up one per slave).
    pid: int | None = None
    #: Set by a test: slaves say ``batch`` (and ``flow``) in their handshake.
    batch = False

    def __init__(self, app: Any, endpoint: str, runtime: str, events: Any, *,
                 startup_timeout: float) -> None:
        self.app = app
        self.endpoint = endpoint
        self.events = events
        self.startup_timeout = startup_timeout
        self.slaves: dict[str, FakeSlave] = {}
        self.spawned: list[FakeSlave] = []
        self.stopped = False
        FakeBackend.made.append(self)

    async def start(self) -> None:
        """Ready at once, unless the test set ``load_error``."""
        if FakeBackend.load_error and FakeBackend.load_failures != 0:
            if FakeBackend.load_failures is not None:
                FakeBackend.load_failures -= 1
            raise AppLoadError(FakeBackend.load_error, code_fault=FakeBackend.load_fault_of_code)

    def spawn(self, slave_id: str) -> None:
        """Make a pretend slave; it exists, then shakes hands."""
        if self.stopped:
            raise AppLoadError("the fake backend is stopped")
        pid = FakeBackend.pid or next(_pids)
        slave = FakeSlave(self, slave_id, pid)
        self.slaves[slave_id] = slave
        self.spawned.append(slave)
        asyncio.get_running_loop().call_soon(self.events.slave_spawned, slave_id, pid)

    def signal(self, slave_id: str, signum: int) -> None:
        """SIGTERM and SIGKILL end a pretend slave; nothing is ever sent to a real process."""
        slave = self.slaves.get(slave_id)
        if slave is not None and signum in (signal.SIGTERM, signal.SIGKILL):
            slave.exit(-signum)

    async def stop(self) -> None:
        """End every pretend slave."""
        self.stopped = True
        for slave in list(self.slaves.values()):
            slave.exit(-signal.SIGKILL)
        await asyncio.sleep(0)

    def on_invoke(self, slave: FakeSlave, job_id: int) -> None:
        """Run the test's behaviour for a job (default: answer it at once)."""
        (FakeBackend.behaviour or (lambda s, j: s.answer(j)))(slave, job_id)

    def lose(self) -> None:
        """Die as a template does: the backend is lost, then every slave's exit is said."""
        self.stopped = True
        self.events.backend_lost(-9)
        for slave in list(self.slaves.values()):
            slave.exit(-9)

    # -- for tests ------------------------------------------------------------------------------

    def live(self) -> list[FakeSlave]:
        """Pretend slaves alive now."""
        return list(self.slaves.values())


class FakeBackendPlugin:
    """Registers ``FakeBackend`` as the slave backend ``fake``."""

    @hookimpl
    def cocaine_register_slave_backends(self, registry: Any) -> None:
        """Register the ``fake`` backend."""
        registry.add("fake", FakeBackend)


if TYPE_CHECKING:
    _follows_the_contract: type[SlaveBackend] = FakeBackend


# -- driving an engine on the fake backend, for tests ---------------------------------------------


class Answer:
    """A job's sink that remembers what came back."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.code: int | None = None
        self.message = ""
        self.done = asyncio.Event()

    def chunk(self, data: bytes) -> None:
        self.chunks.append(data)

    def choke(self) -> None:
        self.done.set()

    def error(self, code: int, message: str) -> None:
        self.code, self.message = code, message
        self.done.set()


def reset_fakes() -> None:
    """Every knob of the fake backend back to its default."""
    FakeBackend.behaviour = FakeBackend.load_error = FakeBackend.pid = None
    FakeBackend.load_failures, FakeBackend.load_fault_of_code = None, True
    FakeBackend.fail_starts = 0
    FakeBackend.batch = False


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run one scenario on a fresh event loop."""
    asyncio.run(asyncio.wait_for(scenario(), 20))


async def until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "it") -> Any:
    """Wait (on the loop) until ``predicate()`` is truthy."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return value


def submit(engine: Engine, body: bytes = b"x", **policy: Any) -> Answer:
    """Submit a job for ``echo``; return its answer."""
    answer = Answer()
    engine.submit(Job("echo", body, sink=answer, **policy))
    return answer


def hold(slave: FakeSlave, job_id: int) -> None:
    """A behaviour: keep every job until the test answers it."""


def backend(engine: Engine) -> FakeBackend:
    """The engine's (latest) fake backend."""
    return FakeBackend.made[-1]


def ready(engine: Engine) -> list[FakeSlave]:
    """The pretend slaves the engine itself counts as ready."""
    handles = engine.pool.slaves
    return [s for s in backend(engine).live()
            if s.id in handles and handles[s.id].state.value == "ready"]


def own_pid() -> int:
    """This test process's pid (a pretend slave may borrow it to have a real RSS)."""
    return os.getpid()
