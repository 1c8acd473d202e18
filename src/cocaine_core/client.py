"""Clients of a node's native endpoint: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

    from cocaine_core.client import Client
    with Client("tcp://127.0.0.1:10053") as client:
        print(client.call("hello", "echo", b"world"))

A failed request raises ``ServiceError`` with ``.code`` (see ``protocol.Status``) and
``.message``. So does a request that nothing can answer: when nothing listens at the endpoint
(the connection is refused, or an ``ipc://`` socket file is missing) a waiting request fails
at once with 503, instead of after ``wait``. Each client watches its connection through a
ZeroMQ socket monitor, read only while an answer is slow, so a quick answer costs what it
would without one.

A client with a ``wait`` sends it as the request's deadline when the caller gives none: a
job that cannot start before the client would stop waiting for the first part of its answer
is dropped by the node (520) instead of run for nobody. A client that stops waiting (its
``wait`` passed, the caller closed a ``stream()`` early or was interrupted, or ``close()``
came first) sends ``CANCEL`` for that request: the node drops its job if it has not started,
and sends nothing more for it.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import msgpack
import zmq
import zmq.asyncio

from cocaine_core import protocol
from cocaine_core.client_connection import (
    WATCHED,
    ConnectionNews,
    forget_unsent,
    no_answer,
    send_bounded,
    send_bounded_async,
    watcher,
)
from cocaine_core.client_frames import Body, decode_answer, request_frames, sent_deadline
from cocaine_core.client_links import Endpoints, several
from cocaine_core.client_options import check_wait, connect
from cocaine_core.client_upload import StreamedRequest, open_request
from cocaine_core.client_upload_async import AsyncStreamedRequest, open_async
from cocaine_core.client_wait import wait_for_node as wait_for_node
from cocaine_core.errors import ProtocolError, ServiceError
from cocaine_core.protocol import CONTROL_APP, DEFAULT_ENDPOINT, Code
from cocaine_core.trust.client_keys import ClientKeys
from cocaine_core.trust.keys import Signer

#: An answer within this many ms costs the blocking client one poll, as it would without a
#: monitor; only a slower one makes it read the monitor too.
QUICK_MS = 100

#: AsyncClient queue entries for connection news (real message codes are positive).
_CONNECTION = -1

#: Milliseconds a closing socket keeps trying to deliver the CANCELs it was just given.
CANCEL_LINGER_MS = 250


class Client:
    """A blocking client of one node (of several: ``client_failover``). Not thread-safe."""
    max_message: int | None = protocol.MAX_MESSAGE  # the node's: more is a 400 here (None: any)

    def __new__(cls, endpoint: Endpoints = DEFAULT_ENDPOINT, *args: Any,
                **kwargs: Any) -> Client:
        """``Client([endpoint, ...])`` or ``Client("a,b")``: a ``FailoverClient``."""
        if cls is Client and several(endpoint):
            from cocaine_core.client_failover import FailoverClient
            return super().__new__(FailoverClient)
        return super().__new__(cls)

    def __init__(self, endpoint: Endpoints = DEFAULT_ENDPOINT, *, wait: float | None = None,
                 context: zmq.Context | None = None,
                 key: Signer | str | Path | bool | None = None,
                 server_key: str | bytes | None = None) -> None:
        """``wait``: most seconds to wait for each message of an answer (None: forever).
        ``key``: the Ed25519 key (a ``Signer`` or a file) that signs control requests
        (None: ``$COCAINE_KEY`` or ``~/.config/cocaine/id_ed25519`` if it exists; False:
        none). ``server_key``: the node's CurveZMQ public key (Z85), for a node run with
        ``--curve``."""
        self.endpoint = endpoint = cast(str, endpoint)  # several: FailoverClient's __init__
        self.wait = check_wait(wait)
        self._keys = ClientKeys(key, server_key)
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.DEALER)
        try:  # a bad key is an error, never a socket left open in the context
            self._socket.setsockopt(zmq.LINGER, 0)
            self._keys.secure(self._socket)
            self._news = ConnectionNews.of(endpoint, self._keys)
            #: The monitor and a poller of both, made before connecting (a refused handshake
            #: is said once), read only at a slow answer.
            self._watching: tuple[zmq.Socket[bytes], zmq.Poller] | None = \
                watcher(self._socket)
        except BaseException:
            self._socket.close(linger=0)
            raise
        try:
            connect(self._socket, endpoint)
        except ServiceError:
            self._watching[0].close(linger=0)
            raise
        self._ids = itertools.count(1)
        #: Requests sent whose answer has not ended: cancelled if the caller stops waiting.
        self._open: set[int] = set()
        self._cancelled = False

    def stream(self, app: str, event: str, data: Body = None, *, urgent: bool = False,
               timeout: float | None = None, deadline: float | None = None,
               retry: bool = True) -> Iterator[bytes]:
        """Send a request and yield the answer's chunks as they arrive.

        ``deadline`` defaults to ``wait``. Stopping early (closing the iterator, an error
        such as no answer within ``wait``, Ctrl-C) cancels the request at the node.
        ``retry=False``: if the slave running the job dies, the job fails (500) rather than
        run again on another slave (for handlers that must not run twice)."""
        request_id = next(self._ids)
        assert self._watching is not None
        send_bounded(self._socket, self._watching[0], self._news,
                     request_frames(request_id, app, event, data, urgent, timeout,
                                    sent_deadline(deadline, self.wait), retry, self.max_message,
                                    self._keys.control(app)), self.wait)
        self._open.add(request_id)
        try:
            while True:
                self._await_answer()
                rid, code, payload, fields = decode_answer(self._socket.recv_multipart())
                if rid != request_id:
                    continue  # a late answer to an abandoned request
                if code == Code.CHUNK:
                    yield payload or b""
                elif code == Code.CHOKE:
                    self._open.discard(request_id)
                    if payload is not None:
                        yield payload
                    return
                elif code == Code.ERROR:
                    self._open.discard(request_id)
                    raise ServiceError(int(fields[2]), str(fields[3]))
        finally:
            if request_id in self._open:
                self._open.discard(request_id)
                self._cancel(request_id)

    def open(self, app: str, event: str, *, urgent: bool = False, timeout: float | None = None,
             deadline: float | None = None, retry: bool = True) -> StreamedRequest:
        """A request whose body is written in pieces as it comes: ``with client.open(app, event)
        as request: request.write(piece) ... request.end(); request.read()`` (client_upload)."""
        return open_request(self, app, event, urgent, timeout, deadline, retry)

    def _cancel(self, request_id: int) -> None:
        """Tell the node this client no longer waits for ``request_id`` (never blocks)."""
        if self._socket.closed:
            return
        with contextlib.suppress(zmq.ZMQError):
            self._socket.send_multipart([protocol.pack(Code.CANCEL, request_id)], zmq.NOBLOCK)
            self._cancelled = True

    def _await_answer(self) -> None:
        """Return once a message can be read; raise ``ServiceError`` if none will come."""
        quick = QUICK_MS if self.wait is None else min(QUICK_MS, int(self.wait * 1000))
        if self._socket.poll(quick):
            return
        self._watch(None if self.wait is None else self.wait - quick / 1000)

    def _watch(self, left: float | None) -> None:
        """Wait up to ``left`` seconds for a message, and give up as soon as the monitor says
        nothing listens: only news counts, so what it said before this wait is dropped."""
        assert self._watching is not None
        monitor, poller = self._watching
        while True:
            try:
                self._news.read(monitor.recv_multipart(zmq.NOBLOCK))  # old: only a final
            except zmq.Again:                                          # refusal still holds
                break
        if self._news.final is not None:
            forget_unsent(self._socket, self.endpoint)
            self._open.clear()
            raise self._news.final
        deadline = None if left is None else time.monotonic() + left
        while True:
            ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            ready = dict(poller.poll(ms))
            if self._socket in ready:
                return
            if monitor not in ready:
                raise no_answer(self.endpoint, self.wait or 0)
            error = self._news.read(monitor.recv_multipart())
            if error is not None:
                forget_unsent(self._socket, self.endpoint)
                self._open.clear()  # no node has them: nothing to cancel
                raise error

    def call(self, app: str, event: str, data: Body = None, **policy: Any) -> bytes:
        """Send a request and return its whole answer as bytes."""
        return b"".join(self.stream(app, event, data, **policy))

    def control(self, method: str, **args: Any) -> Any:
        """Call the node's control service (``info``, ``list``, …) and decode its answer."""
        answer = self.call(CONTROL_APP, method, msgpack.packb(args, use_bin_type=True))
        return msgpack.unpackb(answer, raw=False) if answer else None

    def close(self) -> None:
        """Cancel the requests still waiting for an answer, and close the socket."""
        if self._socket.closed:
            return
        for request_id in sorted(self._open):
            self._cancel(request_id)
        self._open.clear()
        if self._watching is not None:
            self._socket.disable_monitor()
            self._watching[0].close(linger=0)
        self._socket.close(linger=CANCEL_LINGER_MS if self._cancelled else 0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of ``Client``; many requests may be in flight at once."""
    max_message: int | None = protocol.MAX_MESSAGE  # as ``Client.max_message``

    def __new__(cls, endpoint: Endpoints = DEFAULT_ENDPOINT, *args: Any,
                **kwargs: Any) -> AsyncClient:
        """``AsyncClient([endpoint, ...])``: an ``AsyncFailoverClient``."""
        if cls is AsyncClient and several(endpoint):
            from cocaine_core.client_failover import AsyncFailoverClient
            return super().__new__(AsyncFailoverClient)
        return super().__new__(cls)

    def __init__(self, endpoint: Endpoints = DEFAULT_ENDPOINT, *, wait: float | None = None,
                 key: Signer | str | Path | bool | None = None,
                 server_key: str | bytes | None = None) -> None:
        """``wait``, ``key`` and ``server_key`` as ``Client``'s."""
        self.endpoint = endpoint = cast(str, endpoint)
        self.wait = check_wait(wait)
        self._keys = ClientKeys(key, server_key)
        self._context = zmq.asyncio.Context.instance()
        self._socket = self._context.socket(zmq.DEALER)
        try:  # a bad key is an error, never a socket left open in the context
            self._socket.setsockopt(zmq.LINGER, 0)
            self._keys.secure(self._socket)
            self._news = ConnectionNews.of(endpoint, self._keys)
            #: Made before connecting (a refused handshake is said once); read from the
            #: first request on.
            self._monitor: zmq.asyncio.Socket | None = \
                self._socket.get_monitor_socket(WATCHED)
        except BaseException:
            self._socket.close(linger=0)
            raise
        try:
            connect(self._socket, endpoint)
        except ServiceError:
            self._monitor.close(linger=0)
            raise
        self._ids = itertools.count(1)
        #: The requests waiting for their answer, each with the queue its messages go to.
        self._queues: dict[int, Any] = {}
        self._reader: Any = None
        self._watcher: Any = None
        self._cancelled = False

    async def stream(self, app: str, event: str, data: Body = None, *, urgent: bool = False,
                     timeout: float | None = None, deadline: float | None = None,
                     retry: bool = True) -> AsyncIterator[bytes]:
        """Send a request and yield the answer's chunks as they arrive (``deadline``,
        ``retry`` and stopping early as with ``Client.stream``)."""
        import asyncio

        request_id = next(self._ids)
        queue: asyncio.Queue[tuple[int, bytes | None, list[Any]]] = asyncio.Queue()
        self._queues[request_id] = queue
        if self._reader is None or self._reader.done():
            self._reader = asyncio.ensure_future(self._read())
        if self._watcher is None and self._monitor is not None:
            self._watcher = asyncio.ensure_future(self._watch(self._monitor))
        ended = False  # the answer ended, or no node ever had the request
        try:
            frames = request_frames(request_id, app, event, data, urgent, timeout,
                                    sent_deadline(deadline, self.wait), retry, self.max_message,
                                    self._keys.control(app))
            ended = True  # until it is sent, there is nothing to cancel
            await send_bounded_async(self._socket, self._news, frames, self.wait)
            ended = False
            # News read this soon may be older than the request (the loop reads the monitor
            # when it gets to it): only later news decides, as in ``Client``.
            news_after = asyncio.get_running_loop().time() + QUICK_MS / 1000
            if self._news.final is not None:  # a refusal heard before still holds
                ended = True
                forget_unsent(self._socket, self.endpoint)
                raise self._news.final
            while True:
                try:
                    code, payload, fields = await asyncio.wait_for(queue.get(), self.wait)
                except TimeoutError:
                    raise no_answer(self.endpoint, self.wait or 0) from None
                if code == Code.CHUNK:
                    yield payload or b""
                elif code == Code.CHOKE:
                    ended = True
                    if payload is not None:
                        yield payload
                    return
                elif code == Code.ERROR:
                    ended = True
                    raise ServiceError(int(fields[2]), str(fields[3]))
                elif code == _CONNECTION and (fields[0] is self._news.final or
                                              asyncio.get_running_loop().time() >= news_after):
                    error = fields[0] or self._news.final
                    if error is not None:
                        ended = True
                        forget_unsent(self._socket, self.endpoint)
                        raise error
        finally:
            if self._queues.pop(request_id, None) is not None and not ended:
                self._cancel(request_id)

    def open(self, app: str, event: str, *, urgent: bool = False, timeout: float | None = None,
             deadline: float | None = None, retry: bool = True) -> AsyncStreamedRequest:
        """``Client.open``'s twin: ``async with client.open(app, event) as request: await
        request.write(piece) ... await request.end()`` (``client_upload_async``)."""
        return open_async(self, app, event, urgent, timeout, deadline, retry)

    def _cancel(self, request_id: int) -> None:
        """Tell the node this client no longer waits for ``request_id`` (never blocks; queued
        after any request still being sent, so it never overtakes its own request)."""
        import asyncio

        if self._socket.closed:
            return
        try:
            sent = asyncio.ensure_future(self._socket.send_multipart(
                [protocol.pack(Code.CANCEL, request_id)], flags=zmq.NOBLOCK))
            # A CANCEL that could not be sent is no one's error: take its outcome, quietly.
            sent.add_done_callback(lambda done: done.cancelled() or done.exception())
        except (zmq.ZMQError, RuntimeError):  # RuntimeError: the event loop is gone
            return
        self._cancelled = True

    async def _read(self) -> None:
        while self._queues:
            frames = await self._socket.recv_multipart()
            try:
                rid, code, payload, fields = decode_answer(frames)
            except ProtocolError:
                continue
            queue = self._queues.get(rid)
            if queue is not None:
                queue.put_nowait((code, payload, fields))

    async def _watch(self, monitor: zmq.asyncio.Socket) -> None:
        # Started with the first request and run for the client's life: each event goes to
        # the requests waiting when it is read, after what they received before it (each
        # request judges whether it is news to it).
        while True:
            error = self._news.read(await monitor.recv_multipart())
            for queue in self._queues.values():
                queue.put_nowait((_CONNECTION, None, [error]))

    async def call(self, app: str, event: str, data: Body = None, **policy: Any) -> bytes:
        """Send a request and return its whole answer."""
        return b"".join([chunk async for chunk in self.stream(app, event, data, **policy)])

    async def control(self, method: str, **args: Any) -> Any:
        """Call the node's control service and decode its answer."""
        answer = await self.call(CONTROL_APP, method, msgpack.packb(args, use_bin_type=True))
        return msgpack.unpackb(answer, raw=False) if answer else None

    def close(self) -> None:
        """Cancel the requests still waiting for an answer, and close the socket."""
        if self._socket.closed:
            return
        for request_id in sorted(self._queues):
            self._cancel(request_id)
        self._queues.clear()
        for task in (self._reader, self._watcher):
            if task is not None:
                task.cancel()
        if self._monitor is not None:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
        self._socket.close(linger=CANCEL_LINGER_MS if self._cancelled else 0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

