"""The engine's side of the engine ↔ slave protocol: its ROUTER socket and message decoding.

The twin of ``cocaine_core.slave_channel`` (the slave's side). ``EngineChannel`` binds the
app's ``ipc://`` endpoint, decodes every message from a slave into one call on its
``SlaveListener`` (the pool and the engine), and encodes what the engine sends: configure,
invoke, credit, cancel, terminate. Frames are documented in docs/protocol.md.

A slave runs the app's code, so it is not trusted either: a message from it larger than
``SLAVE_MAX_MESSAGE`` makes ZeroMQ drop its connection before the engine holds it (the
runtime is told the limit in CONFIGURE, and cocaine-python refuses such a chunk itself with
a clear error).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, Protocol

import zmq

from cocaine_core import protocol
from cocaine_core.engine.job import Job
from cocaine_core.errors import ProtocolError
from cocaine_core.errortext import printable
from cocaine_core.protocol import Code
from cocaine_core.zmqloop import FULL, SocketReader

log = logging.getLogger("cocaine.engine")

#: The largest message the engine takes from a slave (a chunk of an answer, with its header).
SLAVE_MAX_MESSAGE = 256 * 2**20
#: The most items in any array or map of a slave's header: a header has at most five
#: fields, and a frame of millions of one-byte items would unpack to a list many times its
#: size (a 200 MiB frame to gigabytes the node keeps).
SLAVE_MAX_ITEMS = 64
#: Messages that name a job: their job id must be an integer (an ERROR's may be nil).
_JOB_CODES = frozenset({Code.CHUNK, Code.CHOKE, Code.ERROR, Code.CREDIT, Code.HEADERS})
#: Seconds between two notices of malformed messages dropped.
NOTICE_INTERVAL = 10.0
#: Messages the engine may have waiting for one slave, per job it may run at once (an INVOKE,
#: the 8 pieces of a streamed body and its end, credit for its answer, a CANCEL), and beyond
#: them: a slave with more waiting does not read what it is sent (``send`` says FULL).
SEND_QUEUE_PER_JOB, SEND_QUEUE_EXTRA = 16, 64


class SlaveListener(Protocol):
    """What the channel calls for each message a slave sends, by slave id."""

    def slave_handshake(self, slave_id: str, pid: int | None, flow: bool = False,
                        streams: bool = False) -> None:
        """The slave introduced itself (its pid, if it said; ``flow``: it follows CREDIT
        and CANCEL; ``streams``: it reads streamed bodies)."""

    def slave_heartbeat(self, slave_id: str) -> None:
        """The slave is alive (its first heartbeat after configure means ready)."""

    def slave_log(self, slave_id: str, stream: str, text: str, dropped: int = 0) -> None:
        """A line the app printed on ``stream`` (stdout or stderr), after ``dropped`` lines
        its slave dropped (with ``text`` empty: only the count)."""

    def job_chunk(self, slave_id: str, job_id: int, data: bytes) -> None:
        """A chunk of a job's answer."""

    def job_done(self, slave_id: str, job_id: int, last: bytes | None) -> None:
        """A job's answer is complete; ``last`` is its final chunk, if sent along."""

    def job_error(self, slave_id: str, job_id: int, code: int, message: str,
                  traceback: str) -> None:
        """A job failed (the handler raised: usually 502)."""

    def slave_failed(self, slave_id: str, message: str) -> None:
        """The slave could not start (an error with no job id)."""

    def job_flow(self, slave_id: str, code: int, fields: list[Any]) -> None:
        """CREDIT (the handler read pieces of a streamed body) or HEADERS for a job."""


