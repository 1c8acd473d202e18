"""The ``Request`` a handler receives."""

from __future__ import annotations

import json
from typing import Any

import msgpack


class Request:
    """One job's input: ``data`` (bytes), ``event``, ``meta`` (a dict from the driver)."""

    __slots__ = ("data", "event", "meta")

    def __init__(self, data: bytes, event: str, meta: dict[str, Any] | None = None) -> None:
        self.data = data
        self.event = event
        self.meta = meta or {}

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
