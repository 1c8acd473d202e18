"""The node's port range: drivers that bind a TCP port without an ``endpoint`` take one here."""

from __future__ import annotations

import socket

from cocaine_core.errors import NodeError

DEFAULT_PORT_RANGE = (10100, 10999)


class PortAllocator:
    """Hands out free TCP ports from ``[first, last]`` and takes them back."""

    def __init__(self, first: int = DEFAULT_PORT_RANGE[0], last: int = DEFAULT_PORT_RANGE[1],
                 host: str = "127.0.0.1") -> None:
        if not 0 < first <= last < 65536:
            raise NodeError(f"port range {first}-{last} is not valid: use FIRST-LAST "
                            f"with 0 < FIRST <= LAST < 65536")
        self.first, self.last, self.host = first, last, host
        self._taken: set[int] = set()
        self._next = first

    def allocate(self) -> int:
        """A port in the range that is not handed out and that nothing listens on now."""
        size = self.last - self.first + 1
        for _ in range(size):
            port = self._next
            self._next = self.first + (port + 1 - self.first) % size
            if port in self._taken:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind((self.host, port))
                except OSError:
                    continue
            self._taken.add(port)
            return port
        raise NodeError(f"no free port left in the node's port range {self.first}-{self.last}; "
                        f"widen it with --port-range")

    def release(self, port: int) -> None:
        """Give ``port`` back."""
        self._taken.discard(port)

    @classmethod
    def parse(cls, text: str) -> PortAllocator:
        """Parse ``FIRST-LAST`` (as given to ``--port-range``)."""
        try:
            first, last = (int(part) for part in text.split("-", 1))
        except ValueError:
            raise NodeError(f"port range {text!r} is not FIRST-LAST, e.g. 10100-10999") from None
        return cls(first, last)


def check_listen_port(endpoint: str) -> None:
    """Refuse a ``tcp://`` port past 65535 (libzmq would quietly listen on it modulo 65536)."""
    if endpoint.startswith("tcp://"):
        port = endpoint.rsplit(":", 1)[-1]
        if port.isdecimal() and int(port) > 65535:
            raise NodeError(f"cannot listen on {endpoint}: a port is at most 65535; choose "
                            f"another --listen")
