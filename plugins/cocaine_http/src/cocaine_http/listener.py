"""A listening socket shared by one app's ``http-server`` tasks on one address.

Tasks of one app that give the same ``listen`` share one server; a request goes to the task
whose ``path`` is the longest prefix of its path. Another app cannot serve the same address:
its task fails to start, naming the app that holds it.

A redeploy hands the socket over: when the running version's tasks stop to make way for a new
version of the same app, the listener keeps its socket and keeps accepting, holds new
requests (unread) until the new version's tasks take it (their routes replace the old ones),
and closes only if the old version closes without a successor.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import TYPE_CHECKING, Any

import attrs

from cocaine_core.errors import NodeError
from cocaine_core.ratelog import RateLimitedLog
from cocaine_http.connection import HttpConnection
from cocaine_http.keys import split_address
from cocaine_http.routing import matches

if TYPE_CHECKING:
    from cocaine_http.driver import HttpServer
    from cocaine_http.pacing import Pacing

log = logging.getLogger("cocaine.http")

#: Most bytes a listener's connections may hold written and not yet sent (the clients read
#: slowly, or not at all): past it, no connection of the listener starts a new request, nor
#: reads one, until the backlogs drain below it.
BACKLOG_BUDGET = 64 * 1024 * 1024
#: Seconds between two looks at the backlog while it is over the budget.
BACKLOG_POLL = 0.05

#: Seconds a listener handed over waits for the new version's tasks (they start within
#: milliseconds of the old ones stopping); past it (the new version failed to start), it stops
#: as for an app that stops: held requests get 503, the socket closes.
HANDOVER_TIMEOUT = 10.0

#: The listeners of this process, by address (``(host, port)``; port 0: one per app).
LISTENERS: dict[tuple[str, int, str], Listener] = {}


@attrs.frozen
class Limits:
    """The keys that apply to a whole connection (before its requests are routed)."""

    max_header: int
    header_timeout: float
    idle_timeout: float
    max_connections: int

    @classmethod
    def of(cls, options: dict[str, Any]) -> Limits:
        """The limits a task's options give."""
        return cls(options["max-header"], options["header-timeout"], options["idle-timeout"],
                   options["max-connections"])


def _key(address: str, app: str) -> tuple[str, int, str]:
    host, port = split_address(address)
    return (host, port or 0, "" if port else app)


async def attach(driver: HttpServer) -> Listener:
    """The listener ``driver`` serves on (opened if it is the first task on its address)."""
    key = _key(driver.listen, driver.engine.name)
    listener = LISTENERS.get(key)
    if listener is not None and listener.app != driver.engine.name:
        raise NodeError(f"{driver.owner}: cannot listen on {driver.listen}: app "
                        f"'{listener.app}' serves HTTP there; give this app another listen "
                        f"address, or serve its paths from app '{listener.app}'")
    if listener is None:
        listener = Listener(driver.engine.name, driver.listen, Limits.of(driver.options))
        LISTENERS[key] = listener
        try:
            await listener.open(driver.owner)
        except BaseException:
            LISTENERS.pop(key, None)
            raise
    listener.add(driver)
    return listener


