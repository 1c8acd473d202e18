"""``native-sink``: one-way requests on the node's endpoint, acknowledged at once, results
published on a PUB socket as ``[event][chunk]``. Real node processes, real SUB subscribers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from cocaine_core.client import Client
from cocaine_core.errors import ServiceError
from cocaine_core.testing import free_port, wait_until, write_app

APP = '''
import time
from pathlib import Path

GATES = Path({gates!r})


def ping(request):
    return b"pong " + request.data


def slow(request):
    name = request.data.decode()
    (GATES / ("started-" + name)).touch()
    deadline = time.monotonic() + 30
    while not (GATES / ("open-" + name)).exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the test never opened the gate")
        time.sleep(0.01)
    yield b"done " + request.data


def many(request):
    for i in range(5):
        yield b"%s #%d" % (request.data, i)


def boom(request):
    raise ValueError("boom: " + request.data.decode())


def second(request):
    return b"second " + request.data


def flood(request):
    chunk = b"x" * (256 * 1024)
    for _ in range(int(request.data)):
        yield chunk
'''

#: The nodes' options: apps run as the node's user, so they see the test's gates folder.
SHARED = ("--app-uids", "none")


@pytest.fixture
def zctx() -> Iterator[zmq.Context[Any]]:
    """A ZeroMQ context of the test's own, its sockets closed at once after the test."""
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def subscriber(ctx: zmq.Context[Any], endpoint: str, topic: bytes = b"",
               rcvhwm: int = 1000) -> zmq.Socket[Any]:
    """A SUB socket connected to ``endpoint`` and subscribed to ``topic``."""
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, rcvhwm)
    sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(endpoint)
    return sub


def receive(sub: zmq.Socket[Any], timeout: float = 10.0) -> list[bytes]:
    """The next message on ``sub``; fails the test after ``timeout`` seconds."""
    assert sub.poll(int(timeout * 1000)), "no message was published in time"
    return sub.recv_multipart()


def nothing_more(sub: zmq.Socket[Any], within: float = 0.2) -> bool:
    """Whether ``sub`` has no message waiting (checked for ``within`` seconds)."""
    return not sub.poll(int(within * 1000))


def warm_up(client: Client, app: str, sub: zmq.Socket[Any]) -> None:
    """Call ``ping`` until ``sub`` hears it: the subscription has reached the node (a PUB
    drops what it publishes before that), then drop every ping it received."""
    def heard() -> bool:
        assert client.call(app, "ping", b"warm") == b""
        return sub.poll(100) != 0

    wait_until(heard, timeout=15, message="the subscriber to be connected")
    while sub.poll(200):
        assert sub.recv_multipart() == [b"ping", b"pong warm"]


def task_info(client: Client, app: str, task: str) -> dict[str, Any]:
    """The node's info on one task of an app."""
    return dict(client.control("info")["apps"][app]["tasks"][task])


@pytest.fixture
def gates(tmp_path: Path) -> Path:
    """A folder the app's handlers and the test both write: files in it say that the
    ``slow`` handler started and let it finish. (The nodes run apps as the node's own user,
    ``--app-uids none``: an isolated app has a private /tmp.)"""
    folder = tmp_path / "gates"
    folder.mkdir()
    return folder


def deploy(node: Any, tmp_path: Path, gates: Path, name: str, tasks: dict[str, Any],
           engine: dict[str, Any] | None = None) -> None:
    """Write the app with ``tasks`` and deploy it as ``name``."""
    manifest = write_app(tmp_path / name, APP.format(gates=str(gates)), tasks, engine)
    node.cli("app", "deploy", str(manifest), "--name", name)


