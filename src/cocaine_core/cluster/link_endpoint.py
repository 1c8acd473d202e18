"""A node's link endpoint: the ROUTER its peers connect to (``--cluster-listen``).

It is a native endpoint (same framing, same limits, same handling of a client that leaves or
does not read) with three differences: only holders of the cluster key get in (CurveZMQ under
the cluster's key pair, ``cluster/key.py``); a request that arrives here was forwarded by a
peer and runs on this node, never forwarded again (one hop); and it takes the peers'
announces (``ANNOUNCE``). Control (``@node``) is not served here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from cocaine_core.endpoint import NativeEndpoint
from cocaine_core.errors import ServiceError
from cocaine_core.protocol import CONTROL_APP, Status

if TYPE_CHECKING:
    from cocaine_core.cluster.forward import Forwarder
    from cocaine_core.cluster.key import LinkSecurity
    from cocaine_core.native_sink import NativeSink
    from cocaine_core.node import Node
    from cocaine_core.policy import Policy

log = logging.getLogger("cocaine.cluster")

_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
#: Least seconds between two log lines about refused connections.
REFUSED_LOG_EVERY = 60.0
#: A peer's announce: ``[20, seq, record, loads, leaving]`` (``cluster/cluster.py``).
ANNOUNCE = 20
#: Milliseconds a connection to the link endpoint gets to finish its handshake.
HANDSHAKE_MS = 5000
#: Messages queued in ZeroMQ for one peer (it carries many clients' answers).
LINK_SEND_HWM = 10_000


class LinkEndpoint(NativeEndpoint):
    """The ROUTER of a node's link endpoint (see the module's docstring)."""

    def __init__(self, node: Node, listen: str, security: LinkSecurity,
                 on_announce: Callable[[list[bytes], list[Any]], None], *,
                 max_message: int, client_backlog: int) -> None:
        # A forwarded request carries a client's whole body and a header of the node's own.
        super().__init__(node, listen, max_message=max_message + 4096,
                         client_backlog=client_backlog)
        self.security = security
        self.send_hwm = LINK_SEND_HWM
        # A connection that has not finished its handshake within this many ms is closed:
        # half-open connections of strangers cannot pile up.
        self.socket_options[zmq.HANDSHAKE_IVL] = HANDSHAKE_MS
        self.handlers[ANNOUNCE] = on_announce
        #: Told of each peer connection that drops (the cluster releases its pin).
        self.node_cluster_gone: Callable[[bytes], None] = lambda client: None
        #: Connections whose handshake failed: a client without the cluster's key.
        self.refused = 0
        self._refused_logged = 0.0
        self.monitor_events = _FAILED

    def monitor_event(self, event: int) -> None:
        """A handshake failed: count it, and say so at most once a minute."""
        self.refused += 1
        now = time.monotonic()
        if now - self._refused_logged >= REFUSED_LOG_EVERY:
            self._refused_logged = now
            log.warning("the cluster link endpoint %s refused a connection without the "
                        "cluster's key (%d so far): a node of another cluster or key, or a "
                        "stranger", self.listen, self.refused)

    def route(self, sink: NativeSink, app: str, event: str, policy: Policy,
              body: bytes) -> None:
        """Run a forwarded request here (never forwarded again)."""
        if app == CONTROL_APP:
            raise ServiceError(Status.BAD_REQUEST, "control (@node) is not served on a "
                                                   "cluster link; call the node's endpoint")
        self.run_here(sink, app, event, policy, body)

    def forwarder(self) -> Forwarder | None:
        """None: nothing that arrives here was forwarded by this node."""
        return None

    def client_gone(self, client: bytes, why: str) -> None:
        """A peer's connection is gone: its jobs are cancelled (see ``NativeEndpoint``), and
        its announces may come over its next connection."""
        super().client_gone(client, why)
        self.node_cluster_gone(client)
