"""The engine's side of the engine ↔ slave protocol: its ROUTER socket and message decoding.

The twin of ``cocaine_core.slave_channel`` (the slave's side). ``EngineChannel`` binds the
app's ``ipc://`` endpoint, decodes every message from a slave into one call on its
``SlaveListener`` (the pool and the engine), and encodes what the engine sends: configure,
invoke, credit, cancel, terminate. Frames are documented in docs/protocol.md.

Batching: to a slave whose handshake said ``batch``, the jobs handed to it while the loop
runs one callback (a drain of the clients' requests, or of the slaves' answers) go in one
INVOKE_BATCH, sent as soon as that callback returns (``call_soon``: nothing waits for a batch
to fill); any other message to that slave sends them first, so what a slave receives is the
sequence it would have received, its consecutive INVOKEs merged. A slave answers a run of
finished jobs with one CHOKE_BATCH, decoded here into one ``jobs_done`` call.

A slave runs the app's code, so it is not trusted either: a message from it larger than
``SLAVE_MAX_MESSAGE`` makes ZeroMQ drop its connection before the engine holds it (the
runtime is told the limit in CONFIGURE, and cocaine-python refuses such a chunk itself with
a clear error).
"""

from __future__ import annotations

import asyncio
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
#: The most jobs in one INVOKE_BATCH, and answers in one CHOKE_BATCH (the slave's header
#: arrays are bounded by ``SLAVE_MAX_ITEMS``).
BATCH_MAX = 64
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
                        streams: bool = False, batch: bool = False) -> None:
        """The slave introduced itself (its pid, if it said; ``flow``: it follows CREDIT
        and CANCEL; ``streams``: it reads streamed bodies; ``batch``: it takes INVOKE_BATCH
        and may send CHOKE_BATCH)."""

    def slave_heartbeat(self, slave_id: str) -> None:
        """The slave is alive (its first heartbeat after configure means ready)."""

    def slave_log(self, slave_id: str, stream: str, text: str, dropped: int = 0) -> None:
        """A line the app printed on ``stream`` (stdout or stderr), after ``dropped`` lines
        its slave dropped (with ``text`` empty: only the count)."""

    def job_chunk(self, slave_id: str, job_id: int, data: bytes) -> None:
        """A chunk of a job's answer."""

    def job_done(self, slave_id: str, job_id: int, last: bytes | None) -> None:
        """A job's answer is complete; ``last`` is its final chunk, if sent along."""

    def jobs_done(self, slave_id: str, ended: list[tuple[int, bytes | None]]) -> None:
        """Several jobs' answers are complete (CHOKE_BATCH): (job id, final chunk or None)."""

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
        #: Jobs handed to batching slaves in this turn of the loop, by slave identity, not
        #: yet sent (``flush`` sends them once the running callback returns).
        self._outgoing: dict[bytes, list[Job]] = {}
        self._flush_scheduled = False

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
        self._outgoing.clear()
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

    def _malformed(self, why: str, sender: bytes) -> None:
        """Count a message dropped as malformed; say so at most every ``NOTICE_INTERVAL``
        (a slave that sends nothing else must not flood the node's log), naming the slave
        that sent the latest (its id, as ``cocaine app info`` lists it)."""
        self._dropped += 1
        now = time.monotonic()
        if now - self._said_at >= NOTICE_INTERVAL:
            log.warning("%s: dropped %d malformed slave message(s) in the last %g s; the "
                        "latest, from slave %s: %s", self.endpoint, self._dropped,
                        NOTICE_INTERVAL, printable(sender.decode(errors="replace"))[:100],
                        printable(why)[:500])
            self._dropped, self._said_at = 0, now

    def configure(self, slave_id: str, settings: dict[str, Any]) -> None:
        """Tell a slave that shook hands to get ready, with its settings."""
        self.send([slave_id.encode(), protocol.pack(Code.CONFIGURE, settings)])

    def invoke(self, slave_id: str, job: Job, batch: bool = False) -> None:
        """Hand a job to a slave; with ``batch`` (the slave takes INVOKE_BATCH), once the
        running callback returns, together with the other jobs handed to it meanwhile."""
        identity = slave_id.encode()
        if not batch:
            self.send([identity, protocol.pack(Code.INVOKE, job.id, job.event, job.meta),
                       job.body])
            return
        waiting = self._outgoing.get(identity)
        if waiting is None:
            self._outgoing[identity] = [job]
            if not self._flush_scheduled and self._reader is not None:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self.flush)
        else:
            waiting.append(job)
            if len(waiting) >= BATCH_MAX:
                self._send_jobs(identity, self._outgoing.pop(identity))

    def flush(self) -> None:
        """Send the jobs handed to batching slaves and not sent yet: one INVOKE_BATCH for each
        slave (a plain INVOKE for a slave given one job)."""
        self._flush_scheduled = False
        if self._outgoing:
            outgoing, self._outgoing = self._outgoing, {}
            for identity, jobs in outgoing.items():
                self._send_jobs(identity, jobs)

    def _send_jobs(self, identity: bytes, jobs: list[Job]) -> None:
        reader = self._reader
        if reader is None:
            return
        if len(jobs) == 1:
            job = jobs[0]
            reader.send([identity, protocol.pack(Code.INVOKE, job.id, job.event, job.meta),
                         job.body])
            return
        header = protocol.pack(Code.INVOKE_BATCH, [[job.id, job.event, job.meta] for job in jobs])
        reader.send([identity, header, *[job.body for job in jobs]])

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
        """Send a message (frames, the slave's identity first) to a slave, after the jobs
        handed to it and not sent yet."""
        if self._outgoing and frames[0] in self._outgoing:
            self._send_jobs(frames[0], self._outgoing.pop(frames[0]))
        if self._reader is not None:
            self._reader.send(frames)

    def try_send(self, frames: list[bytes]) -> bool:
        """``send``; False if the slave has ``send_queue`` messages waiting already (it does
        not read them) and this one was not sent."""
        if self._outgoing and frames[0] in self._outgoing:
            self._send_jobs(frames[0], self._outgoing.pop(frames[0]))
        return self._reader is None or self._reader.try_send(frames) != FULL

    # -- receiving --------------------------------------------------------------------------

    def _on_message(self, frames: list[bytes]) -> None:
        try:
            fields = protocol.unpack(frames[1], max_items=SLAVE_MAX_ITEMS)
        except (ProtocolError, IndexError) as exc:
            self._malformed(str(exc), frames[0])
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
                            f"{fields[1]!r:.60}", frames[0])
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
        elif code == Code.CHOKE_BATCH:
            self._chokes(slave_id, fields, frames)
        elif code == Code.HANDSHAKE:
            pid = fields[2] if len(fields) > 2 and isinstance(fields[2], int) else None
            features = fields[3] if len(fields) > 3 and isinstance(fields[3], dict) else {}
            listener.slave_handshake(slave_id, pid, features.get("flow") is True,
                                     features.get("stream") is True,
                                     features.get("batch") is True)
        elif code == Code.CREDIT or code == Code.HEADERS:
            listener.job_flow(slave_id, code, fields)

    def _chokes(self, slave_id: str, fields: list[Any], frames: list[bytes]) -> None:
        """A CHOKE_BATCH: ``[15, [[job_id, with_last], ...]]`` + the last chunks, in order;
        checked whole before any job is ended (a malformed one is dropped whole)."""
        entries = fields[1] if len(fields) > 1 else None
        if not isinstance(entries, list):
            self._malformed("a CHOKE_BATCH without its list of [job_id, with_last]", frames[0])
            return
        lasts = 0
        for entry in entries:
            if not isinstance(entry, list) or len(entry) != 2 or type(entry[0]) is not int:
                self._malformed(f"a CHOKE_BATCH entry that is not [job_id, with_last]: "
                                f"{entry!r:.60}", frames[0])
                return
            if entry[1]:
                lasts += 1
        if len(frames) != 2 + lasts:
            self._malformed(f"a CHOKE_BATCH of {lasts} last chunk(s) in {len(frames) - 2} "
                            f"frame(s)", frames[0])
            return
        ended: list[tuple[int, bytes | None]] = []
        index = 2
        for job_id, with_last in entries:
            if with_last:
                ended.append((job_id, frames[index]))
                index += 1
            else:
                ended.append((job_id, None))
        self.listener.jobs_done(slave_id, ended)
