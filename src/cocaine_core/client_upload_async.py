"""``AsyncClient.open``: the asyncio twin of ``client_upload`` (read its docstring first).

    async with client.open("files", "store") as request:
        async for piece in source:
            await request.write(piece)
        await request.end()
        answer = await request.read()     # or: async for chunk in request: ...

The REQUEST is sent when the ``async with`` block is entered (or by the first ``write``,
``flush`` or ``end``; ``await request.start()`` sends it at once). A task of the request reads
its messages: credit wakes a waiting ``write``, the answer's chunks are kept for the reader.
When ``ANSWER_CHUNKS`` (or ``ANSWER_BYTES``) wait unread, that task stops reading until some
are taken: credit queued behind them waits too, so a ``write`` waits, up to the client's
``wait``, for another task to read the answer (``async for chunk in request`` in a task of
its own, for a handler that answers as it reads).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol

from cocaine_core import protocol
from cocaine_core.client_connection import forget_unsent, no_answer, send_bounded_async
from cocaine_core.client_upload_body import (
    Body,
    Piece,
    link_error,
    open_frames,
    piece_limit,
)
from cocaine_core.errors import ServiceError
from cocaine_core.protocol import Code

if TYPE_CHECKING:
    from cocaine_core.client import AsyncClient
    from cocaine_core.client_failover import AsyncFailoverClient
    from cocaine_core.client_links import AsyncLink


class AsyncChannel(Protocol):
    """How an asyncio streamed request talks to its node."""

    queue: asyncio.Queue[tuple[int, bytes | None, list[Any]]]

    async def send(self, frames: list[bytes]) -> None:
        """Send, waiting for room up to the client's wait."""

    def failure(self, code: int, fields: list[Any]) -> ServiceError | None:
        """The error a queue entry that is no message means (None: nothing yet)."""

    def cancel(self) -> None:
        """Tell the node nobody waits for the request (if it may still have it)."""

    def forget(self) -> None:
        """Stop giving this request messages."""


class AsyncStreamedRequest:
    """An ``AsyncClient``'s request whose body is written in pieces (the module's docstring)."""

    def __init__(self, channel: Callable[[], AsyncChannel], body: Body, frames: list[bytes],
                 wait: float | None) -> None:
        """``channel``: makes the channel once the request is started."""
        self._make_channel = channel
        self._channel: AsyncChannel | None = None
        self._body = body
        self._frames = frames
        self.wait = wait
        self._changed = asyncio.Event()
        self._reader: asyncio.Future[None] | None = None
        self._started: asyncio.Future[None] | None = None

    @property
    def id(self) -> int:
        """The request's id on its connection."""
        return self._body.id

    @property
    def done(self) -> bool:
        """Whether the answer has ended (or the request failed) and every chunk was read."""
        return self._body.done and not self._body.answer

    async def start(self) -> None:
        """Send the REQUEST (once; ``async with``, ``write``, ``flush`` and ``end`` do)."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        self._channel = channel = self._make_channel()
        try:
            await channel.send(self._frames)
        except ServiceError as exc:
            self._body.fail(exc)
            channel.forget()
            raise
        self._reader = asyncio.ensure_future(self._read())

    async def write(self, data: Piece) -> None:
        """Write ``data`` to the body (``Client.open``'s ``write``, waiting without blocking
        the loop)."""
        await self.start()
        body = self._body
        if not body.writable():
            return
        for piece in body.pieces_of(data):
            await self._send(piece)

    async def flush(self) -> None:
        """Send what ``write`` gathered now."""
        await self.start()
        if not self._body.writable():
            return
        if self._body.gathered:
            await self._send(self._body.rest())

    async def end(self) -> None:
        """The body is complete: send what is gathered, then CHOKE."""
        await self.start()
        body = self._body
        if (body.ended or body.done) and body.error is None:
            body.ended = True
            return
        await self.flush()
        assert self._channel is not None
        await self._channel.send([protocol.pack(Code.CHOKE, body.id)])
        body.ended = True

    def received(self) -> list[bytes]:
        """The answer's chunks that arrived and were not read yet (never waits)."""
        chunks = []
        while (chunk := self._body.next_chunk()) is not None:
            chunks.append(chunk)
        self._changed.set()  # the reader may have room again
        return chunks

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        await self.start()
        body = self._body
        while True:
            chunk = body.next_chunk()
            if chunk is not None:
                self._changed.set()
                yield chunk
            elif body.done:
                return
            elif not await self._until(lambda: bool(body.answer) or body.done, self.wait):
                raise no_answer(body.endpoint, self.wait or 0)

    async def read(self) -> bytes:
        """The rest of the answer, joined (``await end()`` first)."""
        return b"".join([chunk async for chunk in self])

    def close(self) -> None:
        """Cancel the request if its answer has not ended; stop its reader."""
        body = self._body
        if body.closed:
            return
        body.closed = True
        if self._reader is not None:
            self._reader.cancel()
        if self._channel is not None:
            if not body.done:
                self._channel.cancel()
            self._channel.forget()
        body.done = True
        self._changed.set()

    async def __aenter__(self) -> AsyncStreamedRequest:
        try:
            await self.start()
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _send(self, piece: bytes) -> None:
        body = self._body
        if body.credit <= 0 and not await self._until(
                lambda: body.credit > 0 or body.done, self.wait):
            raise (body.not_read() if body.full else body.no_credit(self.wait)) from None
        if not body.writable():
            return  # the answer ended meanwhile
        assert self._channel is not None
        await self._channel.send([protocol.pack(Code.CHUNK, body.id), piece])
        body.credit -= 1
        body.pieces += 1

    async def _until(self, predicate: Callable[[], bool], wait: float | None) -> bool:
        """Wait until ``predicate()`` holds, up to ``wait`` seconds; whether it does."""
        loop = asyncio.get_running_loop()
        end = None if wait is None else loop.time() + wait
        while not predicate():
            self._changed.clear()
            left = None if end is None else end - loop.time()
            if left is not None and left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    async def _read(self) -> None:
        channel, body = self._channel, self._body
        assert channel is not None
        try:
            while not body.done:
                await self._until(lambda: not body.full or body.done, None)
                if body.done:
                    break
                code, payload, fields = await channel.queue.get()
                error = channel.failure(code, fields) if code < 0 else None
                if error is not None:
                    body.fail(error)
                elif code >= 0:
                    body.take(code, payload, fields)
                self._changed.set()
        finally:
            if body.done:
                channel.forget()


