"""What strangers and hostile members were found to do to a cluster, each now bounded."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from cocaine_core.cluster.key import link_keypair, read_key_file, write_key_file
from cocaine_core.cluster.links import MAX_CANDIDATES_PER_HOST
from cocaine_core.errors import NodeError, ServiceError
from cocaine_core.testing import free_port, wait_until, write_app
from tests.cluster.cluster_kit import (
    WHERE_APP,
    Load,
    cluster_view,
    key_file,
    start_nodes,
    wait_peered,
)

HOSTILE = str(Path(__file__).with_name("mdns_hostile.py"))


def test_a_flood_of_mdns_candidates_costs_a_bounded_number_of_links(lan, tmp_path):
    nodes = start_nodes(lan, tmp_path, ["a", "b"], static=False)
    wait_peered(nodes)
    host_s = lan.add_host("s")
    flood = host_s.popen([sys.executable, HOSTILE, "flood", "blue", host_s.address, "400"],
                         stdout=subprocess.PIPE, text=True)
    assert flood.stdout is not None and flood.stdout.readline().strip() == "ready"
    a = nodes[0][1]

    def links() -> list[dict[str, object]]:
        return list(cluster_view(a)["links"])

    wait_until(lambda: len(links()) > 2, timeout=30, message="a to try the flood's links")
    time.sleep(3)  # let it try more: it must stay within its budget
    unproven = [link for link in links() if not link["proven"]]
    assert len(unproven) <= MAX_CANDIDATES_PER_HOST  # the flood comes from one host
    view = cluster_view(a)
    assert [n["state"] for n in view["nodes"]] == ["up", "up"]  # b is still a peer
    # A node that joins during the flood is found all the same.
    host_c = lan.add_host("c")
    c = host_c.node(tmp_path / "c", "--cluster", "blue", "--cluster-key",
                    str(tmp_path / "cluster.key")).start(timeout=60)
    wait_until(lambda: c.endpoint in [n["endpoint"] for n in cluster_view(a)["nodes"]
                                      if n["state"] == "up"], timeout=30,
               message="a to find c, which joined during the flood")
    log = a.log.read_text()
    assert "Too many open files" not in log
    assert log.count("cannot link") <= 1


def test_a_link_port_drops_connections_that_never_finish_their_handshake(tmp_path,
                                                                         node_process):
    link = free_port()
    node = node_process("--cluster", "blue", "--cluster-key", str(key_file(tmp_path)),
                        "--cluster-listen", f"tcp://127.0.0.1:{link}", "--discovery", "static")
    held = [socket.create_connection(("127.0.0.1", link), timeout=10) for _ in range(20)]
    try:
        started = time.monotonic()
        for conn in held:
            conn.settimeout(15)
            try:
                assert conn.recv(4096) is not None  # the greeting, then the close
                while conn.recv(4096):
                    pass
            except ConnectionResetError:
                pass
        assert time.monotonic() - started < 12
    finally:
        for conn in held:
            conn.close()
    assert node.answer("nothing", "here") is None  # still answers (a 404)


def test_a_member_that_never_answers_gets_a_504_at_the_deadline_and_timeout(tmp_path,
                                                                           node_process):
    key = key_file(tmp_path)
    public, secret = link_keypair(read_key_file(key), "blue")
    context = zmq.Context.instance()
    fake_link = free_port()
    server = context.socket(zmq.ROUTER)  # the black hole's link: takes, never answers
    server.setsockopt(zmq.LINGER, 0)
    server.curve_server, server.curve_publickey, server.curve_secretkey = 1, public, secret
    server.bind(f"tcp://127.0.0.1:{fake_link}")
    a_link = free_port()
    a = node_process("--cluster", "blue", "--cluster-key", str(key), "--cluster-listen",
                     f"tcp://127.0.0.1:{a_link}", "--peer", f"tcp://127.0.0.1:{fake_link}")
    dealer = context.socket(zmq.DEALER)  # its announces: lots of room for "where"
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.curve_serverkey, dealer.curve_publickey, dealer.curve_secretkey = \
        public, public, secret
    dealer.connect(f"tcp://127.0.0.1:{a_link}")
    record = {"id": "b1" * 8, "name": "hole", "endpoint": f"tcp://127.0.0.1:{fake_link - 1}",
              "started": time.time(), "cluster": "blue", "link": f"tcp://127.0.0.1:{fake_link}"}
    stop = threading.Event()

    def announce() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            dealer.send_multipart([msgpack.packb([20, seq, record, {"where": [1000, 0, "r"]},
                                                  False])])
            stop.wait(0.1)

    announcer = threading.Thread(target=announce)
    announcer.start()
    try:
        wait_until(lambda: [n["state"] for n in cluster_view(a)["nodes"]] == ["up", "up"],
                   timeout=20, message="a to hear the black hole")
        started = time.monotonic()
        with pytest.raises(ServiceError) as failed, a.client(wait=30) as client:
            client.call("where", "where", b"", timeout=1, deadline=1)
        assert failed.value.code == 504, failed.value
        assert time.monotonic() - started < 12
        assert server.poll(1000)  # the request (and then its cancel) reached the hole
    finally:
        stop.set()
        announcer.join()
        dealer.close(linger=0)
        server.close(linger=0)


@pytest.mark.parametrize("kind", ["fifo", "device", "symlink"])
def test_cluster_key_files_that_are_not_plain_files_are_refused_at_once(tmp_path, kind):
    path = tmp_path / "k"
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "device":
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a copy of /dev/null
    else:
        write_key_file(tmp_path / "real")
        path.symlink_to(tmp_path / "real")
    with pytest.raises(NodeError) as wrote:
        write_key_file(path, force=True)
    assert "not a regular file" in str(wrote.value)
    with pytest.raises(NodeError) as read:
        read_key_file(path)
    assert ("symbolic link" if kind == "symlink" else "not a regular file") in str(read.value)


def test_a_key_file_of_another_user_is_refused(tmp_path):
    path = tmp_path / "k"
    write_key_file(path)
    os.chown(path, 65534, 65534)
    with pytest.raises(NodeError, match="belongs to another user"):
        read_key_file(path)


def test_bad_cluster_settings_are_one_clear_error_without_a_traceback(tmp_path):
    key = key_file(tmp_path)
    cocaine = str(Path(sys.executable).with_name("cocaine"))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        for extra, said in ((["--cluster-listen", "tcp://nohost:abc"], "--cluster-listen"),
                            (["--cluster-listen", f"tcp://127.0.0.1:{port}"],
                             "cannot listen")):
            result = subprocess.run(
                [cocaine, "node", "--listen", f"tcp://127.0.0.1:{free_port()}", "--storage",
                 f"files://{tmp_path / 's'}", "--run-dir", str(tmp_path / "run"),
                 "--cluster", "blue", "--cluster-key", str(key), "--discovery", "static",
                 *extra], capture_output=True, text=True, timeout=60)
            output = result.stdout + result.stderr
            assert result.returncode != 0 and said in output, output
            assert "Traceback" not in output and "AssertionError" not in output, output
    finally:
        taken.close()


def test_a_node_whose_slaves_keep_crashing_takes_no_forwarded_requests(lan, tmp_path):
    nodes = start_nodes(lan, tmp_path, ["a", "b"])
    (host_a, a), (_, b) = nodes
    good = write_app(tmp_path / "good", WHERE_APP, {"where": {"type": "native-server"}},
                     engine={"pool-limit": 1, "queue-limit": 100})
    bad = write_app(tmp_path / "bad", "import os\n\ndef where(request):\n    os._exit(3)\n",
                    {"where": {"type": "native-server"}}, engine={"pool-limit": 2})
    a.cli("app", "deploy", str(good), "--name", "where")
    b.cli("app", "deploy", str(bad), "--name", "where")
    wait_until(lambda: len(cluster_view(a)["nodes"]) == 2, timeout=20, message="a and b")
    with Load(a.endpoint, f"{lan.gateway} 0.05".encode(), threads=4) as first:
        time.sleep(2)  # b's copy crashes on the first requests it gets...
    assert len(first.errors) <= 8, first.errors
    with Load(a.endpoint, f"{lan.gateway} 0.05".encode(), threads=4) as load:
        time.sleep(6)  # ...and then gets no more
    view = cluster_view(a)
    b_apps = [n["apps"] for n in view["nodes"] if n["endpoint"] == b.endpoint]
    assert b_apps and b_apps[0]["where"]["free"] == 0, json.dumps(view)
    assert set(load.served) == {host_a.address}
    assert sum(load.served.values()) > 20 and not load.errors, load.errors
