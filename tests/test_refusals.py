"""Refusals under a flood (issue 20): a request whose app's queue is full is refused at once,
without a job (``cocaine_core/refusals.py``), and a client's answers held back while its
queue in ZeroMQ was full leave as soon as ZeroMQ can take them (``clients.Outbox``).

What a client sees must not change: every request answered exactly once, in order, the same
503 message, the same counters, ``queue-limit`` exact; and a request the engine would not
refuse (a bad policy, an unknown event, a deadline) goes the whole way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from cocaine_core import clients, protocol
from cocaine_core.clients import Outbox
from cocaine_core.errortext import MESSAGE_LIMIT, cut
from cocaine_core.protocol import Code
from cocaine_core.refusals import Refuser
from cocaine_core.zmqloop import FULL, SocketReader

APP = '''
import os
import time


def echo(request):
    return request.data


def hold(request):
    # Holds its slave until the test creates the file named in the body (at most 30 s).
    path = request.data.decode()
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return b"held"
'''

TASKS = {"echo": {"type": "native-server"}, "hold": {"type": "native-server"}}
QUEUE_LIMIT = 5
FULL_MESSAGE = (f"queue is full: app 'a' already has {QUEUE_LIMIT} jobs waiting "
                f"(engine.queue-limit); retry later, or raise queue-limit or pool-limit")


class Client:
    """A bare DEALER speaking the client protocol by hand."""

    def __init__(self, endpoint: str) -> None:
        self.socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)

    def request(self, request_id: Any, event: str, body: bytes = b"",
                policy: Any = None) -> None:
        self.socket.send_multipart([protocol.pack(Code.REQUEST, request_id, "a", event,
                                                  policy), body])

    def receive(self, timeout: float = 20.0) -> tuple[list[Any], bytes | None]:
        assert self.socket.poll(int(timeout * 1000)), "no answer came"
        frames = self.socket.recv_multipart()
        return protocol.unpack(frames[0]), frames[1] if len(frames) > 1 else None

    def silent(self, timeout: float = 0.3) -> bool:
        return not self.socket.poll(int(timeout * 1000))

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def node(cocaine_node: Any, make_app: Any) -> Any:
    cocaine_node.add_app("a", make_app(APP, tasks=TASKS, engine={
        "pool-limit": 1, "pool-min": 1, "queue-limit": QUEUE_LIMIT}))
    return cocaine_node


@pytest.fixture
def client(node: Any) -> Iterator[Client]:
    c = Client(node.endpoint)
    yield c
    c.close()


def fill(node: Any, client: Client, release: Path) -> None:
    """Hold the only slave and fill the queue: every request after this is refused."""
    client.request("held", "hold", str(release).encode())
    engine = node.node.apps["a"]
    deadline = time.monotonic() + 20
    while not node.call_soon(lambda: any(s.jobs for s in engine.pool.slaves.values())):
        assert time.monotonic() < deadline, "the held job never started"
        time.sleep(0.01)
    for index in range(QUEUE_LIMIT):
        client.request(f"queued-{index}", "echo", b"q")
    deadline = time.monotonic() + 20
    while node.call_soon(lambda: len(engine.queue)) < QUEUE_LIMIT:
        assert time.monotonic() < deadline, "the queue never filled"
        time.sleep(0.01)


def test_a_flood_is_refused_at_once_each_request_answered_once_in_order(
        node: Any, client: Client, tmp_path: Path) -> None:
    release = tmp_path / "release"
    fill(node, client, release)
    flood = 2000
    for request_id in range(flood):
        client.request(request_id, "echo", b"x" * 100)
    refused = []
    for _ in range(flood):
        header, body = client.receive()
        assert header[:3] == [Code.ERROR, header[1], 503] and body is None, header
        assert header[3] == FULL_MESSAGE
        refused.append(header[1])
    assert refused == list(range(flood)), "a refusal was lost, doubled or reordered"
    # The queue never took more than queue-limit: the held job and the queued ones only.
    assert node.call_soon(lambda: len(node.node.apps["a"].queue)) == QUEUE_LIMIT
    release.touch()
    answers = {client.receive()[0][1] for _ in range(QUEUE_LIMIT + 1)}
    assert answers == {"held", *(f"queued-{index}" for index in range(QUEUE_LIMIT))}
    assert client.silent()
    info = node.info("a")
    jobs = info["jobs"]
    assert (jobs["done"], jobs["refused"]) == (QUEUE_LIMIT + 1, flood)
    assert jobs["events"]["echo"]["codes"] == {"200": QUEUE_LIMIT, "503": flood}
    assert info["tasks"]["echo"]["requests"] == QUEUE_LIMIT + flood
    assert node.call_soon(lambda: len(node.node.endpoint.in_flight)) == 0


@pytest.mark.parametrize(("policy", "event", "code"), [
    ({"urgent": True}, "echo", 503),          # urgent jumps the queue, not its limit
    ({"urgent": "yes"}, "echo", 400),         # a bad policy is a 400, full queue or not
    ({"deadline": 30.0}, "echo", 503),        # the whole way: refused by submit
    ({"timeout": -1}, "echo", 400),
    (None, "nope", 404),                      # no such event, full queue or not
    ("not a map", "echo", 400),
], ids=["urgent", "bad urgent", "deadline", "bad timeout", "no event", "bad policy"])
def test_a_full_queue_answers_what_the_whole_way_would(
        node: Any, client: Client, tmp_path: Path, policy: Any, event: str,
        code: int) -> None:
    release = tmp_path / "release"
    fill(node, client, release)
    client.request("probe", event, b"x", policy)
    header, _ = client.receive()
    assert header[:3] == [Code.ERROR, "probe", code], header
    if code == 503:
        assert header[3] == FULL_MESSAGE
    release.touch()
    for _ in range(QUEUE_LIMIT + 1):
        assert client.receive()[0][0] == Code.CHOKE
    jobs = node.info("a")["jobs"]
    assert jobs["refused"] == (1 if code == 503 else 0)


def test_a_refusal_frame_is_what_protocol_pack_makes() -> None:
    refuser = Refuser({}, None, lambda: False)  # type: ignore[arg-type]
    long = "x" * (MESSAGE_LIMIT + 100)
    for request_id in (0, 1, 127, 128, 2**40, -5, "id", "é" * 40, b"raw", None):
        for message in (FULL_MESSAGE, "app 'a' is stopping", long, "line\nbreak"):
            assert refuser.frame(request_id, message) == protocol.pack(
                Code.ERROR, request_id, 503, cut(message, MESSAGE_LIMIT))


# -- answers held back for a full client --------------------------------------------------------


async def _held_answers_leave_when_the_client_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    # No timer can bring them: only the socket saying it can send again.
    monkeypatch.setattr(clients, "RETRY_FIRST", 60.0)
    monkeypatch.setattr(clients, "RETRY_MOST", 60.0)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    router: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.setsockopt(zmq.SNDHWM, 4)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer: zmq.Socket[bytes] = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.RCVHWM, 4)
    dealer.setsockopt(zmq.IDENTITY, b"slow")
    dealer.linger = 0
    dealer.connect(f"tcp://127.0.0.1:{port}")
    reader = SocketReader(router, lambda frames: None)
    outbox = Outbox(reader, lambda client, why: None)
    try:
        dealer.send(b"hello")
        deadline = time.monotonic() + 10
        while not router.poll(10):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        router.recv_multipart()
        body = b"x" * 1_000_000  # fills the kernel's buffers in a few messages
        sent = 0
        while reader.try_send([b"slow", b"%d" % sent, body]) != FULL:
            sent += 1
            assert sent < 1000
        total = sent + 50
        for index in range(sent, total):
            outbox.send([b"slow", b"%d" % index, body])
        assert outbox.waiting(b"slow") > 0
        got: list[int] = []
        deadline = time.monotonic() + 20
        while len(got) < total:
            assert time.monotonic() < deadline, f"only {len(got)} of {total} arrived"
            try:
                got.append(int(dealer.recv_multipart(zmq.NOBLOCK)[0]))
            except zmq.Again:
                await asyncio.sleep(0.001)
        assert got == list(range(total))
        assert outbox.waiting() == 0
    finally:
        outbox.close()
        reader.close()
        dealer.close()
        router.close()


def test_held_answers_leave_when_the_socket_can_send_not_on_a_timer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(asyncio.wait_for(_held_answers_leave_when_the_client_reads(monkeypatch), 60))


# -- reading ahead ------------------------------------------------------------------------------


async def _read_ahead_handles_each_message_once_in_order(count: int) -> list[int]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    router: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer: zmq.Socket[bytes] = context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(f"tcp://127.0.0.1:{port}")
    handled: list[int] = []
    most = [0, 0]

    def handle(frames: list[bytes]) -> None:
        handled.append(int(frames[1]))
        most[0] = max(most[0], len(reader._ahead))
        most[1] = max(most[1], reader._ahead_bytes)

    reader = SocketReader(router, handle)
    reader.read_ahead, reader.BATCH, reader.READ_AHEAD_BYTES = 50, 7, 300
    try:
        for index in range(count):
            dealer.send(b"%d" % index + b" " * (index % 40))
        deadline = time.monotonic() + 20
        while len(handled) < count:
            assert time.monotonic() < deadline, f"only {len(handled)} of {count} handled"
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # nothing more comes
        # Bounded: at most 50 messages, and 300 bytes but for the last message read.
        assert most[0] <= 50 and most[1] < 300 + 5 + 40 + 64, most
        return handled
    finally:
        reader.close()
        dealer.close()
        router.close()


def test_reading_ahead_handles_each_message_once_in_order_within_its_bounds() -> None:
    count = 3000
    handled = asyncio.run(asyncio.wait_for(
        _read_ahead_handles_each_message_once_in_order(count), 60))
    assert handled == list(range(count))
