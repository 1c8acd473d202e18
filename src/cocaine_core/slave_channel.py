"""The slave's side of the engine ↔ slave protocol, for slave runtimes written in Python.

A ``SlaveChannel`` connects a DEALER to the engine's ROUTER, shakes hands, and runs a
heartbeat thread (``slave_heartbeat.py``) with a DEALER of its own, so the engine hears from
the slave however long a handler runs. The same thread forwards what the app prints, from a
bounded buffer: printing never blocks a handler. Lines are cut past
``MAX_LINE`` bytes before they are buffered, and each stream has the budget the engine applies
(``backends/output.py``); past the budget or the buffer, lines are dropped and counted, and the
count goes to the engine (LOG's ``dropped`` field), which says it in its drop notice.

Flow (docs/protocol.md, CREDIT and CANCEL): the engine lets a job send ``credit`` chunks
ahead of its client; ``chunk`` waits for more credit when they are used up (heartbeats go on
from their thread meanwhile), and raises ``JobCancelled`` once the engine has said that
nobody waits for the job. Other messages that arrive meanwhile are kept, in order, for
``recv`` (``pending`` says whether some are kept).

Streamed bodies: the pieces (engine → slave CHUNKs, then a CHOKE) that follow an INVOKE
whose fifth field says ``stream`` are kept per job for ``read_body``, which grants them back
as CREDIT, ``GRANT_STEP`` at a time and before it waits; a job's HEADERS go with ``headers``.

Batches (``slave_batch.py``): an INVOKE_BATCH is read as the INVOKEs it holds; once CONFIGURE
said ``batch``, ``choke`` holds answers to send a run of them in one CHOKE_BATCH, and the
heartbeat thread sends those held too long. The main socket is then used by two threads: each
method that uses it holds the channel's lock while it does (a whole message at a time), and
the heartbeat thread takes the lock only when it is free.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any, cast

import zmq

from cocaine_core import protocol, slave_heartbeat
from cocaine_core.protocol import Code
from cocaine_core.slave_batch import Answers, expand
from cocaine_core.slave_headers import Headers, check_headers

_SNDMORE = int(zmq.SNDMORE)
#: Pieces of a streamed body the handler reads before they are granted back as one CREDIT
#: (the engine holds at most 8 unread pieces per job; fewer held back never stalls it).
GRANT_STEP = 4


class JobCancelled(Exception):
    """Nobody waits for this job's answer any more (its client left): stop the handler."""


class _Body:
    """A job's streamed body: the pieces that came and are not read yet, whether it is
    complete, and how many pieces were read and not yet granted back to the engine."""

    __slots__ = ("complete", "pieces", "read")

    def __init__(self, first: bytes | None) -> None:
        self.pieces: collections.deque[bytes] = collections.deque([first] if first else ())
        self.complete = False
        self.read = 0


