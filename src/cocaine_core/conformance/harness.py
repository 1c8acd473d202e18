"""The fake engine of the conformance kit: a ROUTER, the worker process, and its messages.

A ``Harness`` binds a ROUTER on an ipc endpoint in a private temporary folder (mode 0700),
starts the worker command with ``COCAINE_ENDPOINT``, ``COCAINE_SLAVE_ID`` and ``COCAINE_APP``
in a process group of its own (its output captured, the last lines kept), and reads what the
worker sends: heartbeats are recorded with their arrival times, a job's chunks and end go to
its ``Answer``, and anything the protocol does not allow raises ``ProtocolViolation``. A job's
body may be sent in pieces (``invoke(..., streamed=True)``, ``feed``, ``end_body``); the
worker's CREDIT for them is counted, and must never exceed what the kit sent (nor, for a
handler that answers a chunk per piece, what it answered, plus the piece it holds). Once
CONFIGURE said ``batch``, ``invoke_batch`` sends several jobs in one INVOKE_BATCH, and a
CHOKE_BATCH from the worker is taken as the CHOKEs it stands for. Closing it kills the worker's
process group and removes the folder.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from cocaine_core import protocol
from cocaine_core.backends.orphans import TREE_VARIABLE, kill_marked
from cocaine_core.conformance.messages import (
    APP,
    MAIN,
    SLAVE_ID,
    Answer,
    Message,
    ProtocolViolation,
    chokes,
    head_problem,
    name_of,
    parse,
    short,
)
from cocaine_core.conformance.output import OutputTail
from cocaine_core.protocol import Code

#: The largest message the kit's ROUTER takes from the worker, as the engine's.
MAX_MESSAGE = 256 * 2**20
#: Heartbeat arrival times kept (a worker that floods cannot grow the kit without end).
BEATS_KEPT = 100_000
#: Chunks a flow job is given back as CREDIT at a time (as the engine does).
CREDIT_STEP = 4
#: Most bytes of one job's answer the kit keeps (the largest a rule asks for is 1 MiB).
MAX_ANSWER = 4 * 2**20


class WorkerExited(Exception):
    """The worker process ended while the kit waited for it."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the worker exited with {describe_status(status)}")
        self.status = status


def describe_status(status: int) -> str:
    """A ``Popen.returncode`` for a person: ``status 3`` or ``signal 9 (SIGKILL)``."""
    if status >= 0:
        return f"status {status}"
    try:
        return f"signal {-status} ({signal.Signals(-status).name})"
    except ValueError:
        return f"signal {-status}"