def test_a_request_is_acknowledged_while_its_handler_still_runs(tmp_path, node_process, zctx,
        gates):
    """The client gets its empty answer once the engine has taken the job, before the
    handler ends; the result is published later (by the CLI too: `cocaine call` returns)."""
    node = node_process(*SHARED)
    publish = f"tcp://127.0.0.1:{free_port()}"
    deploy(node, tmp_path, gates, "acks", {
        "ping": {"type": "native-sink", "publish": publish},
        "slow": {"type": "native-sink", "publish": publish}})
    sub = subscriber(zctx, publish)
    with Client(node.endpoint, wait=30) as client:
        warm_up(client, "acks", sub)
        assert client.call("acks", "slow", b"a") == b""
        # The handler has not ended: its gate is still shut.
        wait_until(lambda: (gates / "started-a").exists(), message="the handler to start")
        info = task_info(client, "acks", "slow")
        assert (info["acknowledged"], info["running"], info["done"]) == (1, 1, 0)
        assert nothing_more(sub)
        (gates / "open-a").touch()
        assert receive(sub) == [b"slow", b"done a"]

        # The CLI: `cocaine call` prints nothing and exits 0 while the handler still waits.
        result = node.cli("call", "acks", "slow", "b")
        assert (result.returncode, result.stdout) == (0, b"")
        assert not (gates / "open-b").exists()
        wait_until(lambda: (gates / "started-b").exists(), message="the second handler")
        (gates / "open-b").touch()
        assert receive(sub) == [b"slow", b"done b"]
        wait_until(lambda: task_info(client, "acks", "slow")["done"] == 2, message="2 done")
        info = task_info(client, "acks", "slow")
        assert info["type"] == "native-sink" and info["publish"] == publish
        assert (info["requests"], info["acknowledged"], info["refused"], info["failed"],
                info["published"], info["running"]) == (2, 2, 0, 0, 2, 0)

        # A redeploy takes over the socket: the subscriber, connected all along, hears the
        # new version (the address was never re-bound, so the deploy could not fail on it).
        deploy(node, tmp_path, gates, "acks", {
            "ping": {"type": "native-sink", "publish": publish},
            "slow": {"type": "native-sink", "publish": publish}})
        assert client.control("info")["apps"]["acks"]["tasks"]["ping"]["acknowledged"] == 0
        assert client.call("acks", "ping", b"v2") == b""
        assert receive(sub) == [b"ping", b"pong v2"]


def test_results_are_published_in_order_topic_event(tmp_path, node_process, zctx,
        gates):
    """A generator's chunks go out in order as [event][chunk]; a handler that raises
    publishes nothing and is counted; two tasks publish their own events (one on a port 0
    endpoint, whose bound address the node's info shows)."""
    node = node_process(*SHARED)
    publish = f"tcp://127.0.0.1:{free_port()}"
    deploy(node, tmp_path, gates, "pubs", {
        "ping": {"type": "native-sink", "publish": publish},
        "many": {"type": "native-sink", "publish": publish},
        "boom": {"type": "native-sink", "publish": publish},
        "second": {"type": "native-sink", "publish": "tcp://127.0.0.1:0"}},
        engine={"pool-limit": 1})
    sub = subscriber(zctx, publish)
    with Client(node.endpoint, wait=30) as client:
        other = task_info(client, "pubs", "second")["publish"]
        assert other.startswith("tcp://127.0.0.1:") and not other.endswith(":0")
        sub2 = subscriber(zctx, other)
        warm_up(client, "pubs", sub)

        assert client.call("pubs", "many", b"m") == b""
        assert [receive(sub) for _ in range(5)] == [[b"many", b"m #%d" % i] for i in range(5)]

        assert client.call("pubs", "boom", b"x") == b""
        wait_until(lambda: task_info(client, "pubs", "boom")["failed"] == 1,
                   message="the failure counted")
        assert client.call("pubs", "ping", b"after") == b""
        assert receive(sub) == [b"ping", b"pong after"], "the failed job published something"

        def second_heard() -> bool:
            assert client.call("pubs", "second", b"s") == b""
            return sub2.poll(100) != 0

        wait_until(second_heard, timeout=15, message="the second task's subscriber")
        assert receive(sub2)[0] == b"second"
        assert nothing_more(sub), "the second task published on the first one's socket"
        boom = task_info(client, "pubs", "boom")
        many = task_info(client, "pubs", "many")
    assert (boom["acknowledged"], boom["failed"], boom["published"]) == (1, 1, 0)
    assert (many["acknowledged"], many["done"], many["published"]) == (1, 1, 5)
    assert "boom: x" in node.log.read_text()


