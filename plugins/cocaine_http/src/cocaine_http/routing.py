"""Which task a request goes to, and the checks it must pass before it becomes a job."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httptools

if TYPE_CHECKING:
    from cocaine_http.incoming import Incoming
    from cocaine_http.listener import Listener


def matches(prefix: str, path: str) -> bool:
    """Whether ``path`` is under ``prefix`` on a segment boundary: ``/api`` takes ``/api``
    and ``/api/x``, not ``/apix``; ``/`` takes every path."""
    if prefix == "/":
        return True
    return path == prefix or (path.startswith(prefix) and path[len(prefix)] == "/")


def admit(listener: Listener, incoming: Incoming) -> tuple[int, str] | None:
    """Route ``incoming`` (its ``path``, ``query`` and ``driver`` set); or the status and
    message it is refused with: 505 (a version other than 1.0 and 1.1), 501 (CONNECT, or an
    upgrade), 400 (a target that is not a path), 404 (no task serves its path), 413 (a body
    over the task's max-body), 503 (the app stops)."""
    if incoming.version not in ("1.0", "1.1"):
        return 505, (f"HTTP/{incoming.version} is not supported: send HTTP/1.1 (or 1.0)")
    if incoming.method == "CONNECT":
        return 501, "this server is not a proxy: CONNECT is not supported"
    try:
        incoming.split_url()
    except httptools.HttpParserInvalidURLError:
        return 400, f"the request target {bytes(incoming.url)[:200]!r} is not a path"
    if incoming.upgrade:
        return 501, (f"this server does not switch protocols (Upgrade: "
                     f"{incoming.header('upgrade')}); websockets and h2c are not supported")
    if listener.stopping:
        return 503, f"app '{listener.app}' is stopping"
    driver = listener.route(incoming.path)
    if driver is None:
        return 404, (f"no task serves {incoming.path} here (paths served: "
                     f"{', '.join(listener.paths())})")
    incoming.driver = driver
    length = max(incoming.content_length() or 0, incoming.body_size)
    if length > driver.max_body:
        return 413, (f"the request's body is {length} bytes, over this path's max-body of "
                     f"{driver.max_body} bytes; send less")
    if driver.stopping:
        return 503, f"app '{driver.engine.name}' is stopping"
    return None
