"""What the three ZeroMQ drivers share: their common keys and the life of their sockets.

A driver closes its sockets itself (``close_now()``) once every job it started has ended, so
late answers still go out. Whatever is still open is closed when the app has stopped: by
``close()``, which the engine awaits (the ``Driver`` contract), and by the plugin's
``cocaine_app_stopped`` hook, which also covers an app whose start failed after some of its
drivers had bound their endpoints. Closing twice does nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar

import zmq

from cocaine_core.drivers import Driver
from cocaine_core.ratelog import RateLimitedLog
from cocaine_core.schema import Key, int_range
from cocaine_zmq.endpoints import close_quietly

if TYPE_CHECKING:
    from cocaine_core.drivers import EngineHandle
    from cocaine_core.manifest import TaskConfig

log = logging.getLogger("cocaine.zmq.drivers")

#: Where a running app keeps its ZeroMQ drivers (``AppInfo.extra``), for the final clean-up.
EXTRA_KEY = "cocaine-zmq"
DEFAULT_BACKLOG = 1000
DEFAULT_MAX_MESSAGE_SIZE = 16 * 2**20
#: ZeroMQ itself drops a connection that sends a frame this many times ``max-message-size``
#: (ZMQ_MAXMSGSIZE), so no client can make the node buffer an unbounded frame. Messages between
#: the two limits reach the driver, which refuses them with an error reply or a log line.
HARD_LIMIT_FACTOR = 2

#: The ranges of the two: a high-water mark is a C int of messages held per peer, each up to
#: max-message-size, so both are bounded by what one app may make the node hold (a backlog of
#: 1e12 was a 500 OverflowError at deploy).
MAX_BACKLOG = 100_000
MAX_MESSAGE_SIZE = 2**30

COMMON_KEYS = (
    Key("backlog", int_range(1, MAX_BACKLOG), DEFAULT_BACKLOG,
        "ZeroMQ high-water mark: messages queued per peer in each direction"),
    Key("max-message-size", int_range(1, MAX_MESSAGE_SIZE), DEFAULT_MAX_MESSAGE_SIZE,
        "largest message accepted, in bytes (all frames together)"),
)


class ZeroMQDriver(Driver):
    """Base of the ZeroMQ drivers: options, sockets, ports, counters' logging, clean-up."""

    keys: ClassVar[tuple[Key, ...]] = COMMON_KEYS

    def __init__(self, task: TaskConfig, engine: EngineHandle) -> None:
        super().__init__(task, engine)
        self.backlog: int = self.options["backlog"]
        self.max_size: int = self.options["max-message-size"]
        #: How messages name this task: ``task 'work' (zeromq-sink)``.
        self.owner = f"task '{task.name}' ({task.type})"
        self.log = RateLimitedLog(log, f"app {engine.name}: {self.owner}: ")
        self.closed = False
        self._sockets: list[zmq.Socket] = []
        self._ports: list[int] = []

    # -- sockets ----------------------------------------------------------------------------

    def open_socket(self, kind: int, *, inbound: bool) -> zmq.Socket:
        """A socket of ``kind`` on the node's context with this task's limits, closed by
        ``close_now()``. ``inbound`` sockets get ZMQ_MAXMSGSIZE and drop what is unread at close;
        the others keep a second to deliver what is queued."""
        sock: zmq.Socket = zmq.Context.instance().socket(kind)
        self._sockets.append(sock)
        sock.setsockopt(zmq.LINGER, 0 if inbound else 1000)
        sock.setsockopt(zmq.SNDHWM, self.backlog)
        sock.setsockopt(zmq.RCVHWM, self.backlog)
        if inbound:
            sock.setsockopt(zmq.MAXMSGSIZE, min(HARD_LIMIT_FACTOR * self.max_size, 2**63 - 1))
        return sock

    def keep_port(self, port: int) -> None:
        """Remember a port taken from the node's range, to give it back on ``close_now()``."""
        self._ports.append(port)

    def track(self) -> None:
        """Register with the app, so its clean-up closes this driver whatever happens."""
        self.engine.app.extra.setdefault(EXTRA_KEY, []).append(self)

    async def close(self) -> None:
        """Close whatever is still open (the engine awaits this once the app has stopped)."""
        self.close_now()

    def close_now(self) -> None:
        """Close every socket and give back every port; safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        for sock in self._sockets:
            close_quietly(sock)
        self._sockets.clear()
        for port in self._ports:
            self.engine.app.ports.release(port)
        self._ports.clear()
        drivers = self.engine.app.extra.get(EXTRA_KEY, [])
        if self in drivers:
            drivers.remove(self)

    # -- helpers ----------------------------------------------------------------------------

    def too_large(self, size: int) -> str:
        """What to say about a message of ``size`` bytes over ``max-message-size``."""
        return (f"the message is {size} bytes, over this task's max-message-size of "
                f"{self.max_size} bytes; send less, or raise max-message-size in the manifest")
