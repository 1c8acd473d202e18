"""A node's event stream: every lifecycle event (``events.py``) published on a ZeroMQ PUB
socket as two frames, ``<app>.<topic>`` and the event as JSON, as Circus publishes its
watchers' events. ``cocaine events`` subscribes to it.

Who may read it: by default it is an ``ipc://`` socket in the node's run folder (mode 0700:
the node's user only). ``cocaine node --events ENDPOINT`` puts it elsewhere; a node with
``--curve`` secures it as it does its endpoint (the same key pair, and ``--client-keys``), and
one listening beyond loopback without Curve is warned about. A subscriber that reads too
slowly loses events (``HIGH_WATER_MARK`` per subscriber), never slows the node down.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from cocaine_core.errors import NodeError
from cocaine_core.events import Event
from cocaine_core.trust.curve import beyond_loopback

if TYPE_CHECKING:
    from cocaine_core.trust.curve import CurveServer

log = logging.getLogger("cocaine.events")

#: Events queued per subscriber before the slowest one loses some.
HIGH_WATER_MARK = 10_000
#: Longest event body published; a longer one (a huge broken reason) is cut.
MAX_EVENT = 64 * 1024
#: The name of the default socket in the node's run folder.
SOCKET_NAME = "events"


def default_endpoint(run_dir: Path) -> str:
    """``ipc://<run dir>/events``: the stream of a node that was given no ``--events``."""
    return f"ipc://{run_dir / SOCKET_NAME}"


def check_events_endpoint(endpoint: str) -> str:
    """``endpoint`` if it is a ``tcp://HOST:PORT`` or ``ipc://PATH`` endpoint; else a
    ``ValueError`` saying what one looks like."""
    if endpoint.startswith("ipc://") and len(endpoint) > len("ipc://"):
        return endpoint
    if endpoint.startswith("tcp://") and ":" in endpoint[len("tcp://"):]:
        port = endpoint.rsplit(":", 1)[1]
        if port == "*" or (port.isdigit() and 0 <= int(port) <= 65535):
            return endpoint
    raise ValueError(f"--events must be tcp://HOST:PORT or ipc://PATH, got {endpoint!r}")


class EventStream:
    """The PUB socket a node publishes its events on."""

    def __init__(self, endpoint: str, curve: CurveServer | None = None) -> None:
        self.endpoint = endpoint
        self.curve = curve
        self._socket: zmq.Socket[bytes] | None = None
        #: Events published, and events dropped (the socket could not take them).
        self.published = 0
        self.dropped = 0

    def bind(self) -> str:
        """Bind the socket; return the endpoint bound (a ``:0`` port resolved). NodeError
        naming the endpoint if it cannot be bound."""
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
        try:
            if self.curve is not None:
                self.curve.secure(sock)
            sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            sock.close()
            raise NodeError(f"cannot publish events on {self.endpoint}: {exc.strerror}; "
                            f"choose another endpoint with --events") from None
        self._socket = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT) or self.endpoint
        if self.curve is None and beyond_loopback(self.endpoint):
            log.warning("publishing events on %s, beyond this machine, without CurveZMQ: "
                        "anyone who can reach it reads the apps' names, deploys and errors; "
                        "run with --curve, or publish on 127.0.0.1 or ipc://", self.endpoint)
        log.info("events published on %s (cocaine events)", self.endpoint)
        return self.endpoint

    def publish(self, event: Event) -> None:
        """Send ``event`` to every subscriber now, or drop it (never waits)."""
        if self._socket is None:
            return
        body = json.dumps(event.as_dict(), default=str).encode()
        if len(body) > MAX_EVENT:
            body = json.dumps({**_head(event), "cut": True}).encode()
        try:
            self._socket.send_multipart([event.name.encode(), body], flags=zmq.NOBLOCK)
            self.published += 1
        except zmq.ZMQError:
            self.dropped += 1

    def close(self) -> None:
        """Close the socket (an ``ipc://`` socket's file goes with it)."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
            if self.endpoint.startswith("ipc://"):
                Path(self.endpoint[len("ipc://"):]).unlink(missing_ok=True)

    def info(self) -> dict[str, Any]:
        """Where the stream is, and what went out."""
        return {"endpoint": self.endpoint, "published": self.published,
                "dropped": self.dropped}


def _head(event: Event) -> dict[str, Any]:
    return {"app": event.app, "topic": event.topic, "time": event.time, "node": event.node}
