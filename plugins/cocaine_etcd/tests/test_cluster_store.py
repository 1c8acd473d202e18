"""One app store for a whole cluster: real ``cocaine node`` processes on one real etcd (or
three members), deploying, upgrading and removing through any node and seeing it on all."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cocaine_etcd.storage import EtcdStorage
from cocaine_etcd.testing import EtcdCluster

from cocaine_core.appstore import AppRecord, AppStore
from cocaine_core.client import Client
from cocaine_core.errors import ServiceError, StorageError
from cocaine_core.testing import NodeProcess, wait_until, write_app

CODE = """
import os

VERSION = {version!r}


def echo(request):
    return VERSION.encode() + b"|" + request.data
"""
TASKS = {"echo": {"type": "native-server"}}
#: Seconds a change may take to reach every node here (a busy 2-core machine starting a
#: Python app); the figure measured is printed.
CONVERGE = 30


def write_echo(folder: Path, version: str) -> Path:
    """An app answering ``<version>|<data>``; its manifest."""
    return write_app(folder, CODE.format(version=version), TASKS)


def answer(node: NodeProcess, app: str = "hello") -> bytes | None:
    """What ``app`` on ``node`` answers to ``echo hi``, or None if it does not serve it."""
    return node.answer(app, "echo", b"hi")


def apps_of(node: NodeProcess) -> list[str]:
    """The apps ``node`` runs."""
    return node.apps()


def timed(condition: Callable[[], bool], what: str, timeout: float = CONVERGE) -> float:
    """Wait for ``condition``; the seconds it took."""
    started = time.monotonic()
    wait_until(condition, timeout=timeout, message=what)
    return time.monotonic() - started


@pytest.fixture
def cluster_nodes(node_process: Any, tmp_path: Path) -> Callable[..., list[NodeProcess]]:
    """``cluster_nodes(uri, n, *extra)``: n real nodes on the etcd storage ``uri``."""
    def factory(uri: str, count: int, *extra: str) -> list[NodeProcess]:
        return [node_process(*extra, storage_uri=uri, folder=tmp_path / f"node-{i}")
                for i in range(count)]
    return factory


def test_a_deploy_through_one_node_runs_on_every_node_and_a_removal_anywhere_stops_it(
        etcd: EtcdCluster, cluster_nodes: Any, tmp_path: Path) -> None:
    a, b, c = cluster_nodes(etcd.uri("cocaine"), 3)
    a.cli("app", "deploy", str(write_echo(tmp_path / "v1" / "hello", "v1")))
    took = timed(lambda: answer(b) == b"v1|hi" and answer(c) == b"v1|hi",
                 "the app deployed on A to answer on B and C")
    print(f"deploy on A -> serving on B and C: {took:.2f} s")
    assert answer(a) == b"v1|hi"

    # An upgrade through B replaces the version everywhere.
    b.cli("app", "deploy", str(write_echo(tmp_path / "v2" / "hello", "v2")))
    took = timed(lambda: all(answer(n) == b"v2|hi" for n in (a, b, c)),
                 "the upgrade made on B to answer on A, B and C")
    print(f"upgrade on B -> v2 on every node: {took:.2f} s")
    info = json.loads(a.cli("app", "info", "hello").stdout)
    assert info["deployed"]["version"] == 2

    # A removal through C stops it on every node, and nothing of it is left in the store.
    c.cli("app", "remove", "hello")
    took = timed(lambda: all(apps_of(n) == [] for n in (a, b, c)),
                 "the app removed on C to stop on A, B and C")
    print(f"remove on C -> gone everywhere: {took:.2f} s")
    assert all(answer(n) is None for n in (a, b, c))
    for node in (a, b, c):
        assert not (node.run_dir / "code" / "hello").exists() or \
            not any((node.run_dir / "code" / "hello").iterdir())


def test_a_node_down_during_a_deploy_runs_it_once_back(
        etcd: EtcdCluster, cluster_nodes: Any, tmp_path: Path) -> None:
    a, b = cluster_nodes(etcd.uri("cocaine"), 2)
    assert b.stop() == 0
    a.cli("app", "deploy", str(write_echo(tmp_path / "hello", "v1")))
    assert answer(a) == b"v1|hi"
    b.start()  # it reads the store at start: the app comes up before it answers ready
    timed(lambda: answer(b) == b"v1|hi", "the node that was down to run the app once back")

    # A node killed -9 during a removal stops the app when it comes back.
    b.kill()
    a.cli("app", "remove", "hello")
    b.start()
    timed(lambda: apps_of(b) == [], "the node that was killed to drop the removed app")


def test_a_restart_of_every_node_brings_back_every_app(
        etcd: EtcdCluster, cluster_nodes: Any, tmp_path: Path) -> None:
    nodes = cluster_nodes(etcd.uri("cocaine"), 3)
    for i, name in enumerate(("one", "two", "three")):
        nodes[i].cli("app", "deploy", str(write_echo(tmp_path / name, name)), "--name", name)
    timed(lambda: all(apps_of(n) == ["one", "three", "two"] for n in nodes),
          "three apps deployed on three nodes to run on all of them")
    for node in nodes:
        assert node.stop() == 0
    for node in nodes:
        node.start()
    for node in nodes:
        assert apps_of(node) == ["one", "three", "two"]
        assert answer(node, "two") == b"two|hi"


def test_with_etcd_down_nodes_serve_what_runs_deploys_get_503_and_all_resumes(
        etcd: EtcdCluster, cluster_nodes: Any, tmp_path: Path) -> None:
    a, b = cluster_nodes(etcd.uri("cocaine"), 2)
    a.cli("app", "deploy", str(write_echo(tmp_path / "hello", "v1")))
    timed(lambda: answer(b) == b"v1|hi", "the app to run on B")

    etcd.kill(0)
    for node in (a, b):  # the apps keep serving
        assert answer(node) == b"v1|hi"
    started = time.monotonic()
    refused = a.cli("app", "deploy", str(write_echo(tmp_path / "other", "v1")), "--name",
                    "other", check=False)
    took = time.monotonic() - started
    print(f"deploy with etcd down -> refused in {took:.2f} s")
    assert refused.returncode != 0
    said = refused.stderr.decode() + refused.stdout.decode()
    assert "503" in said and "unavailable" in said, said
    assert took < 30
    removed = b.cli("app", "remove", "hello", check=False)
    assert removed.returncode != 0 and "unavailable" in removed.stderr.decode()
    with Client(b.endpoint, wait=20) as client:  # what does not need the store still works
        info = client.control("info")
    assert info["store"]["available"] is False
    assert "UNREACHABLE: apps keep running" in b.cli("info").stdout.decode()
    assert answer(b) == b"v1|hi" and answer(a) == b"v1|hi"
    assert a.process.poll() is None and b.process.poll() is None

    etcd.restart(0)
    timed(lambda: _available(a) and _available(b), "both nodes to see the store back")
    a.cli("app", "deploy", str(write_echo(tmp_path / "other", "v1")), "--name", "other")
    timed(lambda: answer(b, "other") == b"v1|hi", "a deploy after the outage to reach B")
    b.cli("app", "remove", "hello")
    timed(lambda: apps_of(a) == ["other"], "a removal after the outage to reach A")
    # The outage was logged once per node, not once per retry.
    for node in (a, b):
        text = node.log.read_text()
        assert text.count("keep serving") <= 3, text
        assert text.count("cocaine.etcd") <= 3, text


def cocaine(*args: str) -> Any:
    """Run ``cocaine ARGS`` (no --node: commands that act on a storage or a key file)."""
    result = subprocess.run([str(Path(sys.executable).with_name("cocaine")), *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"cocaine {' '.join(args)}: {result.stdout}{result.stderr}"
    return result


def test_a_node_started_while_etcd_is_down_starts_its_apps_once_etcd_is_back(
        etcd: EtcdCluster, cluster_nodes: Any, tmp_path: Path) -> None:
    a, b = cluster_nodes(etcd.uri("cocaine"), 2)
    a.cli("app", "deploy", str(write_echo(tmp_path / "hello", "v1")))
    timed(lambda: answer(b) == b"v1|hi", "the app to run on B")
    assert b.stop() == 0
    etcd.kill(0)
    b.spawn()  # it listens, with no app, and says why
    wait_until(lambda: "starts without its apps" in b.log.read_text(), timeout=CONVERGE,
               message="the node to start without the store")
    assert answer(b) is None and b.process.poll() is None
    os.kill(b.process.pid, signal.SIGHUP)  # a reload meanwhile is one line, not a crash
    wait_until(lambda: "SIGHUP: storage could not be read" in b.log.read_text(), timeout=20,
               message="the reload to say the store is away")
    etcd.restart(0)
    timed(lambda: answer(b) == b"v1|hi", "B to start the stored app once etcd is back")
    assert b.process.poll() is None


def _available(node: NodeProcess) -> bool:
    with Client(node.endpoint, wait=20) as client:
        return bool(client.control("info")["store"]["available"])


def test_one_of_three_etcd_members_killed_deploys_still_work(
        etcd3: EtcdCluster, cluster_nodes: Any, tmp_path: Path) -> None:
    a, b = cluster_nodes(etcd3.uri("cocaine"), 2)
    a.cli("app", "deploy", str(write_echo(tmp_path / "v1" / "hello", "v1")))
    timed(lambda: answer(b) == b"v1|hi", "the app to run on B")

    etcd3.kill(0)  # the member both nodes reached first
    started = time.monotonic()
    b.cli("app", "deploy", str(write_echo(tmp_path / "v2" / "hello", "v2")))
    print(f"deploy with one of three members killed: {time.monotonic() - started:.2f} s")
    timed(lambda: answer(a) == b"v2|hi", "the upgrade made with a member down to reach A")
    a.cli("app", "remove", "hello")
    timed(lambda: apps_of(b) == [], "a removal with a member down to reach B")


def test_keys_authorized_in_the_store_control_every_node(
        etcd: EtcdCluster, cluster_nodes: Any, tmp_path: Path) -> None:
    uri = etcd.uri("cocaine")
    a, b = cluster_nodes(uri, 2)
    other = tmp_path / "other" / "id_ed25519"
    env = {**os.environ, "COCAINE_KEY": str(other)}
    made = cocaine("keys", "generate", "--key", str(other))
    refused = b.cli("app", "list", check=False, env=env)
    assert refused.returncode != 0 and "401" in refused.stderr.decode()
    cocaine("keys", "authorize", f"{other}.pub", "--storage", uri)
    listed = json.loads(cocaine("keys", "list", "--json", "--storage", uri).stdout)["keys"]
    assert len(listed) == 2
    # B learns of the key through the store's watch: no restart, no SIGHUP.
    wait_until(lambda: all(n.cli("app", "list", check=False, env=env).returncode == 0
                           for n in (a, b)),
               timeout=CONVERGE, message="A and B to take the key authorized in the store")
    fingerprint = next(k["fingerprint"] for k in listed if k["fingerprint"] in made.stdout)
    cocaine("keys", "revoke", fingerprint, "--storage", uri)
    wait_until(lambda: all(n.cli("app", "list", check=False, env=env).returncode != 0
                           for n in (a, b)),
               timeout=CONVERGE, message="A and B to refuse the key revoked in the store")


def test_nodes_register_under_leases_and_drop_out(
        etcd: EtcdCluster, cluster_nodes: Any) -> None:
    a, b, c = cluster_nodes(etcd.uri("cocaine"), 3, "--discovery", "etcd")

    def peers(node: NodeProcess) -> set[str]:
        with Client(node.endpoint, wait=20) as client:
            view = client.control("info")["discovery"]
        return {peer["endpoint"] for peer in view["peers"].values()}

    timed(lambda: peers(a) == {b.endpoint, c.endpoint} and peers(b) == {a.endpoint,
          c.endpoint}, "three nodes to see each other")
    assert c.stop() == 0  # a node that leaves drops out at once (its lease is revoked)
    took = timed(lambda: peers(a) == {b.endpoint}, "a stopped node to drop out", 10)
    print(f"SIGTERM -> dropped out in {took:.2f} s")
    os.kill(b.process.pid, signal.SIGKILL)  # one killed drops out when its lease expires
    b.process.wait()
    took = timed(lambda: peers(a) == set(), "a killed node to drop out", 20)
    print(f"kill -9 -> dropped out in {took:.2f} s")


def test_a_large_app_travels_in_chunks_and_arrives_whole(
        etcd: EtcdCluster, cluster_nodes: Any, tmp_path: Path) -> None:
    a, b = cluster_nodes(etcd.uri("cocaine"), 2)
    folder = tmp_path / "big"
    package = folder / "app"  # a package: the folder is packed whole, blob and all
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(BIG)
    blob = os.urandom(3 * 2**20 + 12345)  # incompressible: the archive is over 3 chunks
    (package / "blob.bin").write_bytes(blob)
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"type": "python", "args": {"source": "app"},
                                    "tasks": TASKS}))
    a.cli("app", "deploy", str(manifest))
    digest = hashlib.sha256(blob).hexdigest().encode()
    timed(lambda: answer(b, "big") == digest, "the 3 MiB app to answer on B")
    storage = EtcdStorage(etcd.uri("cocaine"))
    try:
        chunks = storage.connection.call(
            lambda c: c.get_prefix(b"/cocaine/chunks/", keys_only=True), "test")
        assert len(list(chunks)) >= 4
    finally:
        storage.close()


BIG = """
import hashlib
from pathlib import Path

