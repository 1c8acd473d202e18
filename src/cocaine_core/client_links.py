"""The pieces of a client of several nodes (``client_failover.py``): its endpoints, one
connection (*link*) to each node it talks to, and the rules of failing over.

A link is a DEALER with ZeroMQ heartbeats (a node that stops answering them, killed or
SIGSTOPped, is a dropped connection within ``HEARTBEAT_IVL_MS + HEARTBEAT_TIMEOUT_MS``) and a
bounded handshake, watched by a socket monitor that also reports ``EVENT_DISCONNECTED``. A link
is up from a handshake that succeeded; a request sent while it is up, or that a handshake
delivered later, is *delivered*: if the link fails then, the request was *dropped* (it may have
run); if the link fails before, the node was *unreachable* (it never had the request). A link
that failed is closed, so what was queued on it is never delivered later.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import zmq

from cocaine_core.client_connection import (
    WATCHED,
    ConnectionNews,
    monitor_event,
    no_answer,
    not_sent,
)
from cocaine_core.client_frames import decode_answer
from cocaine_core.client_options import connect
from cocaine_core.errors import ProtocolError, ServiceError
from cocaine_core.protocol import Status
from cocaine_core.trust.client_keys import ClientKeys

#: What a client may be given as its node: one endpoint, "a,b" or a list or tuple of them.
Endpoints = str | list[str] | tuple[str, ...]

#: Most endpoints one client takes.
MAX_ENDPOINTS = 64
#: Milliseconds between two heartbeats (PING) of a link.
HEARTBEAT_IVL_MS = 1000
#: Milliseconds a link waits for any traffic after a PING before it drops the connection.
HEARTBEAT_TIMEOUT_MS = 3000
#: Milliseconds the node keeps a link's connection that it hears nothing on (the client's
#: machine gone): then it cancels that client's requests.
HEARTBEAT_TTL_MS = 10000
#: Milliseconds a link's ZeroMQ handshake may take (a stopped node accepts the TCP
#: connection in its kernel but never greets).
HANDSHAKE_MS = 5000
#: An AsyncLink's queue entry for a request whose link failed (real codes are positive).
FAILED = -2
#: The events a link watches: a client's, and a connection that dropped.
LINK_WATCHED = WATCHED | zmq.EVENT_DISCONNECTED
#: Milliseconds between two looks at a link's news while a send waits for room.
SEND_POLL_MS = 100


def several(endpoint: object) -> bool:
    """Whether ``endpoint`` names several nodes (a list, a tuple, or text with commas)."""
    return isinstance(endpoint, list | tuple) or (isinstance(endpoint, str) and "," in endpoint)


def endpoints_of(given: object) -> list[str]:
    """The endpoints ``given`` names, in order, each once; a 400 naming what is wrong."""
    if isinstance(given, str):
        items: list[Any] = [part.strip() for part in given.split(",") if part.strip()]
    elif isinstance(given, list | tuple):
        items = [item.strip() if isinstance(item, str) else item for item in given]
    else:
        raise ServiceError(Status.BAD_REQUEST, f"a client's endpoints are a list of "
                                               f"endpoints or one text with commas; got "
                                               f"{given!r}")
    if not items:
        raise ServiceError(Status.BAD_REQUEST, "no endpoint given: pass at least one, e.g. "
                                               "tcp://127.0.0.1:10053")
    if len(items) > MAX_ENDPOINTS:
        raise ServiceError(Status.BAD_REQUEST, f"{len(items)} endpoints given; a client "
                                               f"takes at most {MAX_ENDPOINTS}")
    for item in items:
        if not isinstance(item, str) or "://" not in item:
            raise ServiceError(Status.BAD_REQUEST, f"cannot connect to {item!r}: a node's "
                                                   f"endpoint looks like "
                                                   f"tcp://127.0.0.1:10053")
    return list(dict.fromkeys(items))


class LinkFailed(Exception):
    """A request's link failed: ``dropped`` (delivered: it may have run) or not (the node
    never had it); ``error`` says what the connection said, if anything."""

    def __init__(self, endpoint: str, error: ServiceError | None, *, dropped: bool) -> None:
        super().__init__(endpoint)
        self.endpoint = endpoint
        self.error = error
        self.dropped = dropped

    def what(self) -> str:
        """What happened, for an error message."""
        if self.dropped:
            return (f"the connection dropped before any answer came (the node died, or "
                    f"answered no heartbeat for {HEARTBEAT_TIMEOUT_MS / 1000:g} s)")
        if self.error is not None:
            return self.error.message
        return (f"the connection closed during the ZeroMQ handshake (the node may be "
                f"stopped, or not a cocaine node; a handshake may take "
                f"{HANDSHAKE_MS / 1000:g} s)")


class LinkBase:
    """A connection to one node, its monitor and what the monitor said."""

    def __init__(self, context: Any, endpoint: str, keys: ClientKeys) -> None:
        self.endpoint = endpoint
        self.socket: Any = context.socket(zmq.DEALER)
        try:  # a bad key is an error, never a socket left open in the context
            for option, value in ((zmq.LINGER, 0), (zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS),
                                  (zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS),
                                  (zmq.HEARTBEAT_TTL, HEARTBEAT_TTL_MS),
                                  (zmq.HANDSHAKE_IVL, HANDSHAKE_MS)):
                self.socket.setsockopt(option, value)
            keys.secure(self.socket)
            self.news = ConnectionNews.of(endpoint, keys)
            self.monitor: Any = self.socket.get_monitor_socket(LINK_WATCHED)
        except BaseException:
            self.socket.close(linger=0)
            raise
        try:
            connect(self.socket, endpoint)
        except ServiceError:
            self.monitor.close(linger=0)
            raise
        #: Plain sockets over the same ones, to read without waiting (an asyncio link too).
        self._monitor_now: zmq.Socket[bytes] = zmq.Socket.shadow(self.monitor.underlying)
        self._socket_now: zmq.Socket[bytes] = zmq.Socket.shadow(self.socket.underlying)
        #: A handshake succeeded, and the connection has not failed since.
        self.up = False
        #: The link's failure (None: it works); a link that failed is closed.
        self.failure: LinkFailed | None = None

    def drain(self) -> None:
        """Take what the monitor said so far."""
        while self.failure is None and not self.monitor.closed:
            try:
                frames = self._monitor_now.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.take(frames)

    def take(self, frames: list[bytes]) -> None:
        """Take one monitor message: a handshake that succeeded, or a failure."""
        event = monitor_event(frames)
        error = self.news.read(frames)
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.up = True
            self.delivered()
        elif self.failure is None and (event == zmq.EVENT_DISCONNECTED or error is not None):
            if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and not self.news.curve:
                error = ServiceError(Status.UNAVAILABLE, f"the node at {self.endpoint} did "
                                                         f"not complete the ZeroMQ handshake "
                                                         f"(within {HANDSHAKE_MS / 1000:g} "
                                                         f"s): it may be stopped or hung; or "
                                                         f"it runs with --curve and this "
                                                         f"client has no --server-key; or "
                                                         f"it is not a cocaine node")
            self.fail(error)

    def delivered(self) -> None:
        """A handshake succeeded: what was queued is delivered."""

    def fail(self, error: ServiceError | None) -> None:
        """The connection failed (``error``: what it said, if anything)."""
        raise NotImplementedError

    def cancel(self, frames: list[bytes]) -> bool:
        """Send a CANCEL without waiting; whether it left."""
        if self.socket.closed:
            return False
        try:
            self._socket_now.send_multipart(frames, zmq.NOBLOCK)
            return True
        except zmq.ZMQError:
            return False

    def close(self, linger: int = 0) -> None:
        """Close the link (``linger``: ms to deliver the CANCELs just sent)."""
        if self.socket.closed:
            return
        with contextlib.suppress(zmq.ZMQError):
            self.socket.disable_monitor()
        self.monitor.close(linger=0)
        self.socket.close(linger=linger)


class Link(LinkBase):
    """A blocking client's link: one request at a time."""

    def __init__(self, context: Any, endpoint: str, keys: ClientKeys) -> None:
        super().__init__(context, endpoint, keys)
        self.poller = zmq.Poller()
        self.poller.register(self.socket, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)
        #: The request in flight was delivered (the link was up when it was sent, or since).
        self.sent_up = False

    def delivered(self) -> None:
        """A handshake succeeded: the request in flight is delivered."""
        self.sent_up = True

    def fail(self, error: ServiceError | None) -> None:
        """Keep the failure: the request in flight learns it once it read what came."""
        self.failure = LinkFailed(self.endpoint, error, dropped=self.sent_up)

    def send(self, frames: list[bytes], wait: float | None) -> None:
        """Send a request, waiting for room up to ``wait`` (an unreachable node then)."""
        self.sent_up = self.up
        try:
            self.socket.send_multipart(frames, zmq.NOBLOCK)
            return
        except zmq.Again:
            pass
        end = None if wait is None else time.monotonic() + wait
        while True:
            self.drain()
            if self.failure is not None:
                raise self.failure
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                raise LinkFailed(self.endpoint, not_sent(self.endpoint, wait or 0),
                                 dropped=False)
            ms = SEND_POLL_MS if left is None else max(1, min(SEND_POLL_MS, int(left * 1000)))
            if self.socket.poll(ms, zmq.POLLOUT):
                try:
                    self.socket.send_multipart(frames, zmq.NOBLOCK)
                    return
                except zmq.Again:
                    continue

    def receive(self, wait: float | None) -> list[bytes]:
        """The next message; ``LinkFailed`` once the link failed and nothing came before;
        500 when nothing came within ``wait``."""
        end = None if wait is None else time.monotonic() + wait
        while True:
            if self.failure is not None:
                try:  # what came before the failure is read first
                    return self.socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    raise self.failure from None
            ms = None if end is None else max(0, int((end - time.monotonic()) * 1000))
            ready = dict(self.poller.poll(ms))
            if self.socket in ready:
                return self.socket.recv_multipart(zmq.NOBLOCK)
            if self.monitor in ready:
                self.drain()
                continue
            if end is not None and time.monotonic() >= end:
                raise no_answer(self.endpoint, wait or 0)


