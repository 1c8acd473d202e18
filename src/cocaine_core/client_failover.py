"""Clients of several nodes: ``Client([endpoint, ...])`` and ``AsyncClient([...])`` (or
``"tcp://a:10053,tcp://b:10053"``, as ``--node a,b``) make these.

Such a client talks to one node at a time, the first at the start, and stays on the one that
works (sticky). A request goes to the next endpoint when

- its node is unreachable: nothing listens, the handshake is refused or does not end within
  ``HANDSHAKE_MS``, or the request could not be sent within ``wait``. The node never had the
  request, so each endpoint may be tried once per request;
- its connection drops while it has received nothing: the node was killed, or answered no
  ZeroMQ heartbeat for ``HEARTBEAT_TIMEOUT_MS`` (a stopped or hung machine). The request may
  have run: it is resent once, never twice, and not at all when its ``retry`` is off or it is
  a control call (a deploy must not run twice): a 500 says why.

A request that had received part of its answer fails (500 naming the node: the answer was
cut). Errors the node answers (400, 401, 404, 502, 503, 504, 520…) and a node that does not
answer within ``wait`` are answers: no failover. When every endpoint failed, one error names
each and what it said.

A streamed request (``open``) goes to the node the client talks to now and never fails over:
its body is not kept to be sent again, so a connection that fails fails it (503 if the node
never had it, 500 if it dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from cocaine_core import protocol
from cocaine_core.client import CANCEL_LINGER_MS, AsyncClient, Client
from cocaine_core.client_connection import no_answer
from cocaine_core.client_frames import Body, decode_answer, request_frames, sent_deadline
from cocaine_core.client_links import (
    FAILED,
    AsyncLink,
    Endpoints,
    Link,
    LinkFailed,
    endpoints_of,
)
from cocaine_core.client_options import check_wait
from cocaine_core.client_upload import StreamedRequest, open_on_link
from cocaine_core.errors import ServiceError
from cocaine_core.protocol import CONTROL_APP, Code, Status
from cocaine_core.trust.client_keys import ClientKeys
from cocaine_core.trust.keys import Signer


class Failover:
    """What one request tried, and which endpoint it goes to next (``client_failover``'s
    rules): unreachable endpoints each once; a dropped request resent once, never when it
    is a control call or has ``retry`` off."""

    def __init__(self, endpoints: list[str], app: str, event: str, retry: bool) -> None:
        self.endpoints = endpoints
        self.app = app
        self.event = event
        self.retry = retry
        self.tried: list[tuple[int, LinkFailed]] = []
        self.resent = False

    def next(self, index: int, failure: LinkFailed, active: int) -> int:
        """The endpoint to try after ``failure`` at ``index`` (``active``: the client's
        endpoint now, another request may have moved it); raise when there is none."""
        self.tried.append((index, failure))
        where = failure.endpoint
        if failure.dropped:
            if self.app == CONTROL_APP:
                raise ServiceError(Status.SERVER_ERROR, f"the connection to the node at "
                                                        f"{where} dropped during the control "
                                                        f"call '{self.event}', before its "
                                                        f"answer: a control call is never "
                                                        f"resent (it may have run there, and "
                                                        f"a deploy must not run twice); check "
                                                        f"the node, then call again")
            if not self.retry:
                raise ServiceError(Status.SERVER_ERROR, f"the connection to the node at "
                                                        f"{where} dropped before any answer "
                                                        f"came; the request is not resent "
                                                        f"since its retry is off (retry=False,"
                                                        f" --no-retry) and it may have run "
                                                        f"there")
            if self.resent:
                raise self.every_failed("the request was resent once after a dropped "
                                        "connection and is not resent again")
            self.resent = True
        done = {tried for tried, _ in self.tried}
        if active != index and active not in done:
            return active
        count = len(self.endpoints)
        for step in range(1, count):
            if (index + step) % count not in done:
                return (index + step) % count
        raise self.every_failed()

    def every_failed(self, note: str = "") -> ServiceError:
        """The error naming each endpoint tried and what it said: 500 if one may have run
        the request, else 503 (no node had it: it can be sent again)."""
        dropped = any(failure.dropped for _, failure in self.tried)
        said = "; ".join(f"{self.endpoints[index]}: {failure.what()}"
                         for index, failure in self.tried)
        tail = f" ({note})" if note else ""
        return ServiceError(Status.SERVER_ERROR if dropped else Status.UNAVAILABLE,
                            f"no node answered {self.app} {self.event}{tail}: {said}")

    def cut(self, failure: LinkFailed) -> ServiceError:
        """The error of a request whose connection dropped after part of its answer."""
        return ServiceError(Status.SERVER_ERROR, f"the connection to the node at "
                                                 f"{failure.endpoint} dropped after part of "
                                                 f"the answer came: the answer was cut (not "
                                                 f"resent, the request ran there)")


def _left(deadline: float | None, began: float) -> float | None:
    """What is left of a request's ``deadline`` (sent ``began``) when it is resent."""
    return None if deadline is None else max(0.001, deadline - (time.monotonic() - began))


