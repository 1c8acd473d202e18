"""A node's membership of its cluster: its link endpoint, its links, announces, peers.

``cocaine node --cluster NAME --cluster-key FILE``: the node binds its link endpoint
(``--cluster-listen``, by default its ``--listen`` port + 1), connects a link to every node
its discovery proposes, and over each link announces itself and its load per app
``ANNOUNCE_EVERY`` seconds, and within ``TICK`` seconds of a change. What it hears from its
peers (``PeerTable``) decides where a request it has no room for goes (``Forwarder``). See
docs/cluster.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from cocaine_core import __version__, protocol
from cocaine_core.cluster.discovery import (
    CLUSTER_NAME,
    Discovery,
    NodeRecord,
    _is_endpoint,
    advertised,
)
from cocaine_core.cluster.forward import Forwarder
from cocaine_core.cluster.key import HOW_TO_MAKE, LinkSecurity, read_key_file, stored_key
from cocaine_core.cluster.link import PeerLink
from cocaine_core.cluster.link_endpoint import ANNOUNCE, LinkEndpoint
from cocaine_core.cluster.links import Links
from cocaine_core.cluster.load import STATE_NAMES, app_loads, check_loads, free_slots
from cocaine_core.cluster.peers import Peer, PeerTable
from cocaine_core.engine.job import Job
from cocaine_core.errors import NodeError
from cocaine_core.native_sink import NativeSink
from cocaine_core.policy import Policy

if TYPE_CHECKING:
    from cocaine_core.node import Node

log = logging.getLogger("cocaine.cluster")

#: Seconds between two looks at the apps' load (an announce goes out when it changed).
TICK = 0.025
#: Seconds between two announces when nothing changes.
ANNOUNCE_EVERY = 0.25
#: Seconds between two looks at what the discovery proposes.
SYNC_EVERY = 0.5
#: The most records of a discovery looked at.
MAX_CANDIDATES = 1024
#: Most seconds a stopping node waits for the answers of the requests it forwarded.
DRAIN_WAIT = 10.0


@attrs.frozen
class ClusterSettings:
    """``--cluster NAME``, ``--cluster-key FILE`` (None: the key in the store),
    ``--cluster-listen`` (None: the --listen port + 1) and ``--peer`` endpoints."""

    name: str
    key_file: Path | None = None
    listen: str | None = None
    peers: tuple[str, ...] = ()

    def check(self) -> None:
        """NodeError naming what is wrong with the settings."""
        if not CLUSTER_NAME.fullmatch(self.name):
            raise NodeError(f"--cluster {self.name!r}: a cluster's name is 1 to 63 letters, "
                            f"digits, '-' or '_', starting with a letter or digit")
        if self.listen is not None and not _is_endpoint(self.listen):
            raise NodeError(f"--cluster-listen {self.listen!r}: peers reach a link over TCP; "
                            f"give tcp://HOST:PORT with a port from 1 to 65535")

    def discovery(self, named: str | None) -> str:
        """The discovery to use: ``named``, else ``static`` with --peer, else ``mdns``."""
        return named or ("static" if self.peers else "mdns")


def load_key(settings: ClusterSettings, storage: Any) -> bytes:
    """The cluster's key, from ``--cluster-key`` or the store; NodeError saying how to make
    one when there is none."""
    if settings.key_file is not None:
        return read_key_file(settings.key_file)
    key = stored_key(storage, settings.name) if storage is not None else None
    if key is None:
        raise NodeError(f"--cluster {settings.name} needs the cluster's key: pass "
                        f"--cluster-key FILE; {HOW_TO_MAKE}")
    return key


def link_listen(listen: str, given: str | None) -> str:
    """Where the link endpoint binds: ``given``, else the node's tcp ``listen`` port + 1."""
    if given is not None:
        if not given.startswith("tcp://"):
            raise NodeError(f"--cluster-listen {given!r}: peers reach a link over TCP; give "
                            f"tcp://HOST:PORT")
        return given
    host, _, port = listen.removeprefix("tcp://").rpartition(":")
    if not listen.startswith("tcp://") or not port.isdigit() or not 0 < int(port) < 65535:
        raise NodeError(f"--cluster needs a TCP endpoint for its peers and the node listens "
                        f"on {listen}: pass --cluster-listen tcp://HOST:PORT")
    return f"tcp://{host}:{int(port) + 1}"


