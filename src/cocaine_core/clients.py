"""The node's clients, as its ROUTER sees them: what waits to be sent to each, and which have
gone.

``Outbox`` sends every message for a client through the ROUTER, which has
``ROUTER_MANDATORY`` set and a small per-client high-water mark (``PEER_SEND_HWM`` messages):
a client whose queue is full makes a send fail at once, instead of ZeroMQ dropping the message
or queueing without end. What cannot be sent waits in that client's backlog, in order, and is
tried again from the loop; a backlog past ``limit`` bytes means the client does not read its
answers, and it is treated as gone. A chunk's ``on_handed`` callback runs when the chunk
leaves for the client's socket: the engine grants its slave credit then (``engine/credit.py``).

``PeerWatch`` tells when a client's connection drops: ZeroMQ's socket monitor reports each
disconnected connection by its file descriptor, and the reader (``SocketReader`` with
``sources``) reports the descriptor behind each new routing identity. The monitor is read
before a new identity is recorded, so a descriptor reused by a new connection is never taken
for the old one (ZeroMQ reports a disconnection before it closes the descriptor).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import struct
from collections.abc import Callable

import zmq

from cocaine_core.zmqloop import FULL, GONE, SENT, SocketReader

log = logging.getLogger("cocaine.endpoint")

#: Messages ZeroMQ queues for one client before sends to it fail with "full" (and wait in the
#: client's backlog): small, since a message may be a chunk of up to the slaves' limit, yet
#: above the bursts of small answers a busy client gets (at 16, most answers of 100 requests
#: in flight to slaves at concurrency 16 waited in the backlog; at 64, none).
PEER_SEND_HWM = 64
#: Bytes waiting in one client's backlog beyond which it is judged not to read its answers.
DEFAULT_CLIENT_BACKLOG = 64 * 2**20
#: Seconds between tries to send a backlog: the first, and the most when nothing moves.
RETRY_FIRST, RETRY_MOST = 0.001, 0.05

_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
_NOBLOCK = int(zmq.NOBLOCK)
_monitors = itertools.count(1)

OnHanded = Callable[[], None] | None


class Backlog:
    """Messages for one client that ZeroMQ could not take yet, oldest first."""

    __slots__ = ("items", "size")

    def __init__(self) -> None:
        self.items: collections.deque[tuple[list[bytes], int, OnHanded]] = collections.deque()
        self.size = 0


class Outbox:
    """Sends to the node's clients in order, holding at most ``limit`` bytes for each."""

    def __init__(self, reader: SocketReader, gone: Callable[[bytes, str], None],
                 limit: int = DEFAULT_CLIENT_BACKLOG) -> None:
        self.reader = reader
        self.gone = gone
        self.limit = limit
        self._backlogs: dict[bytes, Backlog] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._delay = RETRY_FIRST
        #: Clients cut off because their backlog passed ``limit``.
        self.cut_off = 0
        #: Messages that had to wait in a backlog (ZeroMQ's queue for their client was full).
        self.held = 0

    def send(self, frames: list[bytes], on_handed: OnHanded = None) -> None:
        """Send ``frames`` (the client's identity first) now, or after what waits for that
        client; ``on_handed`` runs once the message has left for the client's socket."""
        client = frames[0]
        backlog = self._backlogs.get(client) if self._backlogs else None
        if backlog is None:
            status = self.reader.try_send(frames)
            if status == SENT:
                if on_handed is not None:
                    on_handed()
                return
            if status == GONE:
                self.gone(client, "its connection is gone")
                return
            backlog = self._backlogs[client] = Backlog()
            self._arm(0.0)
        self.held += 1
        size = sum(len(frame) for frame in frames)
        backlog.items.append((frames, size, on_handed))
        backlog.size += size
        if backlog.size > self.limit and len(backlog.items) > 1:
            self.cut_off += 1
            self.drop(client)
            log.warning("a client does not read its answers: more than %d MiB waited for it; "
                        "its requests are cancelled", self.limit >> 20)
            self.gone(client, f"it did not read its answers ({self.limit >> 20} MiB waited)")

    def waiting(self, client: bytes | None = None) -> int:
        """Bytes waiting for ``client`` (or for every client)."""
        if client is not None:
            backlog = self._backlogs.get(client)
            return 0 if backlog is None else backlog.size
        return sum(backlog.size for backlog in self._backlogs.values())

    def drop(self, client: bytes) -> None:
        """Forget what waits for ``client`` (it has gone)."""
        self._backlogs.pop(client, None)

    def close(self) -> None:
        """Stop trying to send; forget every backlog."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._backlogs.clear()

    def _arm(self, delay: float) -> None:
        if self._timer is None:
            self._delay = delay
            self._timer = self.reader.loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._timer = None
        moved = False
        for client in list(self._backlogs):
            backlog = self._backlogs.get(client)
            items = backlog.items if backlog is not None else None
            while items:
                frames, size, on_handed = items[0]
                status = self.reader.try_send(frames)
                if status == FULL:
                    break
                if status == GONE:
                    self.drop(client)
                    self.gone(client, "its connection is gone")
                    break
                items.popleft()
                assert backlog is not None
                backlog.size -= size
                moved = True
                if on_handed is not None:
                    on_handed()
            if backlog is not None and not items and self._backlogs.get(client) is backlog:
                del self._backlogs[client]
        if self._backlogs:
            self._arm(0.0 if moved else min(RETRY_MOST, max(RETRY_FIRST, self._delay * 2)))


class PeerWatch:
    """Tells ``gone(identity)`` when the connection of a ROUTER's peer drops."""

    def __init__(self, socket: zmq.Socket[bytes], gone: Callable[[bytes], None], *,
                 more: int = 0, on_event: Callable[[int], None] | None = None) -> None:
        """``more``: other monitor events to pass to ``on_event`` (a socket has one
        monitor: whoever else wants its events gets them here)."""
        self.gone = gone
        self.on_event = on_event
        #: The connection (file descriptor) of each identity seen, for ``SocketReader``.
        self.known: dict[bytes, int] = {}
        self._by_fd: dict[int, set[bytes]] = {}
        address = f"inproc://cocaine-peers-{next(_monitors)}"
        socket.monitor(address, _DISCONNECTED | more)
        self._socket = socket
        self._monitor: zmq.Socket[bytes] = socket.context.socket(zmq.PAIR)
        self._monitor.setsockopt(zmq.RCVHWM, 0)  # never lose a disconnection
        self._monitor.setsockopt(zmq.LINGER, 0)
        self._monitor.connect(address)
        self._reader = SocketReader(self._monitor, self._event)

    def arrived(self, identity: bytes, fd: int) -> None:
        """The first message from ``identity`` came on connection ``fd``. Disconnections
        reported so far are taken first: ``fd`` may be a descriptor a gone client had."""
        self.read_events()
        self.known[identity] = fd
        if fd >= 0:
            self._by_fd.setdefault(fd, set()).add(identity)

    def forget(self, identity: bytes) -> None:
        """Stop watching ``identity`` (found gone another way)."""
        fd = self.known.pop(identity, None)
        peers = self._by_fd.get(fd) if fd is not None else None
        if peers is not None:
            peers.discard(identity)
            if not peers:
                del self._by_fd[fd]  # type: ignore[arg-type]

    def read_events(self) -> None:
        """Take every disconnection the monitor has reported."""
        recv = self._monitor.recv_multipart
        while True:
            try:
                frames = recv(_NOBLOCK)
            except zmq.Again:
                break
            self._event(frames)
        self._reader.poke()

    def _event(self, frames: list[bytes]) -> None:
        event, fd = struct.unpack_from("=HI", frames[0])
        if event != _DISCONNECTED:
            if self.on_event is not None:
                self.on_event(event)
            return
        for identity in self._by_fd.pop(fd, ()):
            self.known.pop(identity, None)
            self.gone(identity)

    def close(self) -> None:
        """Stop watching (before the ROUTER is closed)."""
        self._reader.close()
        with contextlib.suppress(zmq.ZMQError):
            self._socket.disable_monitor()
        self._monitor.close(linger=0)
