"""The echo apps of the bench's ``http`` scenario: the same work in each server.

Each answers a request with status 200 and the request's body (``application/octet-stream``,
with its Content-Length). ``asgi_echo`` is what uvicorn serves, ``wsgi_echo`` what gunicorn
serves, and ``COCAINE_APP`` is the handler cocaine's ``http-server`` task calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

COCAINE_APP = """\
def echo(request):
    return request.data
"""

_HEADERS = [(b"content-type", b"application/octet-stream")]


async def asgi_echo(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                    send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """ASGI: read the whole body, answer 200 with it."""
    if scope["type"] != "http":  # lifespan: uvicorn's default "auto" tolerates no answer
        return
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(parts)
    await send({"type": "http.response.start", "status": 200,
                "headers": [*_HEADERS, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def wsgi_echo(environ: dict[str, Any],
              start_response: Callable[[str, list[tuple[str, str]]], Any]) -> Iterable[bytes]:
    """WSGI: read the body (its Content-Length), answer 200 with it."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]
