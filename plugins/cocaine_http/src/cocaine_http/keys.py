"""The ``http-server`` task keys: where to listen, which paths, and the limits on clients."""

from __future__ import annotations

import ipaddress
from typing import Any

from cocaine_core.schema import Invalid, Key, int_range, seconds, show

EXAMPLE = "127.0.0.1:8080, 0.0.0.0:80 or [::1]:8080"
#: Largest request head (request line and headers) the keys allow, and the default.
MAX_HEADER_LIMIT = 1024 * 1024
DEFAULT_MAX_HEADER = 16 * 1024
#: Largest request body the keys allow (1 TiB: bodies stream, the node never holds one whole).
MAX_BODY_LIMIT = 2**40
DEFAULT_MAX_BODY = 2**30
#: Slowest average body rate (bytes a second) accepted once a body has been read for more
#: than ``body-timeout`` seconds (0: any).
DEFAULT_MIN_BODY_RATE = 1024
MIN_BODY_RATE_LIMIT = 2**30


def listen_address(value: Any) -> str:
    """``HOST:PORT``: an IP address (IPv6 in brackets) or a host name, and a port from 0 to
    65535 (0: any free port, shown in ``cocaine info``)."""
    if not isinstance(value, str) or not value:
        raise Invalid(f"must be HOST:PORT such as {EXAMPLE}, got {show(value)}")
    host, port = split_address(value)
    if value.count(":") > 1 and not value.startswith("["):
        raise Invalid(f"must put an IPv6 address in brackets, such as [::1]:8080, "
                      f"got {show(value)}")
    if not host or port is None:
        raise Invalid(f"must be HOST:PORT with a port from 0 to 65535, such as {EXAMPLE}, "
                      f"got {show(value)}")
    return value


def split_address(value: str) -> tuple[str, int | None]:
    """``("127.0.0.1", 8080)`` from ``"127.0.0.1:8080"``; ``[::1]:80`` gives ``("::1", 80)``;
    the port is None if it is not a number from 0 to 65535."""
    host, colon, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "", None
    elif ":" in host:
        return "", None  # an IPv6 address must be in brackets: [::1]:8080
    if not colon or not port.isdigit() or int(port) > 65535:
        return host, None
    return host, int(port)


def path_prefix(value: Any) -> str:
    """A path prefix starting with ``/`` (a trailing ``/`` is dropped: ``/api/`` is ``/api``)."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise Invalid(f"must be a path starting with '/', such as \"/\" or \"/api\", "
                      f"got {show(value)}")
    if any(c in value for c in "?# \t\r\n"):
        raise Invalid(f"must be a plain path (no query, fragment or spaces), got {show(value)}")
    return value.rstrip("/") or "/"


KEYS = (
    Key("listen", listen_address, help="HOST:PORT to serve HTTP on (port 0: a free port); "
                                       "tasks of one app with the same listen share it"),
    Key("path", path_prefix, "/", "requests under this path prefix come to this task (the "
                                  "longest matching prefix of the app's tasks wins)"),
    Key("max-header", int_range(1024, MAX_HEADER_LIMIT), DEFAULT_MAX_HEADER,
        "largest request line and headers, in bytes (past it: 431)"),
    Key("max-body", int_range(0, MAX_BODY_LIMIT), DEFAULT_MAX_BODY,
        "largest request body, in bytes (past it: 413)"),
    Key("header-timeout", seconds(0.1, 3600), 10.0,
        "most seconds from a connection's start, or its previous answer, to a request's "
        "complete headers (past it: 408, closed)"),
    Key("idle-timeout", seconds(0.1, 3600), 5.0,
        "most seconds a kept-alive connection waits for its next request"),
    Key("body-timeout", seconds(0.1, 3600), 30.0,
        "most seconds between two pieces of a request body (past it: 408, closed)"),
    Key("min-body-rate", int_range(0, MIN_BODY_RATE_LIMIT), DEFAULT_MIN_BODY_RATE,
        "slowest average rate of a request body, in bytes per second, once it has been read "
        "for more than body-timeout seconds (past it: 408, closed; 0: off)"),
    Key("max-connections", int_range(1, 100_000), 1024,
        "most connections open at once on this address (past it: new ones closed at once)"),
)
