"""``Client.open`` / ``AsyncClient.open`` (streamed request bodies) against a fake node: a raw
ROUTER in a thread playing the node's side of docs/protocol.md (credit window of 8, CREDIT
[12, id, n] as it reads pieces, answers CHUNK/CHOKE/ERROR), so each promise of the client is
checked on the wire: the window held, big writes split, small ones gathered, an early error
raised at once, CANCEL on an early exit, an answer that interleaves with the body."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from cocaine_core import protocol
from cocaine_core.client import AsyncClient, Client
from cocaine_core.client_upload_body import COALESCE, FIRST_CREDIT, PIECE, WINDOW
from cocaine_core.errors import ServiceError
from cocaine_core.protocol import Code
from cocaine_core.testing import free_port, wait_until

KIB, MIB = 2**10, 2**20


class FakeNode:
    """The node's side of streamed requests, on a ROUTER in a thread of its own.

    It "reads" one unread piece every ``read_every`` seconds (granting CREDIT 1 for it, or
    ``step`` at a time), hashes what it read, and answers once the body ended and all was
    read: ``"<bytes> <sha256>"`` then CHOKE. ``error_after``: after that many pieces it
    answers ERROR 503 and forgets the request; ``echo``: each piece read is sent back as a
    CHUNK; ``answer_at_once``: answers on the REQUEST without reading; ``hold``: the final
    answer waits for this event; ``fill_first``: it reads nothing before the client used its
    whole window (or ended the body)."""

    def __init__(self, *, read_every: float = 0.0, step: int = 1, error_after: int | None = None,
                 echo: bool = False, answer_at_once: bool = False,
                 hold: threading.Event | None = None, fill_first: bool = False) -> None:
        self.fill_first = fill_first
        self.read_every, self.step, self.error_after = read_every, step, error_after
        self.echo, self.answer_at_once, self.hold = echo, answer_at_once, hold
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE)
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.requests: list[list[Any]] = []  # REQUEST headers, with the first piece's size
        self.sizes: list[int] = []  # of every piece received, in order
        self.max_unread = 0  # most pieces received beyond the credit granted so far
        self.overruns = 0  # pieces received past the credit (a client that broke the window)
        self.cancels: list[Any] = []
        self.errors_sent = 0
        self.read_bytes = 0
        self._state: dict[Any, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and close the socket."""
        self._stop.set()
        self._thread.join(10)
        self.socket.close(linger=0)
        self.context.term()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.socket.poll(5):
                while True:
                    try:
                        frames = self.socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._take(frames)
            self._read_some()

    def _send(self, who: bytes, *header: Any, data: bytes | None = None) -> None:
        frames = [who, protocol.pack(*header)]
        if data is not None:
            frames.append(data)
        self.socket.send_multipart(frames)

    def _take(self, frames: list[bytes]) -> None:
        who, fields = frames[0], protocol.unpack(frames[1])
        code, rid = fields[0], fields[1]
        key = (who, rid)
        if code == Code.REQUEST:
            self.requests.append([*fields, len(frames[2]) if len(frames) > 2 else None])
            state = self._state[key] = {"unread": collections.deque(), "granted": WINDOW,
                                        "received": 0, "ended": False, "hash": hashlib.sha256(),
                                        "bytes": 0, "owed": 0, "next_read": 0.0,
                                        "filled": not self.fill_first}
            if len(frames) > 2 and frames[2]:
                state["unread"].append(frames[2])
                state["received"] += 1
            # The job starts at once: the rest of the window (a client starts with one piece).
            self._send(who, Code.CREDIT, rid, WINDOW - FIRST_CREDIT)
            if self.answer_at_once:
                self._send(who, Code.CHUNK, rid, data=b"done early")
                self._send(who, Code.CHOKE, rid)
                del self._state[key]
        elif code == Code.CANCEL:
            self.cancels.append(rid)
            self._state.pop(key, None)
        elif code in (Code.CHUNK, Code.CHOKE):
            state = self._state.get(key)
            if len(frames) > 2:
                self.sizes.append(len(frames[2]))
            if state is None:
                return  # a request that has ended: dropped, as the node does
            if len(frames) > 2:
                state["unread"].append(frames[2])
                state["received"] += 1
                unread = state["received"] - state["granted"] + WINDOW
                self.max_unread = max(self.max_unread, unread)
                if state["received"] > state["granted"]:
                    self.overruns += 1
                if self.error_after is not None and state["received"] >= self.error_after:
                    self._send(who, Code.ERROR, rid, 503, "queue full")
                    self.errors_sent += 1
                    del self._state[key]
                    return
            if code == Code.CHOKE:
                state["ended"] = True

    def _read_some(self) -> None:
        now = time.monotonic()
        for (who, rid), state in list(self._state.items()):
            state["filled"] |= len(state["unread"]) >= WINDOW or state["ended"]
            while state["filled"] and state["unread"] and now >= state["next_read"]:
                piece = state["unread"].popleft()
                state["next_read"] = now + self.read_every
                state["hash"].update(piece)
                state["bytes"] += len(piece)
                self.read_bytes += len(piece)
                state["owed"] += 1
                if state["owed"] >= self.step:
                    self._send(who, Code.CREDIT, rid, state["owed"])
                    state["granted"] += state["owed"]
                    state["owed"] = 0
                if self.echo:
                    self._send(who, Code.CHUNK, rid, data=piece)
            if state["ended"] and not state["unread"] and (self.hold is None
                                                           or self.hold.is_set()):
                self._send(who, Code.CHUNK, rid,
                           data=f"{state['bytes']} {state['hash'].hexdigest()}".encode())
                self._send(who, Code.CHOKE, rid)
                del self._state[(who, rid)]