class Cluster:
    """This node in its cluster (see the module's docstring)."""

    def __init__(self, node: Node, settings: ClusterSettings, key: bytes) -> None:
        self.node = node
        self.settings = settings
        self.name = settings.name
        self.id = uuid.uuid4().hex[:16]
        self.security = LinkSecurity(key, settings.name)
        self.table = PeerTable(self.id)
        self.forwarder = Forwarder(self.table, self._link_of, self._run_here)
        self.links = Links(self.security, self.forwarder.on_answer, self._link_lost)
        self.endpoint: LinkEndpoint | None = None
        self.discovery: Discovery | None = None
        self.record: NodeRecord | None = None
        #: True while at least one peer is live: only then does a request look at peers.
        self.peered = False
        #: Stopping: ``leaving`` once peers are told, ``closing`` once nothing more is sent
        #: to them.
        self.leaving = self.closing = False
        self._seq = 0
        self._sent_loads: dict[str, list[Any]] | None = None
        self._sent_at = 0.0
        self._synced_at = 0.0
        self._silent: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    # -- life -------------------------------------------------------------------------------------

    async def start(self, discovery: Discovery | None) -> NodeRecord:
        """Bind the link endpoint, join through ``discovery``, start announcing; return this
        node's record."""
        node = self.node
        where = link_listen(node.listen, self.settings.listen)
        endpoint = LinkEndpoint(node, where, self.security, self._on_announce,
                                max_message=node.endpoint.max_message,
                                client_backlog=node.endpoint.client_backlog)
        endpoint.node_cluster_gone = self.table.release
        try:
            bound = endpoint.bind()
        except NodeError as exc:
            raise NodeError(f"cluster {self.name}: {exc} (the link endpoint: --cluster-listen, "
                            f"by default the --listen port + 1)") from None
        self.endpoint = endpoint
        self.record = NodeRecord(id=self.id, name=node.name, endpoint=advertised(node.listen),
                                 started=round(time.time(), 3), version=__version__,
                                 cluster=self.name, link=advertised(bound))
        self.discovery = discovery
        if discovery is not None:
            await discovery.start(self.record)
        self._task = asyncio.get_running_loop().create_task(self._run())
        log.info("cluster %s: link endpoint %s (id %s)", self.name, self.record.link, self.id)
        return self.record

    def leave(self) -> None:
        """Tell the peers this node takes no more requests (it is stopping). Requests its
        own clients send meanwhile may still go to them, while its apps drain."""
        self.leaving = True
        if self.record is not None:
            self._announce(app_loads(self.node.apps))

    async def close(self) -> None:
        """Forward nothing more, give the requests forwarded up to ``DRAIN_WAIT`` seconds
        to end, then close everything."""
        self.closing, self.peered = True, False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        deadline = time.monotonic() + DRAIN_WAIT
        while self.forwarder.forwards and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.forwarder.fail_all(f"node {self.node.name} stopped while a peer ran the request "
                                f"(it may have run there)")
        self.links.close()
        if self.endpoint is not None:
            self.endpoint.close()

    # -- announces --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                now = time.monotonic()
                loads = app_loads(self.node.apps)
                if loads != self._sent_loads or now - self._sent_at >= ANNOUNCE_EVERY:
                    self._announce(loads, now)
                if self.peered:
                    self._offload()
                self.forwarder.expire(now)
                self._watch_silence(now)
                if now - self._synced_at >= SYNC_EVERY:
                    self._synced_at = now
                    self._sync(now)
            except Exception:  # the loop must go on: one line, then the next tick
                log.exception("cluster %s: announce failed", self.name)
                await asyncio.sleep(1)

    def _announce(self, loads: dict[str, list[Any]], now: float | None = None) -> None:
        assert self.record is not None
        self._seq += 1
        self._sent_loads, self._sent_at = loads, now or time.monotonic()
        header = protocol.pack(ANNOUNCE, self._seq, attrs.asdict(self.record), loads,
                               self.leaving)
        self.links.send_all([header])

    def _on_announce(self, frames: list[bytes], fields: list[Any]) -> None:
        """A peer's announce arrived on the link endpoint."""
        if len(fields) < 5 or not isinstance(fields[1], int) or isinstance(fields[1], bool):
            return
        try:
            record = NodeRecord.from_map(fields[2])
        except NodeError:
            return
        loads = check_loads(fields[3])
        if loads is None or record.cluster != self.name or not record.link:
            return
        known = record.id in self.table.peers
        peer = self.table.heard(record, fields[1], loads, fields[4] is True, via=frames[0])
        if peer is None or peer.record != record:
            return
        if not known:
            log.info("cluster %s: node %s (%s) joined", self.name, record.name, record.endpoint)
        if peer.record.id in self._silent:
            self._silent.discard(peer.record.id)
            log.info("cluster %s: node %s is heard again", self.name, record.name)
        self.links.ensure(record.link, trusted=True)
        if self.closing:
            return
        self.peered = True
        if any(free for free, _, _ in loads.values()):
            self._offload()

    def _offload(self) -> None:
        """Send the jobs waiting in this node's queues beyond its slots (those that would wait
        for another job to end) to peers that announce free slots for their app: oldest
        first, only requests of this node's own clients that never started."""
        node = self.node
        in_flight = node.endpoint.in_flight
        for name, engine in node.apps.items():
            excess = -free_slots(engine) if engine.queue else 0
            if excess <= 0:  # what waits will run here as soon as a slave is free
                continue
            moved: list[Job] = []
            for job in engine.queue:
                if len(moved) >= excess:
                    break
                sink = job.sink
                if job.attempts or job.finished or not isinstance(sink, NativeSink) or \
                        sink.in_flight is not in_flight:
                    continue
                left = None if job.deadline is None else job.deadline - time.monotonic()
                if left is not None and left <= 0:
                    continue
                policy = Policy(job.urgent, job.timeout, left, job.retry)
                if not self.forwarder.forward(sink, name, job.event, policy, job.body):
                    break  # no peer has room for this app now
                moved.append(job)
            for job in moved:
                engine.queue.remove(job)
                in_flight.ended(job.sink)  # type: ignore[arg-type]  # a NativeSink
            self.forwarder.offloaded += len(moved)

    def _watch_silence(self, now: float) -> None:
        for peer in self.table.silent(now):
            if peer.record.id not in self._silent:
                self._silent.add(peer.record.id)
                log.warning("cluster %s: node %s fell silent; it takes no more requests",
                            self.name, peer.record.name)
                self.forwarder.lost(peer=peer)
        self.peered = bool(self.table.live(now))

    def _sync(self, now: float) -> None:
        """Links to what the discovery proposes and to the peers; drop links nobody needs."""
        assert self.record is not None
        proposed: set[str] = set()
        if self.discovery is not None:
            for record in list(self.discovery.peers().values())[:MAX_CANDIDATES]:
                if record.cluster in ("", self.name) and record.id != self.id:
                    with contextlib.suppress(NodeError):
                        proposed.add(record.link or link_listen(record.endpoint, None))
        members = {p.record.link for p in self.table.peers.values()}
        trusted = getattr(self.discovery, "trusted", False)
        for endpoint in (members, proposed):
            endpoint.discard(self.record.link)
        for link in self.links.sync(members | proposed if trusted else members,
                                    () if trusted else proposed, now):
            self.forwarder.lost(link=link)
        for peer in self.table.forget(now):
            self._silent.discard(peer.record.id)
            log.info("cluster %s: node %s forgotten (silent)", self.name, peer.record.name)

    def _link_lost(self, link: PeerLink) -> None:
        self.forwarder.lost(link=link)

    def _link_of(self, peer: Peer) -> PeerLink | None:
        return self.links.up(peer.record.link)

    def _run_here(self, sink: Any, app: str, event: str, policy: Any, body: bytes) -> None:
        self.node.endpoint.run_or_answer(sink, app, event, policy, body)

    # -- introspection ------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """For ``cocaine info``: the cluster, this node's link, its peers and counters."""
        fwd = self.forwarder
        return {"name": self.name, "id": self.id,
                "link": self.record.link if self.record else None,
                "peers": len(self.table.live()), "links": len(self.links),
                "forwarded": fwd.sent, "in-flight": len(fwd.forwards),
                "retried": fwd.retried, "handed-back": fwd.handed_back, "cut": fwd.cut,
                "offloaded": fwd.offloaded,
                "refused": self.endpoint.refused if self.endpoint else 0}

    def nodes(self) -> dict[str, Any]:
        """For ``cocaine cluster nodes``: this node and every peer it knows, with their
        apps' load and when each was last heard."""
        now = time.monotonic()
        record = self.record
        me = {"id": self.id, "name": self.node.name, "state": "leaving" if self.leaving
              else "up", "heard": 0.0, "self": True,
              "endpoint": record.endpoint if record else None,
              "link": record.link if record else None, "forwarded": self.forwarder.sent,
              "apps": {app: {"free": free, "queued": queued, "state": state}
                       for app, (free, queued, state) in _named(app_loads(self.node.apps))}}
        peers = sorted((p.view(now) for p in self.table.peers.values()),
                       key=lambda view: view["name"])
        return {"cluster": self.name, "nodes": [me, *peers], "links": self.links.view()}


def _named(loads: dict[str, list[Any]]) -> list[tuple[str, tuple[int, int, str]]]:
    return [(app, (free, queued, STATE_NAMES[state])) for app, (free, queued, state)
            in loads.items()]


async def cluster_nodes(node: Node, args: dict[str, Any]) -> dict[str, Any]:
    """The control method ``cluster-nodes``: ``Cluster.nodes`` of ``node``'s cluster."""
    from cocaine_core.errors import ServiceError
    from cocaine_core.protocol import Status

    if node.cluster is None:
        raise ServiceError(Status.NOT_FOUND, "this node is in no cluster: start it with "
                                             "--cluster NAME --cluster-key FILE")
    return node.cluster.nodes()
