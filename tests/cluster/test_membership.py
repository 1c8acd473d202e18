"""Who is a member: the cluster key, strangers on the LAN, and discovery with no configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from cocaine_core.cluster.key import read_key_file
from cocaine_core.protocol import Code
from cocaine_core.testing import wait_until
from tests.cluster.cluster_kit import (
    cluster_info,
    cluster_view,
    deploy,
    key_file,
    start_nodes,
    wait_peered,
)

COCAINE = str(Path(sys.executable).with_name("cocaine"))


def _cocaine(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COCAINE, *args], capture_output=True, text=True, timeout=60)


def test_cluster_key_writes_a_private_key_and_never_overwrites_one(tmp_path):
    path = tmp_path / "k"
    made = _cocaine("cluster", "key", str(path))
    assert made.returncode == 0, made.stderr
    assert os.stat(path).st_mode & 0o777 == 0o600
    key = read_key_file(path)
    again = _cocaine("cluster", "key", str(path))
    assert again.returncode != 0 and "exists" in again.stderr + again.stdout
    assert read_key_file(path) == key
    assert _cocaine("cluster", "key", str(path), "--force").returncode == 0
    assert read_key_file(path) != key


@pytest.mark.parametrize("problem", ["missing", "readable", "garbage"])
def test_a_node_asked_to_join_without_a_usable_key_refuses_to_start(tmp_path, problem):
    args = ["node", "--listen", "tcp://127.0.0.1:0", "--storage", f"files://{tmp_path / 's'}",
            "--run-dir", str(tmp_path / "run"), "--cluster", "blue"]
    if problem != "missing":
        path = key_file(tmp_path)
        if problem == "readable":
            path.chmod(0o644)
        else:
            path.write_text("not a key\n")
        args += ["--cluster-key", str(path)]
    result = _cocaine(*args)
    said = result.stdout + result.stderr
    assert result.returncode != 0
    expected = {"missing": "cocaine cluster key FILE", "readable": "chmod 600",
                "garbage": "is not a cluster key"}[problem]
    assert expected in said, said


def test_cluster_settings_without_cluster_are_refused(tmp_path):
    base = ["node", "--listen", "tcp://127.0.0.1:0", "--storage", f"files://{tmp_path / 's'}",
            "--run-dir", str(tmp_path / "run")]
    result = _cocaine(*base, "--peer", "tcp://10.0.0.2:10054")
    assert result.returncode != 0 and "needs --cluster NAME" in result.stdout + result.stderr
    result = _cocaine(*base, "--cluster", "no spaces", "--cluster-key", str(key_file(tmp_path)))
    assert result.returncode != 0 and "a cluster's name is" in result.stdout + result.stderr


def test_three_nodes_find_each_other_with_no_configuration(lan, tmp_path):
    nodes = start_nodes(lan, tmp_path, ["a", "b", "c"], static=False)  # mDNS: no --peer
    started = time.monotonic()
    wait_peered(nodes, timeout=30)
    found = time.monotonic() - started
    assert found < 20, f"the nodes took {found:.1f} s to find each other"
    view = json.loads(nodes[0][1].cli("cluster", "nodes", "--json").stdout)  # the command's
    assert sorted(n["endpoint"] for n in view["nodes"]) == sorted(n.endpoint for _, n in nodes)
    assert view["cluster"] == cluster_view(nodes[0][1])["cluster"] == "blue"
    text = nodes[0][1].cli("cluster", "nodes").stdout.decode()
    assert "cluster blue: 3 node(s)" in text and "(this node)" in text
    assert all(node.endpoint in text for _, node in nodes)
    info = nodes[0][1].cli("info").stdout.decode()  # the text view of a cluster's node
    assert "discovery mdns · joined · 2 peers" in info and "cluster blue · link" in info


def test_a_stranger_on_the_lan_neither_joins_nor_injects(lan, tmp_path):
    nodes = start_nodes(lan, tmp_path, ["a", "b"])
    deploy(nodes, tmp_path, {"pool-limit": 1})
    wait_peered(nodes, app="where")
    (host_a, a), (host_b, _) = nodes
    # A node of the same cluster name, with another key, that lists a as its peer.
    other_key = tmp_path / "other"
    other_key.mkdir()
    host_s = lan.add_host("s")
    stranger = host_s.node(tmp_path / "s", "--cluster", "blue", "--cluster-key",
                           str(key_file(other_key)), "--peer",
                           f"tcp://{host_a.address}:10054").start(timeout=60)
    deploy([(host_s, stranger)], tmp_path, {"pool-limit": 8})
    # A raw client, with no key at all, at a's link: an announce and a request.
    link = f"tcp://{host_a.address}:10054"
    context = zmq.Context.instance()
    raw = context.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(link)
    forged = {"id": "ab" * 8, "name": "evil", "endpoint": f"tcp://{host_s.address}:10053",
              "started": time.time(), "cluster": "blue", "link": f"tcp://{host_s.address}:10054"}
    raw.send_multipart([msgpack.packb([20, 1, forged, {"where": [1000, 0, "r"]}, False])])
    raw.send_multipart([msgpack.packb([Code.REQUEST, 1, "where", "where", {}]),
                        f"{lan.gateway} 0".encode()])
    try:
        wait_until(lambda: cluster_info(a)["refused"] >= 2, timeout=20,
                   message="a to refuse the stranger's and the raw client's handshakes")
        assert not raw.poll(1000), "a answered a client without the cluster key"
    finally:
        raw.close(linger=0)
    for node in (a, nodes[1][1]):
        names = [n["endpoint"] for n in cluster_view(node)["nodes"]]
        assert stranger.endpoint not in names and "evil" not in json.dumps(names)
    assert [n["endpoint"] for n in cluster_view(stranger)["nodes"]] == [stranger.endpoint]
    # a's requests never go to the stranger, however much room it claims.
    with a.client() as client:
        served = {client.call("where", "where", f"{lan.gateway} 0".encode()).decode()
                  for _ in range(10)}
    assert served <= {host_a.address, host_b.address}
