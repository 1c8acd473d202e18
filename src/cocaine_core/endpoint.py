"""The node's native endpoint: one ROUTER socket for every app's native events and ``@node``.

Every request (``[REQUEST, id, app, event, policy] + body``, docs/protocol.md) arrives here,
is checked, and is routed: requests for the reserved app ``@node`` go to the control service;
the others become jobs of the named app's engine, if a ``native-server`` task serves that
event. Answers go back through a ``NativeSink``. A client can never make the node fail: a bad
request gets a 400 naming what is wrong, and anything unexpected a 500.

A client that stops waiting for an answer says so with ``[CANCEL, id]``: the endpoint keeps
the jobs of the requests in flight (``InFlight``), so it can find that request's job and
abandon it (it never starts if it still waits in its queue; running, its slave is told to
stop it). A client whose connection drops (``PeerWatch``), or that does not read its answers
(``Outbox``), has all its jobs abandoned the same way.

Limits: a message larger than ``max_message`` bytes (``ZMQ_MAXMSGSIZE``) makes ZeroMQ drop
the connection that sent it before the node holds it; each client has ``PEER_SEND_HWM``
messages queued in ZeroMQ and a backlog of at most ``client_backlog`` bytes (clients.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from cocaine_core import clients, native_stream, protocol
from cocaine_core.clients import Outbox, PeerWatch
from cocaine_core.cluster.load import free_slots
from cocaine_core.drivers.native import NativeServer
from cocaine_core.errors import CocaineError, NodeError, ProtocolError, ServiceError
from cocaine_core.native_sink import InFlight, NativeSink
from cocaine_core.policy import Policy
from cocaine_core.protocol import CONTROL_APP, Code, Status
from cocaine_core.zmqloop import SocketReader

if TYPE_CHECKING:
    from cocaine_core.cluster.forward import Forwarder
    from cocaine_core.cluster.key import LinkSecurity
    from cocaine_core.engine import Engine
    from cocaine_core.node import Node
    from cocaine_core.trust.curve import CurveServer

log = logging.getLogger("cocaine.endpoint")

#: Messages received and queued in ZeroMQ before it stops reading from the clients.
HIGH_WATER_MARK = 100_000
#: The largest message a client may send (``cocaine node --max-message``): above the
#: control service's upload chunks (1 MiB), far below what would hurt the node.
DEFAULT_MAX_MESSAGE = protocol.MAX_MESSAGE
#: Seconds between ZeroMQ heartbeats to each client, and without any traffic from it after
#: which its connection is dropped: a client whose process is stopped, or whose machine
#: vanished without closing its TCP connection, is then seen as gone (its jobs abandoned).
CLIENT_HEARTBEAT, CLIENT_HEARTBEAT_TIMEOUT = 10.0, 30.0
class NativeEndpoint:
    """The node's ROUTER: receives requests, routes them, sends answers back."""

    def __init__(self, node: Node, listen: str, *, max_message: int = DEFAULT_MAX_MESSAGE,
                 client_backlog: int = clients.DEFAULT_CLIENT_BACKLOG) -> None:
        self.node = node
        self.listen = listen
        self.max_message = max_message
        self.client_backlog = client_backlog
        #: Requests received, good or bad (a CANCEL is not counted).
        self.requests = 0
        #: The jobs of requests in flight, for CANCEL.
        self.in_flight = InFlight()
        #: Clients found gone (connection dropped, or not reading) with requests in flight.
        self.clients_gone = 0
        self._socket: zmq.Socket[bytes] | None = None
        self._reader: SocketReader | None = None
        self._peers: PeerWatch | None = None
        self._outbox: Outbox | None = None
        #: CurveZMQ on the socket (``cocaine node --curve``; the cluster's key on a link
        #: endpoint), set before ``bind``; None: plain.
        self.curve: CurveServer | None = None
        #: What secures the socket instead, if anything (a link endpoint's cluster key).
        self.security: CurveServer | LinkSecurity | None = None
        #: Messages queued in ZeroMQ for each client before its backlog holds them.
        self.send_hwm = clients.PEER_SEND_HWM
        #: Monitor events besides disconnections passed to ``monitor_event`` (a socket has one
        #: monitor, which watches for clients whose connection dropped).
        self.monitor_events = 0
        #: More ZeroMQ options for the socket, set before it binds.
        self.socket_options: dict[int, int] = {}
        #: Handlers of messages other than REQUEST and CANCEL, by code: (frames, header).
        self.handlers: dict[int, Callable[[list[bytes], list[Any]], None]] = {}

    def bind(self) -> str:
        """Bind the endpoint and start serving; return the address bound (a ``:0`` port
        resolved). ``NodeError`` naming the endpoint if it is taken."""
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self.send_hwm)
        sock.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(CLIENT_HEARTBEAT * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(CLIENT_HEARTBEAT_TIMEOUT * 1000))
        for option, value in self.socket_options.items():
            sock.setsockopt(option, value)
        security = self.security = self.security or self.curve
        if security is not None:
            try:
                security.secure(sock)
            except Exception:
                sock.close()
                raise
        try:
            sock.bind(self.listen)
        except zmq.ZMQError as exc:
            if security is not None:
                security.close()
            sock.close()
            raise NodeError(f"cannot listen on {self.listen}: {exc.strerror}; is another node "
                            f"running there? Choose another endpoint with --listen") from None
        self._socket = sock
        self.listen = sock.getsockopt_string(zmq.LAST_ENDPOINT) or self.listen
        self._peers = PeerWatch(sock, self._connection_dropped, more=self.monitor_events,
                                on_event=self.monitor_event)
        self._reader = SocketReader(sock, self._on_request, sources=self._peers)
        self._outbox = Outbox(self._reader, self.client_gone, self.client_backlog)
        return self.listen

    def close(self) -> None:
        """Stop serving and close the socket."""
        if self._outbox is not None:
            self._outbox.close()
        if self._peers is not None:
            self._peers.close()
            self._peers = None
        if self._reader is not None:
            self._reader.close()
        if self._socket is not None:
            self._socket.close(linger=100)
            self._socket = None
        if self.security is not None:
            self.security.close()

    # -- a request ------------------------------------------------------------------------------

    def _on_request(self, frames: list[bytes]) -> None:
        self.requests += 1
        outbox = self._outbox
        assert outbox is not None
        envelope, request_id = frames[:1], None
        try:
            if len(frames) < 2:
                raise _bad("empty request: expected a header frame")
            try:
                fields = protocol.unpack(frames[1])
            except ProtocolError as exc:
                raise _bad(str(exc)) from None
            if len(fields) >= 2:
                request_id = _safe_id(fields[1])
            if fields[0] == Code.CANCEL:
                self.requests -= 1
                self.cancel(envelope[0], request_id)
                return
            if fields[0] == Code.CHUNK or fields[0] == Code.CHOKE:  # a streamed body's piece
                self.requests -= 1
                if request_id is None:
                    raise _bad("expected [5, request_id] + a piece of a streamed body, or "
                               "[6, request_id] for its end, the id an integer or a string")
                native_stream.piece(self.in_flight, envelope[0], request_id, fields[0], frames)
                return
            other = self.handlers.get(fields[0]) if self.handlers else None
            if other is not None:
                self.requests -= 1
                other(frames, fields)
                return
            if len(fields) >= 2 and request_id is None and fields[1] is not None:
                raise _bad("the request_id must be an integer or a string")
            if len(frames) > 3:
                raise _bad(f"a request is a header frame and at most one body frame; got "
                           f"{len(frames) - 1} frames")
            if fields[0] != Code.REQUEST:
                request_id = None  # not a request: its "id" names nothing of this client's
                raise _bad(f"a client sends REQUEST [10, ...], CHUNK, CHOKE and CANCEL; got a "
                           f"message of code {fields[0]}")
            if len(fields) < 4:
                raise _bad("expected [10, request_id, app, event, policy] in the header frame")
            app, event = fields[2], fields[3]
            if not isinstance(app, str) or not isinstance(event, str):
                raise _bad("app and event must be strings")
            policy = Policy.parse(fields[4] if len(fields) > 4 else None)
            body = frames[2] if len(frames) > 2 else b""
            self.route(NativeSink(outbox, envelope, request_id), app, event, policy, body)
        except CocaineError as exc:
            message = exc.message if isinstance(exc, ServiceError) else str(exc)
            NativeSink(outbox, envelope, request_id).error(exc.code, message)
        except Exception as exc:  # the node never dies of what a client sends
            log.exception("request failed")
            NativeSink(outbox, envelope, request_id).error(
                Status.SERVER_ERROR, f"the node failed to handle the request: {exc}")

    def route(self, sink: NativeSink, app: str, event: str, policy: Policy,
              body: bytes) -> None:
        """Hand a checked request to the control service, to its app's engine, or, in a
        cluster, to a peer when this node has no free slot for it (``cluster/forward.py``)."""
        if app == CONTROL_APP:
            if policy.stream:
                raise _bad("a control request carries its arguments whole: policy.stream is "
                           "for requests to apps")
            self.node.control.submit(sink, event, body, policy.auth)
            return
        cluster = self.node.cluster
        if cluster is not None and cluster.peered and not policy.stream:
            engine = self.node.apps.get(app)
            if engine is None:
                if cluster.forwarder.forward_anyway(sink, app, event, policy, body):
                    return
            elif (driver := _native_driver(engine, event)) is not None and \
                    driver.forwardable and free_slots(engine) <= 0 and \
                    cluster.forwarder.forward(sink, app, event, policy, body):
                return
        self.run_here(sink, app, event, policy, body)

    def monitor_event(self, event: int) -> None:
        """One of ``monitor_events`` happened on the socket (none by default)."""

    def forwarder(self) -> Forwarder | None:
        """Where the requests this endpoint's clients sent to peers are (None: not in a
        cluster)."""
        cluster = self.node.cluster
        return None if cluster is None else cluster.forwarder

    def run_here(self, sink: NativeSink, app: str, event: str, policy: Policy,
                 body: bytes) -> None:
        """Run a checked request on this node's engine of ``app`` (ServiceError if none)."""
        engine = self._engine(app)
        driver = _native_driver(engine, event)
        if driver is None:
            served = ", ".join(sorted(d.task.event for d in engine.drivers
                                      if isinstance(d, NativeServer))) or "(none)"
            raise ServiceError(Status.NOT_FOUND, f"app '{app}' has no event '{event}' served "
                                                 f"natively; events: {served}")
        stream = None
        if policy.stream:
            if sink.request_id is None:
                raise _bad("a streamed request needs a request_id: the pieces of its body "
                           "name it")
            if self.in_flight.get(sink.key) is not None:
                raise _bad(f"request_id {sink.request_id!r:.40} is in use by a request of "
                           f"this connection still in flight: the pieces of a streamed body "
                           f"need an id of their own")
            if not driver.accepts_streams:
                raise _bad(f"event '{event}' of app '{app}' is served by "
                           f"{driver.task.type}, whose requests carry their body whole: send "
                           f"it without policy.stream")
            stream = native_stream.open_stream(sink)
        driver.requests += 1
        deadline = None if policy.deadline is None else time.monotonic() + policy.deadline
        job = driver.make_job(body, {}, sink, urgent=policy.urgent, deadline=deadline,
                              timeout=policy.timeout, retry=policy.retry, stream=stream)
        engine.submit(job)
        driver.submitted(job, sink)
        if not job.finished and sink.request_id is not None and job.sink is sink:
            sink.in_flight = self.in_flight
            self.in_flight.add(sink.key, engine, job)
            if stream is not None:
                native_stream.watch(engine, job)

    def run_or_answer(self, sink: NativeSink, app: str, event: str, policy: Policy,
                      body: bytes) -> None:
        """``run_here``, answering the client with the error if it cannot run here."""
        try:
            self.run_here(sink, app, event, policy, body)
        except CocaineError as exc:
            sink.error(exc.code, exc.message if isinstance(exc, ServiceError) else str(exc))

    def cancel(self, client: bytes, request_id: Any) -> None:
        """``client`` no longer waits for request ``request_id``: abandon its job. Still
        queued, it is taken out and never runs; running, its slave is told to stop it (and
        replaced if it has not within ``termination-timeout``). A request that has ended, or
        that this node never ran (an unknown id), is nothing to cancel."""
        if request_id is None:
            raise _bad("expected [11, request_id] in the header frame, the id an integer or "
                       "a string")
        entry = self.in_flight.pop((client, request_id))
        if entry is None:
            forwarder = self.forwarder()
            if forwarder is not None:
                forwarder.cancel((client, request_id))
            return
        engine, job = entry
        # A redeploy moves queued jobs to the app's new engine: look in both queues.
        current = self.node.apps.get(engine.name)
        for holder in (engine, current):
            if holder is not None and holder.queue.remove(job):
                holder.stats.abandon(job)
                return
        (current or engine).stats.abandon(job)
        for holder in (engine, current):
            if holder is not None and holder.pool.stop_job(job, "its client left"):
                return

    def client_gone(self, client: bytes, why: str) -> None:
        """``client`` will read nothing more (``why``): abandon every job of its requests and
        forget what waits for it."""
        if self._outbox is not None:
            self._outbox.drop(client)
        if self._peers is not None:
            self._peers.forget(client)
        requests = self.in_flight.of_client(client)
        forwarder = self.forwarder()
        forwarded = forwarder.drop_client(client) if forwarder is not None else 0
        if not requests and not forwarded:
            return
        self.clients_gone += 1
        log.info("a client left with %d request(s) in flight (%s): their jobs are cancelled",
                 len(requests) + forwarded, why)
        for key in requests:
            self.cancel(client, key[1])

    def _connection_dropped(self, client: bytes) -> None:
        self.client_gone(client, "its connection dropped")

    def info(self) -> dict[str, Any]:
        """The endpoint's limits and client counters, for ``cocaine info``."""
        outbox = self._outbox
        return {"max-message": self.max_message, "client-backlog": self.client_backlog,
                "in-flight": len(self.in_flight), "clients-gone": self.clients_gone,
                "clients-cut-off": outbox.cut_off if outbox else 0,
                "answers-held": outbox.held if outbox else 0,
                "backlog-bytes": outbox.waiting() if outbox else 0}

    def _engine(self, app: str) -> Engine:
        node = self.node
        engine = node.apps.get(app)
        if engine is not None:
            return engine
        if node.stopping:
            raise ServiceError(Status.UNAVAILABLE, f"app '{app}' is not served: the node is "
                                                   f"stopping")
        if node.loading or node.busy.get(app) == "start":
            raise ServiceError(Status.UNAVAILABLE, f"app '{app}' is not serving yet: the node "
                                                   f"is starting its apps; retry in a moment")
        names = ", ".join(sorted(node.apps)) or "(none)"
        raise ServiceError(Status.NOT_FOUND, f"no app named '{app}' on this node; apps: "
                                             f"{names}")


def _native_driver(engine: Engine, event: str) -> NativeServer | None:
    for driver in engine.drivers:
        if isinstance(driver, NativeServer) and driver.task.event == event:
            return driver
    return None


def _bad(message: str) -> ServiceError:
    return ServiceError(Status.BAD_REQUEST, message)


def _safe_id(request_id: Any) -> Any:
    return request_id if isinstance(request_id, int | str | bytes) else None
