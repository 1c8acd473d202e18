"""ZeroMQ sockets on the asyncio loop, without a future per message.

``SocketReader`` watches a socket's file descriptor and drains every waiting message into a
callback. ZeroMQ's descriptor is edge-triggered and also changes state when we *send*, so after
sending on a watched socket call ``poke()``: it schedules one more drain.

A reader may also be told where each message came from (``sources``): the file descriptor of
the connection that brought it, for the first message of each routing identity it has not
seen, so that a ROUTER's owner can tell which identities a dropped connection took with it.

And it may be told when the socket can send again (``on_writable``): each drain first asks
the socket's events, and when they include ``POLLOUT`` (on a ROUTER with ``ROUTER_MANDATORY``:
some peer's queue has room) it calls ``on_writable`` before receiving, so answers held back
for a full peer leave as soon as ZeroMQ's I/O thread has made room, ahead of new requests.

And it may read ahead (``read_ahead``: most messages, ``READ_AHEAD_BYTES`` their most bytes):
receive every message waiting, up to those bounds, into its own queue, then handle a batch of
them. A small message waiting in ZeroMQ keeps the whole 8 KiB buffer it was decoded from
(ZeroMQ's zero-copy receive): a flood of small requests read one by one as they are handled
held about 8 KiB each in the node (1,000 waiting: 8 MB), where received they hold their size.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Container
from typing import Protocol

import zmq

log = logging.getLogger("cocaine.zmq")

# Plain ints: pyzmq's enum members cost an enum operation on every call; but getsockopt
# looks its option up as an enum member, which is quicker from a member than from an int.
_EVENTS = zmq.EVENTS
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_SNDMORE = int(zmq.NOBLOCK) | int(zmq.SNDMORE)
_SRCFD = int(zmq.SRCFD)

#: What ``SocketReader.try_send`` says.
SENT, FULL, GONE = 0, 1, 2


class Sources(Protocol):
    """Who learns the connection behind each routing identity a reader meets first."""

    @property
    def known(self) -> Container[bytes]:
        """The identities already known (looked up for every message: a dict or a set)."""
        ...

    def arrived(self, identity: bytes, fd: int) -> None:
        """The first message from ``identity`` came through the connection on ``fd``."""


class SocketReader:
    """Feeds every message arriving on ``socket`` to ``on_message`` from the asyncio loop."""

    #: Most messages handled in one go before yielding to the loop (fairness between apps).
    BATCH = 256
    #: Messages handled between two looks at whether the socket can send (``on_writable``):
    #: the answers to a batch's requests leave while it is read, not only after it.
    WRITABLE_EVERY = 32
    #: Most bytes read ahead (see the module's doc); a larger message is read ahead alone.
    READ_AHEAD_BYTES = 1 << 20

    def __init__(self, socket: zmq.Socket, on_message: Callable[[list[bytes]], None],
                 loop: asyncio.AbstractEventLoop | None = None, *,
                 sources: Sources | None = None) -> None:
        self.socket = socket
        self.on_message = on_message
        self.sources = sources
        #: Called at a drain when the socket says it can send (see the module's doc).
        self.on_writable: Callable[[], None] | None = None
        #: Most messages read ahead (see the module's doc); 0: none, each read as handled.
        self.read_ahead = 0
        self._ahead: collections.deque[list[bytes]] = collections.deque()
        self._ahead_bytes = 0
        self.loop = loop or asyncio.get_running_loop()
        self._scheduled = False
        #: A drain is running: a poke from what it handles is needless (it ends with a look).
        self._draining = False
        self._closed = False
        self._fd = int(socket.getsockopt(zmq.FD))
        self.loop.add_reader(self._fd, self._drain)
        self.poke()

    def poke(self) -> None:
        """Schedule a drain (when more messages may be waiting)."""
        if not self._scheduled and not self._draining and not self._closed:
            self._scheduled = True
            self.loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        # A send from a handler may consume the descriptor's edge, but every way out of
        # ``_drain_some`` after a handler ran looks at the socket again (re-arming it), or
        # pokes: pokes meanwhile are needless (a loop turn and a look saved per send).
        self._draining = True
        try:
            more = self._drain_some()
        finally:
            self._draining = False
        if more:
            self.poke()  # more may be waiting; let other callbacks run first

    def _drain_some(self) -> bool:
        """Handle waiting messages, up to ``BATCH``; whether more may be waiting."""
        socket = self.socket
        recv = socket.recv
        option = socket.getsockopt
        handle = self.on_message
        sources = self.sources
        # One look first (a poke after a send usually finds nothing: 3 us, where a failed
        # receive costs an exception: 10 us); one more after the first message (most drains
        # find one: a request, an answer); then receive until the socket says Again. Each
        # look, like the Again, re-arms the edge-triggered descriptor.
        if self._closed:
            return False
        events = int(option(_EVENTS))
        writable = self.on_writable
        if events & _POLLOUT and writable is not None:
            self._writable(writable, events)
            events = int(option(_EVENTS))  # its sends may have taken the descriptor's edge
        if self.read_ahead:
            return self._drain_ahead(events)
        if not events & _POLLIN:
            return False
        for turn in range(self.BATCH):
            if turn == 1 and not int(option(_EVENTS)) & _POLLIN:
                return False
            if writable is not None and turn and not turn % self.WRITABLE_EVERY:
                self._writable(writable)
            if self._closed:
                return False
            try:
                # Frames as zmq frames: each says whether more follow (``more``: no
                # getsockopt, which costs pyzmq an enum lookup), and the first knows the
                # connection it came on.
                frame = recv(_NOBLOCK, copy=False)
                first = frame.bytes
                if sources is not None and first not in sources.known:
                    sources.arrived(first, frame.get(_SRCFD))
                frames = [first]
                while frame.more:
                    frame = recv(_NOBLOCK, copy=False)
                    frames.append(frame.bytes)
            except zmq.Again:
                return False
            except zmq.ZMQError as exc:
                if not self._closed:
                    log.error("receive failed: %s", exc)
                return False
            try:
                handle(frames)
            except Exception:
                log.exception("error while handling a message")
        return True

    def _drain_ahead(self, events: int) -> bool:
        """Read ahead what waits, then handle up to ``BATCH`` of what was read; whether
        there may be more to do (to handle, to read, or a look at the socket after the
        handlers' sends)."""
        ahead = self._ahead
        more = bool(events & _POLLIN) and self._read_ahead()
        handle, writable = self.on_message, self.on_writable
        handled = min(self.BATCH, len(ahead))
        for turn in range(handled):
            if writable is not None and turn and not turn % self.WRITABLE_EVERY:
                self._writable(writable)
            if self._closed:
                return False
            frames = ahead.popleft()
            self._ahead_bytes -= sum(len(frame) for frame in frames)
            try:
                handle(frames)
            except Exception:
                log.exception("error while handling a message")
        # More to handle, or to read; or handlers ran, whose sends may have taken the
        # descriptor's edge: one more drain looks (pokes during this one are skipped).
        return bool(ahead or more or handled)

    def _read_ahead(self) -> bool:
        """Receive what waits, within the bounds; True if the bounds stopped it (the
        descriptor's edge is then not re-armed: the caller drains again soon)."""
        socket, sources, ahead = self.socket, self.sources, self._ahead
        recv = socket.recv
        limit, byte_limit = self.read_ahead, self.READ_AHEAD_BYTES
        size = self._ahead_bytes
        reads = 4 * self.BATCH  # a drain's reading, like its handling, is bounded
        try:
            while len(ahead) < limit and size < byte_limit and reads:
                reads -= 1
                frame = recv(_NOBLOCK, copy=False)  # see _drain_some
                first = frame.bytes
                if sources is not None and first not in sources.known:
                    sources.arrived(first, frame.get(_SRCFD))
                frames = [first]
                while frame.more:
                    frame = recv(_NOBLOCK, copy=False)
                    frames.append(frame.bytes)
                ahead.append(frames)
                size += sum(len(frame) for frame in frames)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if not self._closed:
                log.error("receive failed: %s", exc)
            return False
        finally:
            self._ahead_bytes = size

    def _writable(self, callback: Callable[[], None], events: int = -1) -> None:
        try:
            if events < 0:
                events = int(self.socket.getsockopt(_EVENTS))
            if events & _POLLOUT:
                callback()
        except zmq.ZMQError:
            pass  # closed meanwhile
        except Exception:
            log.exception("error while sending what waited")

    def send(self, frames: list[bytes]) -> bool:
        """Send without blocking; False if the peer's queue is full or it is gone."""
        return self._put(frames) == SENT

    def try_send(self, frames: list[bytes]) -> int:
        """Send without blocking, on a ROUTER with ``ROUTER_MANDATORY``: ``SENT``; ``FULL``
        if the peer's queue is full (nothing was sent); ``GONE`` if no peer has that
        identity (any more)."""
        status = self._put(frames)
        if status == FULL:
            # The peer may have read since ZeroMQ last looked (it looks at most once a
            # millisecond when sending); asking for the socket's events makes it look.
            self.socket.getsockopt(_EVENTS)
            status = self._put(frames)
        return status

    def _put(self, frames: list[bytes]) -> int:
        send = self.socket.send
        try:
            # pyzmq's send_multipart builds an enum for every frame's flags; plain ints don't.
            # Once a message's first frame is taken, ZeroMQ takes the rest.
            for frame in frames[:-1]:
                send(frame, _NOBLOCK_SNDMORE)
            send(frames[-1], _NOBLOCK)
        except zmq.Again:
            return FULL
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return GONE
            raise
        finally:
            # A send may consume the descriptor's edge while messages wait: drain once more
            # soon (cheaper than asking the socket; a drain already scheduled covers it).
            self.poke()
        return SENT

    def close(self) -> None:
        """Stop watching the socket (does not close it)."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(zmq.ZMQError, ValueError, OSError):
                self.loop.remove_reader(self._fd)
