"""A link: this node's connection to one peer's link endpoint.

A DEALER, a CurveZMQ client under the cluster's key pair, connected to the peer's link
endpoint. This node sends its announces and the requests it forwards over it, and reads the
answers. ZeroMQ heartbeats (``HEARTBEAT``, ``HEARTBEAT_TIMEOUT``) make a peer that vanished
without closing its connection (a machine gone, a process stopped) a dropped connection
within seconds; a socket monitor reports the drop (``on_lost``) and whether the handshake
took (``up``). With ``ZMQ_IMMEDIATE`` nothing is queued for a peer not connected: a send
then fails at once and the request goes elsewhere.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import zmq

from cocaine_core.client_connection import monitor_event
from cocaine_core.zmqloop import SocketReader

if TYPE_CHECKING:
    from cocaine_core.cluster.key import LinkSecurity

log = logging.getLogger("cocaine.cluster")

#: Seconds between ZeroMQ heartbeats on a link, and without any traffic after which the
#: connection is dropped (its forwarded requests then go elsewhere).
HEARTBEAT, HEARTBEAT_TIMEOUT = 0.5, 2.0
#: Milliseconds between reconnects to a peer that is not there: from the first to the most.
RECONNECT_FIRST_MS, RECONNECT_MOST_MS = 100, 2000
#: Messages queued in ZeroMQ for one peer before a send fails (the request goes elsewhere).
SEND_HWM = 10_000
#: Messages from one peer queued in ZeroMQ before it stops reading the connection.
RECEIVE_HWM = 100_000

_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_WATCHED = zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | _FAILED
#: Least seconds between two log lines about one link's refused handshakes.
REFUSED_LOG_EVERY = 60.0

OnAnswer = Callable[["PeerLink", list[bytes]], None]
OnLost = Callable[["PeerLink"], None]


class PeerLink:
    """This node's DEALER to one peer's link endpoint (see the module's docstring)."""

    def __init__(self, endpoint: str, security: LinkSecurity, on_answer: OnAnswer,
                 on_lost: OnLost, *, trusted: bool = True) -> None:
        self.endpoint = endpoint
        self.on_lost = on_lost
        #: True while the connection is up and its handshake took; ``ever_up`` once it has.
        self.up = self.ever_up = False
        #: Whether a trusted source named it (else a candidate: see ``links.py``).
        self.trusted = trusted
        #: When the link was made (monotonic).
        self.made = time.monotonic()
        #: Handshakes refused (the node there does not hold this cluster's key).
        self.refused = 0
        self._refused_logged = 0.0
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        try:
            for option, value in ((zmq.LINGER, 0), (zmq.IMMEDIATE, 1),
                                  (zmq.SNDHWM, SEND_HWM), (zmq.RCVHWM, RECEIVE_HWM),
                                  (zmq.HEARTBEAT_IVL, int(HEARTBEAT * 1000)),
                                  (zmq.HEARTBEAT_TIMEOUT, int(HEARTBEAT_TIMEOUT * 1000)),
                                  (zmq.HEARTBEAT_TTL, int(HEARTBEAT_TIMEOUT * 1000)),
                                  (zmq.RECONNECT_IVL, RECONNECT_FIRST_MS),
                                  (zmq.RECONNECT_IVL_MAX, RECONNECT_MOST_MS)):
                sock.setsockopt(option, value)
            security.secure_link(sock)
            self._monitor: zmq.Socket[bytes] = sock.get_monitor_socket(_WATCHED)
        except BaseException:
            sock.close(linger=0)
            raise
        self.socket = sock
        try:
            sock.connect(endpoint)
        except zmq.ZMQError:
            self.close()
            raise
        self._reader = SocketReader(sock, lambda frames: on_answer(self, frames))
        self._monitor_reader = SocketReader(self._monitor, self._on_event)

    def send(self, frames: list[bytes]) -> bool:
        """Send without blocking; False if the peer is not connected or its queue is full."""
        if not self.up:
            return False
        return self._reader.send(frames)

    def _on_event(self, frames: list[bytes]) -> None:
        if len(frames) < 1 or len(frames[0]) < 6:
            return
        event = monitor_event(frames)
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            if not self.up:
                self.up = self.ever_up = True
                log.info("cluster link to %s is up", self.endpoint)
            return
        if event & _FAILED:
            self.refused += 1
            now = time.monotonic()
            if self.trusted and now - self._refused_logged >= REFUSED_LOG_EVERY:
                self._refused_logged = now
                log.warning("the node at %s does not take this node's cluster key (another "
                            "cluster, another key, or not a cluster link endpoint: a node's "
                            "link is its --cluster-listen, by default its --listen port + 1)",
                            self.endpoint)
        if self.up:
            self.up = False
            log.info("cluster link to %s is down", self.endpoint)
            self.on_lost(self)

    def close(self) -> None:
        """Close the link (nothing is sent after)."""
        self.up = False
        for reader in (getattr(self, "_reader", None), getattr(self, "_monitor_reader", None)):
            if reader is not None:
                reader.close()
        if not self.socket.closed:
            self.socket.disable_monitor()
            self.socket.close(linger=0)
        self._monitor.close(linger=0)