class ClientAsyncChannel:
    """An ``AsyncClient``'s socket, for one streamed request."""

    def __init__(self, client: AsyncClient, request_id: int) -> None:
        self.client = client
        self.id = request_id
        self.queue: asyncio.Queue[tuple[int, bytes | None, list[Any]]] = asyncio.Queue()
        self.sent = False
        self._news_after = 0.0

    async def send(self, frames: list[bytes]) -> None:
        """Send, as ``AsyncClient.stream`` does; the first send registers the request."""
        from cocaine_core.client import QUICK_MS

        client = self.client
        if not self.sent:
            client._queues[self.id] = self.queue
            if client._reader is None or client._reader.done():
                client._reader = asyncio.ensure_future(client._read())
            if client._watcher is None and client._monitor is not None:
                client._watcher = asyncio.ensure_future(client._watch(client._monitor))
        try:
            await send_bounded_async(client._socket, client._news, frames, client.wait)
        except ServiceError:
            if not self.sent:
                client._queues.pop(self.id, None)
            raise
        if not self.sent:
            self.sent = True
            self._news_after = asyncio.get_running_loop().time() + QUICK_MS / 1000
            if client._news.final is not None:  # a refusal heard before still holds
                forget_unsent(client._socket, client.endpoint)
                client._queues.pop(self.id, None)
                raise client._news.final

    def failure(self, code: int, fields: list[Any]) -> ServiceError | None:
        """Connection news, judged as ``AsyncClient.stream`` does."""
        client = self.client
        if fields[0] is client._news.final or \
                asyncio.get_running_loop().time() >= self._news_after:
            error = fields[0] or client._news.final
            if error is not None:
                forget_unsent(client._socket, client.endpoint)
                client._queues.pop(self.id, None)
                return error
        return None

    def cancel(self) -> None:
        """CANCEL, if the request is known to the client still."""
        if self.client._queues.pop(self.id, None) is not None:
            self.client._cancel(self.id)

    def forget(self) -> None:
        """Stop routing this request's messages."""
        self.client._queues.pop(self.id, None)


class LinkAsyncChannel:
    """An ``AsyncFailoverClient``'s link, for one streamed request (no failover)."""

    def __init__(self, client: AsyncFailoverClient, link: AsyncLink, request_id: int) -> None:
        self.client = client
        self.link = link
        self.id = request_id
        self.queue: asyncio.Queue[tuple[int, bytes | None, list[Any]]] = asyncio.Queue()

    async def send(self, frames: list[bytes]) -> None:
        """Send on the link; its failure is the request's error."""
        from cocaine_core.client_links import LinkFailed

        try:
            await self.link.send(self.id, frames, self.queue, self.client.wait)
        except LinkFailed as failure:
            self.link.pending.pop(self.id, None)
            raise link_error(failure) from None

    def failure(self, code: int, fields: list[Any]) -> ServiceError | None:
        """The link failed: the request's error."""
        return link_error(fields[0])

    def cancel(self) -> None:
        """CANCEL on the link, unless it failed."""
        if self.link.pending.pop(self.id, None) is not None:
            self.client._cancelled |= self.link.cancel([protocol.pack(Code.CANCEL, self.id)])

    def forget(self) -> None:
        """Stop routing this request's messages."""
        self.link.pending.pop(self.id, None)


def open_async(client: AsyncClient, app: str, event: str, urgent: bool, timeout: float | None,
               deadline: float | None, retry: bool) -> AsyncStreamedRequest:
    """``AsyncClient.open`` (and ``AsyncFailoverClient.open``: the node it talks to now)."""
    from cocaine_core.client_failover import AsyncFailoverClient
    from cocaine_core.client_links import LinkFailed

    request_id = next(client._ids)
    frames = open_frames(request_id, app, event, urgent, timeout, deadline, retry, client.wait)
    body = Body(request_id, client.endpoint, piece_limit(client.max_message))

    def channel() -> AsyncChannel:
        if isinstance(client, AsyncFailoverClient):
            try:
                link = client._link(client._active)
            except LinkFailed as failure:
                raise link_error(failure) from None
            return LinkAsyncChannel(client, link, request_id)
        return ClientAsyncChannel(client, request_id)

    return AsyncStreamedRequest(channel, body, frames, client.wait)
