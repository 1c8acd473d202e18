"""``request.stream``: a request's body, piece by piece, as it arrives.

A streamed request's pieces come from the slave's channel (``SlaveChannel.read_body``), which
grants them back to the engine as they are read, so the engine sends more: the handler's pace
sets the client's. On the slave's asyncio loop an ``async for`` waits on the loop (the slave's
other jobs go on); elsewhere reading waits in place. A plain request's body is one piece.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cocaine_core.slave_channel import SlaveChannel


class RequestStream:
    """The pieces of a request's body (bytes, never empty): an iterator and an async iterator.

    ``for piece in request.stream`` waits for each piece; ``async for`` too, without blocking
    the slave's other jobs when it runs on the slave's asyncio loop. ``await
    request.stream.gather()`` is the rest of the body as bytes.
    """

    __slots__ = ("_channel", "_done", "_first", "_gathered", "_job_id", "_notify", "_taken",
                 "_wait")

    def __init__(self, channel: SlaveChannel | None, job_id: int = 0, *,
                 body: bytes = b"", wait: Callable[[], Awaitable[None]] | None = None,
                 notify: Callable[[], None] | None = None) -> None:
        """A stream of job ``job_id``'s pieces from ``channel``; with ``channel`` None, of
        the one piece ``body`` (a plain request). ``wait`` (async): returns once messages may
        have come, for ``async for`` on the slave's loop (None: read in place); ``notify`` is
        called after each read there (the read may have taken messages off the socket)."""
        self._channel = channel
        self._job_id = job_id
        self._first: bytes | None = body or None  # a piece to hand out before the channel's
        self._done = channel is None  # no more pieces from the channel
        self._taken = 0  # pieces handed out
        self._gathered: bytes | None = body if channel is None else None
        self._wait = wait
        self._notify = notify

    @property
    def streamed(self) -> bool:
        """Whether the body arrives in pieces (False: a plain request's body, one piece)."""
        return self._channel is not None

    # -- piece by piece -------------------------------------------------------------------------

    def __iter__(self) -> RequestStream:
        return self

    def __next__(self) -> bytes:
        piece = self._first
        if piece is not None:
            self._first = None
        elif (piece := self._read()) is None:
            raise StopIteration
        self._taken += 1
        return piece

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> bytes:
        piece = self._first
        if piece is not None:
            self._first = None
        elif (piece := await self._aread()) is None:
            raise StopAsyncIteration
        self._taken += 1
        return piece

    def _read(self) -> bytes | None:
        if self._done:
            return None
        assert self._channel is not None
        piece = self._channel.read_body(self._job_id)
        if piece is None:
            self._done = True
        return piece

    async def _aread(self) -> bytes | None:
        if self._wait is None or self._done:  # not on the slave's loop: the only job, wait in place
            return self._read()
        assert self._channel is not None and self._notify is not None
        while True:
            piece = self._channel.read_body(self._job_id, wait=False)
            self._notify()
            if piece is None:
                self._done = True
                return None
            if piece:
                return piece
            await self._wait()

    # -- all of it ------------------------------------------------------------------------------

    def whole(self) -> bytes:
        """The whole body (``request.data``): gathered from the channel the first time, waiting
        for every piece; RuntimeError if pieces were already read from the stream."""
        if self._gathered is None:
            self._check_untouched()
            pieces = []
            while (piece := self._read()) is not None:
                pieces.append(piece)
            self._keep(pieces)
        assert self._gathered is not None
        return self._gathered

    async def gather(self) -> bytes:
        """The rest of the body as bytes (all of it if no piece was read yet, then kept as
        ``request.data``), awaited: on the slave's asyncio loop its other jobs go on."""
        if self._taken:
            return b"".join([piece async for piece in self])
        if self._gathered is None:
            pieces = []
            while (piece := await self._aread()) is not None:
                pieces.append(piece)
            self._keep(pieces)
        assert self._gathered is not None
        return self._gathered

    def _keep(self, pieces: list[bytes]) -> None:
        # The whole body, read at once: ``request.data`` is it, and the stream yields it once.
        self._gathered = b"".join(pieces)
        self._first = self._gathered or None
        self._done = True

    def _check_untouched(self) -> None:
        if self._taken:
            raise RuntimeError(
                f"request.data: {self._taken} piece(s) of this streamed body were already read "
                f"from request.stream, so the whole body is no longer there; read the body one "
                f"way: request.data (all of it at once) or request.stream (piece by piece)")

    def __repr__(self) -> str:
        kind = f"streamed, job {self._job_id}" if self.streamed else "plain"
        return f"<RequestStream {kind}, {self._taken} piece(s) read>"