def test_a_full_queue_is_answered_503_and_nothing_is_published(tmp_path, node_process, zctx,
        gates):
    """A request the engine refuses at once gets the refusal, not an acknowledgement."""
    node = node_process(*SHARED)
    publish = f"tcp://127.0.0.1:{free_port()}"
    deploy(node, tmp_path, gates, "full", {
        "ping": {"type": "native-sink", "publish": publish},
        "slow": {"type": "native-sink", "publish": publish}},
        engine={"pool-limit": 1, "queue-limit": 1})
    sub = subscriber(zctx, publish)
    with Client(node.endpoint, wait=30) as client:
        warm_up(client, "full", sub)
        assert client.call("full", "slow", b"1") == b""
        wait_until(lambda: (gates / "started-1").exists(), message="the first job to start")
        assert client.call("full", "slow", b"2") == b""  # queued
        with pytest.raises(ServiceError) as refused:
            client.call("full", "slow", b"3")
        assert refused.value.code == 503 and "queue is full" in str(refused.value)
        for name in "123":
            (gates / f"open-{name}").touch()
        assert receive(sub) == [b"slow", b"done 1"]
        assert receive(sub) == [b"slow", b"done 2"]
        assert nothing_more(sub, 0.5)
        info = task_info(client, "full", "slow")
    assert not (gates / "started-3").exists()
    assert (info["requests"], info["acknowledged"], info["refused"], info["published"],
            info["failed"]) == (3, 2, 1, 2, 0)


def test_slow_or_absent_subscribers_never_hold_up_the_node(tmp_path, node_process, zctx,
        gates):
    """With nobody subscribed, and with a subscriber that never reads, results are dropped
    rather than queued without bound: the jobs end, the node answers, its memory stays put."""
    node = node_process(*SHARED)
    publish = f"tcp://127.0.0.1:{free_port()}"
    deploy(node, tmp_path, gates, "floods", {
        "ping": {"type": "native-sink", "publish": publish, "backlog": 4},
        "flood": {"type": "native-sink", "publish": publish, "backlog": 4}})
    chunks = 200  # of 256 KiB: 50 MiB a job

    def flood(client: Client, jobs: int, done: int) -> None:
        for _ in range(jobs):
            assert client.call("floods", "flood", str(chunks).encode()) == b""
        wait_until(lambda: task_info(client, "floods", "flood")["done"] == done, timeout=30,
                   message=f"{done} floods done")

    with Client(node.endpoint, wait=30) as client:
        flood(client, 1, 1)  # warm: the node's buffers as they are in use
        before = client.control("info")["rss-bytes"]
        flood(client, 2, 3)  # nobody subscribed
        stalled = subscriber(zctx, publish, rcvhwm=4)
        warm_up(client, "floods", stalled)  # connected, and from now on never read
        flood(client, 3, 6)
        after = client.control("info")["rss-bytes"]
        assert client.call("floods", "ping", b"still here") == b""
        info = task_info(client, "floods", "flood")
    received = 0
    while stalled.poll(300):
        stalled.recv_multipart()
        received += 1
    assert info["published"] == 6 * chunks and info["failed"] == 0
    assert received < 3 * chunks, "the stalled subscriber was given every result"
    grown = after - before
    print(f"stalled subscriber received {received} of {3 * chunks}; node grew "
          f"{grown / 2**20:.1f} MiB")
    assert grown < 40 * 2**20, f"the node grew by {grown / 2**20:.0f} MiB for 250 MiB published"