class EngineChannel:
    """The ROUTER slaves connect to: decodes what they send, encodes what they are sent."""

    def __init__(self, endpoint: str, listener: SlaveListener, concurrency: int = 1) -> None:
        self.endpoint = endpoint
        self.listener = listener
        #: The most messages waiting for one slave (ZMQ_SNDHWM).
        self.send_queue = SEND_QUEUE_PER_JOB * concurrency + SEND_QUEUE_EXTRA
        self.max_message = SLAVE_MAX_MESSAGE
        self._socket: zmq.Socket[bytes] | None = None
        self._reader: SocketReader | None = None
        #: Malformed messages dropped since the last notice, and when it was said.
        self._dropped = 0
        self._said_at = -NOTICE_INTERVAL

    def bind(self) -> None:
        """Bind the endpoint and start decoding (from the running asyncio loop)."""
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # A message to a slave is never dropped for want of room: past ``send_queue`` waiting
        # for one slave (which does not read them), a send fails (ROUTER_MANDATORY), and
        # ``try_send`` says so.
        sock.setsockopt(zmq.SNDHWM, self.send_queue)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message)
        sock.bind(self.endpoint)
        self._socket = sock
        self._reader = SocketReader(sock, self._on_message)

    def close(self) -> None:
        """Stop decoding, close the socket and remove the ``ipc://`` file."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        if self.endpoint.startswith("ipc://"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.endpoint.removeprefix("ipc://"))

    # -- sending ----------------------------------------------------------------------------

    def _malformed(self, why: str) -> None:
        """Count a message dropped as malformed; say so at most every ``NOTICE_INTERVAL``
        (a slave that sends nothing else must not flood the node's log)."""
        self._dropped += 1
        now = time.monotonic()
        if now - self._said_at >= NOTICE_INTERVAL:
            log.warning("%s: dropped %d malformed slave message(s) in the last %g s; the "
                        "latest: %s", self.endpoint, self._dropped, NOTICE_INTERVAL,
                        printable(why)[:500])
            self._dropped, self._said_at = 0, now

    def configure(self, slave_id: str, settings: dict[str, Any]) -> None:
        """Tell a slave that shook hands to get ready, with its settings."""
        self.send([slave_id.encode(), protocol.pack(Code.CONFIGURE, settings)])

    def invoke(self, slave_id: str, job: Job) -> None:
        """Hand a job to a slave."""
        self.send([slave_id.encode(), protocol.pack(Code.INVOKE, job.id, job.event, job.meta),
                    job.body])

    def credit(self, slave_id: str, job_id: int, chunks: int) -> None:
        """Let a slave send ``chunks`` more chunks of a job's answer."""
        self.send([slave_id.encode(), protocol.pack(Code.CREDIT, job_id, chunks)])

    def cancel(self, slave_id: str, job_id: int) -> None:
        """Tell a slave that nobody waits for a job's answer any more: stop it."""
        self.send([slave_id.encode(), protocol.pack(Code.CANCEL, job_id)])

    def terminate(self, slave_id: str, reason: str) -> None:
        """Ask a slave to exit once its jobs are done."""
        self.send([slave_id.encode(), protocol.pack(Code.TERMINATE, reason)])

    def send(self, frames: list[bytes]) -> None:
        """Send a message (frames, the slave's identity first) to a slave."""
        if self._reader is not None:
            self._reader.send(frames)

    def try_send(self, frames: list[bytes]) -> bool:
        """``send``; False if the slave has ``send_queue`` messages waiting already (it does
        not read them) and this one was not sent."""
        return self._reader is None or self._reader.try_send(frames) != FULL

    # -- receiving --------------------------------------------------------------------------

    def _on_message(self, frames: list[bytes]) -> None:
        try:
            fields = protocol.unpack(frames[1], max_items=SLAVE_MAX_ITEMS)
        except (ProtocolError, IndexError) as exc:
            self._malformed(str(exc))
            return
        code, listener = fields[0], self.listener
        # Heartbeats and logs come from the slave's second socket: they name the slave.
        if code == Code.HEARTBEAT:
            if len(fields) > 1 and isinstance(fields[1], str):
                listener.slave_heartbeat(fields[1])
            return
        if code == Code.LOG:
            if len(fields) > 3 and isinstance(fields[1], str):
                dropped = fields[4] if len(fields) > 4 and isinstance(fields[4], int) else 0
                listener.slave_log(fields[1], str(fields[2]), str(fields[3]), dropped)
            return
        slave_id = frames[0].decode(errors="replace")
        if code in _JOB_CODES and len(fields) > 1 and type(fields[1]) is not int and not (
                code == Code.ERROR and fields[1] is None):
            self._malformed(f"a message of code {code} whose job id is not an integer: "
                            f"{fields[1]!r:.60}")
            return
        if code == Code.CHUNK:
            if len(frames) > 2 and len(fields) > 1:
                listener.job_chunk(slave_id, fields[1], frames[2])
        elif code == Code.CHOKE:
            if len(fields) > 1:
                listener.job_done(slave_id, fields[1], frames[2] if len(frames) > 2 else None)
        elif code == Code.ERROR:
            _, job_id, status, message, traceback = [*fields, None, 500, "", ""][:5]
            if job_id is None:
                listener.slave_failed(slave_id, str(message))
            else:
                listener.job_error(slave_id, job_id, status if isinstance(status, int) else 500,
                                   str(message), str(traceback or ""))
        elif code == Code.HANDSHAKE:
            pid = fields[2] if len(fields) > 2 and isinstance(fields[2], int) else None
            features = fields[3] if len(fields) > 3 and isinstance(fields[3], dict) else {}
            listener.slave_handshake(slave_id, pid, features.get("flow") is True,
                                     features.get("stream") is True)
        elif code == Code.CREDIT or code == Code.HEADERS:
            listener.job_flow(slave_id, code, fields)
