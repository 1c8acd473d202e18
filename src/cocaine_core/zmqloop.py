"""ZeroMQ sockets on the asyncio loop, without a future per message.

``SocketReader`` watches a socket's file descriptor and drains every waiting message into a
callback. ZeroMQ's descriptor is edge-triggered and also changes state when we *send*, so after
sending on a watched socket call ``poke()``: it schedules one more drain.

A reader may also be told where each message came from (``sources``): the file descriptor of
the connection that brought it, for the first message of each routing identity it has not
seen, so that a ROUTER's owner can tell which identities a dropped connection took with it.
"""

from __future__ import annotations

import asyncio
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

    def __init__(self, socket: zmq.Socket, on_message: Callable[[list[bytes]], None],
                 loop: asyncio.AbstractEventLoop | None = None, *,
                 sources: Sources | None = None) -> None:
        self.socket = socket
        self.on_message = on_message
        self.sources = sources
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
        if self._closed or not int(option(_EVENTS)) & _POLLIN:
            return False
        for turn in range(self.BATCH):
            if turn == 1 and not int(option(_EVENTS)) & _POLLIN:
                return False
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
                # Let ZeroMQ's copy go before the message is handled: a 100 MB frame would
                # otherwise be held three times while it is decoded.
                del frame
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