def check(manifest: Path) -> subprocess.CompletedProcess[str]:
    """``cocaine manifest check MANIFEST``."""
    cocaine = str(Path(sys.executable).with_name("cocaine"))
    return subprocess.run([cocaine, "manifest", "check", str(manifest)], capture_output=True,
                          text=True, timeout=60)


def test_bad_publish_values_are_refused_by_manifest_check(tmp_path):
    """Each bad `publish` gets a problem naming its key and what to write instead."""
    bad = {"missing": None, "inproc": "inproc://results", "noport": "tcp://127.0.0.1",
           "bigport": "tcp://127.0.0.1:70000", "relative": "ipc://results.sock",
           "http": "http://127.0.0.1:80", "number": 5555,
           "long": "ipc:///tmp/" + "x" * 120}
    tasks: dict[str, Any] = {name: {"type": "native-sink", "publish": value}
                             for name, value in bad.items()}
    del tasks["missing"]["publish"]
    tasks["ok"] = {"type": "native-sink", "publish": "ipc:///tmp/ok.sock", "backlog": 0}
    result = check(write_app(tmp_path / "bad", "def ok(request):\n    pass\n", tasks))
    out = result.stdout + result.stderr
    assert result.returncode != 0
    expected = {
        "missing": "tasks.missing.publish: is required",
        "inproc": "tasks.inproc.publish: inproc:// is reachable only inside the node's",
        "noport": "tasks.noport.publish: must be tcp://HOST:PORT",
        "bigport": "tasks.bigport.publish: must be tcp://HOST:PORT",
        "relative": "tasks.relative.publish: the ipc path must be absolute",
        "http": "tasks.http.publish: must be a ZeroMQ endpoint starting with tcp:// or ipc://",
        "number": "tasks.number.publish: must be a ZeroMQ endpoint such as",
        "long": "tasks.long.publish: the ipc path is 125 bytes long",
        "ok": "tasks.ok.backlog:",
    }
    for name, text in expected.items():
        assert text in out, f"{name}: {text!r} not in:\n{out}"
    good = {"a": {"type": "native-sink", "publish": "tcp://*:0"},
            "b": {"type": "native-sink", "publish": "ipc:///tmp/results.sock"},
            "c": {"type": "native-sink", "publish": "ipc://@results", "backlog": 10}}
    result = check(write_app(tmp_path / "good", "def a(request):\n    pass\n", good))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_publish_endpoint_in_use_fails_the_app_naming_it(tmp_path, node_process, zctx,
        gates):
    """The app does not start, and the deploy says which task and which address."""
    node = node_process(*SHARED)
    taken = zctx.socket(zmq.PUB)
    port = taken.bind_to_random_port("tcp://127.0.0.1")
    publish = f"tcp://127.0.0.1:{port}"
    manifest = write_app(tmp_path / "taken", APP.format(gates=str(gates)),
                         {"ping": {"type": "native-sink", "publish": publish}})
    result = node.cli("app", "deploy", str(manifest), "--name", "taken", check=False)
    out = (result.stdout + result.stderr).decode()
    assert result.returncode != 0, out
    assert f"task 'ping' (native-sink): cannot bind publish {publish}: the address is " \
           f"already in use" in out, out
    with Client(node.endpoint, wait=30) as client:
        assert "taken" not in json.dumps(client.control("list"))

    # Two tasks may share an endpoint (topics tell them apart), with the same backlog only.
    shared = f"tcp://127.0.0.1:{free_port()}"
    manifest = write_app(tmp_path / "mixed", APP.format(gates=str(gates)), {
        "ping": {"type": "native-sink", "publish": shared},
        "many": {"type": "native-sink", "publish": shared, "backlog": 10}})
    result = node.cli("app", "deploy", str(manifest), "--name", "mixed", check=False)
    out = (result.stdout + result.stderr).decode()
    assert result.returncode != 0, out
    assert f"task 'many' (native-sink): publish {shared} is shared with another task of this " \
           f"app whose backlog is 1000, not 10" in out, out
