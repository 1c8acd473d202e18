"""``Response``: an answer with a status and headers (how an HTTP driver presents it)."""

from __future__ import annotations

from typing import Any

from cocaine_core.slave_headers import MAX_HEADERS, Headers, check_headers


class Response:
    """An answer's status, headers and (optional) body.

    ``return Response(body, status=201, headers={"Content-Type": "application/json"})`` sends
    the status and headers, then the body, encoded like any answer (bytes as is, str as UTF-8,
    None as nothing, anything else msgpack). A generator may ``yield Response(status=...,
    headers=...)``, without a body, as its first item, then the body as chunks. ``headers``:
    a dict or a list of ``(name, value)`` pairs of str, at most ``MAX_HEADERS``; ``status``:
    100..599. Drivers without a use for them (native clients) drop status and headers. A
    status or header that is not valid raises here (TypeError or ValueError).
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, body: Any = None, *, status: int = 200,
                 headers: Headers | None = None) -> None:
        self.headers: list[list[str]] = check_headers(status, headers)
        self.status = status
        self.body = body

    def __repr__(self) -> str:
        body = "no body" if self.body is None else type(self.body).__name__
        return f"Response(status={self.status}, {len(self.headers)} header(s), {body})"


__all__ = ["MAX_HEADERS", "Response"]
