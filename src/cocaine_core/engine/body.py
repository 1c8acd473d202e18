"""Streamed request bodies: a job whose body arrives in pieces while it runs.

A driver (or the node's endpoint, for a client's streamed request) makes a ``BodyStream``,
gives it to its job (``Driver.make_job(..., stream=stream)``) and ``feed``\\ s it piece by
piece as the pieces arrive, then ``end``\\ s it. The engine sends the pieces on to the slave
that runs the job (``[5, job_id] + piece``, then ``[6, job_id]``: docs/protocol.md), and the
slave says how many its handler has read (``[12, job_id, n]``); only then may the producer
send more. As a TCP window does, at most ``WINDOW`` pieces are fed and not yet read by the
handler, wherever they wait (here while the job is queued, in ZeroMQ, in the slave): the
producer stops reading its client while ``room()`` is 0 and goes on when ``on_credit`` says.
So a 1 GiB upload crosses the node and the slave a few pieces at a time.

A slave whose runtime does not read streamed bodies (its handshake did not say ``stream``)
gets the body whole, in one INVOKE, once it is complete, gathered here up to ``GATHER_LIMIT``
bytes; a longer body fails its job with 400, saying why.

A streamed job runs at most once: its pieces cannot be sent again, so it is never retried on
another slave.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cocaine_core import protocol
from cocaine_core.protocol import Code, Status

if TYPE_CHECKING:
    from cocaine_core.engine.engine import Engine
    from cocaine_core.engine.job import Job
    from cocaine_core.engine.pool import SlavePool
    from cocaine_core.engine.slave_handle import SlaveHandle

#: Pieces of a body fed and not yet read by the handler, once its job runs.
WINDOW = 8
#: Pieces a producer may feed while the job waits in its queue (its credit at the start): a
#: queued streamed request holds no more than a plain one; the rest of the window is granted
#: when the job starts.
QUEUED_WINDOW = 1
#: The largest body gathered for a slave that does not read streamed bodies.
GATHER_LIMIT = protocol.MAX_MESSAGE
#: The most headers a HEADERS message may carry.
MAX_HEADERS = 64

#: Why a job was not run again after its slave died: (its body streamed, it said no retry).
NO_RETRY_WHY = ("because its body streamed (its pieces cannot be sent again)",
                "because retry is off for it (the task's \"retry\": false or the request's "
                "policy retry: false)")

#: Sends a piece to the slave (None: the end of the body).
Sender = Callable[[bytes | None], None]


class BodyOverrun(ValueError):
    """A piece was fed while the stream had no room (the producer ignored its credit)."""


class BodyStream:
    """The pieces of one job's body on their way from a producer to the job's slave."""

    __slots__ = ("_abort", "_gathered", "_pending", "_released", "_sender", "closed",
                 "ended", "gathering", "on_credit", "touched", "unread", "window")

    def __init__(self, on_credit: Callable[[int], None] | None = None, *,
                 window: int = WINDOW) -> None:
        #: Called with ``n`` when the handler has read ``n`` pieces: the producer may feed
        #: ``n`` more.
        self.on_credit = on_credit
        self.window = window
        #: Pieces fed (the job's first body included, if not empty) not yet read.
        self.unread = 0
        #: The producer said the body is complete.
        self.ended = False
        #: The job has ended (answered, failed or cancelled): pieces are dropped.
        self.closed = False
        #: Gathering the body whole for a slave that does not read streams (its size so far).
        self.gathering: int | None = None
        self._gathered: list[bytes] = []
        self._pending: collections.deque[bytes | None] = collections.deque()
        self._sender: Sender | None = None
        self._abort: Callable[[str], None] | None = None
        #: Called if the job ends while its body is still being gathered (the slave it holds
        #: has seen nothing of it, and is free again).
        self._released: Callable[[], None] | None = None
        #: When a piece was last fed or read (monotonic): a stall watch's clock.
        self.touched = time.monotonic()

    # -- the producer's side --------------------------------------------------------------------

    def room(self) -> int:
        """How many pieces the producer may feed now (0 once the job has ended): one while
        the job waits in its queue, the window once it runs."""
        if self.closed or self.ended:
            return 0
        return max(0, self._limit() - self.unread)

    def _limit(self) -> int:
        return self.window if self._sender is not None else min(self.window, QUEUED_WINDOW)

    def feed(self, data: bytes) -> None:
        """One more piece of the body (dropped once the job has ended; an empty piece is
        nothing). ``BodyOverrun`` if the stream has no room for it."""
        if self.closed or not data:
            return
        if self.ended:
            raise BodyOverrun("a piece was fed after the end of the body")
        if self.unread >= self._limit():
            raise BodyOverrun(f"more than {self._limit()} piece(s) of the body were sent ahead "
                              f"of the handler (the sender ignored its credit)")
        self.unread += 1
        self.touched = time.monotonic()
        self._send(data)

    def end(self) -> None:
        """The body is complete."""
        if not self.closed and not self.ended:
            self.ended = True
            self._send(None)

    def abort(self, reason: str) -> None:
        """The producer gave up (its client left, or stalled): the job is cancelled, as a
        client's CANCEL would (never started if it still waits; stopped if running)."""
        if not self.closed and self._abort is not None:
            self._abort(reason)
        self.close()

    # -- the engine's side ----------------------------------------------------------------------

    def bind(self, abort: Callable[[str], None], first: bytes) -> None:
        """The engine that took the job (a redeploy hands it to the next one): how ``abort``
        cancels it. ``first``, the job's body given at its making, is the first piece (it
        counts against the window once)."""
        if self._abort is None and first:
            self.unread += 1
        self._abort = abort

    def attach(self, sender: Sender) -> None:
        """The job started on a slave: send what waited, and every later piece, with
        ``sender``."""
        before = self.room()
        self._sender = sender
        pending = self._pending
        while pending and not self.closed:
            sender(pending.popleft())
        more = self.room() - before  # the rest of the window, now that the job runs
        if more > 0 and self.on_credit is not None:
            self.on_credit(more)

    def read(self, pieces: int) -> None:
        """The handler read ``pieces`` pieces: the producer may feed as many more."""
        if self.closed or pieces <= 0:
            return
        pieces = min(pieces, self.unread)
        self.unread -= pieces
        self.touched = time.monotonic()
        if pieces and self.on_credit is not None:
            self.on_credit(pieces)

    def close(self) -> None:
        """The job ended: drop what waits and take no more."""
        self.closed = True
        self._pending.clear()
        self._gathered.clear()
        self._sender = None
        released, self._released = self._released, None
        if released is not None:
            released()

    def _send(self, piece: bytes | None) -> None:
        if self._sender is not None:
            self._sender(piece)
        else:
            self._pending.append(piece)

    # -- gathering, for a slave that does not read streams --------------------------------------

    def gather(self, done: Callable[[bytes], None], too_long: Callable[[str], None],
               first: bytes, released: Callable[[], None]) -> None:
        """Collect the whole body (``first`` and every piece), granting credit as pieces
        come, then call ``done(body)``; ``too_long(why)`` past ``GATHER_LIMIT``;
        ``released()`` if the job ends before its body is complete."""
        self.gathering = len(first)
        self._released = released
        if first:
            self._gathered.append(first)

        def take(piece: bytes | None) -> None:
            if piece is None:
                body = b"".join(self._gathered)
                self._gathered.clear()
                self._released = None
                done(body)
                return
            assert self.gathering is not None
            self.gathering += len(piece)
            if self.gathering > GATHER_LIMIT:
                too_long(f"the request's body passed {GATHER_LIMIT} bytes, and this app's "
                         f"runtime does not read streamed bodies (its handshake did not say "
                         f"'stream': docs/protocol.md), so the node would have to hold it "
                         f"whole; send less, or use a runtime that streams (cocaine-python)")
                return
            self._gathered.append(piece)
            self.read(1)

        self.read(1 if first else 0)
        self.attach(take)


