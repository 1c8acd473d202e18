"""Clients of several nodes fail over between them (``cocaine_core.client_failover``): real
``cocaine node`` processes, killed (-9) or stopped (SIGSTOP) under requests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cocaine_core.client import AsyncClient, Client
from cocaine_core.client_links import HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS, endpoints_of
from cocaine_core.errors import ServiceError
from cocaine_core.testing import NodeProcess, free_port, wait_until

APP = """
import os
import time

def where(request):
    return os.path.abspath(__file__).encode()

def slow(request):
    time.sleep(float(request.data or b"2"))
    return os.path.abspath(__file__).encode()

def stream(request):
    yield b"first"
    time.sleep(60)
    yield b"never"
"""
TASKS = {name: {"type": "native-server"} for name in ("where", "slow", "stream")}
#: A node that answers no heartbeat is a dropped connection within this many seconds (the
#: interval, the timeout, and slack for a busy machine).
STOPPED_BOUND = (HEARTBEAT_IVL_MS + HEARTBEAT_TIMEOUT_MS) / 1000 + 6


def dead() -> str:
    """An endpoint nothing listens at."""
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture
def pair(node_process: Any, make_app: Any) -> tuple[NodeProcess, NodeProcess]:
    """Two nodes, both hosting the app ``fo`` (up to 10 slaves each)."""
    manifest = make_app(APP, tasks=TASKS, engine={"pool-limit": 10, "queue-limit": 200})
    nodes = (node_process(), node_process())
    for node in nodes:
        node.cli("app", "deploy", str(manifest), "--name", "fo")
    return nodes


def served_by(answer: bytes, node: NodeProcess) -> bool:
    """Whether ``answer`` (an app file's path) comes from ``node``."""
    return str(node.run_dir) in answer.decode() or str(node.folder) in answer.decode()


def holding(node: NodeProcess, count: int) -> bool:
    """Whether ``node``'s app holds ``count`` jobs (running or queued)."""
    with Client(node.endpoint, wait=10) as client:
        app = client.control("info")["apps"]["fo"]
    return int(app["pool"]["busy"]) + int(app["queue"]["depth"]) >= count


def jobs_seen(node: NodeProcess) -> int:
    """Jobs the node's app ran to an end, or has now."""
    with Client(node.endpoint, wait=10) as client:
        app = client.control("info")["apps"]["fo"]
    jobs = app["jobs"]
    return int(jobs["done"]) + int(jobs["failed"]) + int(jobs["abandoned"]) + \
        int(app["pool"]["busy"]) + int(app["queue"]["depth"])


class Caller(threading.Thread):
    """Calls in a thread of its own with a client of several nodes; keeps what it got."""

    def __init__(self, endpoints: list[str], event: str, data: bytes = b"",
                 **policy: Any) -> None:
        super().__init__(daemon=True)
        self.endpoints, self.event, self.data, self.policy = endpoints, event, data, policy
        self.chunks: list[bytes] = []
        self.error: ServiceError | None = None
        self.ended_at = 0.0

    def run(self) -> None:
        with Client(self.endpoints, wait=60) as client:
            try:
                for chunk in client.stream("fo", self.event, self.data, **self.policy):
                    self.chunks.append(chunk)
            except ServiceError as exc:
                self.error = exc
        self.ended_at = time.monotonic()


def test_endpoints_are_a_list_a_tuple_or_text_with_commas() -> None:
    assert endpoints_of("tcp://a:1, tcp://b:2,") == ["tcp://a:1", "tcp://b:2"]
    assert endpoints_of(("tcp://a:1", "tcp://a:1")) == ["tcp://a:1"]
    for bad in ([], "", ",", ["a:1"], [None], 5):
        with pytest.raises(ServiceError) as caught:
            endpoints_of(bad)
        assert caught.value.code == 400


def test_nothing_listening_at_the_first_endpoint_the_second_serves(pair: Any) -> None:
    _, node_b = pair
    first = dead()
    with Client([first, node_b.endpoint], wait=30) as client:
        assert served_by(client.call("fo", "where"), node_b)
        assert client.endpoint == node_b.endpoint  # sticky: later requests go to B at once
        began = time.monotonic()
        for _ in range(20):
            assert served_by(client.call("fo", "where"), node_b)
        assert time.monotonic() - began < 10
    with Client(f"{first},{node_b.endpoint}", wait=30) as client:  # as --node a,b
        assert served_by(client.call("fo", "where"), node_b)


def test_errors_the_node_answers_never_fail_over(pair: Any) -> None:
    node_a, node_b = pair
    with Client([node_a.endpoint, node_b.endpoint], wait=30) as client:
        with pytest.raises(ServiceError) as caught:
            client.call("missing", "echo")
        assert caught.value.code == 404
        assert client.endpoint == node_a.endpoint
        assert served_by(client.call("fo", "where"), node_a)


def test_every_endpoint_down_is_one_error_naming_each() -> None:
    endpoints = [dead(), dead(), dead()]
    began = time.monotonic()
    with Client(endpoints, wait=30) as client, pytest.raises(ServiceError) as caught:
        client.call("fo", "where")
    assert caught.value.code == 503
    assert all(f"nothing listens at {endpoint}" in caught.value.message
               for endpoint in endpoints)
    assert time.monotonic() - began < 10  # at once, not after wait


def test_kill_9_resends_what_had_no_answer_and_cuts_what_had_some(pair: Any) -> None:
    node_a, node_b = pair
    endpoints = [node_a.endpoint, node_b.endpoint]
    streaming = Caller(endpoints, "stream")
    streaming.start()
    wait_until(lambda: streaming.chunks, timeout=30, message="the stream's first chunk")
    slow = [Caller(endpoints, "slow", b"1") for _ in range(4)]
    for caller in slow:
        caller.start()
    wait_until(lambda: holding(node_a, 5), timeout=30, message="node A to hold the requests")
    node_a.kill()
    killed = time.monotonic()
    for caller in [streaming, *slow]:
        caller.join(60)
        assert not caller.is_alive()
    for caller in slow:
        assert caller.error is None, caller.error
        assert served_by(b"".join(caller.chunks), node_b)
    assert streaming.chunks == [b"first"]
    assert streaming.error is not None and streaming.error.code == 500
    assert node_a.endpoint in streaming.error.message and "cut" in streaming.error.message
    # failover time: the answers' time less the handler's 1 s on B
    print(f"kill -9: failed over in {max(c.ended_at for c in slow) - killed - 1:.3f} s")


def test_a_stopped_node_fails_over_within_a_bound(pair: Any) -> None:
    node_a, node_b = pair
    endpoints = [node_a.endpoint, node_b.endpoint]
    caller = Caller(endpoints, "slow", b"0.5")
    caller.start()
    wait_until(lambda: holding(node_a, 1), timeout=30, message="node A to run the request")
    os.kill(node_a.process.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        caller.join(STOPPED_BOUND + 0.5)
        assert not caller.is_alive(), "no failover within the bound"
        assert caller.error is None, caller.error
        assert served_by(b"".join(caller.chunks), node_b)
        print(f"SIGSTOP, connection up: failed over in "
              f"{caller.ended_at - stopped - 0.5:.3f} s")
        began = time.monotonic()  # a new client: A accepts TCP but never greets
        with Client(endpoints, wait=60) as client:
            assert served_by(client.call("fo", "where"), node_b)
        print(f"SIGSTOP, new connection: failed over in {time.monotonic() - began:.3f} s")
        assert time.monotonic() - began < STOPPED_BOUND + 3
    finally:
        os.kill(node_a.process.pid, signal.SIGCONT)
    node_a.stop()


def test_retry_off_is_never_resent(pair: Any) -> None:
    node_a, node_b = pair
    caller = Caller([node_a.endpoint, node_b.endpoint], "slow", b"3", retry=False)
    caller.start()
    wait_until(lambda: holding(node_a, 1), timeout=30, message="node A to run the request")
    node_a.kill()
    caller.join(60)
    assert caller.error is not None and caller.error.code == 500
    assert "not resent" in caller.error.message and node_a.endpoint in caller.error.message
    assert jobs_seen(node_b) == 0


def test_cli_call_with_the_first_node_down(pair: Any) -> None:
    _, node_b = pair
    cocaine = str(Path(sys.executable).with_name("cocaine"))
    nodes = f"{dead()},{node_b.endpoint}"
    result = subprocess.run([cocaine, "call", "fo", "where", "--node", nodes],
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    assert served_by(result.stdout, node_b)
    listed = subprocess.run([cocaine, "app", "list", "--node", nodes], capture_output=True,
                            timeout=120)  # control calls fail over when unreachable
    assert listed.returncode == 0 and b"fo" in listed.stdout, listed.stderr.decode()


def test_async_client_fifty_in_flight_across_a_kill_9(pair: Any) -> None:
    node_a, node_b = pair
    endpoints = [node_a.endpoint, node_b.endpoint]

    async def main() -> list[Any]:
        async with AsyncClient(endpoints, wait=60) as client:
            calls = [asyncio.ensure_future(client.call("fo", "slow", b"0.3"))
                     for _ in range(50)]
            await asyncio.to_thread(wait_until, lambda: holding(node_a, 30), 30)
            node_a.kill()
            killed = time.monotonic()
            answers = await asyncio.gather(*calls, return_exceptions=True)
            print(f"AsyncClient, 50 in flight: all answered {time.monotonic() - killed:.3f} s "
                  f"after the kill")
            return answers

    answers = asyncio.run(main())
    errors = [answer for answer in answers if not isinstance(answer, bytes)]
    assert not errors, errors[:3]
    from_b = sum(served_by(answer, node_b) for answer in answers)
    assert from_b >= 30  # those A held were answered by B


def test_a_control_call_is_never_resent_after_a_drop(pair: Any) -> None:
    node_a, node_b = pair
    endpoints = [node_a.endpoint, node_b.endpoint]
    job = Caller([node_a.endpoint], "slow", b"30")  # keeps the app draining
    job.start()
    wait_until(lambda: holding(node_a, 1), timeout=30, message="node A to run the job")
    outcome: list[Any] = []

    def remove() -> None:
        with Client(endpoints, wait=60) as client:
            try:
                outcome.append(client.control("remove", name="fo"))
            except ServiceError as exc:
                outcome.append(exc)

    remover = threading.Thread(target=remove, daemon=True)
    remover.start()

    def draining() -> bool:
        with Client(node_a.endpoint, wait=10) as client:
            return client.control("info")["apps"]["fo"]["state"] != "running"

    wait_until(draining, timeout=30, message="node A to drain the app")
    assert remover.is_alive()  # the remove waits for the drain: its answer has not come
    node_a.kill()
    remover.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], ServiceError), outcome
    assert outcome[0].code == 500 and "never resent" in outcome[0].message
    assert node_a.endpoint in outcome[0].message
    assert node_b.apps() == ["fo"]  # node B never had the remove
    job.join(60)


def test_async_client_fails_over_when_nothing_listens(pair: Any) -> None:
    _, node_b = pair

    async def main() -> tuple[bytes, str]:
        async with AsyncClient([dead(), node_b.endpoint], wait=30) as client:
            answer = await client.call("fo", "where")
            return answer, client.endpoint

    answer, endpoint = asyncio.run(main())
    assert served_by(answer, node_b) and endpoint == node_b.endpoint
