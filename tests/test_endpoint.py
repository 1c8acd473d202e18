"""The node's endpoint (``cocaine_core/endpoint.py``): CANCEL and the requests it remembers.

Raw DEALER sockets speak the protocol here, as any client in any language would: a CANCEL of
nothing is nothing, a malformed one gets a 400 at most, and the requests remembered for
CANCEL never outgrow the jobs alive.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from cocaine_core import protocol
from cocaine_core.engine.job import Job
from cocaine_core.native_sink import InFlight, NativeSink
from cocaine_core.protocol import Code

APP = '''
import time


def echo(request):
    return request.data


def slow(request):
    time.sleep(float(request.data or 0.5))
    return request.data
'''

TASKS = {"echo": {"type": "native-server"}, "slow": {"type": "native-server"}}


class RawClient:
    """A bare DEALER speaking the client protocol by hand."""

    def __init__(self, endpoint: str) -> None:
        self.socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.connect(endpoint)

    def send(self, *header: Any, body: bytes | None = None) -> None:
        frames = [protocol.pack(*header)]
        if body is not None:
            frames.append(body)
        self.socket.send_multipart(frames)

    def request(self, request_id: Any, event: str, body: bytes = b"",
                policy: Any = None) -> None:
        self.send(Code.REQUEST, request_id, "a", event, policy, body=body)

    def receive(self, timeout: float = 10.0) -> tuple[list[Any], bytes | None]:
        assert self.socket.poll(int(timeout * 1000)), "no answer came"
        frames = self.socket.recv_multipart()
        return protocol.unpack(frames[0]), frames[1] if len(frames) > 1 else None

    def silent(self, timeout: float = 0.3) -> bool:
        return not self.socket.poll(int(timeout * 1000))

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def node(cocaine_node: Any, make_app: Any) -> Any:
    cocaine_node.add_app("a", make_app(APP, tasks=TASKS,
                                       engine={"pool-limit": 1, "queue-limit": 5}))
    return cocaine_node


@pytest.fixture
def raw(node: Any) -> Iterator[RawClient]:
    client = RawClient(node.endpoint)
    yield client
    client.close()


def in_flight(node: Any) -> int:
    return int(node.call_soon(lambda: len(node.node.endpoint.in_flight)))


# -- InFlight --------------------------------------------------------------------------------------


class Sent:
    """Stands for the endpoint's socket: keeps what a sink sends."""

    def __init__(self) -> None:
        self.messages: list[list[bytes]] = []

    def send(self, frames: list[bytes]) -> bool:
        self.messages.append(frames)
        return True


def tracked(key: tuple[bytes, Any], table: InFlight) -> Job:
    """A job answering request ``key``, remembered in ``table`` as the endpoint does."""
    sink = NativeSink(Sent(), [key[0]], key[1])  # type: ignore[arg-type]
    sink.in_flight = table
    job = Job("echo", sink=sink)
    table.add(key, engine=None, job=job)  # type: ignore[arg-type]
    return job


def test_in_flight_is_bounded_and_forgets_the_oldest_first() -> None:
    table = InFlight(limit=3)
    for request_id in range(5):
        tracked((b"client", request_id), table)
    assert len(table) == 3 and table.evicted == 2
    assert table.pop((b"client", 0)) is None and table.pop((b"client", 1)) is None
    assert table.pop((b"client", 4)) is not None
    assert len(table) == 2


def test_in_flight_forgets_a_request_when_its_job_ends_and_keeps_a_reused_id() -> None:
    table = InFlight()
    first = tracked((b"c", 1), table)
    second = tracked((b"c", 1), table)  # the same id again, while the first still runs
    other = tracked((b"d", 1), table)  # another client's request 1
    assert len(table) == 2
    first.complete(b"1")
    assert len(table) == 2, "the first request's end forgets nothing of the second"
    second.fail(502, "it broke")
    assert len(table) == 1
    other.complete()
    assert len(table) == 0


# -- CANCEL on a node ------------------------------------------------------------------------------


def test_cancel_of_an_unknown_or_finished_request_is_nothing(node: Any, raw: RawClient) -> None:
    raw.send(Code.CANCEL, 12345)
    raw.send(Code.CANCEL, "never-sent")
    assert raw.silent(), "no answer to a CANCEL"
    raw.request(1, "echo", b"hi")
    assert raw.receive() == ([Code.CHOKE, 1], b"hi")
    raw.send(Code.CANCEL, 1)
    assert raw.silent()
    assert in_flight(node) == 0
    jobs = node.info("a")["jobs"]
    assert (jobs["done"], jobs["abandoned"]) == (1, 0)
    raw.request(2, "echo", b"still")
    assert raw.receive() == ([Code.CHOKE, 2], b"still")


@pytest.mark.parametrize("header", [[Code.CANCEL], [Code.CANCEL, [1, 2]],
                                    [Code.CANCEL, 1.5], [Code.CANCEL, None]],
                         ids=["no id", "a list", "a float", "nil"])
