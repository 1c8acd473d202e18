"""One ``raw-server`` connection: frames in, jobs submitted, answers out in request order.

Reading stops (``pause_reading``) while any of these holds, and resumes when none does:

- ``pipeline`` frames of this connection are in flight (submitted, answer not yet written);
- the app's engine has no room (``has_room()`` false): the server retries when a job ends, and
  every ``RESUME_CHECK`` seconds;
- the transport's write buffer is above its high-water mark (a client that does not read its
  answers): answers wait in the connection, at most ``pipeline`` of them, until it drains;
- the task is stopping.

So what the node holds for a connection is bounded: one read plus ``max-frame`` of input, and
``pipeline`` answers of at most ``max-answer`` bytes each.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from cocaine_core.drivers.raw_framing import FrameTooLarge, decoder, encode, error_answer
from cocaine_core.protocol import Status

if TYPE_CHECKING:
    from cocaine_core.drivers.raw import RawServer
    from cocaine_core.engine.job import Job

#: Bytes of answers the transport may buffer for a client before answers wait in the
#: connection and reading stops (asyncio's low-water mark is a quarter of it).
WRITE_HIGH_WATER = 256 * 1024
#: Most seconds a connection the node closes is still read (and what comes dropped) after its
#: last answers, so that the client gets them rather than a reset for data it sent late.
LINGER = 5.0


class RawAnswer:
    """The sink of one frame's job: gathers the answer until the job ends."""

    __slots__ = ("chunks", "code", "connection", "done", "job", "message", "size")

    def __init__(self, connection: RawConnection) -> None:
        self.connection = connection
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False
        self.code = 0
        self.message = ""
        self.job: Job | None = None

    def chunk(self, data: bytes) -> None:
        """Keep a chunk; an answer growing past max-answer becomes an error."""
        if self.code:
            return
        self.size += len(data)
        limit = self.connection.server.max_answer
        if self.size > limit:
            self.chunks = []
            self.code = Status.SERVER_ERROR
            self.message = (f"the answer grew to over {limit} bytes, the task's max-answer; "
                            f"raise it in the manifest or answer with less")
        else:
            self.chunks.append(data)

    def choke(self) -> None:
        """The answer is complete."""
        self._end()

    def error(self, code: int, message: str) -> None:
        """The job failed (or was refused)."""
        self.chunks = []
        self.code, self.message = int(code), message
        self._end()

    def _end(self) -> None:
        self.done = True
        self.connection.answer_ready()


