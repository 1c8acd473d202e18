"""The ``static`` discovery: the peers given on the command line.

``cocaine node --cluster NAME --discovery static --peer tcp://10.0.0.2:10054 --peer ...``:
each ``--peer`` is another node's *link* endpoint (its ``--cluster-listen``). The list never
changes while the node runs; a peer that is down is simply not reached (the cluster's
announces say which peers answer). An endpoint equal to this node's own link is skipped, so
every node of a cluster may be given the same list. No ``--peer`` at all is allowed: such a
node is found by the nodes that list it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cocaine_core.cluster.discovery import NodeRecord, _is_endpoint
from cocaine_core.errors import NodeError

#: Peers a node may be given at most.
MAX_PEERS = 1024
EXPECTED = "a peer's link endpoint, tcp://HOST:PORT (e.g. --peer tcp://10.0.0.2:10054)"


def peer_id(endpoint: str) -> str:
    """The stable id a static peer is known by until its announces say who it is."""
    return hashlib.sha256(endpoint.encode()).hexdigest()[:16]


class StaticDiscovery:
    """The peers of ``--peer`` (module docstring); ``node.static_peers`` holds them."""

    #: The operator named these peers: the cluster links them and keeps trying them.
    trusted = True

    def __init__(self, node: Any) -> None:
        given = list(getattr(node, "static_peers", None) or [])
        if len(given) > MAX_PEERS:
            raise NodeError(f"--peer is given {len(given)} times; at most {MAX_PEERS} peers")
        endpoints: list[str] = []
        for endpoint in given:
            if not isinstance(endpoint, str) or not _is_endpoint(endpoint):
                raise NodeError(f"--peer {endpoint!r}: not {EXPECTED}")
            if endpoint not in endpoints:
                endpoints.append(endpoint)
        self.endpoints = endpoints
        self.state = "stopped"
        self._peers: dict[str, NodeRecord] = {}

    async def start(self, me: NodeRecord) -> None:
        """List every given peer but this node itself (its own link)."""
        own = {me.link, me.endpoint} - {""}
        peers = {}
        for endpoint in self.endpoints:
            if endpoint in own:
                continue
            host = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
            record = NodeRecord(id=peer_id(endpoint), name=host, endpoint=endpoint,
                                started=0.0, cluster=me.cluster, link=endpoint)
            peers[record.id] = record
        self._peers = peers
        self.state = "joined"

    def peers(self) -> dict[str, NodeRecord]:
        """The given peers, by their synthesized ids (never this node)."""
        return dict(self._peers)

    def info(self) -> dict[str, Any]:
        """The discovery's name, state and number of peers."""
        return {"name": "static", "state": self.state, "peers": len(self._peers)}

    async def stop(self) -> None:
        """Nothing to leave: the others stop hearing this node's announces."""
        self.state = "stopped"