class FailoverClient(Client):
    """A blocking ``Client`` of several nodes (the module's docstring). Not thread-safe."""

    def __init__(self, endpoint: Endpoints, *, wait: float | None = None,
                 context: zmq.Context | None = None,
                 key: Signer | str | Path | bool | None = None,
                 server_key: str | bytes | None = None) -> None:
        """As ``Client``'s, with several endpoints."""
        self.endpoints = endpoints_of(endpoint)
        self.wait = check_wait(wait)
        self._keys = ClientKeys(key, server_key)
        self._context = context or zmq.Context.instance()
        self._links: dict[int, Link] = {0: Link(self._context, self.endpoints[0], self._keys)}
        self._active = 0
        self.endpoint = self.endpoints[0]  # the endpoint this client talks to now
        self._ids = itertools.count(1)
        #: Requests sent whose answer has not ended, with their link.
        self._pending: dict[int, Link] = {}
        self._cancelled = False
        self._closed = False

    def _link(self, index: int) -> Link:
        if self._closed:
            raise ServiceError(Status.BAD_REQUEST, "this client is closed")
        link = self._links.get(index)
        if link is not None:
            link.drain()
            if link.failure is None:
                return link
            link.close()  # failed while idle: a new connection, as a new client would
        try:
            link = self._links[index] = Link(self._context, self.endpoints[index], self._keys)
        except ServiceError as exc:
            raise LinkFailed(self.endpoints[index], exc, dropped=False) from None
        return link

    def _forget(self, index: int) -> None:
        link = self._links.pop(index, None)
        if link is not None:
            link.close()

    def stream(self, app: str, event: str, data: Body = None, *, urgent: bool = False,
               timeout: float | None = None, deadline: float | None = None,
               retry: bool = True) -> Iterator[bytes]:
        """As ``Client.stream``, failing over as the module's docstring says."""
        failover = Failover(self.endpoints, app, event, retry)
        deadline, began = sent_deadline(deadline, self.wait), time.monotonic()
        index = self._active
        while True:
            got = False
            try:
                link = self._link(index)
                with contextlib.closing(self._attempt(link, app, event, data, urgent, timeout,
                                                      _left(deadline, began), retry)) as chunks:
                    for chunk in chunks:
                        got = True
                        yield chunk
                return
            except LinkFailed as failure:
                self._forget(index)
                if got:
                    raise failover.cut(failure) from None
                index = self._active = failover.next(index, failure, self._active)
                self.endpoint = self.endpoints[index]

    def open(self, app: str, event: str, *, urgent: bool = False, timeout: float | None = None,
             deadline: float | None = None, retry: bool = True) -> StreamedRequest:
        """As ``Client.open``, on the node this client talks to now (no failover)."""
        return open_on_link(self, app, event, urgent, timeout, deadline, retry)

    def _attempt(self, link: Link, app: str, event: str, data: Body, urgent: bool,
                 timeout: float | None, deadline: float | None,
                 retry: bool) -> Generator[bytes, None, None]:
        request_id = next(self._ids)
        link.send(request_frames(request_id, app, event, data, urgent, timeout, deadline, retry,
                                 self.max_message, self._keys.control(app)), self.wait)
        self._pending[request_id] = link
        try:
            while True:
                rid, code, payload, fields = decode_answer(link.receive(self.wait))
                if rid != request_id:
                    continue  # a late answer to an abandoned request
                if code == Code.CHUNK:
                    yield payload or b""
                elif code == Code.CHOKE:
                    del self._pending[request_id]
                    if payload is not None:
                        yield payload
                    return
                elif code == Code.ERROR:
                    del self._pending[request_id]
                    raise ServiceError(int(fields[2]), str(fields[3]))
        except LinkFailed:
            self._pending.pop(request_id, None)  # no node has it: nothing to cancel
            raise
        finally:
            if self._pending.pop(request_id, None) is not None:
                self._cancelled |= link.cancel([protocol.pack(Code.CANCEL, request_id)])

    def close(self) -> None:
        """Cancel the requests still waiting for an answer, and close every connection."""
        if self._closed:
            return
        self._closed = True
        for request_id, link in sorted(self._pending.items()):
            self._cancelled |= link.cancel([protocol.pack(Code.CANCEL, request_id)])
        self._pending.clear()
        for link in self._links.values():
            link.close(CANCEL_LINGER_MS if self._cancelled else 0)
        self._links.clear()


