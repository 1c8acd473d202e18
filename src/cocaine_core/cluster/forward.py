"""Forwarding: a request this node has no room for, run by a peer, its answer streamed back.

A forwarded request crosses one link as a native request (``[REQUEST, id, app, event,
policy] + body``, the id this node's); the peer runs it on its own engine, never forwarding it
again (one hop), and answers with chunks, choke or error, which this node passes on to its
client as they come. The policy goes with it: ``urgent``, ``timeout``, ``retry``, and the
deadline as the seconds left of it.

When the peer is lost (its link drops, or it falls silent) a request that has received
nothing is retried once elsewhere (another peer with room, else this node's own queue), never
twice; one that had received part of its answer fails with 500. A peer that answers 503 or
404 before anything (it filled up meanwhile, or does not have the app yet) hands the request
back: it runs here.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from cocaine_core import protocol
from cocaine_core.errors import ProtocolError
from cocaine_core.protocol import Code, Status

if TYPE_CHECKING:
    from cocaine_core.cluster.link import PeerLink
    from cocaine_core.cluster.peers import Peer, PeerTable
    from cocaine_core.native_sink import NativeSink, RequestKey
    from cocaine_core.policy import Policy

log = logging.getLogger("cocaine.cluster")

#: The most requests forwarded and not yet answered (past it, requests run here).
MAX_FORWARDS = 100_000
#: Seconds past a forwarded request's deadline and timeout after which this node stops
#: waiting for a peer that keeps neither (504), as its own engine would have.
GIVE_UP_GRACE = 5.0
#: Seconds a forwarded request with a timeout but no deadline is allowed to wait in the
#: peer's queue before that bound counts (a peer takes one only when it has room).
QUEUE_ALLOWANCE = 60.0

#: Runs a request here, or answers why it cannot: (sink, app, event, policy, body).
RunHere = Callable[["NativeSink", str, str, "Policy", bytes], None]


@attrs.define(eq=False, slots=True)
class Forward:
    """One request forwarded to a peer, until its answer ends."""

    id: int
    sink: NativeSink
    app: str
    event: str
    policy: Policy
    body: bytes
    #: Monotonic time by which the job must start (None: none).
    deadline: float | None
    peer: Peer
    #: The link it went over (set once sent).
    link: Any = None
    received: bool = False
    attempts: int = 1
    #: Monotonic time past which its answer cannot still be coming (None: no bound).
    give_up: float | None = None


class Forwarder:
    """The requests this node forwarded, by id (see the module's docstring)."""

    def __init__(self, table: PeerTable, link_of: Callable[[Peer], PeerLink | None],
                 run_here: RunHere) -> None:
        self.table = table
        self.link_of = link_of
        self.run_here = run_here
        self.forwards: dict[int, Forward] = {}
        self._by_request: dict[RequestKey, Forward] = {}
        #: (give up at, id) of the forwards with a bound (some long ended: skipped).
        self._give_ups: list[tuple[float, int]] = []
        self._ids = 0
        #: Requests forwarded, retried after a peer was lost, handed back by a peer, and
        #: failed because their peer was lost after part of the answer.
        self.sent = self.retried = self.handed_back = self.cut = 0
        #: Requests that waited in this node's queue and went to a peer that had room.
        self.offloaded = 0

    def forward(self, sink: NativeSink, app: str, event: str, policy: Policy, body: bytes,
                exclude: Any = ()) -> bool:
        """Send the request to the peer with the most free slots for ``app``; False if no
        peer has one (or none can be reached now): the caller runs it here."""
        peer = self.table.pick(app, exclude)
        if peer is None or len(self.forwards) >= MAX_FORWARDS:
            return False
        deadline = None if policy.deadline is None else time.monotonic() + policy.deadline
        return self._send(Forward(0, sink, app, event, policy, body, deadline, peer))

    def forward_anyway(self, sink: NativeSink, app: str, event: str, policy: Policy,
                       body: bytes) -> bool:
        """Send a request for an app this node lacks to a live peer serving it (the one with
        the most free slots); False if none."""
        if self.forward(sink, app, event, policy, body):
            return True
        peers = [p for p in self.table.live() if p.serves(app) and not p.leaving]
        if not peers:
            return False
        peer = min(peers, key=lambda p: p.loads[app][1])  # the shortest queue
        deadline = None if policy.deadline is None else time.monotonic() + policy.deadline
        return self._send(Forward(0, sink, app, event, policy, body, deadline, peer))

    def _send(self, fwd: Forward) -> bool:
        link = self.link_of(fwd.peer)
        if link is None:
            return False
        self._ids += 1
        fwd.id, fwd.link = self._ids, link
        policy = fwd.policy
        wire: dict[str, Any] = {"urgent": policy.urgent, "retry": policy.retry}
        if policy.timeout is not None:
            wire["timeout"] = policy.timeout
        if fwd.deadline is not None:
            wire["deadline"] = max(0.001, fwd.deadline - time.monotonic())
        header = protocol.pack(Code.REQUEST, fwd.id, fwd.app, fwd.event, wire)
        if not link.send([header, fwd.body]):
            return False
        self.forwards[fwd.id] = fwd
        if fwd.sink.request_id is not None:
            self._by_request[fwd.sink.key] = fwd
        if policy.timeout is not None:
            start_by = fwd.deadline if fwd.deadline is not None else \
                time.monotonic() + QUEUE_ALLOWANCE
            fwd.give_up = start_by + policy.timeout + GIVE_UP_GRACE
            heapq.heappush(self._give_ups, (fwd.give_up, fwd.id))
        self.table.sent(fwd.peer, fwd.app)
        self.sent += 1
        return True

    def _end(self, fwd: Forward) -> None:
        if self.forwards.pop(fwd.id, None) is None:
            return
        key = fwd.sink.key
        if self._by_request.get(key) is fwd:
            del self._by_request[key]
        self.table.ended(fwd.peer, fwd.app)

    # -- answers ------------------------------------------------------------------------------

    def on_answer(self, link: PeerLink, frames: list[bytes]) -> None:
        """A message from ``link``: a part of a forwarded request's answer."""
        try:
            fields = protocol.unpack(frames[0])
            fwd = self.forwards.get(fields[1]) if len(fields) > 1 else None
        except (ProtocolError, TypeError):  # TypeError: an unhashable id
            return
        if fwd is None or fwd.link is not link:
            return  # a late answer to a request given up (its client left, its peer lost)
        code, payload = fields[0], frames[1] if len(frames) > 1 else None
        if code == Code.CHUNK:
            fwd.received = True
            fwd.sink.chunk(payload or b"")
        elif code == Code.CHOKE:
            self._end(fwd)
            if payload is not None:
                fwd.sink.last(payload)
            else:
                fwd.sink.choke()
        elif code == Code.ERROR and len(fields) >= 4:
            self._end(fwd)
            status, message = fields[2], str(fields[3])
            if not fwd.received and status in (Status.UNAVAILABLE, Status.NOT_FOUND):
                self.handed_back += 1  # it filled up meanwhile, or lacks the app: run here
                self.run_here(fwd.sink, fwd.app, fwd.event, self._left(fwd), fwd.body)
            else:
                if status == Status.SERVER_ERROR and not fwd.received:
                    self.table.distrust(fwd.peer, fwd.app)  # its slaves may be crashing
                fwd.sink.error(status if isinstance(status, int) else Status.SERVER_ERROR,
                               message)

    def _left(self, fwd: Forward) -> Policy:
        """The request's policy with what is left of its deadline."""
        if fwd.deadline is None:
            return fwd.policy
        return attrs.evolve(fwd.policy, deadline=max(1e-6, fwd.deadline - time.monotonic()))

    # -- a peer lost, a client gone -------------------------------------------------------------

    def lost(self, link: PeerLink | None = None, peer: Peer | None = None) -> None:
        """``link`` dropped, or ``peer`` fell silent: retry or fail what they were running."""
        for fwd in [f for f in self.forwards.values() if f.link is link or f.peer is peer]:
            self._end(fwd)
            fwd.link.send([protocol.pack(Code.CANCEL, fwd.id)])  # if it ever comes back
            name = fwd.peer.record.name
            if fwd.received:
                self.cut += 1
                fwd.sink.error(Status.SERVER_ERROR, f"node {name} was lost while it sent the "
                                                    f"answer; the request was not run again "
                                                    f"(part of its answer had arrived)")
            elif not fwd.policy.retry:
                fwd.sink.error(Status.SERVER_ERROR, f"node {name} was lost while it ran the "
                                                    f"request; it was not run again because "
                                                    f"retry is off for it")
            elif fwd.attempts >= 2:
                fwd.sink.error(Status.SERVER_ERROR, f"node {name} was lost while it ran the "
                                                    f"request (already retried once)")
            else:
                self.retried += 1
                fwd.attempts += 1
                other = self.table.pick(fwd.app, exclude={fwd.peer.record.id})
                if other is not None:
                    fwd.peer = other
                    if self._send(fwd):
                        continue
                self.run_here(fwd.sink, fwd.app, fwd.event, self._left(fwd), fwd.body)

    def cancel(self, key: RequestKey) -> bool:
        """The client of request ``key`` no longer waits: tell the peer; False if that
        request was not forwarded."""
        fwd = self._by_request.get(key)
        if fwd is None:
            return False
        self._end(fwd)
        fwd.link.send([protocol.pack(Code.CANCEL, fwd.id)])
        return True

    def drop_client(self, client: bytes) -> int:
        """``client`` is gone: tell the peers to drop every request of it they run (also
        those whose id it reused); return how many."""
        gone = [fwd for fwd in self.forwards.values() if fwd.sink.envelope[0] == client]
        for fwd in gone:
            self._end(fwd)
            fwd.link.send([protocol.pack(Code.CANCEL, fwd.id)])
        return len(gone)

    def expire(self, now: float) -> None:
        """Fail (504) the forwarded requests whose peer kept neither their deadline nor their
        timeout, and tell it to drop them."""
        heap = self._give_ups
        while heap and heap[0][0] <= now:
            _, fid = heapq.heappop(heap)
            fwd = self.forwards.get(fid)
            if fwd is None or fwd.give_up is None or fwd.give_up > now:
                continue
            self._end(fwd)
            fwd.link.send([protocol.pack(Code.CANCEL, fwd.id)])
            fwd.sink.error(Status.TIMEOUT, f"node {fwd.peer.record.name} did not finish the "
                                           f"request within its deadline and timeout; it was "
                                           f"told to stop it")
        if len(heap) > 4 * len(self.forwards) + 1024:  # mostly requests long answered
            self._give_ups = [(f.give_up, f.id) for f in self.forwards.values()
                              if f.give_up is not None]
            heapq.heapify(self._give_ups)

    def fail_all(self, message: str) -> None:
        """End every forwarded request with 500 and ``message`` (the node stops: the peers
        may have run them)."""
        for fwd in list(self.forwards.values()):
            self._end(fwd)
            fwd.link.send([protocol.pack(Code.CANCEL, fwd.id)])
            fwd.sink.error(Status.SERVER_ERROR, message)
