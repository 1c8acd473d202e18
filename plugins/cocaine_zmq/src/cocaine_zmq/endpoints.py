"""ZeroMQ endpoints: checking them in a manifest, and binding or connecting with clear errors."""

from __future__ import annotations

import contextlib
import errno
from typing import Any

import zmq

from cocaine_core.errors import NodeError
from cocaine_core.paths import check_ipc_path
from cocaine_core.ports import PortAllocator
from cocaine_core.schema import Invalid, show

SCHEMES = ("tcp", "ipc", "inproc")
#: Longest ipc path the kernel accepts (``sun_path`` is 108 bytes with its terminating NUL).
IPC_PATH_MAX = 107
EXAMPLE = "tcp://127.0.0.1:5555 or ipc:///tmp/app.sock"


def endpoint(value: Any) -> str:
    """A ZeroMQ endpoint: ``tcp://HOST:PORT``, ``ipc://PATH`` or ``inproc://NAME``."""
    if not isinstance(value, str) or not value:
        raise Invalid(f"must be a ZeroMQ endpoint such as {EXAMPLE}, got {show(value)}")
    scheme, sep, address = value.partition("://")
    if not sep or scheme not in SCHEMES:
        raise Invalid(f"must be a ZeroMQ endpoint starting with tcp://, ipc:// or inproc:// "
                      f"(such as {EXAMPLE}), got {show(value)}")
    if scheme == "tcp":
        host, colon, port = address.rpartition(":")
        if not colon or not host or not (
                port == "*" or (port.isdigit() and 0 < int(port) < 65536)):
            raise Invalid(f"must be tcp://HOST:PORT with a port from 1 to 65535 (or *), "
                          f"got {show(value)}")
    elif not address:
        raise Invalid(f"needs a {'path' if scheme == 'ipc' else 'name'} after {scheme}://, "
                      f"got {show(value)}")
    elif scheme == "ipc" and len(address.encode()) > IPC_PATH_MAX:
        raise Invalid(f"the ipc path is {len(address.encode())} bytes long; the system allows "
                      f"{IPC_PATH_MAX}: use a shorter path")
    return value


def optional_endpoint(value: Any) -> str | None:
    """An endpoint, or null for none."""
    return None if value is None else endpoint(value)


def endpoints(value: Any) -> list[str]:
    """One endpoint, or a non-empty list of them; always returned as a list."""
    if isinstance(value, list) and value:
        return [endpoint(item) for item in value]
    if isinstance(value, list):
        raise Invalid("must list at least one endpoint")
    return [endpoint(value)]


def prefixes(value: Any) -> list[str]:
    """A topic prefix (``""`` is every message) or a list of them."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return list(value)
    raise Invalid(f"must be a topic prefix (\"\" for every message) or a list of them, "
                  f"got {show(value)}")


def bind(sock: zmq.Socket, address: str, owner: str) -> str:
    """Bind ``sock`` to ``address``; return the endpoint bound (a ``*`` port resolved).

    :raises NodeError: naming ``owner`` (the task) and the endpoint, if it cannot be bound.
    """
    in_use = f"{owner}: cannot bind {address}: the address is already in use; stop whatever " \
             f"listens there or choose another endpoint in the manifest"
    if address.startswith("ipc://"):
        # libzmq unlinks the path before binding: never let it delete a file that is not a
        # stale socket, nor anything in the node's own folders.
        check_ipc_path(address[len("ipc://"):], owner)
    try:
        sock.bind(address)
    except zmq.ZMQError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise NodeError(in_use) from None
        raise NodeError(f"{owner}: cannot bind {address}: {exc.strerror}") from None
    return sock.getsockopt_string(zmq.LAST_ENDPOINT) or address


def bind_free_port(sock: zmq.Socket, ports: PortAllocator, owner: str) -> tuple[str, int]:
    """Bind ``sock`` to a free TCP port from the node's range; return the endpoint and port."""
    for _ in range(8):  # a port found free may be taken before we bind it
        port = ports.allocate()
        try:
            sock.bind(f"tcp://{ports.host}:{port}")
        except zmq.ZMQError as exc:
            ports.release(port)
            if exc.errno == errno.EADDRINUSE:
                continue
            raise NodeError(f"{owner}: cannot bind tcp://{ports.host}:{port}: "
                            f"{exc.strerror}") from None
        return f"tcp://{ports.host}:{port}", port
    raise NodeError(f"{owner}: every port tried in the node's range {ports.first}-{ports.last} "
                    f"was taken; give the task an endpoint or widen the range")


def connect(sock: zmq.Socket, address: str, owner: str) -> None:
    """Connect ``sock`` to ``address``. ZeroMQ connects (and reconnects) in the background, so
    only a malformed endpoint fails here.

    :raises NodeError: naming ``owner`` and the endpoint.
    """
    try:
        sock.connect(address)
    except zmq.ZMQError as exc:
        raise NodeError(f"{owner}: cannot connect to {address}: {exc.strerror}") from None


def close_quietly(sock: zmq.Socket | None) -> None:
    """Close a socket, ignoring errors (it may be closed already)."""
    if sock is not None:
        with contextlib.suppress(zmq.ZMQError):
            sock.close()