class SlaveChannel:
    """A slave's connection to its engine: messages in, answers, heartbeats and logs out."""

    #: Most log lines buffered before further lines are dropped (and counted).
    LOG_BUFFER_LINES = 10_000

    def __init__(self, endpoint: str, slave_id: str, *, parent_pid: int | None = None) -> None:
        self.endpoint = endpoint
        self.slave_id = slave_id
        self.parent_pid = parent_pid
        self.context = zmq.Context(io_threads=1)
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.ROUTING_ID, slave_id.encode())
        self.socket.setsockopt(zmq.LINGER, 2000)
        self.socket.connect(endpoint)
        self.settings: dict[str, Any] = {}
        #: What the app printed, until the heartbeat thread sends it.
        self.output = slave_heartbeat.OutputBuffer(self.LOG_BUFFER_LINES)
        #: Held by whoever uses ``socket`` (the main thread, or the heartbeat thread sending
        #: answers held too long), for a whole message at a time.
        self._lock = threading.RLock()
        #: Set when the channel closes: the heartbeat thread ends.
        self.stopping = threading.Event()
        #: Called after the heartbeat thread sent held answers (a runtime waiting on the
        #: socket's descriptor must look at the socket again: a send may take its edge).
        self.on_flushed: Callable[[], object] = lambda: None
        self._thread: threading.Thread | None = None
        #: Messages read while waiting for credit, kept for ``recv``.
        self._kept: collections.deque[tuple[list[Any], bytes | None]] = collections.deque()
        #: Chunks each job may still send (None: the engine does not speak credit).
        self._window: int | None = None
        self._credit: dict[int, int] = {}
        self._cancelled: set[int] = set()
        self._max_message: int | None = None
        #: Streamed bodies of jobs that have not ended, by job id.
        self._bodies: dict[int, _Body] = {}
        #: Answers held to go several in one message (None: the engine did not say batch).
        self._answers: Answers | None = None

    # -- start-up -------------------------------------------------------------------------------

    def handshake(self) -> dict[str, Any]:
        """Introduce this slave and wait for CONFIGURE; return its settings.

        A spare slave may wait long (until the pool grows): it waits as long as its parent
        lives, and exits when it is told to terminate.
        """
        self.socket.send(protocol.pack(Code.HANDSHAKE, self.slave_id, os.getpid(),
                                       {"flow": True, "stream": True, "batch": True}))
        while not self.socket.poll(1000):
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                os._exit(70)
        fields = protocol.unpack(self.socket.recv_multipart()[0])
        if fields[0] == Code.TERMINATE:
            raise SystemExit(0)
        if fields[0] != Code.CONFIGURE:
            raise RuntimeError(f"expected configure, got message code {fields[0]}")
        self.settings = fields[1] if len(fields) > 1 and isinstance(fields[1], dict) else {}
        window, largest = self.settings.get("credit"), self.settings.get("max_message")
        self._window = window if isinstance(window, int) and window > 0 else None
        self._max_message = largest if isinstance(largest, int) and largest > 0 else None
        if self.settings.get("batch") is True:
            self._answers = Answers(self.socket)
        return self.settings

    def ready(self) -> None:
        """Tell the engine this slave is ready for jobs (its first heartbeat), then start the
        heartbeat thread (after: so the ready message does not wait for it)."""
        self.socket.send(protocol.pack(Code.HEARTBEAT, self.slave_id))
        if self._thread is None:
            self._thread = threading.Thread(target=slave_heartbeat.beat, args=(self,),
                                            name="cocaine-heartbeat", daemon=True)
            self._thread.start()

    # -- messages -------------------------------------------------------------------------------

    def recv(self) -> tuple[list[Any], bytes | None]:
        """Wait for the next message: its header fields and payload (or None). CREDIT and
        CANCEL are taken here, never returned. Answers held are sent before it waits."""
        answers = self._answers
        with self._lock:
            while not self._kept:
                if answers is not None and answers.held and not _readable(self.socket):
                    answers.flush()
                self._take(_receive(self.socket))
            message = self._kept.popleft()
            if answers is not None:
                answers.starting(message[0])
            return message

    def recv_ready(self) -> tuple[list[Any], bytes | None] | None:
        """The next message if one has come (never waits), else None (and answers held are
        sent: the caller is about to wait)."""
        answers = self._answers
        with self._lock:
            if not self._kept:
                self._read_ready()
            if not self._kept:
                if answers is not None:
                    answers.flush()
                return None
            message = self._kept.popleft()
            if answers is not None:
                answers.starting(message[0])
            return message

    def flush(self) -> None:
        """Send the answers held (before any other message: the engine gets them in order)."""
        if self._answers is not None and self._answers.held:
            with self._lock:
                self._answers.flush()

    @property
    def answers(self) -> Answers | None:
        """The answers held for a CHOKE_BATCH (None: the engine did not say ``batch``)."""
        return self._answers

    def flush_overdue(self) -> None:
        """From the heartbeat thread: send the answers held, if the main thread is not using
        the socket (it sends them itself before it waits on it)."""
        if self._answers is None or not self._lock.acquire(blocking=False):
            return
        try:
            if not self._answers.held:
                return
            self._answers.flush()
        except zmq.ZMQError:
            return  # the socket is closing: the slave is ending
        finally:
            self._lock.release()
        # The runtime's event loop may have closed meanwhile: nobody waits to be woken.
        with contextlib.suppress(RuntimeError):
            self.on_flushed()

    def readable(self) -> bool:
        """Whether a message waits on the main socket (its descriptor only signals edges)."""
        with self._lock:
            return _readable(self.socket)

    def descriptor(self) -> int:
        """The main socket's file descriptor, to wait on in an event loop (edge-triggered:
        look with ``readable`` or ``recv_ready`` after each wake)."""
        with self._lock:
            return cast(int, self.socket.getsockopt(zmq.FD))

    def pending(self) -> bool:
        """Whether messages read ahead (while a job waited for credit) wait for ``recv``."""
        return bool(self._kept)

    def _take(self, frames: list[bytes]) -> None:
        fields = protocol.unpack(frames[0])
        code = fields[0]
        if code == Code.CHUNK or code == Code.CHOKE:  # from the engine: a piece of a body
            body = self._bodies.get(fields[1]) if len(fields) > 1 else None
            if body is not None:  # else the job has ended: the piece is dropped
                if len(frames) > 1 and frames[1]:
                    body.pieces.append(frames[1])
                if code == Code.CHOKE:
                    body.complete = True
        elif code == Code.CREDIT and len(fields) > 2 and isinstance(fields[2], int):
            if fields[1] in self._credit:
                self._credit[fields[1]] += fields[2]
        elif code == Code.INVOKE_BATCH:
            self._kept.extend(expand(fields, frames))
        elif code == Code.CANCEL and len(fields) > 1:
            self._cancelled.add(fields[1])
            if len(self._cancelled) > 10_000:  # ids of jobs long gone: never grow without end
                self._cancelled.clear()
        else:
            payload = frames[1] if len(frames) > 1 else None
            if (code == Code.INVOKE and len(fields) > 4 and isinstance(fields[4], dict)
                    and fields[4].get("stream") is True):
                self._bodies[fields[1]] = _Body(payload)  # its pieces may follow at once
            self._kept.append((fields, payload))

    def chunk(self, job_id: int, data: bytes) -> None:
        """Send one chunk of a job's answer, once the job has credit (``JobCancelled`` if
        nobody waits for it any more; ``ValueError`` for a chunk over the engine's limit)."""
        with self._lock:
            self._check_size(data)
            self.flush()  # before it may wait for credit: held answers never wait on this job
            window = self._window
            if window is not None:
                if _readable(self.socket):
                    self._read_ready()
                left = self._credit.setdefault(job_id, window)
                while left <= 0 and job_id not in self._cancelled:
                    if self.socket.poll(1000):
                        self._read_ready()
                    left = self._credit[job_id]
                if job_id in self._cancelled:
                    raise JobCancelled(f"job {job_id}: nobody waits for its answer any more")
                self._credit[job_id] = left - 1
            self.socket.send(protocol.pack(Code.CHUNK, job_id), _SNDMORE)
            self.socket.send(data, 0, copy=len(data) < 65536)

    def may_send(self, job_id: int) -> bool:
        """Whether ``chunk`` for this job would go at once (it has credit, or it has been
        cancelled and would raise), for runtimes that wait on an event loop instead."""
        window = self._window
        return (window is None or job_id in self._cancelled
                or self._credit.get(job_id, window) > 0)

    # -- streamed bodies ----------------------------------------------------------------------

    def streamed(self, job_id: int) -> bool:
        """Whether job ``job_id`` (not ended) has a streamed body, read with ``read_body``."""
        return job_id in self._bodies

    def read_body(self, job_id: int, wait: bool = True) -> bytes | None:
        """The next piece of a job's streamed body (never empty), or None once it is complete.
        ``JobCancelled`` if the engine said nobody waits for the job. With ``wait`` False,
        ``b""`` when no piece has come yet (what was read is granted first, so the engine
        sends more). The wait lasts until a piece, the end or a CANCEL comes: the engine
        bounds it (the job's timeout, the driver's timeout between pieces)."""
        with self._lock:
            body = self._bodies.get(job_id)
            if body is None:
                raise RuntimeError(f"job {job_id} has no streamed body to read: it has ended (read "
                                   f"the body in the handler, before it returns), or its request "
                                   f"was not streamed")
            if _readable(self.socket):
                self._read_ready()
            while job_id not in self._cancelled:
                if body.pieces:
                    body.read += 1
                    if body.read >= GRANT_STEP:
                        self._grant(job_id, body)
                    return body.pieces.popleft()
                if body.complete:
                    return None
                self._grant(job_id, body)  # before waiting: the engine may be waiting for it
                self.flush()  # and held answers never wait on this body
                if not wait:
                    return b""
                if self.socket.poll(1000):
                    self._read_ready()
            raise JobCancelled(f"job {job_id}: nobody waits for its answer any more")

    def _grant(self, job_id: int, body: _Body) -> None:
        if body.read:
            self.flush()
            self.socket.send(protocol.pack(Code.CREDIT, job_id, body.read))
            body.read = 0

    def headers(self, job_id: int, status: int, headers: Headers | None = None) -> None:
        """Send how a job's answer should be presented (HEADERS: its status and headers),
        before its first chunk; ValueError or TypeError (see ``check_headers``) if they are
        not valid."""
        with self._lock:
            pairs = check_headers(status, headers)
            self.flush()
            self.socket.send(protocol.pack(Code.HEADERS, job_id,
                                           {"status": status, "headers": pairs}))

    def _read_ready(self) -> None:
        while _readable(self.socket):
            self._take(_receive(self.socket))

    def _check_size(self, data: bytes) -> None:
        if self._max_message is not None and len(data) > self._max_message - 1024:
            raise ValueError(f"an answer's chunk of {len(data)} bytes is larger than the "
                             f"node takes from a slave ({self._max_message} bytes with its "
                             f"header): send it as several smaller chunks (yield them)")

    def ended(self, job_id: int) -> None:
        """Forget a job's credit and body (it has ended: pieces still to come are dropped)."""
        self._credit.pop(job_id, None)
        self._bodies.pop(job_id, None)
        self._cancelled.discard(job_id)

    def choke(self, job_id: int, last: bytes | None = None) -> None:
        """Say a job's answer is complete; ``last`` is its final chunk, sent along."""
        with self._lock:
            if last is not None:
                self._check_size(last)
            self.ended(job_id)
            if self._answers is not None:
                self._answers.hold(job_id, last)  # sent with the next answers, or before a wait
                return
            if last is None:
                self.socket.send(protocol.pack(Code.CHOKE, job_id))
            else:
                self.socket.send(protocol.pack(Code.CHOKE, job_id), _SNDMORE)
                self.socket.send(last, 0, copy=len(last) < 65536)

    def error(self, job_id: int | None, code: int, message: str, traceback: str = "") -> None:
        """Fail a job (or, with ``job_id`` None, the slave's start) with a code and message."""
        with self._lock:
            if job_id is not None:
                self.ended(job_id)
                if self._answers is not None:
                    self._answers.forget(job_id)
            self.flush()
            self.socket.send(protocol.pack(Code.ERROR, job_id, code, message, traceback))

    def log(self, stream: str, text: str) -> None:
        """Queue a line of output (``stdout`` or ``stderr``) for the node's log; never blocks.
        A line longer than ``MAX_LINE`` is cut (the engine says so); past the stream's budget
        or the buffer, lines are dropped and counted."""
        self.output.add(stream, text)

    def close(self) -> None:
        """Stop the heartbeat thread and close the sockets, flushing what is queued."""
        self.flush()
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.socket.close(linger=2000)
        self.context.term()


def _receive(socket: zmq.Socket) -> list[bytes]:
    """A message's frames (waits for one): as ``recv_multipart``, without its getsockopt for
    each frame (which costs pyzmq an enum lookup) and its flags made enums."""
    frame = socket.recv(0, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = socket.recv(0, copy=False)
        frames.append(frame.bytes)
    return frames


def _readable(socket: zmq.Socket) -> bool:
    return bool(cast(int, socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN)