class Harness:
    """Plays the engine for one worker: start it, talk to it, and always clean up."""

    def __init__(self, command: Sequence[str], timeout: float, cwd: str | None = None) -> None:
        self.command = list(command)
        self.cwd = cwd
        #: Marks every process the worker starts, so that none outlives the kit.
        self.tree = f"conformance.{os.getpid()}.{os.urandom(4).hex()}"
        self.timeout = timeout
        self.folder = tempfile.mkdtemp(prefix="cocaine-conformance-")  # mode 0700
        os.chmod(self.folder, 0o700)
        self.endpoint = f"ipc://{self.folder}/engine"
        self.context = zmq.Context(io_threads=1)
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        self.router.bind(self.endpoint)
        self.process: subprocess.Popen[bytes] | None = None
        self.output = OutputTail()
        self.beats: collections.deque[float] = collections.deque(maxlen=BEATS_KEPT)
        self.handshake: Message | None = None
        self.features: dict[str, Any] = {}
        self.interval = 0.2
        self.flow = False
        self.stream = False  # the handshake said it reads streamed bodies
        self.batch = False  # the handshake said it takes INVOKE_BATCH
        self.settings: dict[str, Any] = {}  # what the kit's CONFIGURE said
        self.answers: dict[int, Answer] = {}
        self.abandoned: set[int] = set()
        self.late = 0  # messages of abandoned jobs, dropped
        self._next_job = 1

    # -- the process ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker command (FileNotFoundError/PermissionError if it cannot run)."""
        env = {**os.environ, "COCAINE_ENDPOINT": self.endpoint, "COCAINE_SLAVE_ID": SLAVE_ID,
               "COCAINE_APP": APP, TREE_VARIABLE: self.tree}
        self.process = subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        cwd=self.cwd, start_new_session=True)
        for name, pipe in (("stdout", self.process.stdout), ("stderr", self.process.stderr)):
            assert pipe is not None
            self.output.follow(name, pipe)

    def tail(self, lines: int = 30) -> list[str]:
        """The last ``lines`` lines the worker printed (or sent as LOG)."""
        return self.output.last(lines)

    @property
    def pid(self) -> int:
        """The pid of the process the kit started."""
        assert self.process is not None
        return self.process.pid

    def status(self) -> int | None:
        """The worker's exit status, or None while it runs."""
        return None if self.process is None else self.process.poll()

    def close(self) -> None:
        """Kill the worker's process group, close the socket, remove the folder."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)  # its children too (a shell's)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            kill_marked(self.tree)  # what left the group (setsid) but kept the marker
            if self.output.join(timeout=1):
                # (A process that left the group may still hold a pipe: closing it under a
                # reader blocked in readline would block here too; the daemon threads go
                # with the kit instead.)
                for pipe in (self.process.stdout, self.process.stderr):
                    if pipe is not None:
                        pipe.close()
        self.router.close(linger=0)
        self.context.term()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- messages -------------------------------------------------------------------------------

    def send(self, *fields: Any, payload: bytes | None = None) -> None:
        """Send a message to the worker's main socket."""
        frames = [MAIN, protocol.pack(*fields)]
        if payload is not None:
            frames.append(payload)
        self.router.send_multipart(frames, copy=payload is None or len(payload) < 65536)

    def receive(self, deadline: float, *, exits_ok: bool = False) -> Message | None:
        """The next message (checked, recorded) before ``deadline``, or None. Raises
        ``WorkerExited`` when nothing is left to read and the worker has ended (with
        ``exits_ok``: returns None instead)."""
        while True:
            left = deadline - time.monotonic()
            if self.router.poll(max(0, min(50, int(left * 1000)))):
                message = self._take(self.router.recv_multipart())
                if message is not None:
                    return message
                continue
            status = self.status()
            if status is not None:
                if exits_ok:
                    return None
                raise WorkerExited(status)
            if left <= 0:
                return None

    def _take(self, frames: list[bytes]) -> Message | None:
        message = parse(frames, time.monotonic())
        code = message.code
        if code == Code.HEARTBEAT:
            if self.handshake is None:
                raise ProtocolViolation(f"a HEARTBEAT came before the HANDSHAKE: "
                                        f"{short(message.fields)}")
            self.beats.append(message.at)
        elif code == Code.LOG:
            self.output.keep(f"log {message.fields[2]}", message.fields[3])
            return None
        elif code == Code.HANDSHAKE and self.handshake is not None:
            raise ProtocolViolation(f"a second HANDSHAKE: {short(message.fields)}; a slave "
                                    f"shakes hands once, first")
        elif code in (Code.CHUNK, Code.CHOKE, Code.ERROR):
            return self._job_message(message)
        elif code == Code.CHOKE_BATCH:
            return self._chokes(message)
        elif code in (Code.CREDIT, Code.HEADERS):
            return self._flow_message(message)
        return message

    def _job_message(self, message: Message) -> Message | None:
        job_id = message.fields[1]
        if job_id is None:  # an ERROR of the slave's start
            return message
        if job_id in self.abandoned:
            self.late += 1
            return None
        answer = self.answers.get(job_id)
        name = name_of(message.code)
        if answer is None:
            raise ProtocolViolation(f"a {name} for job {job_id}, a job id the kit never "
                                    f"sent: {short(message.fields)}")
        if answer.end is not None:
            raise ProtocolViolation(f"a {name} for job {job_id} ({answer.event}) after it "
                                    f"had ended with its {answer.end.upper()}: a job is "
                                    f"finished by exactly one CHOKE or ERROR")
        size = len(message.payload or b"")
        answer.size += size
        if answer.size > MAX_ANSWER:
            raise ProtocolViolation(f"job {job_id} ({answer.event}) sent more than "
                                    f"{MAX_ANSWER >> 20} MiB, more than any rule asks for")
        if message.code == Code.CHUNK:
            assert message.payload is not None
            answer.chunks.append(message.payload)
            self._give_credit(answer)
        elif message.code == Code.CHOKE:
            if message.payload:  # an empty last chunk adds nothing to the answer
                answer.chunks.append(message.payload)
            answer.end, answer.ended_at = "choke", message.at
        else:
            answer.end, answer.ended_at = "error", message.at
            answer.code, answer.message = message.fields[2], message.fields[3]
        return message

    def _chokes(self, message: Message) -> Message:
        """A CHOKE_BATCH (``parse`` checked its shape): each entry is taken, in order, as the
        CHOKE it stands for; only from a worker whose CONFIGURE said ``batch``."""
        if self.settings.get("batch") is not True:
            raise ProtocolViolation(f"a CHOKE_BATCH {short(message.fields)}, but CONFIGURE did "
                                    f"not say batch: such a slave answers one job per message")
        for choke in chokes(message):
            try:
                self._job_message(choke)
            except ProtocolViolation as exc:
                raise ProtocolViolation(f"in the CHOKE_BATCH {short(message.fields)}: "
                                        f"{exc}") from None
            self.answers[choke.fields[1]].batched = True
        return message

    def _flow_message(self, message: Message) -> Message | None:
        job_id = message.fields[1]
        if job_id in self.abandoned:
            self.late += 1
            return None
        answer = self.answers.get(job_id)
        name = name_of(message.code)
        if answer is None:
            raise ProtocolViolation(f"a {name} for job {job_id}, a job id the kit never "
                                    f"sent: {short(message.fields)}")
        if message.code == Code.HEADERS:
            if answer.head is not None or answer.chunks or answer.done:
                raise ProtocolViolation(
                    f"a HEADERS for job {job_id} ({answer.event}) after its "
                    f"{'HEADERS' if answer.head is not None else 'answer had begun'}: HEADERS "
                    f"comes at most once, before the job's first CHUNK or CHOKE")
            problem = head_problem(message.fields[2])
            if problem is not None:
                raise ProtocolViolation(f"the HEADERS {short(message.fields)} of job {job_id}: "
                                        f"{problem}")
            answer.head = message.fields[2]
            return message
        n = message.fields[2]
        if not answer.streamed or n <= 0:
            raise ProtocolViolation(
                f"a CREDIT {short(message.fields)} for job {job_id} ({answer.event}), "
                + ("whose body was not streamed: a slave grants the pieces of a streamed "
                   "body its handler read" if not answer.streamed else
                   "granting no piece: n is at least 1"))
        answer.granted += n
        if answer.granted > answer.pieces:
            raise ProtocolViolation(
                f"job {job_id} ({answer.event}): CREDIT for {answer.granted} pieces in all, "
                f"but the kit sent {answer.pieces}: a slave grants the pieces its handler "
                f"has read, no more")
        if answer.per_piece and answer.granted > len(answer.chunks) + 1:
            raise ProtocolViolation(
                f"job {job_id} ({answer.event}): CREDIT for {answer.granted} pieces in all "
                f"while its handler, which answers a chunk per piece it reads, had answered "
                f"{len(answer.chunks)}: CREDIT says what the handler has read, not what has "
                f"arrived")
        return message

    def _give_credit(self, answer: Answer) -> None:
        if not (self.flow and answer.auto_credit):
            return
        answer.owed += 1
        if answer.owed >= CREDIT_STEP:
            self.send(Code.CREDIT, answer.job_id, answer.owed)
            answer.owed = 0

    # -- jobs -----------------------------------------------------------------------------------

    def invoke(self, event: str, body: bytes, *, auto_credit: bool = True,
               streamed: bool = False) -> Answer:
        """Send an INVOKE; return the job's ``Answer``, filled as messages are received.
        ``streamed``: the INVOKE says ``{"stream": true}``, ``body`` is the first piece, and
        ``feed`` and ``end_body`` send the rest."""
        answer = self._new_job(event, auto_credit=auto_credit, streamed=streamed,
                               pieces=1 if streamed and body else 0)
        if streamed:
            self.send(Code.INVOKE, answer.job_id, event, {}, {"stream": True}, payload=body)
        else:
            self.send(Code.INVOKE, answer.job_id, event, {}, payload=body)
        return answer

    def invoke_batch(self, jobs: Sequence[tuple[str, bytes]]) -> list[Answer]:
        """Send the jobs ``(event, body)`` as one INVOKE_BATCH [14, [[job_id, event, meta],
        ...]] + a body frame per job; return their ``Answer``s, in order."""
        answers = [self._new_job(event) for event, _ in jobs]
        header = protocol.pack(Code.INVOKE_BATCH, [[a.job_id, a.event, {}] for a in answers])
        self.router.send_multipart([MAIN, header, *(body for _, body in jobs)])
        return answers

    def _new_job(self, event: str, **options: Any) -> Answer:
        answer = Answer(self._next_job, event, time.monotonic(), **options)
        self.answers[answer.job_id] = answer
        self._next_job += 1
        return answer

    def feed(self, answer: Answer, piece: bytes) -> None:
        """Send the next piece (not empty) of a streamed job's body (engine CHUNK)."""
        answer.pieces += 1
        self.send(Code.CHUNK, answer.job_id, payload=piece)

    def end_body(self, answer: Answer) -> None:
        """Say that a streamed job's body is complete (engine CHOKE)."""
        self.send(Code.CHOKE, answer.job_id)

    def wait(self, done: Callable[[], bool], deadline: float) -> bool:
        """Read messages until ``done()`` or ``deadline``; whether ``done()`` came true. An
        ERROR with a nil job id (the slave says it cannot go on) is a violation here."""
        while not done():
            if time.monotonic() >= deadline:
                return False
            message = self.receive(deadline)
            if message is not None and message.code == Code.ERROR and message.fields[1] is None:
                raise ProtocolViolation(f"an ERROR with a nil job id (the slave could not "
                                        f"start) while it ran jobs: {short(message.fields)}")
            if message is not None and message.code == Code.HANDSHAKE:
                raise ProtocolViolation("a HANDSHAKE after the first one")
        return True

    def abandon(self) -> None:
        """Forget the jobs still running (a rule has given up on them): their later
        messages are dropped instead of blamed on the next rule."""
        for job_id, answer in self.answers.items():
            if not answer.done:
                self.abandoned.add(job_id)

    def longest_gap(self, start: float, end: float) -> tuple[float, float]:
        """The longest time without a heartbeat within [start, end] (counting from the last
        beat before ``start``), and when it began, in seconds after ``start``."""
        before = [t for t in self.beats if t <= start]
        points = [before[-1] if before else start]
        points += [t for t in self.beats if start < t <= end]
        points.append(end)
        gap, began = 0.0, 0.0
        for first, second in itertools.pairwise(points):
            if second - first > gap:
                gap, began = second - first, first - start
        return gap, began

    def gap_limit(self) -> float:
        """The longest gap between heartbeats the kit accepts: max(3 * interval, 0.5 s)."""
        return max(3 * self.interval, 0.5)
