"""Where a ``raw-server`` listens: ``tcp://HOST:PORT`` or ``unix://PATH``, checked and bound.

A unix socket is bound by the driver itself (not by asyncio, which would first delete a socket
file already at the path): the node never deletes a file it did not create. So a path where
anything exists is refused, with what it is and what to do; the file the driver created is
removed when the task closes, if it is still that file.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import stat
from pathlib import Path
from typing import Any

import attrs

from cocaine_core.errors import NodeError
from cocaine_core.paths import protected_folder, socket_in_use
from cocaine_core.schema import Invalid, show

EXAMPLE = "tcp://127.0.0.1:7000, tcp://[::1]:7000 or unix://app.sock"
#: Longest unix socket path the kernel takes (``sun_path`` is 108 bytes with its NUL).
UNIX_PATH_MAX = 107
#: Permissions of the socket file: its owner and group may connect, nobody else.
SOCKET_MODE = 0o660
#: Connections the kernel holds for ``accept`` (the listen backlog).
BACKLOG = 512


@attrs.frozen
class Address:
    """A parsed endpoint: ``tcp`` with host and port, or ``unix`` with a path (maybe
    relative: resolve it from the manifest's folder)."""

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

    def resolved(self, root: Path) -> Address:
        """The address with a unix path made absolute from ``root``."""
        if self.scheme != "unix":
            return self
        full = os.path.normpath(Path(root) / os.path.expanduser(self.path))
        return attrs.evolve(self, path=full)

    def text(self, port: int | None = None) -> str:
        """The endpoint as written: ``tcp://127.0.0.1:7000``, ``unix:///run/app.sock``."""
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port if port is None else port}"


def parse(value: str) -> Address:
    """The ``Address`` of an endpoint string; ``Invalid`` saying what is wrong."""
    if value.startswith("unix:"):
        path = value[len("unix://"):] if value.startswith("unix://") else value[len("unix:"):]
        if not path:
            raise Invalid(f"needs a path after unix://, got {show(value)}")
        if "\0" in path:
            raise Invalid("the unix socket path holds a NUL byte")
        return Address("unix", path=path)
    scheme, sep, rest = value.partition("://")
    if not sep or scheme != "tcp":
        raise Invalid(f"must be tcp://HOST:PORT or unix://PATH (such as {EXAMPLE}), "
                      f"got {show(value)}")
    host, colon, port = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Invalid(f"[{host}] is not an IPv6 address, in {show(value)}") from None
    elif ":" in host:
        raise Invalid(f"write an IPv6 address in brackets: tcp://[{host}]:{port}")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise Invalid(f"must be tcp://HOST:PORT with a port from 1 to 65535 (0: any free "
                      f"port), got {show(value)}")
    return Address("tcp", host=host, port=int(port))


def endpoint(value: Any) -> str:
    """A schema kind: a ``raw-server`` endpoint (kept as written; see ``parse``)."""
    if not isinstance(value, str) or not value:
        raise Invalid(f"must be an endpoint such as {EXAMPLE}, got {show(value)}")
    parse(value)
    return value


def check_unix_path(path: str) -> str | None:
    """What stops a socket being made at the absolute ``path`` before binding, or None."""
    if len(path.encode()) > UNIX_PATH_MAX:
        return (f"the socket path {path} is {len(path.encode())} bytes long; the system "
                f"allows {UNIX_PATH_MAX}: use a shorter path")
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        return f"the socket's folder {folder} does not exist (or is not a folder); create it"
    node_folder = protected_folder(path)
    if node_folder is not None:
        return (f"{path} lies inside the node's folder {node_folder} (its storage or run "
                f"folder), where the node makes its own files; choose a path elsewhere")
    return None


def why_taken(path: str) -> str:
    """Why a socket cannot be bound at ``path``, where something exists, and what to do."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not stat.S_ISSOCK(mode):
        return (f"{path} exists and is not a socket; the node never deletes it: choose "
                f"another path, or move the file away")
    if socket_in_use(path):
        return (f"{path} is a socket something already listens on; stop it, or choose "
                f"another path")
    return (f"{path} is a stale socket (nothing listens on it; perhaps left by a process "
            f"that was killed); the node never deletes what it did not create: remove it "
            f"(rm {path}) and start the app again")


class UnixListener:
    """A listening unix socket this driver made, and removed only if still the same file."""

    def __init__(self, path: str, owner: str) -> None:
        self.path = path
        problem = check_unix_path(path)
        if problem:
            raise NodeError(f"{owner}: cannot listen on unix://{path}: {problem}")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.bind(path)
        except OSError as exc:
            self.sock.close()
            why = why_taken(path) if exc.errno == errno.EADDRINUSE else (
                f"{exc.strerror}; check the folder's permissions")
            raise NodeError(f"{owner}: cannot listen on unix://{path}: {why}") from None
        stat_ = os.stat(path)
        self.identity = (stat_.st_dev, stat_.st_ino)
        try:
            os.chmod(path, SOCKET_MODE)  # before listen(): nobody can connect yet
            self.sock.listen(BACKLOG)
            self.sock.setblocking(False)
        except OSError as exc:
            self.remove()
            raise NodeError(f"{owner}: cannot listen on unix://{path}: {exc.strerror}") \
                from None

    def remove(self) -> None:
        """Close the socket and delete its file, if the file is still the one made here."""
        self.sock.close()
        with contextlib.suppress(OSError):
            stat_ = os.lstat(self.path)
            if (stat_.st_dev, stat_.st_ino) == self.identity and stat.S_ISSOCK(stat_.st_mode):
                os.unlink(self.path)


def tcp_failure(address: Address, owner: str, exc: OSError) -> NodeError:
    """The error for a TCP endpoint that could not be bound, saying what to do."""
    where = f"{owner}: cannot listen on {address.text()}"
    if isinstance(exc, socket.gaierror):
        return NodeError(f"{where}: the host '{address.host}' is not known ({exc.strerror}); "
                         f"use an IP address or a name this machine resolves")
    if exc.errno == errno.EADDRINUSE:
        return NodeError(f"{where}: the address is already in use; stop whatever listens "
                         f"there or choose another endpoint in the manifest")
    if exc.errno == errno.EACCES:
        return NodeError(f"{where}: permission denied (ports below 1024 need root or "
                         f"CAP_NET_BIND_SERVICE); choose a port from 1024")
    if exc.errno == errno.EADDRNOTAVAIL:
        return NodeError(f"{where}: {address.host} is not an address of this machine; use "
                         f"one of its addresses, or 0.0.0.0 for all")
    return NodeError(f"{where}: {exc.strerror or exc}")
