"""The peer table, announces' loads and the cluster key, as units."""

from __future__ import annotations

import msgpack
import pytest

from cocaine_core.cluster.discovery import NodeRecord
from cocaine_core.cluster.key import decode, encode, link_keypair, new_key
from cocaine_core.cluster.load import MAX_ANNOUNCED_APPS, check_loads
from cocaine_core.cluster.peers import FORGET, MAX_PEERS, SILENT, PeerTable
from cocaine_core.errors import NodeError


def _record(n: int) -> NodeRecord:
    return NodeRecord(id=f"{n:016x}", name=f"n{n}", endpoint=f"tcp://10.0.0.{n}:10053",
                      started=1.0, cluster="blue", link=f"tcp://10.0.0.{n}:10054")


def test_the_peer_with_the_most_free_slots_is_picked_and_forwards_count_against_it():
    table = PeerTable(me="f" * 16)
    one, two = _record(1), _record(2)
    table.heard(one, 1, {"app": (3, 0, "r")}, False, now=0)
    table.heard(two, 1, {"app": (2, 0, "r")}, False, now=0)
    picked = table.pick("app", now=0.1)
    assert picked is not None and picked.record == one
    table.sent(picked, "app")
    table.sent(picked, "app")  # one now has 1 free, two has 2
    second = table.pick("app", now=0.1)
    assert second is not None and second.record == two
    assert table.pick("other", now=0.1) is None
    table.ended(picked, "app")
    assert table.peers[one.id].free("app") == 2


def test_an_announce_counts_the_forwards_it_already_saw():
    table = PeerTable(me="f" * 16)
    peer = table.heard(_record(1), 1, {"app": (2, 0, "r")}, False, now=0)
    assert peer is not None
    table.sent(peer, "app")
    table.sent(peer, "app")
    assert peer.free("app") == 0
    table.heard(_record(1), 2, {"app": (0, 0, "r")}, False, now=0.1)  # it counted them
    assert peer.free("app") == 0
    table.ended(peer, "app")  # one of them ended since: a slot is free again
    assert peer.free("app") == 1


def test_silent_leaving_stale_and_self_are_not_picked():
    table = PeerTable(me=_record(9).id)
    assert table.heard(_record(9), 1, {"app": (5, 0, "r")}, False, now=0) is None
    table.heard(_record(1), 5, {"app": (5, 0, "r")}, False, now=0)
    table.heard(_record(1), 4, {"app": (0, 0, "r")}, False, now=0.1)  # older: ignored
    assert table.peers[_record(1).id].free("app") == 5
    assert table.pick("app", now=SILENT + 0.1) is None  # silent
    later = SILENT + 0.2
    table.heard(_record(2), 1, {"app": (5, 0, "r")}, True, now=later)  # leaving
    table.heard(_record(3), 1, {"app": (5, 0, "b")}, False, now=later)  # broken there
    assert table.pick("app", now=later + 0.1) is None
    assert [p.record.id for p in table.forget(now=FORGET + 0.5)] == [_record(1).id]


def test_the_table_is_bounded():
    table = PeerTable(me="f" * 16)
    for n in range(MAX_PEERS + 5):
        record = NodeRecord(id=f"{n + 1:016x}", name="n", endpoint="tcp://h:1", started=1.0)
        table.heard(record, 1, {}, False, now=0)
    assert len(table.peers) == MAX_PEERS and table.dropped == 5


@pytest.mark.parametrize("loads", [
    [], {"a": [1, 2]}, {"a": [1, 2, "?"]}, {"a": [-1, 0, "r"]}, {"a": [True, 0, "r"]},
    {"": [1, 0, "r"]}, {"a": [10**10, 0, "r"]}, {f"a{i}": [0, 0, "r"]
                                                 for i in range(MAX_ANNOUNCED_APPS + 1)},
])
def test_loads_no_node_would_announce_are_refused(loads):
    assert check_loads(loads) is None