class RawConnection(asyncio.Protocol):
    """A client's connection to a ``raw-server`` task."""

    def __init__(self, server: RawServer, number: int) -> None:
        self.server = server
        self.number = number
        self.decoder = decoder(server.framing, server.max_frame)
        self.transport: asyncio.Transport | None = None
        self.remote = "unix"
        self.answers: deque[RawAnswer] = deque()
        self.reading = True
        self.write_paused = False
        self.waiting_room = False
        self.closing = False  # no more frames: close once the answers are written
        self.lost = False
        self.shut = False  # closed by the node: nothing more is written
        self.discard = False  # what is read is dropped (a frame too large; closing)
        self.last_read = time.monotonic()
        self._idle: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None

    # -- asyncio's calls ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection in (or refuse it past max-connections)."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
            self.remote = f"{host}:{peer[1]}"
        if not self.server.admit(self):
            self.lost = True
            transport.abort()
            return
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._arm_idle(self.server.idle_timeout)

    def data_received(self, data: bytes) -> None:
        """Take bytes in and submit the frames they complete."""
        if self.discard or self.lost:
            return
        self.last_read = time.monotonic()
        try:
            self.decoder.feed(data)
        except FrameTooLarge as exc:
            self._too_large(exc)
            return
        self.pump()

    def eof_received(self) -> bool:
        """The client ended its sending: its last frame, then close once answered."""
        self.decoder.end()
        if self.shut:
            return False  # the node closed it and waited only for this: asyncio closes
        if self.discard:
            return True  # a frame was too large: the answers before it are still written
        self.pump()
        return True  # keep the connection open to write the answers

    def pause_writing(self) -> None:
        """The client reads slower than answers come: hold them, stop reading."""
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        """The client caught up: write what waits, read again."""
        self.write_paused = False
        self.flush()
        self.pump()

    def connection_lost(self, exc: Exception | None) -> None:
        """Gone: cancel the jobs still running or queued for it (queued, they never run;
        running, their slaves are told to stop them)."""
        self.lost = True
        for timer in (self._idle, self._linger):
            if timer is not None:
                timer.cancel()
        self._abandon()
        self.server.forget(self)

    def _abandon(self) -> None:
        for answer in self.answers:
            if not answer.done and answer.job is not None and not answer.job.finished:
                self.server.engine.cancel(answer.job, "its client left")
                self.server.abandoned += 1
        self.answers.clear()

    # -- frames in ----------------------------------------------------------------------------

    def pump(self) -> None:
        """Submit the frames held while this connection may take more; then pause or resume
        reading as the rules above say."""
        self.waiting_room = False
        while not self.closing and not self.lost and len(self.answers) < self.server.pipeline:
            if self.server.stopping:
                break
            if not self.server.engine.has_room():
                self.waiting_room = True
                self.server.wait_for_room(self)
                break
            try:
                frame = self.decoder.next_frame()
            except FrameTooLarge as exc:
                self._too_large(exc)
                return
            if frame is None:
                break
            self._submit(frame)
        if self.decoder.ended and not self.closing and not self.waiting_room and \
                len(self.answers) < self.server.pipeline and not self.server.stopping:
            if self.decoder.leftover():
                self.server.log.info("partial", f"a client ended its sending inside a frame "
                                                f"({self.decoder.leftover()} bytes dropped)")
            self.closing = True
            self.flush()
        self._update_reading()

    def _submit(self, frame: bytes) -> None:
        answer = RawAnswer(self)
        self.answers.append(answer)
        self.server.received += 1
        meta: dict[str, Any] = {"remote": self.remote, "connection": self.number}
        job = self.server.make_job(frame, meta, answer)
        answer.job = job
        try:
            self.server.engine.submit(job)
        except Exception as exc:
            job.fail(Status.SERVER_ERROR, f"the node failed to queue the frame: {exc!r}")
        if self.server.framing == "eof":
            self.closing = True

    def _update_reading(self) -> None:
        if self.transport is None or self.lost or self.shut:
            return
        want = (not self.closing and not self.waiting_room and not self.write_paused
                and not self.server.stopping and len(self.answers) < self.server.pipeline)
        if want != self.reading:
            self.reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _too_large(self, exc: FrameTooLarge) -> None:
        self.server.too_large += 1
        self.server.log.warning("too-large", f"closing the connection of {self.remote} once "
                                             f"the answers before it are written: {exc}")
        self.closing = self.discard = True
        self.decoder.buffer.clear()
        self.decoder.start = 0
        if self.transport is not None:
            self.transport.resume_reading()  # drained, so the answers are not lost to a reset
        self.reading = True
        self.flush()

    # -- answers out --------------------------------------------------------------------------

    def answer_ready(self) -> None:
        """A job of this connection ended: write what is ready, in order; take more frames."""
        self.server.job_ended()
        if self.lost:
            return
        self.flush()
        # Not now: the engine calls this before it has started its next queued job, when
        # has_room() may still say yes (a slave is free) to a queue that is full.
        asyncio.get_running_loop().call_soon(self._pump_if_open)

    def _pump_if_open(self) -> None:
        if not self.lost and not self.shut:
            self.pump()

    def flush(self) -> None:
        """Write the answers that are complete and first in line (unless the client is
        behind); close after the last one if the connection is closing."""
        if self.transport is None or self.lost or self.shut:
            return
        framing = self.server.framing
        while self.answers and self.answers[0].done and not self.write_paused:
            answer = self.answers.popleft()
            if answer.code:
                self.server.failed_answer(self, answer.code, answer.message)
                if self.server.on_error == "close":
                    self.close_now()
                    return
                self.transport.write(encode(framing, error_answer(framing, answer.code,
                                                                  answer.message)))
            else:
                self.server.answered += 1
                self.transport.write(encode(framing, b"".join(answer.chunks)))
        if not self.answers and (self.closing or self.server.stopping):
            self.close_now()

    def close_now(self) -> None:
        """Close once what was written is sent; answers not yet written are dropped and their
        jobs abandoned. A client still sending is read (and ignored) until it closes too, or
        ``LINGER`` seconds: closing with its data unread would reset the connection and lose
        the answers written."""
        if self.shut:
            return
        self.closing = self.shut = self.discard = True
        self._abandon()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.decoder.ended or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()
        self._linger = asyncio.get_running_loop().call_later(LINGER, transport.close)

    def stop(self) -> None:
        """The task stops: read no more; close once the answers in flight are written."""
        self._update_reading()
        self.flush()

    # -- idle ---------------------------------------------------------------------------------

    def _arm_idle(self, delay: float) -> None:
        self._idle = asyncio.get_running_loop().call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        if self.lost or self.shut:
            return
        timeout = self.server.idle_timeout
        quiet = time.monotonic() - self.last_read
        if self.answers or not self.reading or quiet < timeout:
            # Frames in flight, or input held back by the node (no room): not the client's
            # silence.
            busy = self.answers or not self.reading
            self._arm_idle(timeout if busy else max(0.05, timeout - quiet))
            return
        self.server.idle_closed += 1
        self.close_now()