# -- the engine's side of the wire ---------------------------------------------------------------

def taken(engine: Engine, job: Job) -> None:
    """``engine`` takes ``job``, whose body streams: its producer's ``abort`` cancels it
    there."""
    assert job.stream is not None
    job.stream.bind(lambda why: cancel(engine, job, why), job.body)


def cancel(engine: Engine, job: Job, why: str) -> None:
    """Nobody waits for ``job`` any more (``why``): never start it if it is queued, tell its
    slave to stop it if it runs (as a client's CANCEL does)."""
    if job.finished:
        return
    if engine.queue.remove(job):
        engine.stats.abandon(job)
        return
    engine.stats.abandon(job)
    engine.pool.stop_job(job, why)


def invoke(pool: SlavePool, slave: SlaveHandle, job: Job) -> None:
    """Start ``job``, whose body streams, on ``slave`` (``pool.invoke`` has recorded it)."""
    stream = job.stream
    assert stream is not None
    job.retry = False  # its pieces cannot be sent again: it runs at most once
    channel = pool.engine.channel
    if not slave.streams:
        def done(body: bytes) -> None:
            if slave.jobs.get(job.id) is job:
                channel.send([slave.id.encode(), protocol.pack(Code.INVOKE, job.id, job.event,
                                                               job.meta), body])

        def too_long(why: str) -> None:
            pool.engine.stats.fail(job, Status.BAD_REQUEST, why)  # releases the slave

        def released() -> None:  # never sent: the slave is free at once (after this call)
            asyncio.get_running_loop().call_soon(free)

        def free() -> None:
            if slave.jobs.get(job.id) is job:
                del slave.jobs[job.id]
                pool.job_left(slave)

        stream.gather(done, too_long, job.body, released)
        return
    identity = slave.id.encode()
    channel.send([identity, protocol.pack(Code.INVOKE, job.id, job.event, job.meta,
                                          {"stream": True}), job.body])
    chunk, end = protocol.pack(Code.CHUNK, job.id), protocol.pack(Code.CHOKE, job.id)

    def send(piece: bytes | None) -> None:
        frames = [identity, end] if piece is None else [identity, chunk, piece]
        if not channel.try_send(frames) and pool.slaves.get(slave.id) is slave:
            # It granted credit for pieces it never took off its socket (its runtime is
            # broken): the node would hold the body for it. Replace it; the job fails.
            pool.kill(slave, f"it does not read what the engine sends it ({channel.send_queue} "
                             f"messages waiting), while granting credit for a streamed body",
                      kind="misbehaved")

    stream.attach(send)


def job_flow(pool: SlavePool, slave_id: str, code: int, fields: list[Any]) -> None:
    """CREDIT (the handler read pieces of a streamed body) or HEADERS (how to present the
    answer) from a slave of ``pool`` (``SlaveListener.job_flow``)."""
    slave = pool.slaves.get(slave_id)
    if slave is None or len(fields) < 3:
        return
    job = slave.jobs.get(fields[1])
    if job is None or job.finished:
        return
    if code == Code.CREDIT:
        if job.stream is not None and isinstance(fields[2], int):
            job.stream.read(fields[2])
    elif code == Code.HEADERS:
        head = getattr(job.sink, "head", None)
        meta = fields[2]
        if head is not None and not job.sent_any and not job.headed and isinstance(meta, dict):
            job.headed = True  # at most once: a second HEADERS is dropped
            head(meta)
