"""What a node holds for its clients is bounded: the largest message, what waits for a client
that does not read (credit towards the slave), and the jobs of a client that has gone.

Each test runs a real ``cocaine node`` process and watches its resident memory from /proc.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from cocaine_core import protocol
from cocaine_core.protocol import Code
from cocaine_core.testing import NodeProcess, wait_until, write_app

MiB = 2**20

APP = """
import os, time

BEATS = BEATS_PATH

def stream(request):
    count = 0
    chunk = b"x" * (1 << 20)
    try:
        while True:
            count += 1
            with open(BEATS + ".tmp", "w") as f:
                f.write(str(count))
            os.replace(BEATS + ".tmp", BEATS)
            yield chunk
    finally:
        with open(BEATS + ".closed", "w") as f:
            f.write(str(count))

def echo(request):
    return request.data
"""
TASKS = {"stream": {"type": "native-server"}, "echo": {"type": "native-server"}}


def rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def cpu(pid: int) -> float:
    """CPU seconds ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dealer(endpoint: str, **options: int) -> zmq.Socket[bytes]:
    """A raw DEALER to the node (a client that does what the test says, nothing more)."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name), value)
    sock.connect(endpoint)
    return sock


def request(sock: zmq.Socket[bytes], request_id: int, event: str, body: bytes = b"") -> None:
    sock.send_multipart([protocol.pack(Code.REQUEST, request_id, "flow", event, None), body])


@pytest.fixture
def node(node_process: Any, tmp_path: Path) -> tuple[NodeProcess, Path]:
    beats = tmp_path / "beats"
    # The app reports its chunks in a file of the test's: it runs as the node's user.
    node = node_process("--app-uids", "none")
    manifest = write_app(tmp_path / "flow", APP.replace("BEATS_PATH", repr(str(beats))), TASKS,
                         engine={"pool-limit": 2, "pool-min": 2, "termination-timeout": 2})
    node.cli("app", "deploy", str(manifest), "--name", "flow")
    with node.client(wait=30) as client:
        assert client.call("flow", "echo", b"warm") == b"warm"
    return node, beats


def beats(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def slave_pids(node: NodeProcess) -> list[int]:
    with node.client(wait=10) as client:
        info = client.control("info")
    return [s["pid"] for s in info["apps"]["flow"]["slaves"] if s["pid"]]


def test_an_oversized_message_drops_its_sender_before_the_node_holds_it(
        node: tuple[NodeProcess, Path]) -> None:
    process, _ = node
    pid = process.process.pid
    before = rss(pid)
    big = dealer(process.endpoint)
    try:
        big.send_multipart([protocol.pack(Code.REQUEST, 1, "flow", "echo", None),
                            b"\0" * (256 * MiB)])
        # The node drops the connection as the frame's size arrives; it goes on serving.
        peak = before
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            peak = max(peak, rss(pid))
            time.sleep(0.05)
        with process.client(wait=10) as client:
            assert client.call("flow", "echo", b"still here") == b"still here"
        peak = max(peak, rss(pid))
        assert peak - before < 32 * MiB, f"the node grew by {(peak - before) >> 20} MiB"
        assert not big.poll(200), "the oversized request was answered"
    finally:
        big.close()


def test_a_client_that_never_reads_an_endless_stream_holds_bounded_memory(
        node: tuple[NodeProcess, Path]) -> None:
    process, beat_file = node
    pid = process.process.pid
    before = rss(pid)
    # A client that reads nothing, and takes as little as ZeroMQ lets it.
    lazy = dealer(process.endpoint, RCVHWM=1, RCVBUF=65536)
    try:
        request(lazy, 1, "stream")
        wait_until(lambda: beats(beat_file) > 0, message="the stream to start")
        peak, deadline = before, time.monotonic() + 5
        while time.monotonic() < deadline:
            peak = max(peak, rss(pid))
            assert peak - before < 200 * MiB, f"the node grew by {(peak - before) >> 20} MiB"
            time.sleep(0.05)
        # The handler waits for credit: it makes no more chunks and burns no CPU...
        settled = beats(beat_file)
        assert settled < 200, f"the handler made {settled} chunks of 1 MiB for nobody"
        streaming = [p for p in slave_pids(process) if p]
        spent = {p: cpu(p) for p in streaming}
        time.sleep(1.0)
        assert min(cpu(p) - spent[p] for p in streaming) < 0.2, "no slave is idle"
        assert beats(beat_file) == settled
        # ... and other clients are served meanwhile.
        with process.client(wait=10) as client:
            assert client.call("flow", "echo", b"other") == b"other"
        print(f"node RSS: before {before >> 20} MiB, peak {peak >> 20} MiB; "
              f"chunks made: {settled}")
    finally:
        lazy.close()


def test_a_client_that_leaves_without_cancel_has_its_stream_stopped(
        node: tuple[NodeProcess, Path]) -> None:
    process, beat_file = node
    pid = process.process.pid
    before = rss(pid)
    leaver = dealer(process.endpoint)
    request(leaver, 1, "stream")
    for _ in range(5):  # it reads a little, then goes without a word
        assert leaver.poll(10_000)
        leaver.recv_multipart()
    leaver.close()
    closed = Path(str(beat_file) + ".closed")
    wait_until(closed.exists, timeout=10, message="the handler to be stopped")
    made = beats(beat_file)
    time.sleep(0.5)
    assert beats(beat_file) == made, "the handler still runs"
    wait_until(lambda: rss(pid) - before < 48 * MiB, timeout=10,
               message="the node's memory to come back")
    with process.client(wait=10) as client:
        assert client.call("flow", "echo", b"next") == b"next"
        jobs = client.control("info")["apps"]["flow"]["jobs"]
    assert jobs["abandoned"] == 1
    print(f"node RSS: before {before >> 20} MiB, after {rss(pid) >> 20} MiB; chunks: {made}")


def test_a_client_refuses_a_request_larger_than_the_nodes_largest_message() -> None:
    from cocaine_core.client import Client
    from cocaine_core.errors import ServiceError
    from cocaine_core.testing import free_port

    with Client(f"tcp://127.0.0.1:{free_port()}", wait=2) as client:
        client.max_message = 2 * MiB
        with pytest.raises(ServiceError) as error:
            client.call("flow", "echo", b"x" * (3 * MiB))
    assert error.value.code == 400
    assert "--max-message" in error.value.message


def test_a_chunk_larger_than_the_engine_takes_from_a_slave_is_a_clear_502(
        cocaine_node: Any, make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from cocaine_core.engine import channel
    from cocaine_core.errors import ServiceError

    monkeypatch.setattr(channel, "SLAVE_MAX_MESSAGE", 4 * MiB)
    code = ("def whole(request):\n    return b'x' * (5 << 20)\n"
            "def pieces(request):\n    yield b'x' * (3 << 20)\n    yield b'x' * (5 << 20)\n"
            "def echo(request):\n    return request.data\n")
    cocaine_node.add_app("big", make_app(code, tasks={
        "whole": {"type": "native-server"}, "pieces": {"type": "native-server"},
        "echo": {"type": "native-server"}}, engine={"pool-limit": 1}))
    with cocaine_node.client(wait=30) as client:
        for event in ("whole", "pieces"):
            with pytest.raises(ServiceError) as error:
                client.call("big", event)
            assert error.value.code == 502
            assert "larger than the node takes from a slave" in error.value.message
        assert client.call("big", "echo", b"fine") == b"fine"  # the same slave serves on


ASYNC_APP = """
import asyncio