@pytest.fixture
def fake_node() -> Iterator[Any]:
    made: list[FakeNode] = []

    def make(**behaviour: Any) -> FakeNode:
        made.append(FakeNode(**behaviour))
        return made[-1]

    yield make
    for node in made:
        node.close()


def digest(data: bytes) -> bytes:
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode()


# -- the blocking client ----------------------------------------------------------------------


def test_a_body_streams_in_pieces_and_the_window_holds(fake_node) -> None:
    node = fake_node(read_every=0.002, fill_first=True)
    data = os.urandom(3 * MIB)
    with Client(node.endpoint, wait=30) as client, client.open("app", "store") as request:
        for i in range(0, len(data), 64 * KIB):
            request.write(data[i:i + 64 * KIB])
        request.end()
        assert request.read() == digest(data)
    header = node.requests[0]
    assert header[:4] == [Code.REQUEST, request.id, "app", "store"]
    assert header[4]["stream"] is True and header[-1] is None  # no body frame: all in CHUNKs
    assert node.overruns == 0 and node.max_unread <= WINDOW
    assert node.max_unread == WINDOW  # the client did use its whole window
    assert node.sizes == [COALESCE] * (len(data) // COALESCE)  # 64 KiB writes gathered


def test_credit_granted_in_steps_of_four(fake_node) -> None:
    node = fake_node(step=4, read_every=0.001, fill_first=True)
    data = os.urandom(12 * MIB + 17)
    with Client(node.endpoint, wait=30) as client, client.open("app", "store") as request:
        request.write(data)
        request.end()
        assert request.read() == digest(data)
    assert node.overruns == 0 and node.max_unread == WINDOW


def test_a_big_write_goes_in_pieces_of_at_most_a_mebibyte(fake_node) -> None:
    node = fake_node()
    data = os.urandom(3 * MIB + MIB // 2)
    with Client(node.endpoint, wait=30) as client, client.open("app", "store") as request:
        request.write(data)
        assert node.sizes == [] or max(node.sizes) <= PIECE
        request.end()
        assert request.read() == digest(data)
    assert node.sizes == [PIECE, PIECE, PIECE, MIB // 2]


def test_small_writes_are_gathered_and_flush_sends_them(fake_node) -> None:
    node = fake_node()
    with Client(node.endpoint, wait=30) as client, client.open("app", "store") as request:
        for _ in range(300):
            request.write(b"x" * KIB)  # bytes ...
        request.write(bytearray(b"y" * 10))  # ... bytearray, memoryview and text too
        request.write(memoryview(b"z" * 10))
        request.write("é")
        wait_until(lambda: node.sizes == [COALESCE], timeout=10, message="one gathered piece")
        request.flush()
        wait_until(lambda: len(node.sizes) == 2, timeout=10, message="the flushed piece")
        assert node.sizes == [COALESCE, 300 * KIB - COALESCE + 22]
        with pytest.raises(TypeError, match="write\\(\\) takes bytes"):
            request.write(12)  # type: ignore[arg-type]
        request.end()
        assert request.read() == digest(b"x" * 300 * KIB + b"y" * 10 + b"z" * 10 + "é".encode())


def test_an_error_while_the_body_is_written_is_raised_by_the_next_write(fake_node) -> None:
    node = fake_node(error_after=2)
    with Client(node.endpoint, wait=30) as client:
        request = client.open("app", "store")
        request.write(b"a" * COALESCE)
        request.write(b"b" * COALESCE)  # the node answers 503 on this one
        wait_until(lambda: node.errors_sent == 1, message="the node's error")
        started = time.monotonic()
        with pytest.raises(ServiceError) as error:
            request.write(b"c")  # gathered, not sent: the socket is looked at anyway
        assert time.monotonic() - started < 1
        assert (error.value.code, error.value.message) == (503, "queue full")
        with pytest.raises(ServiceError):
            request.end()  # the same error again, and nothing sent
        request.close()
        assert node.cancels == []  # the node ended it: nothing to cancel
        assert len(node.sizes) == 2


def test_an_error_when_out_of_credit_ends_the_wait_at_once(fake_node) -> None:
    node = fake_node(error_after=WINDOW, read_every=3600)  # reads nothing, then fails
    with Client(node.endpoint, wait=30) as client, client.open("app", "store") as request:
        started = time.monotonic()
        with pytest.raises(ServiceError) as error:
            for _ in range(WINDOW + 4):
                request.write(b"p" * COALESCE)
        assert error.value.code == 503 and time.monotonic() - started < 5
    # The window, and perhaps the piece its one read granted, sent before the error came.
    assert WINDOW <= len(node.sizes) <= WINDOW + 1 and node.cancels == []


def test_no_credit_within_wait_is_an_error_that_says_why(fake_node) -> None:
    node = fake_node(read_every=3600)  # reads one piece, then nothing more for an hour
    with Client(node.endpoint, wait=0.5) as client:
        with pytest.raises(ServiceError) as error, client.open("app", "store") as request:
            for _ in range(WINDOW + 2):
                request.write(b"p" * COALESCE)
        assert error.value.code == 500
        assert "took no more of the body within 0.5 s" in error.value.message
        assert "request.stream" in error.value.message
        wait_until(lambda: node.cancels == [request.id], message="the CANCEL")


def test_leaving_the_block_early_cancels(fake_node) -> None:
    node = fake_node()
    with Client(node.endpoint, wait=30) as client:
        with pytest.raises(RuntimeError), client.open("app", "store") as request:
            request.write(b"a" * COALESCE)
            raise RuntimeError("the source failed")
        wait_until(lambda: node.cancels == [request.id], message="the CANCEL")
        with pytest.raises(ServiceError, match="closed"):
            request.write(b"more")
        # The client is usable again: a new request, a new id.
        with client.open("app", "store") as again:
            again.end()
            assert again.read() == digest(b"")
        assert again.id == request.id + 1


def test_an_answer_that_interleaves_with_the_body(fake_node) -> None:
    node = fake_node(echo=True, read_every=0.001)
    pieces = [os.urandom(COALESCE) for _ in range(40)]  # 5 windows: credit comes with echoes
    got: list[bytes] = []
    with Client(node.endpoint, wait=30) as client, client.open("app", "echo") as request:
        for piece in pieces:
            request.write(piece)
            got.extend(request.received())  # never waits
        request.end()
        got.extend(request)
    assert b"".join(got[:-1]) == b"".join(pieces)
    assert got[-1] == digest(b"".join(pieces))
    assert node.overruns == 0


def test_an_unread_answer_past_its_bound_fails_a_write_instead_of_piling_up(fake_node) -> None:
    node = fake_node(echo=True)
    with Client(node.endpoint, wait=30) as client:
        with pytest.raises(ServiceError) as error, client.open("app", "echo") as request:
            for _ in range(200):
                request.write(b"e" * COALESCE)  # the echoes are never read
        assert error.value.code == 400 and "received()" in error.value.message
        wait_until(lambda: node.cancels == [request.id], message="the CANCEL")


def test_answer_to_takes_the_answer_as_it_comes(fake_node) -> None:
    node = fake_node(echo=True)
    got: list[bytes] = []
    with Client(node.endpoint, wait=30) as client, client.open("app", "echo") as request:
        request.answer_to = got.append
        for _ in range(200):  # far past the bound of chunks kept
            request.write(b"e" * COALESCE)
        request.end()
        got.extend(request)
    assert b"".join(got[:-1]) == b"e" * COALESCE * 200


def test_an_answer_that_ends_before_the_body_drops_the_rest(fake_node) -> None:
    node = fake_node(answer_at_once=True)
    with Client(node.endpoint, wait=30) as client, client.open("app", "store") as request:
        wait_until(lambda: request.received() == [b"done early"], message="the answer")
        assert request.done
        request.write(b"x" * COALESCE)  # dropped: the handler wants no more
        request.end()
        assert request.read() == b""
    assert node.sizes == [] and node.cancels == []


def test_a_control_call_is_never_streamed(fake_node) -> None:
    node = fake_node()
    with Client(node.endpoint, wait=30) as client, pytest.raises(ServiceError) as error:
        client.open("@node", "info")
    assert error.value.code == 400 and "control(method" in error.value.message
    time.sleep(0.05)  # nothing to wait for: nothing may arrive
    assert node.requests == []


def test_nothing_listening_fails_at_once() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with Client(endpoint, wait=30) as client, pytest.raises(ServiceError) as error, \
            client.open("app", "store") as request:
        for _ in range(WINDOW + 1):  # the window's pieces queue; the next waits for credit
            request.write(b"p" * COALESCE)
    assert error.value.code == 503 and "nothing listens" in error.value.message
    assert time.monotonic() - started < 3


def test_several_nodes_open_on_the_current_one(fake_node) -> None:
    first, second = fake_node(), fake_node()
    with Client([first.endpoint, second.endpoint], wait=30) as client, \
            client.open("app", "store") as request:
        request.write(b"abc")
        request.end()
        assert request.read() == digest(b"abc")
    assert len(first.requests) == 1 and second.requests == []


# -- the asyncio client -----------------------------------------------------------------------


def test_async_a_body_streams_and_the_window_holds(fake_node) -> None:
    node = fake_node(read_every=0.002, fill_first=True)
    data = os.urandom(3 * MIB)

    async def main() -> bytes:
        async with AsyncClient(node.endpoint, wait=30) as client, \
                client.open("app", "store") as request:
            for i in range(0, len(data), 100 * KIB):
                await request.write(data[i:i + 100 * KIB])
            await request.end()
            return await request.read()

    assert asyncio.run(main()) == digest(data)
    assert node.overruns == 0 and node.max_unread == WINDOW


def test_async_error_mid_body_and_cancel_on_exit(fake_node) -> None:
    failing, plain = fake_node(error_after=2), fake_node()

    async def main() -> None:
        async with AsyncClient(failing.endpoint, wait=30) as client:
            with pytest.raises(ServiceError) as error:
                async with client.open("app", "store") as request:
                    for _ in range(WINDOW + 4):
                        await request.write(b"p" * COALESCE)
            assert error.value.code == 503
        async with AsyncClient(plain.endpoint, wait=30) as client:
            with pytest.raises(RuntimeError):
                async with client.open("app", "store") as request:
                    await request.write(b"p" * COALESCE)
                    raise RuntimeError("stop")
            await asyncio.to_thread(wait_until, lambda: plain.cancels == [request.id])

    asyncio.run(main())
    assert failing.cancels == []


def test_async_an_answer_read_by_another_task_while_writing(fake_node) -> None:
    node = fake_node(echo=True)
    pieces = [os.urandom(COALESCE) for _ in range(120)]  # echoes: far past the bound kept

    async def main() -> list[bytes]:
        async with AsyncClient(node.endpoint, wait=30) as client, \
                client.open("app", "echo") as request:
            async def read() -> list[bytes]:
                return [chunk async for chunk in request]

            reader = asyncio.ensure_future(read())
            for piece in pieces:
                await request.write(piece)
            await request.end()
            return await reader

    got = asyncio.run(main())
    assert b"".join(got[:-1]) == b"".join(pieces) and node.overruns == 0


def test_async_control_call_is_never_streamed(fake_node) -> None:
    node = fake_node()

    async def main() -> None:
        async with AsyncClient(node.endpoint, wait=30) as client:
            client.open("@node", "info")

    with pytest.raises(ServiceError, match="control"):
        asyncio.run(main())


def test_async_nothing_listening_fails_at_once() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"

    async def main() -> None:
        async with AsyncClient(endpoint, wait=30) as client, \
                client.open("app", "store") as request:
            for _ in range(WINDOW + 1):
                await request.write(b"p" * COALESCE)
            await request.end()
            await request.read()

    started = time.monotonic()
    with pytest.raises(ServiceError) as error:
        asyncio.run(main())
    assert error.value.code == 503 and "nothing listens" in error.value.message
    assert time.monotonic() - started < 3


def test_async_several_nodes_open_on_the_current_one(fake_node) -> None:
    first, second = fake_node(), fake_node()

    async def main() -> bytes:
        async with AsyncClient([first.endpoint, second.endpoint], wait=30) as client, \
                client.open("app", "store") as request:
            await request.write(b"abc")
            await request.end()
            return await request.read()

    assert asyncio.run(main()) == digest(b"abc")
    assert len(first.requests) == 1 and second.requests == []


# -- cocaine call APP EVENT - ------------------------------------------------------------------


def cocaine() -> str:
    return str(Path(sys.executable).with_name("cocaine"))


def rss_peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_cocaine_call_streams_a_big_stdin_in_little_memory(fake_node) -> None:
    """512 MiB of stdin through ``cocaine call -`` (the real node's test sends 1 GiB)."""
    hold = threading.Event()
    node = fake_node(hold=hold)
    size = 2**29
    producer = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
    try:
        call = subprocess.Popen([cocaine(), "call", "app", "store", "-", "--node",
                                 node.endpoint, "--wait", "60"], stdin=producer.stdout,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert producer.stdout is not None
        producer.stdout.close()
        try:
            wait_until(lambda: node.read_bytes >= size, timeout=180,
                       message="the body to arrive")
            peak = rss_peak_kib(call.pid)  # the answer is held back: the client still runs
            hold.set()
            out, err = call.communicate(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                call.kill()
            call.wait()
    finally:
        producer.kill()
        producer.wait()
    assert call.returncode == 0, err.decode()
    zeros = hashlib.sha256()
    for _ in range(size // MIB):
        zeros.update(bytes(MIB))
    assert out == f"{size} {zeros.hexdigest()}".encode()
    assert node.overruns == 0
    assert peak < 150 * 1024, f"the client's peak RSS was {peak} KiB for a 512 MiB body"


def test_cocaine_call_prints_the_answer_as_the_body_streams(fake_node) -> None:
    node = fake_node(echo=True)
    call = subprocess.Popen([cocaine(), "call", "app", "echo", "-", "--node", node.endpoint],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert call.stdin is not None and call.stdout is not None
    try:
        call.stdin.write(b"first line\n")
        call.stdin.flush()
        # Echoed before stdin ends: the line was sent on its own (nothing more to read).
        assert select.select([call.stdout], [], [], 30)[0], "no echo before stdin ended"
        assert call.stdout.read(len(b"first line\n")) == b"first line\n"
        call.stdin.write(b"second\n")
        call.stdin.close()
        rest = call.stdout.read()
        assert call.wait(30) == 0, call.stderr.read() if call.stderr else ""
    finally:
        with contextlib.suppress(ProcessLookupError):
            call.kill()
        call.wait()
    assert rest == b"second\n" + digest(b"first line\nsecond\n")


def test_cocaine_call_at_node_still_reads_stdin_as_json(fake_node) -> None:
    node = fake_node()  # it answers no control call: the client gives up after --wait
    result = subprocess.run([cocaine(), "call", "@node", "list", "-", "--node", node.endpoint,
                             "--wait", "1"], input=b'{"x": 1}', capture_output=True,
                            timeout=60)
    assert node.requests, result.stderr
    header = node.requests[0]
    assert header[2:4] == ["@node", "list"] and "stream" not in header[4]
    assert header[-1] == len(msgpack.packb({"x": 1}))
