"""The ``Request`` a handler receives (a ``StreamedRequest`` when its body arrives in pieces)."""

from __future__ import annotations

import json
from typing import Any

import msgpack

from cocaine_python.body import RequestStream


class Request:
    """One job's input: ``data`` (the body, bytes), ``stream`` (the body piece by piece),
    ``event``, ``meta`` (a dict from the driver); ``streamed`` says whether the body arrives
    in pieces (then ``data`` waits for all of them)."""

    __slots__ = ("data", "event", "meta")

    #: Whether the body arrives in pieces (read them from ``stream``).
    streamed = False

    def __init__(self, data: bytes, event: str, meta: dict[str, Any] | None = None) -> None:
        self.data = data
        self.event = event
        self.meta = meta or {}

    @property
    def stream(self) -> RequestStream:
        """The body as it arrives: ``for piece in request.stream`` or ``async for``. Here,
        a body that came whole: one piece (none if empty)."""
        return RequestStream(None, body=self.data)

    def json(self) -> Any:
        """The body decoded as JSON (UTF-8)."""
        return json.loads(self.data)

    def unpack(self) -> Any:
        """The body decoded as msgpack."""
        return msgpack.unpackb(self.data, raw=False)

    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.data.decode("utf-8")

    def __repr__(self) -> str:
        return f"Request(event={self.event!r}, {len(self.data)} bytes, meta={self.meta!r})"


class StreamedRequest(Request):
    """A request whose body arrives in pieces while the handler runs: read them from
    ``stream`` as they come, or all at once from ``data`` (which waits for the end)."""

    __slots__ = ("_body",)

    streamed = True

    def __init__(self, stream: RequestStream, event: str,
                 meta: dict[str, Any] | None = None) -> None:
        self._body = stream
        self.event = event
        self.meta = meta or {}

    @property
    def data(self) -> bytes:  # type: ignore[override]  # the base's slot: read-only here
        """The whole body, gathered from the pieces the first time (waiting for them all);
        RuntimeError if ``stream`` has already handed out some."""
        return self._body.whole()

    @property
    def stream(self) -> RequestStream:
        """The body's pieces as they arrive: ``for piece in request.stream`` waits for each;
        ``async for`` too, letting the slave's other jobs go on."""
        return self._body

    def __repr__(self) -> str:
        return f"Request(event={self.event!r}, streamed, meta={self.meta!r})"
