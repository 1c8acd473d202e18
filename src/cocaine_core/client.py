"""Clients of a node's native endpoint: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

    from cocaine_core.client import Client
    with Client("tcp://127.0.0.1:10053") as client:
        print(client.call("hello", "echo", b"world"))

A failed request raises ``ServiceError`` with ``.code`` (see ``protocol.Status``) and
``.message``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from cocaine_core import protocol
from cocaine_core.errors import ProtocolError, ServiceError
from cocaine_core.protocol import CONTROL_APP, DEFAULT_ENDPOINT, Code, Status

Body = bytes | str | None


def _body(data: Body) -> bytes:
    if data is None:
        return b""
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


def _request(request_id: int, app: str, event: str, data: Body, urgent: bool,
             timeout: float | None, deadline: float | None) -> list[bytes]:
    policy = {"urgent": urgent, "timeout": timeout, "deadline": deadline}
    return [protocol.pack(Code.REQUEST, request_id, app, event, policy), _body(data)]


def _no_answer(endpoint: str, wait: float) -> ServiceError:
    return ServiceError(Status.SERVER_ERROR, f"no answer from the node at {endpoint} within "
                                             f"{wait:g} s; is it running? (cocaine run / "
                                             f"cocaine node)")


def _decode(frames: list[bytes]) -> tuple[Any, int, bytes | None, Any]:
    fields = protocol.unpack(frames[0])
    if len(fields) < 2:
        raise ProtocolError("reply header too short")
    return fields[1], fields[0], (frames[1] if len(frames) > 1 else None), fields


class Client:
    """A blocking client of one node. Not thread-safe: one per thread."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, wait: float | None = None,
                 context: zmq.Context | None = None) -> None:
        """``wait``: most seconds to wait for each message of an answer (None: forever)."""
        self.endpoint = endpoint
        self.wait = wait
        self._context = context or zmq.Context.instance()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(endpoint)
        self._ids = itertools.count(1)

    def stream(self, app: str, event: str, data: Body = None, *, urgent: bool = False,
               timeout: float | None = None, deadline: float | None = None) -> Iterator[bytes]:
        """Send a request and yield the answer's chunks as they arrive."""
        request_id = next(self._ids)
        self._socket.send_multipart(_request(request_id, app, event, data, urgent, timeout,
                                             deadline))
        while True:
            if self.wait is not None and not self._socket.poll(int(self.wait * 1000)):
                raise _no_answer(self.endpoint, self.wait)
            rid, code, payload, fields = _decode(self._socket.recv_multipart())
            if rid != request_id:
                continue  # a late answer to an abandoned request
            if code == Code.CHUNK:
                yield payload or b""
            elif code == Code.CHOKE:
                if payload is not None:
                    yield payload
                return
            elif code == Code.ERROR:
                raise ServiceError(int(fields[2]), str(fields[3]))

    def call(self, app: str, event: str, data: Body = None, **policy: Any) -> bytes:
        """Send a request and return its whole answer as bytes."""
        return b"".join(self.stream(app, event, data, **policy))

    def control(self, method: str, **args: Any) -> Any:
        """Call the node's control service (``info``, ``list``, …) and decode its answer."""
        answer = self.call(CONTROL_APP, method, msgpack.packb(args, use_bin_type=True))
        return msgpack.unpackb(answer, raw=False) if answer else None

    def close(self) -> None:
        """Close the socket."""
        self._socket.close(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of ``Client``; many requests may be in flight at once."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, wait: float | None = None) -> None:
        self.endpoint = endpoint
        self.wait = wait
        self._context = zmq.asyncio.Context.instance()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(endpoint)
        self._ids = itertools.count(1)
        self._queues: dict[int, Any] = {}
        self._reader: Any = None

    async def stream(self, app: str, event: str, data: Body = None, *, urgent: bool = False,
                     timeout: float | None = None,
                     deadline: float | None = None) -> AsyncIterator[bytes]:
        """Send a request and yield the answer's chunks as they arrive."""
        import asyncio

        request_id = next(self._ids)
        queue: asyncio.Queue[tuple[int, bytes | None, list[Any]]] = asyncio.Queue()
        self._queues[request_id] = queue
        if self._reader is None or self._reader.done():
            self._reader = asyncio.ensure_future(self._read())
        try:
            await self._socket.send_multipart(_request(request_id, app, event, data, urgent,
                                                       timeout, deadline))
            while True:
                try:
                    code, payload, fields = await asyncio.wait_for(queue.get(), self.wait)
                except TimeoutError:
                    raise _no_answer(self.endpoint, self.wait or 0) from None
                if code == Code.CHUNK:
                    yield payload or b""
                elif code == Code.CHOKE:
                    if payload is not None:
                        yield payload
                    return
                elif code == Code.ERROR:
                    raise ServiceError(int(fields[2]), str(fields[3]))
        finally:
            self._queues.pop(request_id, None)

    async def _read(self) -> None:
        while self._queues:
            frames = await self._socket.recv_multipart()
            try:
                rid, code, payload, fields = _decode(frames)
            except ProtocolError:
                continue
            queue = self._queues.get(rid)
            if queue is not None:
                queue.put_nowait((code, payload, fields))

    async def call(self, app: str, event: str, data: Body = None, **policy: Any) -> bytes:
        """Send a request and return its whole answer."""
        return b"".join([chunk async for chunk in self.stream(app, event, data, **policy)])

    async def control(self, method: str, **args: Any) -> Any:
        """Call the node's control service and decode its answer."""
        answer = await self.call(CONTROL_APP, method, msgpack.packb(args, use_bin_type=True))
        return msgpack.unpackb(answer, raw=False) if answer else None

    def close(self) -> None:
        """Close the socket."""
        if self._reader is not None:
            self._reader.cancel()
        self._socket.close(linger=0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def wait_for_node(endpoint: str, timeout: float = 10.0) -> None:
    """Block until the node at ``endpoint`` answers ``list`` (handy in scripts and tests)."""
    deadline = time.monotonic() + timeout
    while True:
        with Client(endpoint, wait=0.5) as client:
            try:
                client.control("list")
                return
            except ServiceError:
                if time.monotonic() > deadline:
                    raise
