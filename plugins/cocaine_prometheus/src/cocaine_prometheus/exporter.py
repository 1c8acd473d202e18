"""One node's exporter: its listener, its pages and its recent events, from the node's start
to its stop."""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING, Any

from cocaine_core.errors import NodeError
from cocaine_prometheus.address import is_loopback, join_address, split_address
from cocaine_prometheus.listener import HttpListener, Limits
from cocaine_prometheus.site import Site
from cocaine_prometheus.state import RecentEvents

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("cocaine.prometheus")


class Exporter:
    """Serves ``/metrics`` and the console of the node whose info ``info`` reads, on
    ``address`` (``HOST:PORT``)."""

    def __init__(self, address: str, info: Callable[[], dict[str, Any]],
                 limits: Limits | None = None) -> None:
        self.address = address
        self.host, self.port = split_address(address)
        self.events = RecentEvents()
        self.site = Site(info, self.events)
        self.listener = HttpListener(self.host, self.port, self.site.route, limits)

    async def start(self) -> None:
        """Listen; NodeError naming the address if it cannot be had."""
        try:
            await self.listener.start()
        except OSError as exc:
            raise NodeError(_bind_error(self.address, exc)) from None
        host, port = self.listener.sockname
        bound = join_address(host, port)
        chosen = f" (port 0: took {port})" if self.port == 0 else ""
        log.info("metrics on http://%s/metrics and the console on http://%s/%s", bound, bound,
                 chosen)
        if not is_loopback(self.host):
            log.warning("--metrics %s listens beyond this machine, and has no authentication: "
                        "anyone who reaches %s sees the node's apps and numbers. Bind it to "
                        "127.0.0.1 (and scrape from this machine), or put a reverse proxy that "
                        "authenticates in front of it.", self.address, bound)

    async def close(self) -> None:
        """Stop listening and close every connection."""
        await self.listener.close()
        self.site.close()


def _bind_error(address: str, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (f"--metrics {address}: address in use: another process listens there; choose "
                f"another port (0 takes any free one, logged) or stop that process")
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return (f"--metrics {address}: cannot listen there ({exc.strerror}): the host must be "
                f"an address of this machine (127.0.0.1 for this machine only)")
    if exc.errno == errno.EACCES:
        return (f"--metrics {address}: not allowed to listen there ({exc.strerror}): ports "
                f"below 1024 need privileges; take one above")
    reason = exc.strerror or str(exc)
    return f"--metrics {address}: cannot listen there: {reason}"
