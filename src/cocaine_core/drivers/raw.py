"""The ``raw-server`` driver: plain TCP or unix-socket connections, one job per frame.

A client connects to ``endpoint`` and sends frames in the task's ``framing`` (see
``raw_framing``); each frame becomes a job of the task's event, with the frame as its body and
``{"remote": "ip:port" or "unix", "connection": n}`` as meta. The job's answer (its chunks
joined) is written back on that connection in the same framing, in the order the frames came,
whatever order the jobs end in. Flow control and bounds: see ``raw_connection``.

A failed job (the handler raised, a timeout, a full queue) either closes the connection after
the answers before it (``on-error: close``) or is answered ``ERROR <code> <message>``
(``on-error: frame``). A client that goes away has its jobs cancelled: those still queued never
run, and running ones are stopped on their slaves (a Python generator's ``finally`` runs).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cocaine_core import schema
from cocaine_core.drivers import Driver
from cocaine_core.drivers.raw_connection import RawConnection
from cocaine_core.drivers.raw_endpoint import (
    Address,
    UnixListener,
    check_unix_path,
    endpoint,
    parse,
    tcp_failure,
)
from cocaine_core.drivers.raw_framing import FRAMINGS
from cocaine_core.errors import Problem
from cocaine_core.protocol import Status
from cocaine_core.schema import Key

if TYPE_CHECKING:
    from cocaine_core.drivers import EngineHandle
    from cocaine_core.manifest_model import TaskConfig

log = logging.getLogger("cocaine.raw")

MIB = 2**20
#: Seconds between checks for room in the app's queue while a connection waits for it.
RESUME_CHECK = 0.05
#: Most seconds ``close`` waits for connections to send the answers written to them (and
#: for their clients to close); the rest are then reset.
CLOSE_WAIT = 2.0
#: Seconds between two log lines of one kind (the others are counted into the next).
LOG_INTERVAL = 10.0


class RateLog:
    """Writes each kind of line at most once per ``LOG_INTERVAL``, counting the others."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def log(self, level: int, kind: str, message: str) -> None:
        """Write ``message`` unless a line of the same ``kind`` was written moments ago."""
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < LOG_INTERVAL:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return
        self._last[kind] = now
        skipped = self._skipped.pop(kind, 0)
        if skipped and last is not None:
            message += f" ({skipped} more like this in the last {now - last:.0f} s)"
        log.log(level, "%s%s", self.prefix, message)

    def warning(self, kind: str, message: str) -> None:
        """``log`` at WARNING."""
        self.log(logging.WARNING, kind, message)

    def info(self, kind: str, message: str) -> None:
        """``log`` at INFO."""
        self.log(logging.INFO, kind, message)


