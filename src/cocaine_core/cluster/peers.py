"""The peers a node has heard from, their load, and the choice of one for a request.

A peer is a node that announced itself on this node's link endpoint, which only holders of
the cluster key reach. Its announce gives its free slots per app; between two announces this
node corrects that figure by the requests it forwarded there since (in flight now, against
in flight when the announce came), so a burst does not send a peer more than it said it had
room for. A peer silent for ``SILENT`` seconds takes no more requests and is listed as
silent; after ``FORGET`` seconds it is forgotten.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import attrs

from cocaine_core.cluster.discovery import NodeRecord
from cocaine_core.cluster.load import STATE_NAMES

#: Seconds without an announce after which a peer takes no requests (it announces 4 times a
#: second, and at once when its load changes).
SILENT = 2.0
#: Seconds without an announce after which a peer is forgotten.
FORGET = 60.0
#: The most peers a node keeps (members only: each proved it holds the cluster key).
MAX_PEERS = 1024


@attrs.define(eq=False)
class Peer:
    """One peer: its record, its load as announced, and what was forwarded to it since."""

    record: NodeRecord
    loads: dict[str, tuple[int, int, str]]
    heard: float
    seq: int = 0
    leaving: bool = False
    #: Requests forwarded to it whose answer has not ended, per app.
    in_flight: dict[str, int] = attrs.field(factory=dict)
    #: ``in_flight`` when its last announce came, per app.
    at_announce: dict[str, int] = attrs.field(factory=dict)
    #: Requests forwarded to it so far.
    forwarded: int = 0
    #: The connection its announces come over (its DEALER's identity at this node's link).
    via: bytes = b""

    def free(self, app: str) -> int:
        """Its free slots for ``app`` now, as this node best knows."""
        load = self.loads.get(app)
        if load is None or load[2] != "r":
            return 0
        return load[0] - self.in_flight.get(app, 0) + self.at_announce.get(app, 0)

    def serves(self, app: str) -> bool:
        """Whether it announced ``app`` as running."""
        load = self.loads.get(app)
        return load is not None and load[2] == "r"

    def view(self, now: float) -> dict[str, Any]:
        """For ``cocaine cluster nodes``."""
        record = self.record
        state = "leaving" if self.leaving else "silent" if now - self.heard > SILENT else "up"
        return {"id": record.id, "name": record.name, "endpoint": record.endpoint,
                "link": record.link, "state": state, "heard": round(now - self.heard, 3),
                "started": record.started, "version": record.version,
                "forwarded": self.forwarded,
                "apps": {app: {"free": free, "queued": queued, "state": STATE_NAMES[state_]}
                         for app, (free, queued, state_) in sorted(self.loads.items())}}


class PeerTable:
    """The peers by id (see the module's docstring)."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.peers: dict[str, Peer] = {}
        #: Announces dropped: from this node itself, out of order, or past ``MAX_PEERS``.
        self.dropped = 0
        self._turn = itertools.count()

    def heard(self, record: NodeRecord, seq: int, loads: dict[str, tuple[int, int, str]],
              leaving: bool, now: float | None = None, via: bytes = b"") -> Peer | None:
        """Take an announce that came over connection ``via``; return its peer (None if it
        was dropped). A live peer's announces must keep coming over one connection (another
        member cannot take its place); a new node at a known link replaces the old one (the
        same node, restarted)."""
        if record.id == self.me:
            self.dropped += 1
            return None
        now = time.monotonic() if now is None else now
        peer = self.peers.get(record.id)
        if peer is not None and peer.via and via != peer.via and now - peer.heard <= SILENT:
            self.dropped += 1
            return None
        if peer is None:
            for old in [p for p in self.peers.values() if record.link and
                        p.record.link == record.link]:
                if now - old.heard > SILENT or old.via == via:
                    del self.peers[old.record.id]
            if len(self.peers) >= MAX_PEERS:
                self.forget(now)
                if len(self.peers) >= MAX_PEERS:
                    self.dropped += 1
                    return None
            peer = self.peers[record.id] = Peer(record, loads, now, seq, leaving, via=via)
        elif seq <= peer.seq and via == peer.via:  # overtaken by a newer one: keep that
            self.dropped += 1
            return peer
        peer.via = via
        peer.record, peer.loads, peer.heard, peer.seq = record, loads, now, seq
        peer.leaving = leaving
        peer.at_announce = dict(peer.in_flight)
        return peer

    def pick(self, app: str, exclude: Any = (), now: float | None = None) -> Peer | None:
        """The live peer with the most free slots for ``app`` (ties taken in turn), or None
        if none has one."""
        now = time.monotonic() if now is None else now
        best: Peer | None = None
        most = 0
        ties = 0
        for peer in self.peers.values():
            if peer.leaving or now - peer.heard > SILENT or peer.record.id in exclude:
                continue
            free = peer.free(app)
            if free > most:
                best, most, ties = peer, free, 1
            elif free == most and best is not None:
                ties += 1
                if next(self._turn) % ties == 0:
                    best = peer
        return best

    def live(self, now: float | None = None) -> list[Peer]:
        """The peers heard within ``SILENT`` seconds."""
        now = time.monotonic() if now is None else now
        return [p for p in self.peers.values() if now - p.heard <= SILENT]

    def silent(self, now: float) -> list[Peer]:
        """The peers not heard within ``SILENT`` seconds."""
        return [p for p in self.peers.values() if now - p.heard > SILENT]

    def forget(self, now: float) -> list[Peer]:
        """Drop the peers not heard within ``FORGET`` seconds; return them."""
        gone = [p for p in self.peers.values() if now - p.heard > FORGET]
        for peer in gone:
            del self.peers[peer.record.id]
        return gone

    def distrust(self, peer: Peer, app: str) -> None:
        """``peer`` failed a request for ``app`` (500): count it no free slot for that app
        until its next announce says otherwise."""
        load = peer.loads.get(app)
        if load is not None:
            peer.loads[app] = (0, load[1], load[2])
            peer.at_announce[app] = peer.in_flight.get(app, 0)

    def release(self, via: bytes) -> None:
        """The connection ``via`` dropped: its peer's announces may come over a new one (the
        same node, reconnected) without waiting to fall silent first."""
        for peer in self.peers.values():
            if peer.via == via:
                peer.via = b""

    def sent(self, peer: Peer, app: str) -> None:
        """A request for ``app`` was forwarded to ``peer``."""
        peer.in_flight[app] = peer.in_flight.get(app, 0) + 1
        peer.forwarded += 1

    def ended(self, peer: Peer, app: str) -> None:
        """The answer of a request forwarded to ``peer`` has ended."""
        left = peer.in_flight.get(app, 0) - 1
        if left > 0:
            peer.in_flight[app] = left
        else:
            peer.in_flight.pop(app, None)