def test_a_malformed_cancel_gets_a_400_and_the_node_serves_on(raw: RawClient,
                                                             header: list[Any]) -> None:
    raw.send(*header)
    reply, _ = raw.receive()
    assert reply[:3] == [Code.ERROR, None, 400]
    assert reply[3].startswith("expected [11, request_id]")
    raw.request(1, "echo", b"ok")
    assert raw.receive() == ([Code.CHOKE, 1], b"ok")


def test_a_client_cannot_cancel_another_clients_request(node: Any, raw: RawClient) -> None:
    raw.request(1, "slow", b"0.3")
    raw.request(2, "echo", b"mine")  # queued behind the slow one
    other = RawClient(node.endpoint)
    try:
        other.send(Code.CANCEL, 2)
        assert other.silent()
    finally:
        other.close()
    assert raw.receive() == ([Code.CHOKE, 1], b"0.3")
    assert raw.receive() == ([Code.CHOKE, 2], b"mine")
    assert node.info("a")["jobs"]["abandoned"] == 0


def test_a_cancelled_queued_request_never_runs_and_gets_no_answer(node: Any,
                                                                 raw: RawClient) -> None:
    raw.request(1, "slow", b"0.3")
    raw.request(2, "echo", b"dropped")
    raw.request(3, "echo", b"kept")
    raw.send(Code.CANCEL, 2)
    assert raw.receive() == ([Code.CHOKE, 1], b"0.3")
    assert raw.receive() == ([Code.CHOKE, 3], b"kept")
    assert raw.silent()
    jobs = node.info("a")["jobs"]
    assert (jobs["done"], jobs["abandoned"]) == (2, 1)
    assert in_flight(node) == 0


def test_a_client_that_never_reads_cannot_grow_what_the_endpoint_remembers(
        node: Any, raw: RawClient) -> None:
    # pool-limit 1 and queue-limit 5: at most 6 jobs alive, whatever a client sends.
    raw.request(0, "slow", b"0.5")
    sent = 2000
    for request_id in range(1, sent):
        raw.request(request_id, "echo", b"x")
    deadline = time.monotonic() + 20
    while node.info("a")["tasks"]["echo"]["requests"] < sent - 1:
        assert time.monotonic() < deadline, "the requests never all arrived"
        assert in_flight(node) <= 6
        time.sleep(0.01)
    assert in_flight(node) <= 6
    deadline = time.monotonic() + 20
    while in_flight(node):
        assert time.monotonic() < deadline, "requests still remembered after their jobs ended"
        time.sleep(0.02)
    jobs = node.info("a")["jobs"]
    assert jobs["done"] + jobs["refused"] == sent


@pytest.mark.parametrize("header", [[Code.REQUEST, 1, "a", "echo"],
                                    [Code.REQUEST, 1, "a", "echo", None],
                                    [Code.REQUEST, 1, "a", "echo", {"urgent": False}]],
                         ids=["no policy", "nil policy", "no deadline"])
def test_an_old_client_without_deadline_or_cancel_is_served_as_before(
        node: Any, raw: RawClient, header: list[Any]) -> None:
    raw.send(*header, body=b"old")
    assert raw.receive() == ([Code.CHOKE, 1], b"old")
    assert in_flight(node) == 0


def test_a_policy_time_past_its_range_is_refused_naming_the_range():
    from cocaine_core.endpoint import Policy
    from cocaine_core.errors import ServiceError

    for value in (1e300, 10**9, 0, -1, float("nan"), True, "5"):
        try:
            Policy.parse({"timeout": value})
        except ServiceError as exc:
            assert exc.code == 400 and "above 0 and below 1e9" in exc.message, exc.message
        else:
            raise AssertionError(f"{value!r} was accepted")
    assert Policy.parse({"timeout": 2.5, "deadline": 10}).timeout == 2.5


@pytest.mark.parametrize("request_id", [1.5, [1], {"a": 1}], ids=["a float", "a list", "a map"])
def test_a_request_id_that_is_not_an_integer_or_string_is_a_400(raw: RawClient,
                                                                request_id: Any) -> None:
    """Such a request ran, and its answer came back with a nil id the client could not
    match to its request."""
    raw.request(request_id, "echo", b"x")
    reply, _ = raw.receive()
    assert reply[:3] == [Code.ERROR, None, 400]
    assert "request_id must be an integer or a string" in reply[3]


def test_a_request_of_more_than_two_frames_is_a_400(raw: RawClient) -> None:
    """Frames past the body were ignored without a word (and each may be --max-message)."""
    raw.socket.send_multipart([protocol.pack(Code.REQUEST, 7, "a", "echo", None), b"x", b"y"])
    reply, _ = raw.receive()
    assert reply[:3] == [Code.ERROR, 7, 400]
    assert "at most one body frame" in reply[3]
    raw.request(8, "echo", b"ok")
    assert raw.receive() == ([Code.CHOKE, 8], b"ok")
