"""The ``static`` discovery: the peers given with ``--peer``."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from cocaine_core.cluster.discovery import NodeRecord
from cocaine_core.cluster.static import MAX_PEERS, StaticDiscovery, peer_id
from cocaine_core.errors import NodeError
from cocaine_core.plugins import get_host
from cocaine_core.testing import wait_until
from tests.cluster.test_mdns import Peer

ME = NodeRecord.new("me", "tcp://10.0.0.1:10053", cluster="blue", link="tcp://10.0.0.1:10054")


def _started(*peers: str) -> StaticDiscovery:
    discovery = StaticDiscovery(SimpleNamespace(static_peers=list(peers)))
    asyncio.run(discovery.start(ME))
    return discovery


def test_each_peer_is_listed_by_a_stable_id_but_the_node_itself():
    discovery = _started("tcp://10.0.0.2:10054", "tcp://node3.lan:10054", ME.link,
                         "tcp://10.0.0.2:10054")
    peers = discovery.peers()
    assert sorted(r.link for r in peers.values()) == ["tcp://10.0.0.2:10054",
                                                      "tcp://node3.lan:10054"]
    record = peers[peer_id("tcp://node3.lan:10054")]
    assert (record.name, record.endpoint, record.cluster) == ("node3.lan",
                                                              "tcp://node3.lan:10054", "blue")
    assert _started("tcp://node3.lan:10054").peers().keys() == {record.id}  # stable
    assert discovery.info() == {"name": "static", "state": "joined", "peers": 2}
    asyncio.run(discovery.stop())
    assert discovery.info()["state"] == "stopped"


@pytest.mark.parametrize("bad", ["10.0.0.2:10054", "tcp://10.0.0.2", "udp://h:1",
                                 "tcp://h:0", "tcp://h:70000", "tcp://bad host:1", ""])
def test_a_bad_peer_is_refused_naming_it_and_the_form_expected(bad):
    with pytest.raises(NodeError, match=r"--peer .*not a peer's link endpoint, tcp://HOST:PORT"):
        StaticDiscovery(SimpleNamespace(static_peers=["tcp://10.0.0.2:10054", bad]))


def test_at_most_so_many_peers():
    many = [f"tcp://10.0.{i // 256}.{i % 256}:10054" for i in range(MAX_PEERS + 1)]
    with pytest.raises(NodeError, match=f"at most {MAX_PEERS}"):
        StaticDiscovery(SimpleNamespace(static_peers=many))
    assert len(StaticDiscovery(SimpleNamespace(static_peers=many[:-1])).endpoints) == MAX_PEERS


def test_no_peer_given_is_a_node_the_others_list():
    assert _started().peers() == {}
    assert StaticDiscovery(SimpleNamespace()).endpoints == []


def test_both_discoveries_are_registered():
    registry = get_host().registry("discoveries")
    from cocaine_core.cluster.mdns import MdnsDiscovery

    assert registry.get("static", where="test") is StaticDiscovery
    # mdns is a factory that imports zeroconf only when a node uses it
    made = registry.get("mdns", where="test")(SimpleNamespace(static_peers=[]))
    assert isinstance(made, MdnsDiscovery)


def test_three_hosts_given_the_same_list_each_list_the_two_others(lan):
    hosts = [lan.add_host(f"s{i}") for i in range(3)]
    links = tuple(f"tcp://{h.address}:10054" for h in hosts)
    peers = [Peer(h, kind="static", peers=links) for h in hosts]
    for host, peer in zip(hosts, peers, strict=True):
        wait_until(lambda peer=peer: len(peer.view) == 2, timeout=10, message="two peers")
        assert sorted(peer.view.values()) == sorted(set(links) - {f"tcp://{host.address}:10054"})
    peers[0].process.terminate()
    wait_until(lambda: peers[0].stopped, timeout=10, message="the static discovery to stop")
