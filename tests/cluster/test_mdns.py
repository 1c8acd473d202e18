"""The ``mdns`` discovery across real hosts: each discovery runs in its own network namespace
(``mdns_peer.py``) on a bridge, so multicast DNS crosses real interfaces."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from cocaine_core.cluster.discovery import NodeRecord
from cocaine_core.cluster.mdns import MdnsDiscovery
from cocaine_core.errors import NodeError
from cocaine_core.testing import wait_until

HERE = Path(__file__).parent
CLUSTER = "blue"
#: The records' TTL in these tests' peers (mdns.TTL is 15 s): the waits for a peer to drop
#: out are a few seconds, not twenty.
TTL = 6


class Peer:
    """An ``mdns_peer.py`` in a host: its id and its latest view of the others."""

    def __init__(self, host, kind: str = "mdns", cluster: str = CLUSTER,
                 peers: tuple[str, ...] = ()) -> None:
        self.host = host
        self.process = host.popen([sys.executable, str(HERE / "mdns_peer.py"), kind, cluster,
                                   host.address, *peers], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "COCAINE_TEST_MDNS_TTL": str(TTL)})
        first = json.loads(self.process.stdout.readline() or '{"error": "exited"}')
        assert "id" in first, first
        self.id: str = first["id"]
        self.view: dict[str, str] = {}
        self.most = 0
        self.stopped = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            message = json.loads(line)
            if "peers" in message:
                self.view = message["peers"]
                self.most = max(self.most, len(self.view))
            self.stopped = self.stopped or bool(message.get("stopped"))

    def sees(self, *others: Peer) -> bool:
        return set(self.view) == {o.id for o in others}


def _peers(lan, n: int, **kw) -> list[Peer]:
    return [Peer(lan.add_host(f"h{i}"), **kw) for i in range(n)]


def test_three_nodes_find_each_other_with_no_configuration(lan):
    a, b, c = _peers(lan, 3)
    started = time.monotonic()
    wait_until(lambda: a.sees(b, c) and b.sees(a, c) and c.sees(a, b), timeout=10,
               message="each discovery to list the two others")
    found = time.monotonic() - started
    assert a.view[b.id] == f"tcp://{b.host.address}:10054"  # the peer's link
    print(f"three peers found each other {found:.2f} s after the last started")


def test_a_stopped_node_says_goodbye_and_drops_out_at_once(lan):
    a, b, c = _peers(lan, 3)
    wait_until(lambda: a.sees(b, c) and b.sees(a, c), timeout=10, message="all to be found")
    c.process.terminate()
    gone = time.monotonic()
    wait_until(lambda: a.sees(b) and b.sees(a), timeout=3,
               message="the stopped node to drop out on its goodbye")
    print(f"a stopped node dropped out {time.monotonic() - gone:.2f} s after SIGTERM")
    wait_until(lambda: c.stopped, timeout=5, message="the node to finish stopping")


def test_a_killed_node_drops_out_within_its_ttl(lan):
    a, b, c = _peers(lan, 3)
    wait_until(lambda: a.sees(b, c) and b.sees(a, c), timeout=10, message="all to be found")
    c.process.kill()
    gone = time.monotonic()
    wait_until(lambda: a.sees(b) and b.sees(a), timeout=TTL + 3,
               message=f"the killed node to drop out within its TTL ({TTL} s)")
    print(f"a killed node stayed listed {time.monotonic() - gone:.2f} s")
    assert a.sees(b)


def test_a_cut_node_drops_out_and_comes_back_once_restored(lan):
    a, b = _peers(lan, 2)
    wait_until(lambda: a.sees(b) and b.sees(a), timeout=10, message="both to be found")
    b.host.cut()
    wait_until(lambda: a.sees(), timeout=TTL + 3, message="the cut node to drop out")
    b.host.restore()
    wait_until(lambda: a.sees(b) and b.sees(a), timeout=TTL + 3,
               message="the restored node to be listed again")


def test_records_of_another_cluster_and_malformed_ones_are_ignored(lan):
    a, b = _peers(lan, 2)
    evil = lan.add_host("evil")
    hostile = [evil.popen([sys.executable, str(HERE / "mdns_hostile.py"), mode, CLUSTER,
                           evil.address], stdout=subprocess.PIPE, text=True)
               for mode in ("other", "malformed")]
    for process in hostile:
        assert process.stdout.readline().strip() == "ready"
    other = Peer(lan.add_host("other"), cluster="green")
    wait_until(lambda: a.sees(b) and b.sees(a), timeout=10, message="both to be found")
    # Several announce rounds of the hostile ones (every 2 s) and of the other cluster:
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert a.sees(b) and b.sees(a), (a.view, b.view)
        time.sleep(0.1)
    assert other.sees()  # nor does the other cluster see ours
    for process in hostile:
        process.terminate()
    a.process.terminate()
    a.process.wait(timeout=10)
    # One line for the hostile sender in the minute, however many bad records it sent:
    skipped = [line for line in a.process.stderr.read().splitlines() if "mdns skips" in line]
    assert len(skipped) == 1, skipped


def test_a_flood_of_names_leaves_the_peers_bounded(lan):
    a, b = _peers(lan, 2)
    wait_until(lambda: a.sees(b) and b.sees(a), timeout=10, message="both to be found")
    evil = lan.add_host("evil")
    flood = evil.popen([sys.executable, str(HERE / "mdns_hostile.py"), "flood", CLUSTER,
                        evil.address, "2000"], stdout=subprocess.PIPE, text=True)
    assert flood.stdout.readline().strip() == "ready"
    wait_until(lambda: len(a.view) >= 1000, timeout=30, message="the flood to arrive")
    deadline = time.monotonic() + TTL + 2  # past the TTL of b's records held before
    while time.monotonic() < deadline:
        assert b.id in a.view and a.id in b.view, "a peer found before the flood was lost"
        time.sleep(0.2)
    assert a.most <= 1024 and b.most <= 1024, (a.most, b.most)
    assert a.process.poll() is None and b.process.poll() is None
    flood.terminate()


def test_start_refuses_a_loopback_link_saying_what_to_do():
    me = NodeRecord.new("n", "tcp://127.0.0.1:10053", cluster=CLUSTER,
                        link="tcp://127.0.0.1:10054")
    with pytest.raises(NodeError, match=r"loopback.*--cluster-listen"):
        asyncio.run(MdnsDiscovery(SimpleNamespace()).start(me))


def test_start_refuses_an_interface_without_multicast(lan):
    host = lan.add_host("nomc")
    from cocaine_core.testing_netns import ip

    ip("link", "set", "eth0", "multicast", "off", netns=host.netns)
    process = host.popen([sys.executable, str(HERE / "mdns_peer.py"), "mdns", CLUSTER,
                          host.address], stdout=subprocess.PIPE, text=True)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "interface eth0" in out and "multicast on" in out, out


def test_a_wildcard_link_is_announced_at_the_hosts_lan_address(lan):
    a = Peer(lan.add_host("a"))
    host = lan.add_host("wild")
    process = host.popen([sys.executable, str(HERE / "mdns_peer.py"), "mdns", CLUSTER,
                          "0.0.0.0"], stdout=subprocess.PIPE, text=True)
    first = json.loads(process.stdout.readline())
    assert first["info"]["addresses"] == [host.address]  # not loopback
    wait_until(lambda: first["id"] in a.view, timeout=10, message="the wildcard node found")
    assert a.view[first["id"]] == f"tcp://{host.address}:10054"