def test_the_link_key_pair_depends_on_the_key_and_the_cluster_name():
    key = new_key()
    assert decode(encode(key), "x") == key
    assert link_keypair(key, "blue") == link_keypair(key, "blue")
    assert link_keypair(key, "blue") != link_keypair(key, "green")
    assert link_keypair(new_key(), "blue") != link_keypair(key, "blue")
    with pytest.raises(NodeError, match="not a cluster key"):
        decode(b"cocaine-cluster-key-v1 c2hvcnQ=\n", "the file k")


def test_a_live_peer_cannot_be_taken_over_and_a_restarted_one_replaces_its_old_entry():
    table = PeerTable(me="f" * 16)
    b = _record(2)
    table.heard(b, 1, {"app": (1, 0, "r")}, False, now=0, via=b"b-conn")
    hostile = table.heard(b, 2**62, {"app": (9, 0, "r")}, False, now=0.5, via=b"other")
    assert hostile is None  # another connection claiming b's id while b is live
    assert table.heard(b, 2, {"app": (2, 0, "r")}, False, now=1, via=b"b-conn") is not None
    assert table.peers[b.id].free("app") == 2
    restarted = NodeRecord(id="e" * 16, name="n2", endpoint=b.endpoint, started=2.0,
                           cluster="blue", link=b.link)
    table.heard(restarted, 1, {"app": (3, 0, "r")}, False, now=1.5, via=b"b-conn")
    assert list(table.peers) == [restarted.id]  # the same link, a new node: the old is gone


def test_a_peer_reconnected_over_a_new_connection_is_heard_at_once():
    table = PeerTable(me="f" * 16)
    b = _record(2)
    table.heard(b, 1, {"app": (1, 0, "r")}, False, now=0, via=b"first")
    assert table.heard(b, 2, {}, False, now=0.2, via=b"second") is None  # still pinned
    table.release(b"first")  # the link endpoint saw that connection drop
    assert table.heard(b, 3, {}, False, now=0.3, via=b"second") is not None
    assert table.peers[b.id].via == b"second"


class _Link:
    """A stand-in for a PeerLink (a unit test of the forwarder alone)."""

    def __init__(self) -> None:
        self.up, self.sent = True, []

    def send(self, frames):
        self.sent.append(frames)
        return True


class _Sink:
    def __init__(self, client: bytes, request_id: int) -> None:
        self.envelope, self.request_id, self.errors = [client], request_id, []

    @property
    def key(self):
        return self.envelope[0], self.request_id

    def error(self, code, message):
        self.errors.append(code)


def _forwarder():
    from cocaine_core.cluster.forward import Forwarder

    table = PeerTable(me="f" * 16)
    table.heard(_record(1), 1, {"app": (100, 0, "r")}, False, via=b"x")
    link = _Link()
    return Forwarder(table, lambda peer: link, lambda *args: None), link


def test_a_forward_with_only_a_timeout_is_given_up_on_and_cancelled_at_the_peer():
    import time

    from cocaine_core.cluster.forward import GIVE_UP_GRACE, QUEUE_ALLOWANCE
    from cocaine_core.policy import Policy
    from cocaine_core.protocol import Code

    forwarder, link = _forwarder()
    sink = _Sink(b"client", 1)
    assert forwarder.forward(sink, "app", "event", Policy(timeout=1.0), b"")
    forwarder.expire(time.monotonic() + 1.0 + GIVE_UP_GRACE)  # it may still wait its turn
    assert sink.errors == [] and forwarder.forwards
    forwarder.expire(time.monotonic() + QUEUE_ALLOWANCE + 1.0 + GIVE_UP_GRACE + 1)
    assert sink.errors == [504] and not forwarder.forwards
    assert msgpack.unpackb(link.sent[-1][0])[0] == Code.CANCEL


def test_a_client_that_leaves_has_every_forward_cancelled_even_with_reused_ids():
    from cocaine_core.policy import Policy

    forwarder, link = _forwarder()
    assert link.up
    for _ in range(2):  # the same request id twice, both forwarded
        assert forwarder.forward(_Sink(b"client", 7), "app", "event", Policy(), b"")
    assert forwarder.forward(_Sink(b"other", 7), "app", "event", Policy(), b"")
    assert forwarder.drop_client(b"client") == 2
    assert len(forwarder.forwards) == 1
