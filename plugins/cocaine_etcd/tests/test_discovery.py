"""The etcd discovery: nodes under leases see each other, leave at once, die within the TTL."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cocaine_etcd.discovery import (
    KEEPALIVE_EVERY,
    LEASE_TTL,
    MAX_PEERS,
    REVOKE_TIMEOUT,
    EtcdDiscovery,
)
from cocaine_etcd.storage import EtcdStorage
from cocaine_etcd.testing import EtcdCluster
from cocaine_etcd.watching import STOP_TIMEOUT

from cocaine_core.cluster.discovery import NodeRecord
from cocaine_core.errors import NodeError
from cocaine_core.storages.files import FileStorage

from .conftest import wait_until


class Nodes:
    """Discoveries of pretend nodes, each on a storage of its own (as separate nodes are)."""

    def __init__(self, cluster: EtcdCluster) -> None:
        self.cluster = cluster
        self.storages: list[EtcdStorage] = []

    def join(self, name: str) -> tuple[EtcdDiscovery, NodeRecord]:
        storage = EtcdStorage(self.cluster.uri("c"))
        self.storages.append(storage)
        discovery = EtcdDiscovery(types.SimpleNamespace(storage=storage))
        me = NodeRecord.new(name, f"tcp://127.0.0.1:{10000 + len(self.storages)}")
        asyncio.run(discovery.start(me))
        return discovery, me

    def close(self) -> None:
        for storage in self.storages:
            storage.close()


@pytest.fixture
def nodes(etcd: EtcdCluster) -> Iterator[Nodes]:
    """A factory of discoveries on the one-member ``etcd``."""
    made = Nodes(etcd)
    try:
        yield made
    finally:
        made.close()


def test_needs_an_etcd_storage(tmp_path: Path) -> None:
    node = types.SimpleNamespace(storage=FileStorage(f"files://{tmp_path}"))
    with pytest.raises(NodeError, match="--discovery etcd needs --storage etcd://"):
        EtcdDiscovery(node)


def test_nodes_see_each_other_and_a_leaving_one_goes_at_once(nodes: Nodes) -> None:
    a, me_a = nodes.join("a")
    b, me_b = nodes.join("b")
    wait_until(lambda: set(a.peers()) == {me_b.id} and set(b.peers()) == {me_a.id}, 5,
               "both nodes see each other (and not themselves)")
    assert a.peers()[me_b.id] == me_b
    info = a.info()
    assert info["discovery"] == "etcd" and info["state"] == "joined"
    assert info["peers"] == {me_b.id: {"name": "b", "endpoint": me_b.endpoint,
                                       "started": me_b.started}}
    began = time.monotonic()
    asyncio.run(b.stop())
    wait_until(lambda: a.peers() == {}, 1.0, "a dropped b at once")
    print(f"a left node dropped after {time.monotonic() - began:.2f} s")
    assert b.info()["state"] == "stopped"


def test_a_dead_node_drops_out_within_the_lease(nodes: Nodes) -> None:
    a, _ = nodes.join("a")
    _, me_b = nodes.join("b")
    wait_until(lambda: me_b.id in a.peers(), 5, "a sees b")
    began = time.monotonic()
    nodes.storages[1].close()  # b's process is gone: no revoke, no more keep-alives
    wait_until(lambda: me_b.id not in a.peers(), LEASE_TTL + 2, "b's lease expired")
    took = time.monotonic() - began
    print(f"a dead node dropped after {took:.2f} s (lease {LEASE_TTL} s)")
    assert took > 1.0  # it was the lease, not a revoke


def test_unreadable_records_are_skipped(nodes: Nodes, caplog: pytest.LogCaptureFixture) -> None:
    a, _ = nodes.join("a")
    store = nodes.storages[0]
    store.connection.call(lambda c: c.put(b"/c/nodes/bogus", b"{not json"), "test")
    b, me_b = nodes.join("b")
    wait_until(lambda: me_b.id in a.peers() and b.peers().keys() == {a.me.id}, 5,  # type: ignore[union-attr]
               "a and b see each other")
    assert "bogus" not in a.peers()
    wait_until(lambda: caplog.text.count("unreadable node record bogus") == 2, 5,
               "logged once by each node")
    store.connection.call(lambda c: c.put(b"/c/nodes/bogus", b"{still not"), "test")
    store.connection.call(lambda c: c.put(b"/c/nodes/mark", b"{"), "test")
    wait_until(lambda: caplog.text.count("unreadable node record mark") == 2, 5, "seen")
    # A record that changed (still bad) is told once more; one that did not, never again.
    wait_until(lambda: caplog.text.count("unreadable node record bogus") == 4, 5, "changed")
    c, me_c = nodes.join("c")  # a change a and b follow; the bad records stay as they are
    wait_until(lambda: me_c.id in a.peers() and me_c.id in b.peers()
               and a.me.id in c.peers(), 5, "a, b and c see each other")  # type: ignore[union-attr]
    time.sleep(0.3)
    assert caplog.text.count("unreadable node record bogus") == 5  # c's first reading only
    assert caplog.text.count("unreadable node record mark") == 3


def test_a_lost_lease_is_granted_again(nodes: Nodes) -> None:
    a, me_a = nodes.join("a")
    b, _ = nodes.join("b")
    wait_until(lambda: me_a.id in b.peers(), 5, "b sees a")
    lost = a.lease_id
    assert lost is not None
    nodes.storages[1].connection.call(lambda c: c.revoke_lease(lost), "test")  # as if expired
    wait_until(lambda: a.lease_id not in (None, lost) and me_a.id in b.peers(), LEASE_TTL,
               "a registered again under a new lease")
    assert a.info()["state"] == "joined"


def test_etcd_down_longer_than_the_lease(etcd: EtcdCluster, nodes: Nodes) -> None:
    a, me_a = nodes.join("a")
    b, me_b = nodes.join("b")
    wait_until(lambda: me_b.id in a.peers() and me_a.id in b.peers(), 5, "joined")
    etcd.stop(0)
    wait_until(lambda: a.info()["state"] == "unavailable", LEASE_TTL, "a noticed")
    assert set(a.peers()) == {me_b.id}  # the last view, kept
    time.sleep(LEASE_TTL + 1)  # the outage lasts longer than a lease
    etcd.restart(0)
    wait_until(lambda: a.info()["state"] == "joined" and b.info()["state"] == "joined",
               LEASE_TTL, "both joined again")
    wait_until(lambda: me_b.id in a.peers() and me_a.id in b.peers(), LEASE_TTL,
               "both registered again and see each other")


def test_stop_without_quorum_ends_in_bounds_and_never_raises(
        etcd3: EtcdCluster, caplog: pytest.LogCaptureFixture) -> None:
    made = Nodes(etcd3)
    try:
        a, me_a = made.join("a")
        b, _ = made.join("b")
        wait_until(lambda: me_a.id in b.peers(), 5, "b sees a")
        index, _ = made.storages[0].connection.current()
        for i in [i for i in range(3) if i != index][:2]:  # a's member is left, without quorum
            etcd3.kill(i)
        wait_until(lambda: a.info()["state"] == "unavailable", LEASE_TTL + 2, "a noticed")
        time.sleep(2 * KEEPALIVE_EVERY)  # the watch and the keep-alive retry meanwhile
        began = time.monotonic()
        asyncio.run(a.stop())  # no exception, CancelledError included
        took = time.monotonic() - began
        print(f"stop without quorum took {took:.2f} s")
        assert took < REVOKE_TIMEOUT + STOP_TIMEOUT + 1.0
        assert a.info()["state"] == "stopped"
        assert set(b.peers()) == {me_a.id}  # b keeps its last view
        assert "Traceback" not in caplog.text and "reader failed" not in caplog.text
        reads = caplog.text.count("cannot read the node records")
        assert reads <= 2, caplog.text  # one line per outage for each node at most
    finally:
        made.close()


def test_peers_are_capped(nodes: Nodes, caplog: pytest.LogCaptureFixture) -> None:
    a, _ = nodes.join("a")
    store = nodes.storages[0]
    records = [NodeRecord.new(f"n{i}", f"tcp://127.0.0.1:{20000 + i}")
               for i in range(MAX_PEERS + 5)]

    async def put_all(client: Any) -> None:
        for record in records:
            await client.put(b"/c/nodes/" + record.id.encode(), record.to_json())

    store.connection.wait(store.connection.run(put_all, "test", total=60), "test", 60)
    wait_until(lambda: len(a.peers()) == MAX_PEERS, 20, "a holds the cap")
    b, _ = nodes.join("b")  # one more change for a to follow
    wait_until(lambda: len(b.peers()) == MAX_PEERS, 20, "b holds the cap")
    time.sleep(0.5)
    assert len(a.peers()) == MAX_PEERS
    assert caplog.text.count(f"more than {MAX_PEERS} node records") == 2  # once by each node
