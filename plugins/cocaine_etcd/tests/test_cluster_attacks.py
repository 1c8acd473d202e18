"""What an attacker (or a careless operator) can do to nodes sharing one etcd store, and what
stops it: requests signed by unknown keys, a request replayed to another node, records in the
store that no node wrote, clusters nested in each other's prefix."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from cocaine_etcd.storage import EtcdStorage
from cocaine_etcd.testing import EtcdCluster

from cocaine_core import protocol
from cocaine_core.client import Client
from cocaine_core.errors import ServiceError, StorageError
from cocaine_core.protocol import CONTROL_APP, Code
from cocaine_core.testing import NodeProcess, wait_until, write_app
from cocaine_core.trust.keys import Signer, default_key_path, generate

ECHO = "def echo(request):\n    return b'v1|' + request.data\n"
TASKS = {"echo": {"type": "native-server"}}


def answer(node: NodeProcess, app: str = "hello") -> bytes | None:
    """What ``app`` on ``node`` answers to ``echo hi``, or None if it does not serve it."""
    return node.answer(app, "echo", b"hi")


def apps_of(node: NodeProcess) -> list[str]:
    """The apps ``node`` runs."""
    return node.apps()


def test_a_flood_signed_by_unknown_keys_is_refused_at_once_and_holds_nothing(
        etcd: EtcdCluster, node_process: Any, tmp_path: Path) -> None:
    node = node_process(storage_uri=etcd.uri("cocaine"))
    node.cli("app", "deploy", str(write_app(tmp_path / "hello", ECHO, TASKS)))
    # The node holds every key in memory: an unknown one is refused without asking etcd,
    # even while etcd is away (a lookup per request would be a 503 here, and a flood of them
    # a queue of threads).
    etcd.kill(0)
    strangers = [generate(tmp_path / f"k{i}" / "id", comment="x") for i in range(4)]
    body = msgpack.packb({}, use_bin_type=True)
    count = 3000
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(node.endpoint)
    try:
        started = time.monotonic()
        for i in range(count):
            # A well-formed signature by a key the node never saw (a fresh fingerprint each
            # time: nothing any cache could hold).
            auth = strangers[i % len(strangers)].sign("list", body)
            auth["key"] = "SHA256:" + hashlib.sha256(os.urandom(8)).digest().hex()[:43]
            sock.send_multipart([protocol.pack(Code.REQUEST, i, CONTROL_APP, "list",
                                               {"auth": auth}), body])
        refused = 0
        while refused < count and sock.poll(20_000):
            fields = protocol.unpack(sock.recv_multipart()[0])
            assert fields[0] == Code.ERROR and fields[2] == 401, fields
            refused += 1
        took = time.monotonic() - started
    finally:
        sock.close()
    print(f"{count} requests by unknown keys refused in {took:.2f} s")
    assert refused == count
    # The owner is served at once, and the apps never noticed.
    with Client(node.endpoint, wait=10) as client:
        assert client.control("list") == ["hello"]
    assert answer(node) == b"v1|hi"


def test_a_deploy_replayed_to_another_node_of_the_cluster_is_refused(
        etcd: EtcdCluster, node_process: Any, tmp_path: Path) -> None:
    a = node_process(storage_uri=etcd.uri("cocaine"), folder=tmp_path / "a")
    b = node_process(storage_uri=etcd.uri("cocaine"), folder=tmp_path / "b")
    a.cli("app", "deploy", str(write_app(tmp_path / "v1" / "hello", ECHO, TASKS)))
    owner = Signer.load(default_key_path())
    body = msgpack.packb({"name": "hello"}, use_bin_type=True)
    frames = [protocol.pack(Code.REQUEST, 1, CONTROL_APP, "remove",
                            {"auth": owner.sign("remove", body)}), body]
    with zmq.Context.instance().socket(zmq.DEALER) as sock:  # the original, to A
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(a.endpoint)
        sock.send_multipart(frames)
        assert sock.poll(30_000)
        assert protocol.unpack(sock.recv_multipart()[0])[0] == Code.CHUNK
    a.cli("app", "deploy", str(write_app(tmp_path / "v2" / "hello", ECHO, TASKS)))
    wait_until(lambda: answer(b) == b"v1|hi", timeout=30, message="B to run the redeploy")
    with zmq.Context.instance().socket(zmq.DEALER) as sock:  # captured, replayed to B
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(b.endpoint)
        sock.send_multipart(frames)
        assert sock.poll(30_000)
        fields = protocol.unpack(sock.recv_multipart()[0])
    assert fields[0] == Code.ERROR and fields[2] == 401, fields
    assert "another node" in fields[3]
    assert apps_of(a) == ["hello"] and apps_of(b) == ["hello"]


def test_records_no_node_wrote_are_skipped_with_one_line_and_the_rest_is_followed(
        etcd: EtcdCluster, node_process: Any, tmp_path: Path) -> None:
    uri = etcd.uri("cocaine")
    a = node_process(storage_uri=uri, folder=tmp_path / "a")
    b = node_process(storage_uri=uri, folder=tmp_path / "b")
    a.cli("app", "deploy", str(write_app(tmp_path / "hello", ECHO, TASKS)))
    wait_until(lambda: answer(b) == b"v1|hi", timeout=30, message="B to run hello")
    storage = EtcdStorage(uri)
    try:
        good = json.loads(storage.get("apps", "hello"))
        hostile = {
            "typed": {**good, "name": "typed", "sha256": 12, "version": "2"},
            "evil": {**good},  # hello's record under another name
            "dots": {**good, "name": "../../x"},
            "junk": "not a record",
        }
        for name, value in hostile.items():
            storage.put("apps", name, json.dumps(value).encode())
        index = {"format": 1, "sha256": "0" * 64, "size": 300 * 2**20,
                 "chunks": ["0" * 64] * 300}  # 300 MiB of one chunk: never read
        storage.put("apps", "huge", json.dumps({**good, "name": "huge",
                                                "sha256": "1" * 64}).encode())
        storage.connection.call(lambda c: c.put(b"/cocaine/code/huge@" + b"1" * 16,
                                                json.dumps(index).encode()), "test")
        for i in range(20):  # churn: each change makes every node read the store again
            storage.put("apps", "junk", json.dumps(f"not a record {i}").encode())
        a.cli("app", "deploy", str(write_app(tmp_path / "other", ECHO, TASKS)), "--name",
              "other")
        wait_until(lambda: answer(b, "other") == b"v1|hi", timeout=30,
                   message="B to follow a deploy made after the hostile records")
    finally:
        storage.close()
    for node in (a, b):
        assert apps_of(node) == ["hello", "other"]
        log = node.log.read_text()
        assert log.count("'typed'") <= 2 and log.count("'evil'") <= 2, log
        assert log.count("'junk'") <= 25, log  # once per value, not once per change
        assert "Traceback" not in log
    assert b.stop() == 0
    b.start()  # a node starts, and runs what is whole, with the hostile records there
    assert apps_of(b) == ["hello", "other"]


def test_a_prefix_inside_another_cluster_s_folders_is_refused(etcd: EtcdCluster) -> None:
    for nested in ("cocaine/chunks", "a/apps", "prod/cocaine/keys/x"):
        with pytest.raises(StorageError, match="choose another name"):
            EtcdStorage(etcd.uri(nested))
    EtcdStorage(etcd.uri("prod/cocaine")).close()  # an ordinary nested name is fine


def test_a_node_record_no_node_wrote_is_never_a_peer(etcd: EtcdCluster,
                                                     node_process: Any) -> None:
    a = node_process("--discovery", "etcd", storage_uri=etcd.uri("cocaine"))
    storage = EtcdStorage(etcd.uri("cocaine"))
    try:
        bad = [{"id": "0123456789abcdef", "name": "x", "endpoint": "ipc:///etc/passwd",
                "started": 1.0},
               {"id": "0123456789abcdee", "name": "x", "endpoint": "tcp://h:1",
                "started": "nan"}]
        for record in bad:
            storage.connection.call(lambda c, r=record: c.put(
                b"/cocaine/nodes/" + r["id"].encode(), json.dumps(r).encode()), "test")
        good = {"id": "0123456789abcded", "name": "y", "endpoint": "tcp://127.0.0.1:1",
                "started": time.time()}
        storage.connection.call(lambda c: c.put(b"/cocaine/nodes/" + good["id"].encode(),
                                                json.dumps(good).encode()), "test")

        def peers() -> dict[str, Any]:
            with Client(a.endpoint, wait=10) as client:
                return dict(client.control("info")["discovery"]["peers"])
        wait_until(lambda: good["id"] in peers(), timeout=20, message="the good record")
        assert set(peers()) == {good["id"]}
    finally:
        storage.close()


def test_unknown_keys_flooding_from_many_threads_leave_the_owner_served(
        etcd: EtcdCluster, node_process: Any, tmp_path: Path) -> None:
    node = node_process(storage_uri=etcd.uri("cocaine"))
    stop = threading.Event()
    stranger = generate(tmp_path / "stranger" / "id", comment="x")

    def flood() -> None:
        with Client(node.endpoint, wait=10, key=stranger) as client:
            while not stop.is_set():
                with pytest.raises(ServiceError):
                    client.control("list")

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        worst = 0.0
        for _ in range(20):
            began = time.monotonic()
            with Client(node.endpoint, wait=10) as client:
                client.control("list")
            worst = max(worst, time.monotonic() - began)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    print(f"the owner's control request during the flood: worst {worst * 1000:.0f} ms")
    assert worst < 5


def test_values_nested_past_python_s_limit_are_damaged_values_not_crashes(
        etcd: EtcdCluster, node_process: Any, tmp_path: Path) -> None:
    uri = etcd.uri("cocaine")
    a = node_process(storage_uri=uri, folder=tmp_path / "a")
    a.cli("app", "deploy", str(write_app(tmp_path / "hello", ECHO, TASKS)))
    deep = "[" * 3000 + "]" * 3000  # json.loads raises RecursionError, not ValueError
    storage = EtcdStorage(uri)
    try:
        good = json.loads(storage.get("apps", "hello"))
        for namespace, key in (("apps", "deep"), ("keys", "ab" * 32), ("curve", "server")):
            storage.put(namespace, key, deep.encode())
        nested = {**good, "name": "nested", "manifest": json.loads("[" * 500 + "]" * 500)}
        storage.put("apps", "nested", json.dumps({**nested, "manifest": {"x": nested[
            "manifest"]}}).encode())
        # A damaged record of the running app, and a deploy after all of it.
        storage.put("apps", "hello", json.dumps({**good, "version": "2"}).encode())
        a.cli("app", "deploy", str(write_app(tmp_path / "other", ECHO, TASKS)), "--name",
              "other")
        b = node_process(storage_uri=uri, folder=tmp_path / "b")  # starts, owner served
        wait_until(lambda: answer(b, "other") == b"v1|hi", timeout=30,
                   message="a node started among the damaged values to run the rest")
        assert answer(a) == b"v1|hi"  # the app whose record is damaged keeps running
        a.cli("app", "remove", "hello")  # the way out the message names works
        assert "hello" not in storage.keys("apps")
    finally:
        storage.close()
    for node in (a, b):
        assert "Traceback" not in node.log.read_text()