class AsyncLink(LinkBase):
    """An ``AsyncClient``'s link: many requests in flight, each with its queue."""

    def __init__(self, context: Any, endpoint: str, keys: ClientKeys,
                 failed: Callable[[AsyncLink], None]) -> None:
        """``failed``: called once the link failed (its requests told)."""
        super().__init__(context, endpoint, keys)
        self.failed = failed
        #: Each request in flight: its queue, and whether it was delivered.
        self.pending: dict[int, list[Any]] = {}
        self._tasks: list[asyncio.Future[None]] = []

    def delivered(self) -> None:
        """A handshake succeeded: every request queued is delivered."""
        for entry in self.pending.values():
            entry[1] = True

    def fail(self, error: ServiceError | None) -> None:
        """Hand each request what came before the failure, then the failure; close."""
        self.failure = LinkFailed(self.endpoint, error, dropped=False)
        while True:
            try:
                self.dispatch(self._socket_now.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
        for entry in self.pending.values():
            entry[0].put_nowait((FAILED, None, [LinkFailed(self.endpoint, error,
                                                            dropped=entry[1])]))
        self.failed(self)

    def dispatch(self, frames: list[bytes]) -> None:
        """Give an answer's message to its request."""
        try:
            rid, code, payload, fields = decode_answer(frames)
        except ProtocolError:
            return
        entry = self.pending.get(rid)
        if entry is not None:
            entry[0].put_nowait((code, payload, fields))

    async def send(self, request_id: int, frames: list[bytes], queue: Any,
                   wait: float | None) -> None:
        """Send a request whose messages go to ``queue``; ``LinkFailed`` if it cannot."""
        if not self._tasks:
            self._tasks = [asyncio.ensure_future(self._read()),
                           asyncio.ensure_future(self._watch())]
        entry = self.pending[request_id] = [queue, self.up]
        loop = asyncio.get_running_loop()
        end = None if wait is None else loop.time() + wait
        while True:
            if self.failure is not None:
                raise LinkFailed(self.endpoint, self.failure.error, dropped=entry[1])
            try:  # through the asyncio socket, which then looks again for answers to read
                await self.socket.send_multipart(frames, flags=zmq.NOBLOCK)
                return
            except zmq.Again:
                pass
            except zmq.ZMQError:  # closed: the link failed meanwhile, or the client closed
                if self.failure is None:
                    raise ServiceError(Status.BAD_REQUEST, "this client is closed") \
                        from None
                continue
            left = None if end is None else end - loop.time()
            if left is not None and left <= 0:
                raise LinkFailed(self.endpoint, not_sent(self.endpoint, wait or 0),
                                 dropped=False)
            await asyncio.sleep(0.01 if left is None else min(0.01, left))

    def cancel(self, frames: list[bytes]) -> bool:
        """Send a CANCEL without waiting, through the asyncio socket; whether it was given."""
        if self.socket.closed:
            return False
        try:
            sent = self.socket.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            return False
        # A CANCEL that could not be sent is no one's error: take its outcome, quietly.
        sent.add_done_callback(lambda done: done.cancelled() or done.exception())
        return True

    async def _read(self) -> None:
        while not self.socket.closed:
            try:
                frames = await self.socket.recv_multipart()
            except zmq.ZMQError:
                return
            self.dispatch(frames)

    async def _watch(self) -> None:
        while self.failure is None and not self.monitor.closed:
            try:
                frames = await self.monitor.recv_multipart()
            except zmq.ZMQError:
                return
            self.take(frames)

    def close(self, linger: int = 0) -> None:
        """Stop reading and close the link."""
        current = asyncio.current_task() if _loop_running() else None
        for task in self._tasks:
            if task is not current:
                task.cancel()
        super().close(linger)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False