CLOSED = CLOSED_PATH

async def stream(request):
    try:
        while True:
            await asyncio.sleep(0)
            yield b"y" * 65536
    finally:
        open(CLOSED, "w").close()

async def echo(request):
    return request.data
"""


def test_an_async_stream_whose_client_left_is_stopped_and_its_slave_serves_on(
        cocaine_node: Any, make_app: Any, tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    cocaine_node.add_app("flow", make_app(
        ASYNC_APP.replace("CLOSED_PATH", repr(str(closed))), tasks=TASKS,
        engine={"pool-limit": 1, "concurrency": 4}))
    leaver = dealer(cocaine_node.node.listen, RCVHWM=1, RCVBUF=65536)
    request(leaver, 1, "stream")
    assert leaver.poll(10_000)
    leaver.recv_multipart()
    time.sleep(0.3)  # it runs ahead to its window, then waits for credit
    leaver.close()
    wait_until(closed.exists, timeout=10, message="the async generator to be closed")
    with cocaine_node.client(wait=10) as client:
        assert client.call("flow", "echo", b"on") == b"on"
    assert cocaine_node.info("flow")["jobs"]["abandoned"] == 1
    assert cocaine_node.info("flow")["spawns"] == 1  # stopped by CANCEL, not by a kill


def test_an_async_stream_waiting_for_credit_lets_the_slaves_other_jobs_run(
        cocaine_node: Any, make_app: Any, tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    cocaine_node.add_app("flow", make_app(
        ASYNC_APP.replace("CLOSED_PATH", repr(str(closed))), tasks=TASKS,
        engine={"pool-limit": 1, "concurrency": 4}))
    lazy = dealer(cocaine_node.node.listen, RCVHWM=1, RCVBUF=65536)
    try:
        request(lazy, 1, "stream")
        assert lazy.poll(10_000)
        time.sleep(0.5)  # the stream has used its credit and waits
        with cocaine_node.client(wait=10) as client:  # the one slave still serves
            assert client.call("flow", "echo", b"meanwhile") == b"meanwhile"
    finally:
        lazy.close()
    wait_until(closed.exists, timeout=10, message="the async generator to be closed")


STOPPED_CLIENT = """
import sys, zmq
from cocaine_core import protocol
from cocaine_core.protocol import Code