class AsyncFailoverClient(AsyncClient):
    """An ``AsyncClient`` of several nodes: many requests in flight, each failing over on its
    own (the module's docstring)."""

    def __init__(self, endpoint: Endpoints, *, wait: float | None = None,
                 key: Signer | str | Path | bool | None = None,
                 server_key: str | bytes | None = None) -> None:
        """As ``AsyncClient``'s, with several endpoints."""
        self.endpoints = endpoints_of(endpoint)
        self.wait = check_wait(wait)
        self._keys = ClientKeys(key, server_key)
        self._context = zmq.asyncio.Context.instance()
        self._links: dict[int, AsyncLink] = {}
        self._links[0] = AsyncLink(self._context, self.endpoints[0], self._keys, self._failed)
        self._active = 0
        self.endpoint = self.endpoints[0]  # the endpoint this client talks to now
        self._ids = itertools.count(1)
        self._cancelled = False
        self._closed = False

    def _link(self, index: int) -> AsyncLink:
        if self._closed:
            raise ServiceError(Status.BAD_REQUEST, "this client is closed")
        link = self._links.get(index)
        if link is not None:
            link.drain()  # may find it failed, and forget it
            if self._links.get(index) is link:
                return link
        try:
            link = AsyncLink(self._context, self.endpoints[index], self._keys, self._failed)
        except ServiceError as exc:
            raise LinkFailed(self.endpoints[index], exc, dropped=False) from None
        self._links[index] = link
        return link

    def _failed(self, link: AsyncLink) -> None:
        for index, known in list(self._links.items()):
            if known is link:
                del self._links[index]
        link.close()

    async def stream(self, app: str, event: str, data: Body = None, *, urgent: bool = False,
                     timeout: float | None = None, deadline: float | None = None,
                     retry: bool = True) -> AsyncIterator[bytes]:
        """As ``AsyncClient.stream``, failing over as the module's docstring says."""
        failover = Failover(self.endpoints, app, event, retry)
        deadline, began = sent_deadline(deadline, self.wait), time.monotonic()
        index = self._active
        while True:
            got, link = False, None
            try:
                link = self._link(index)
                async with contextlib.aclosing(self._attempt(
                        link, app, event, data, urgent, timeout, _left(deadline, began),
                        retry)) as chunks:
                    async for chunk in chunks:
                        got = True
                        yield chunk
                return
            except LinkFailed as failure:
                if link is not None and link.failure is None:  # took nothing within wait
                    link.fail(failure.error)
                if got:
                    raise failover.cut(failure) from None
                index = self._active = failover.next(index, failure, self._active)
                self.endpoint = self.endpoints[index]

    async def _attempt(self, link: AsyncLink, app: str, event: str, data: Body, urgent: bool,
                       timeout: float | None, deadline: float | None,
                       retry: bool) -> AsyncGenerator[bytes, None]:
        request_id = next(self._ids)
        queue: asyncio.Queue[tuple[int, bytes | None, list[Any]]] = asyncio.Queue()
        frames = request_frames(request_id, app, event, data, urgent, timeout, deadline, retry,
                                self.max_message, self._keys.control(app))
        ended = True  # until it is sent, there is nothing to cancel
        try:
            await link.send(request_id, frames, queue, self.wait)
            ended = False
            while True:
                try:
                    code, payload, fields = await asyncio.wait_for(queue.get(), self.wait)
                except TimeoutError:
                    raise no_answer(link.endpoint, self.wait or 0) from None
                if code == FAILED:
                    ended = True
                    raise fields[0]
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
        finally:
            if link.pending.pop(request_id, None) is not None and not ended:
                self._cancelled |= link.cancel([protocol.pack(Code.CANCEL, request_id)])

    def close(self) -> None:
        """Cancel the requests still waiting for an answer, and close every connection."""
        if self._closed:
            return
        self._closed = True
        for link in self._links.values():
            for request_id in sorted(link.pending):
                self._cancelled |= link.cancel([protocol.pack(Code.CANCEL, request_id)])
            link.pending.clear()
        for link in list(self._links.values()):
            link.close(CANCEL_LINGER_MS if self._cancelled else 0)
        self._links.clear()