class RawServer(Driver):
    """Serves the task's event on a TCP or unix socket, one job per frame."""

    keys = (
        Key("endpoint", endpoint, help="where to listen: tcp://HOST:PORT (port 0: any free "
                                       "port) or unix://PATH (relative: from the manifest's "
                                       "folder)"),
        Key("framing", schema.one_of(*FRAMINGS), "line",
            "how frames are cut: line (ends with \\n), length (4-byte big-endian length "
            "first) or eof (the whole connection until the client ends its sending)"),
        Key("max-frame", schema.int_range(1, 64 * MIB), MIB,
            "largest frame, in bytes; a longer one closes the connection"),
        Key("max-answer", schema.int_range(1, 1024 * MIB), 16 * MIB,
            "largest answer, in bytes; a longer one is a failed frame (500)"),
        Key("max-connections", schema.int_range(1, 65536), 1024,
            "connections open at once; more are accepted and closed at once"),
        Key("pipeline", schema.int_range(1, 1024), 16,
            "frames of one connection in flight at once; past it the connection is not read "
            "until answers go out"),
        Key("idle-timeout", schema.seconds(0.1, 86400), 300.0,
            "seconds a connection with nothing in flight may stay silent before it is closed"),
        Key("on-error", schema.one_of("close", "frame"), "close",
            "a failed frame closes the connection (close) or is answered "
            "'ERROR <code> <message>' (frame)"),
    )

    @classmethod
    def validate(cls, options: dict[str, Any], root: Path) -> list[Problem]:
        """A unix socket's folder must exist and its path fit in the system's limit."""
        address = parse(options["endpoint"]).resolved(root)
        problem = check_unix_path(address.path) if address.scheme == "unix" else None
        return [Problem("endpoint", problem)] if problem else []

    def __init__(self, task: TaskConfig, engine: EngineHandle) -> None:
        super().__init__(task, engine)
        self.address: Address = parse(self.options["endpoint"]).resolved(
            engine.app.manifest.root)
        self.framing: str = self.options["framing"]
        self.max_frame: int = self.options["max-frame"]
        self.max_answer: int = self.options["max-answer"]
        self.max_connections: int = self.options["max-connections"]
        self.pipeline: int = self.options["pipeline"]
        self.idle_timeout: float = self.options["idle-timeout"]
        self.on_error: str = self.options["on-error"]
        self.owner = f"task '{task.name}' (raw-server)"
        self.log = RateLog(f"app {engine.name}: {self.owner}: ")
        self.bound = self.address.text()
        self.connections: set[RawConnection] = set()
        self.received = self.answered = self.failed = self.too_large = 0
        self.refused_connections = self.abandoned = self.idle_closed = self.accepted = 0
        self.stopping = False
        self._numbers = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None
        self._unix: UnixListener | None = None
        self._waiting: set[RawConnection] = set()
        self._room_timer: asyncio.Handle | None = None

    # -- life -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the endpoint.

        :raises NodeError: the endpoint cannot be listened on (in use, refused, a file in the
            way), naming it and saying what to do.
        """
        loop = asyncio.get_running_loop()
        if self.address.scheme == "unix":
            self._unix = UnixListener(self.address.path, self.owner)
            self._server = await loop.create_unix_server(self._connection, sock=self._unix.sock)
        else:
            try:
                self._server = await loop.create_server(
                    self._connection, self.address.host, self.address.port,
                    reuse_address=True, backlog=512)
            except OSError as exc:
                raise tcp_failure(self.address, self.owner, exc) from None
            port = self._server.sockets[0].getsockname()[1]
            self.bound = self.address.text(port)
        self.log.info("listening", f"serving {self.framing} frames on {self.bound}")

    async def stop(self) -> None:
        """Accept and read no more (the unix socket file made is removed); each connection
        closes once its answers are written."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        if self._unix is not None:
            # Nothing listens on it any more; a new version of the app may bind it again
            # while this one's connections drain.
            self._unix.remove()
            self._unix = None
        if self._room_timer is not None:
            self._room_timer.cancel()
            self._room_timer = None
        for connection in list(self.connections):
            connection.stop()

    async def close(self) -> None:
        """Close every connection, waiting up to ``CLOSE_WAIT`` for written answers to be
        sent (``stop``, which this calls if it was not, removed the unix socket made)."""
        await self.stop()
        deadline = time.monotonic() + CLOSE_WAIT
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()

    # -- connections ----------------------------------------------------------------------------

    def _connection(self) -> RawConnection:
        return RawConnection(self, next(self._numbers))

    def admit(self, connection: RawConnection) -> bool:
        """Whether a new connection may stay (refused past max-connections, or stopping)."""
        if self.stopping or len(self.connections) >= self.max_connections:
            self.refused_connections += 1
            self.log.warning("refused", f"refused a connection from {connection.remote}: "
                                        f"{len(self.connections)} are open, the task's "
                                        f"max-connections")
            return False
        self.accepted += 1
        self.connections.add(connection)
        return True

    def forget(self, connection: RawConnection) -> None:
        """A connection is gone."""
        self.connections.discard(connection)
        self._waiting.discard(connection)

    # -- room in the app's queue ----------------------------------------------------------------

    def wait_for_room(self, connection: RawConnection) -> None:
        """``connection`` has a frame the engine has no room for: retry it soon."""
        self._waiting.add(connection)
        if self._room_timer is None:
            self._room_timer = asyncio.get_running_loop().call_later(RESUME_CHECK,
                                                                     self._retry_waiting)

    def job_ended(self) -> None:
        """A job ended: its slot may let a waiting connection go on."""
        if self._waiting:
            if self._room_timer is not None:
                self._room_timer.cancel()
            self._room_timer = asyncio.get_running_loop().call_soon(self._retry_waiting)

    def _retry_waiting(self) -> None:
        self._room_timer = None
        waiting, self._waiting = self._waiting, set()
        for connection in waiting:
            if not self.engine.has_room():
                self._waiting.add(connection)
                continue
            connection.pump()
        if self._waiting and not self.stopping and self._room_timer is None:
            self._room_timer = asyncio.get_running_loop().call_later(RESUME_CHECK,
                                                                     self._retry_waiting)

    # -- failures -------------------------------------------------------------------------------

    def failed_answer(self, connection: RawConnection, code: int, message: str) -> None:
        """Count and log (rate-limited) a failed frame about to be answered or closed."""
        self.failed += 1
        then = "closing the connection" if self.on_error == "close" else "answered ERROR"
        if code == Status.APP_ERROR and self.on_error == "frame":
            return  # the engine logs a handler's error with its traceback
        self.log.warning(f"failed-{code}", f"a frame from {connection.remote} failed with "
                                           f"{code}: {message}; {then}")

    # -- reporting ------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The bound endpoint, framing, connections and frame counters."""
        return {**super().info(), "endpoint": self.bound, "framing": self.framing,
                "connections": len(self.connections), "accepted": self.accepted,
                "frames": self.received, "answered": self.answered, "failed": self.failed,
                "too-large": self.too_large, "connections-refused": self.refused_connections,
                "abandoned": self.abandoned, "idle-closed": self.idle_closed,
                "in-flight": sum(len(c.answers) for c in self.connections)}