sock = zmq.Context.instance().socket(zmq.DEALER)
sock.setsockopt(zmq.RCVHWM, 4)
sock.connect(sys.argv[1])
sock.send_multipart([protocol.pack(Code.REQUEST, 1, "flow", "stream", None), b""])
sock.recv_multipart()
print("reading", flush=True)
while True:
    sock.recv_multipart()
"""


def test_a_client_that_stops_answering_heartbeats_has_its_stream_stopped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client whose process is stopped (or whose machine vanished) never closes its TCP
    connection: the node's ZeroMQ heartbeats find it silent, drop its connection, and its
    stream is stopped as if it had left."""
    import os
    import signal
    import subprocess
    import sys

    from cocaine_core import endpoint
    from cocaine_core.testing import RunningNode

    monkeypatch.setattr(endpoint, "CLIENT_HEARTBEAT", 0.2)
    monkeypatch.setattr(endpoint, "CLIENT_HEARTBEAT_TIMEOUT", 1.0)
    beat_file = tmp_path / "beats"
    manifest = write_app(tmp_path / "flow", APP.replace("BEATS_PATH", repr(str(beat_file))),
                         TASKS, engine={"pool-limit": 1, "termination-timeout": 2})
    node = RunningNode(run_dir=tmp_path / "run").start()
    client = None
    try:
        node.add_app("flow", manifest)
        client = subprocess.Popen([sys.executable, "-c", STOPPED_CLIENT, node.endpoint],
                                  stdout=subprocess.PIPE, text=True)
        assert client.stdout is not None and client.stdout.readline() == "reading\n"
        os.kill(client.pid, signal.SIGSTOP)
        closed = Path(str(beat_file) + ".closed")
        wait_until(closed.exists, timeout=20, message="the stopped client's stream to stop")
        jobs = node.call_soon(lambda: node.node.apps["flow"].info()["jobs"])
        assert jobs["abandoned"] == 1
    finally:
        if client is not None:
            client.kill()
            client.wait()
        node.stop()