DIGEST = hashlib.sha256((Path(__file__).parent / "blob.bin").read_bytes()).hexdigest()


def echo(request):
    return DIGEST
"""


def test_clusters_under_other_prefixes_share_nothing(
        etcd: EtcdCluster, cluster_nodes: Any, node_process: Any, tmp_path: Path) -> None:
    (a,) = cluster_nodes(etcd.uri("blue"), 1)
    green = node_process(storage_uri=etcd.uri("green"), folder=tmp_path / "green")
    a.cli("app", "deploy", str(write_echo(tmp_path / "hello", "v1")))
    assert answer(a) == b"v1|hi"
    time.sleep(1)  # what a change takes to reach a node here (0.2 s) five times over
    assert apps_of(green) == []


def test_a_record_is_written_only_while_its_code_is_stored(etcd: EtcdCluster,
                                                           tmp_path: Path) -> None:
    # Another node starting meanwhile may collect the code of a deploy still loading as an
    # orphan: the record then stores the code again rather than point at nothing.
    storage = EtcdStorage(etcd.uri("cocaine"))
    try:
        store = AppStore(storage, tmp_path / "code")
        code = b"not really a tar, but bytes" * 1000
        record = AppRecord(name="hello", manifest={}, sha256=hashlib.sha256(code).hexdigest())
        store.save_code(record, code)
        other = AppStore(storage, tmp_path / "other")  # "another node" at its start
        other.collect_garbage()
        assert not storage.exists("code", record.code_key)
        with pytest.raises(StorageError, match="left the storage"):
            store.save_record(record)  # without the code at hand: refused, nothing written
        assert store.get("hello") is None
        store.save_record(record, code)
        assert store.get("hello") == record and storage.get("code", record.code_key) == code
    finally:
        storage.close()


def test_requests_flowing_through_an_etcd_outage_all_succeed(
        etcd: EtcdCluster, cluster_nodes: Any, tmp_path: Path) -> None:
    a, b = cluster_nodes(etcd.uri("cocaine"), 2)
    a.cli("app", "deploy", str(write_echo(tmp_path / "hello", "v1")))
    timed(lambda: answer(b) == b"v1|hi", "the app to run on B")
    stop = threading.Event()
    results: dict[str, list[Any]] = {"ok": [], "failed": []}

    def load(node: NodeProcess) -> None:
        with Client(node.endpoint, wait=10) as client:
            while not stop.is_set():
                try:
                    assert client.call("hello", "echo", b"x") == b"v1|x"
                    results["ok"].append(node.endpoint)
                except (ServiceError, AssertionError) as exc:
                    results["failed"].append(exc)

    threads = [threading.Thread(target=load, args=(node,)) for node in (a, b)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(results["ok"]) > 50, timeout=30, message="requests to flow")
        etcd.kill(0)
        during = len(results["ok"])
        wait_until(lambda: len(results["ok"]) > during + 200, timeout=60,
                   message="requests to flow with etcd down")
        etcd.restart(0)
        timed(lambda: _available(a) and _available(b), "both nodes to see the store back")
        after = len(results["ok"])
        wait_until(lambda: len(results["ok"]) > after + 50, timeout=30,
                   message="requests to flow after etcd is back")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert results["failed"] == []
    assert {a.endpoint, b.endpoint} <= set(results["ok"])


SLOW_IMPORT = """
import time

time.sleep(2)  # a slow import: the app starts for a while on every node


def echo(request):
    return b"slow|" + request.data
"""


def test_a_removal_through_a_node_still_starting_the_app_waits_for_the_start(
        etcd: EtcdCluster, cluster_nodes: Any, tmp_path: Path) -> None:
    a, b = cluster_nodes(etcd.uri("cocaine"), 2)

    def busy(node: NodeProcess) -> dict[str, str]:
        with Client(node.endpoint, wait=20) as client:
            return dict(client.control("info")["busy"])

    deploying = threading.Thread(target=a.cli, args=(
        "app", "deploy", str(write_app(tmp_path / "hello", SLOW_IMPORT, TASKS))))
    deploying.start()
    try:
        wait_until(lambda: busy(b).get("hello") == "start", timeout=CONVERGE,
                   message="B to be starting the app deployed through A")
    finally:
        deploying.join(timeout=120)
    removed = b.cli("app", "remove", "hello", check=False)
    assert removed.returncode == 0, removed.stderr.decode()  # not 503 "busy with a start"
    timed(lambda: apps_of(a) == [] and apps_of(b) == [], "the app to be gone from both")