class Listener:
    """The server socket of an address, its connections and its routes."""

    def __init__(self, app: str, address: str, limits: Limits) -> None:
        self.app = app
        self.address = address
        self.limits = limits
        self.bound = address
        self.log = RateLimitedLog(log, f"app {app}: http {address}: ")
        self.routes: dict[str, HttpServer] = {}
        self.connections: set[HttpConnection] = set()
        self.server: asyncio.Server | None = None
        self.stopping = False
        #: The app's version that served here stopped for a new one, which has not taken
        #: the listener yet: new requests wait (unread), connections stay open.
        self.handing_over = False
        #: Connections taken while stopping (closed at once; not a max-connections refusal).
        self.closed_stopping = 0
        #: Times a new version of the app took this listener over (a redeploy).
        self.handovers = 0
        self.accepted = self.refused = self.bytes_in = self.bytes_out = 0
        self.statuses: dict[str, int] = {}
        #: Bytes written since the backlog was last measured, plus that measure: never less
        #: than the backlog (transports only drain between two writes).
        self._backlog_bound = 0
        #: The backlog is over ``BACKLOG_BUDGET``: connections start no new request.
        self.held_back = False
        #: Connections that hold a request back for the budget, oldest first (woken as it
        #: drains, as many at a time as the app runs jobs at once).
        self.waiting: dict[Pacing, None] = {}
        #: Requests given to the engine whose answer is not written whole yet.
        self.inflight = 0
        self._poll: asyncio.TimerHandle | None = None
        self._handover: asyncio.TimerHandle | None = None

    async def open(self, owner: str) -> None:
        """Bind and listen.

        :raises NodeError: naming the address and what to do, if it cannot be bound.
        """
        host, port = split_address(self.address)
        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(
                lambda: HttpConnection(self), host, port or 0, reuse_address=True,
                backlog=min(self.limits.max_connections, socket.SOMAXCONN))
        except socket.gaierror as exc:
            raise NodeError(f"{owner}: cannot listen on {self.address}: the host is unknown "
                            f"({exc.strerror}); give an IP address or a name this machine "
                            f"resolves") from None
        except OSError as exc:
            other = _same_port(self) if exc.errno == errno.EADDRINUSE else None
            if other is not None:
                raise NodeError(f"{owner}: cannot listen on {self.address}: app "
                                f"'{other.app}' serves HTTP on {other.address}, the same "
                                f"port; give this app another port, or serve its paths from "
                                f"app '{other.app}'") from None
            raise NodeError(f"{owner}: cannot listen on {self.address}: "
                            f"{_bind_advice(exc)}") from None
        sockname = self.server.sockets[0].getsockname()
        self.bound = f"[{sockname[0]}]:{sockname[1]}" if ":" in sockname[0] else \
            f"{sockname[0]}:{sockname[1]}"
        self.log.info("listening", f"serving HTTP on {self.bound}")

    def add(self, driver: HttpServer) -> None:
        """Route ``driver.path`` to ``driver``; its connection keys must match the others'.
        The first task of a new version of the app takes a listener that is handed over:
        its keys apply to the connections from now on, and requests held wait no more."""
        other = next(iter(self.routes.values()), None)
        if other is None and self.handing_over:
            self.limits = Limits.of(driver.options)
        if other is not None and Limits.of(driver.options) != self.limits:
            raise NodeError(f"{driver.owner}: its max-header, header-timeout, idle-timeout "
                            f"and max-connections must be those of {other.owner}, which "
                            f"serves {self.address} too (they apply to whole connections)")
        holder = self.routes.get(driver.path)
        if holder is not None:
            raise NodeError(f"{driver.owner}: path {driver.path} on {self.address} is "
                            f"already served by {holder.owner}; give one of them another path")
        self.routes[driver.path] = driver
        if self.handing_over:
            self.handing_over = False
            self._cancel_handover()
            self.handovers += 1
            self.log.info("handed-over", f"a new version of the app serves {self.bound} "
                                         f"({len(self.waiting)} connection(s) held go on)")
            asyncio.get_running_loop().call_soon(self._wake)

    def remove(self, driver: HttpServer, hand_over: bool = False) -> None:
        """Stop routing to ``driver``. The last task gone stops listening (connections with
        an answer on its way finish it, idle ones close); with ``hand_over`` (a new version
        of the app will take the listener) it keeps listening and holds new requests."""
        if self.routes.get(driver.path) is driver:
            del self.routes[driver.path]
        if self.routes or self.stopping:
            return
        if hand_over:
            self.handing_over = True
            self._cancel_handover()
            self._handover = asyncio.get_running_loop().call_later(HANDOVER_TIMEOUT,
                                                                   self._abandon)
            return
        self._shut()

    def _abandon(self) -> None:
        """No new version took the listener in time: stop, answer held requests 503."""
        self._handover = None
        if not self.handing_over or self.routes:
            return
        self.log.warning("handover", f"no new version of the app took {self.bound} within "
                                     f"{HANDOVER_TIMEOUT:g} s: it stops serving there")
        self._shut()
        waiting = list(self.waiting)
        self.waiting.clear()
        for conn in waiting:
            conn.go_on()

    def _cancel_handover(self) -> None:
        if self._handover is not None:
            self._handover.cancel()
            self._handover = None

    def _shut(self) -> None:
        """Stop listening: connections with an answer on its way finish it, idle ones close."""
        self.handing_over = False
        self._cancel_handover()
        self.stopping = True
        LISTENERS.pop(_key(self.address, self.app), None)
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.close_if_idle()

    def close(self) -> None:
        """Close every connection (the app has stopped)."""
        self._cancel_handover()
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()

    def route(self, path: str) -> HttpServer | None:
        """The task whose path is the longest prefix of ``path`` (on a segment boundary)."""
        best: HttpServer | None = None
        for prefix, driver in self.routes.items():
            if matches(prefix, path) and (best is None or len(prefix) > len(best.path)):
                best = driver
        return best

    def paths(self) -> list[str]:
        """The paths served, for a 404's message."""
        return sorted(self.routes) or ["none"]

    # -- connections --------------------------------------------------------------------------

    def opened(self, conn: HttpConnection) -> bool:
        """Count a new connection; False if it is one too many, or the listener stops (it
        is closed at once)."""
        if self.stopping:
            self.closed_stopping += 1
            self.log.info("closed-stopping", f"closed a new connection from {conn.remote}: "
                                             f"the app stops serving {self.bound}")
            return False
        if len(self.connections) >= self.limits.max_connections:
            self.refused += 1
            self.log.warning("too-many", f"closed a new connection from {conn.remote}: "
                                         f"{len(self.connections)} are open "
                                         f"(max-connections {self.limits.max_connections})")
            return False
        self.accepted += 1
        self.connections.add(conn)
        return True

    def closed(self, conn: HttpConnection) -> None:
        """A connection has closed."""
        self.connections.discard(conn)
        self.waiting.pop(conn, None)

    # -- the write backlog --------------------------------------------------------------------

    def backlog(self) -> int:
        """Bytes written to the connections' transports and not yet sent."""
        return sum(conn.transport.get_write_buffer_size() for conn in self.connections
                   if conn.transport is not None and not conn.lost)

    def wrote(self, size: int) -> None:
        """``size`` bytes were written to a connection: past the budget, hold back."""
        self.bytes_out += size
        self._backlog_bound += size
        if self._backlog_bound <= BACKLOG_BUDGET or self.held_back:
            return
        self._backlog_bound = self.backlog()
        if self._backlog_bound > BACKLOG_BUDGET:
            self.held_back = True
            self.log.warning("backlog", f"{self._backlog_bound} bytes of answers wait for "
                                        f"clients that do not read (over the "
                                        f"{BACKLOG_BUDGET}-byte budget): new requests wait")
            self._poll = asyncio.get_running_loop().call_later(BACKLOG_POLL, self._drained)

    def _drained(self) -> None:
        """Look at the backlog again; under the budget, wake the connections that wait."""
        self._poll = None
        self._backlog_bound = self.backlog()
        if self._backlog_bound > BACKLOG_BUDGET and self.connections:
            self._poll = asyncio.get_running_loop().call_later(BACKLOG_POLL, self._drained)
            return
        self.held_back = False
        self._wake()

    def may_start(self, conn: Pacing) -> bool:
        """Whether ``conn`` may start a request now: not while the backlog is over the
        budget, nor, while connections wait for it to drain, past as many requests in
        flight as the app runs jobs at once (else ``conn`` waits its turn); nor while the
        listener is handed over to a new version of the app."""
        if self.held_back or self.handing_over or (self.waiting and self.inflight >= self._runs()):
            self.waiting[conn] = None
            return False
        self.waiting.pop(conn, None)
        return True

    def started(self) -> None:
        """A request was given to the engine."""
        self.inflight += 1

    def finished(self) -> None:
        """A request's answer is written whole (or its client left)."""
        self.inflight -= 1
        if self.waiting and not self.held_back:
            self._wake()

    def _runs(self) -> int:
        """How many jobs the app runs at once (pool-limit times concurrency)."""
        driver = next(iter(self.routes.values()), None)
        if driver is None:
            return 1
        config = driver.engine.config
        return max(1, config.pool_limit * config.concurrency)

    def _wake(self) -> None:
        """Let the connections that wait start, oldest first, while the app has room."""
        while self.waiting and not self.held_back and not self.handing_over and \
                self.inflight < self._runs():
            conn = next(iter(self.waiting))
            del self.waiting[conn]
            if not conn.lost:
                conn.go_on()

    def count(self, status: int) -> None:
        """An answer no task gave (no path matched, a bad request): count its status."""
        kind = f"{status // 100}xx"
        self.statuses[kind] = self.statuses.get(kind, 0) + 1

    def info(self) -> dict[str, Any]:
        """Connections (open, accepted, refused past max-connections, closed while the app
        stopped), bytes in and out, redeploys that took the socket over, unrouted answers."""
        return {"listen": self.bound, "connections": len(self.connections),
                "accepted": self.accepted, "connections-refused": self.refused,
                "connections-closed-stopping": self.closed_stopping,
                "handovers": self.handovers, "handing-over": self.handing_over,
                "bytes-in": self.bytes_in, "bytes-out": self.bytes_out,
                "backlog": self.backlog(), "held-back": self.held_back,
                "unrouted": dict(self.statuses)}


def _same_port(listener: Listener) -> Listener | None:
    """Another app's listener of this node on ``listener``'s port (any host), if any."""
    port = split_address(listener.address)[1]
    for other in LISTENERS.values():
        if other is not listener and other.app != listener.app and port and \
                split_address(other.bound)[1] == port:
            return other
    return None


def _bind_advice(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return ("the address is already in use (by another program, or another node); "
                "stop whatever listens there or choose another listen address in the manifest")
    if exc.errno == errno.EACCES:
        return ("permission denied: ports below 1024 need root (or CAP_NET_BIND_SERVICE); "
                "choose a port above 1023, or put a proxy in front")
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no interface of this machine has that address; use one of its addresses, " \
               "127.0.0.1, or 0.0.0.0 for all"
    return f"{exc.strerror or exc}"
