"""Batches on the slave's side of the engine ↔ slave protocol (docs/protocol.md, Batches).

An engine that knows its slave takes batches (the slave's handshake said ``batch``) may hand
it several jobs in one INVOKE_BATCH: ``expand`` turns one into the INVOKEs it stands for, so
a runtime sees the same messages as without batches. Once CONFIGURE said ``batch`` too, the
slave may answer a run of finished jobs in one CHOKE_BATCH: ``Answers`` holds each ended
job's CHOKE (with its last chunk) while the runtime goes on with jobs that have already
arrived, and sends them together.

An answer is held only while that is cheap for its client: never while the slave waits for a
message (``SlaveChannel.recv`` sends what is held before it waits), never past ``HOLD``
seconds after the first held answer ended, never beyond ``BATCH_MAX`` answers or
``BATCH_BYTES`` bytes, and never while a job runs whose event's last run took ``HOLD`` or
longer (or that has not run yet): a slow handler does not make quick answers wait. ``HOLD``
is checked when an answer is held; while a job runs (one of a quick event may be slow this
time) the heartbeat thread sends answers held ``slave_heartbeat.OVERDUE`` seconds. Any other
message the slave sends (a chunk, headers, an error, credit) sends what is held first, so the
engine receives the messages in the order they were made, consecutive CHOKEs merged.
"""

from __future__ import annotations

import time
from typing import Any

import zmq

from cocaine_core import protocol
from cocaine_core.protocol import Code

#: Seconds an answer may wait for others to go with it (measured, never waited for).
HOLD = 0.001
#: The most answers in one CHOKE_BATCH (the engine takes at most 64 items in an array).
BATCH_MAX = 64
#: The most bytes of last chunks held before they are sent.
BATCH_BYTES = 1 << 20
#: The most events remembered as quick (an app has a handful; a bound all the same).
QUICK_EVENTS = 1024

_SNDMORE = int(zmq.SNDMORE)
#: Chunks from this size on are sent without a copy (as ``SlaveChannel.chunk`` does).
_NO_COPY = 65536


def expand(fields: list[Any], frames: list[bytes]) -> list[tuple[list[Any], bytes | None]]:
    """The INVOKEs an INVOKE_BATCH ``[14, [[job_id, event, meta], ...]]`` + bodies stands
    for, as ``(fields, body)``; ValueError if it is not one."""
    entries = fields[1] if len(fields) > 1 else None
    if not isinstance(entries, list) or len(frames) != len(entries) + 1:
        raise ValueError("an INVOKE_BATCH whose jobs and body frames do not match")
    jobs: list[tuple[list[Any], bytes | None]] = []
    for index, entry in enumerate(entries, 1):
        if not isinstance(entry, list) or len(entry) < 2:
            raise ValueError(f"an INVOKE_BATCH entry that is not [job_id, event, meta]: "
                             f"{entry!r:.60}")
        jobs.append(([Code.INVOKE, *entry], frames[index]))
    return jobs


class Answers:
    """The CHOKEs a slave holds to send several in one CHOKE_BATCH, on its main socket."""

    __slots__ = ("held", "held_bytes", "quick", "since", "socket", "started")

    def __init__(self, socket: zmq.Socket) -> None:
        self.socket = socket
        #: Ended jobs not yet answered: (job id, last chunk or None), in order.
        self.held: list[tuple[int, bytes | None]] = []
        self.held_bytes = 0
        #: When the first held answer ended.
        self.since = 0.0
        #: Events whose last run took less than ``HOLD``.
        self.quick: set[Any] = set()
        #: Jobs handed to the runtime and not ended: their event and when they started.
        self.started: dict[Any, tuple[Any, float]] = {}

    def starting(self, fields: list[Any]) -> None:
        """A message is handed to the runtime: for an INVOKE, send what is held first unless
        its event is known to be quick, and note when the job started."""
        if fields[0] != Code.INVOKE or len(fields) < 3:
            return
        event = fields[2]
        if self.held and event not in self.quick:
            self.flush()
        self.started[fields[1]] = (event, time.monotonic())

    def forget(self, job_id: Any) -> None:
        """A job ended without a CHOKE (an ERROR): forget when it started."""
        self.started.pop(job_id, None)

    def hold(self, job_id: int, last: bytes | None) -> None:
        """A job ended with a CHOKE (``last``: its last chunk): hold it, and send what is held
        if it is enough, or has waited long enough."""
        now = time.monotonic()
        start = self.started.pop(job_id, None)
        if start is not None:
            if now - start[1] < HOLD:
                if len(self.quick) >= QUICK_EVENTS:
                    self.quick.clear()
                self.quick.add(start[0])
            else:
                self.quick.discard(start[0])
        if not self.held:
            self.since = now
        self.held.append((job_id, last))
        if last is not None:
            self.held_bytes += len(last)
        if (len(self.held) >= BATCH_MAX or self.held_bytes >= BATCH_BYTES
                or now - self.since >= HOLD):
            self.flush()

    def flush(self) -> None:
        """Send what is held: one CHOKE, or one CHOKE_BATCH for several."""
        held = self.held
        if not held:
            return
        self.held, self.held_bytes = [], 0
        send = self.socket.send
        if len(held) == 1:
            job_id, last = held[0]
            if last is None:
                send(protocol.pack(Code.CHOKE, job_id))
            else:
                send(protocol.pack(Code.CHOKE, job_id), _SNDMORE)
                send(last, 0, copy=len(last) < _NO_COPY)
            return
        lasts = [last for _, last in held if last is not None]
        header = protocol.pack(Code.CHOKE_BATCH,
                               [[job_id, last is not None] for job_id, last in held])
        if not lasts:
            send(header)
            return
        send(header, _SNDMORE)
        for last in lasts[:-1]:
            send(last, _SNDMORE, copy=len(last) < _NO_COPY)
        send(lasts[-1], 0, copy=len(lasts[-1]) < _NO_COPY)
