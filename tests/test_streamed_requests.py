"""Streamed request bodies on the node's endpoint, spoken by a raw pyzmq client: credit, the
rules a client must keep, and what happens when it does not (docs/protocol.md, "Streamed
request"). The Python side (``request.stream``) and ``Client.open`` have tests of their own.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from cocaine_core import protocol
from cocaine_core.protocol import Code
from cocaine_core.testing import NodeProcess, wait_until, write_app

KiB, MiB, GiB = 2**10, 2**20, 2**30

APP = """
import hashlib, time

def digest(request):
    h, size, pieces = hashlib.sha256(), 0, 0
    for piece in request.stream:
        h.update(piece)
        size += len(piece)
        pieces += 1
    return f"{size} {h.hexdigest()} {pieces}"

def fail_early(request):
    raise ValueError("refused before reading")

def slow(request):
    time.sleep(float(request.meta.get("sleep", 0)) or 0.5)
    return b"".join(request.stream)

def echo(request):
    return request.data

def nap(request):
    time.sleep(float(request.data or 2))
    return b"rested"

oneway = echo
"""
TASKS: dict[str, Any] = {name: {"type": "native-server"}
                         for name in ("digest", "fail_early", "slow", "echo", "nap")}
TASKS["oneway"] = {"type": "native-sink", "publish": "tcp://127.0.0.1:0"}


def dealer(endpoint: str) -> zmq.Socket[bytes]:
    """A raw DEALER to the node."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def recv(sock: zmq.Socket[bytes], timeout: float = 30.0) -> tuple[list[Any], list[bytes]]:
    """The next message: its header and its payload frames."""
    assert sock.poll(int(timeout * 1000)), "no message from the node"
    frames = sock.recv_multipart()
    return protocol.unpack(frames[0]), frames[1:]


def upload(sock: zmq.Socket[bytes], request_id: int, app: str, event: str,
           pieces: Iterable[bytes], policy: dict[str, Any] | None = None) -> tuple[Any, int]:
    """Send ``pieces`` as a streamed request, keeping to the credit; return the answer's end
    (the header of its CHOKE or ERROR plus payload) and the most credit the client ever held
    (pieces it could send ahead of the handler)."""
    credit, most = 1, 1  # one piece while queued; the window once it runs
    source = iter(pieces)
    first = next(source)
    rest = _Peek(source)
    sock.send_multipart([protocol.pack(Code.REQUEST, request_id, app, event,
                                       {"stream": True, **(policy or {})}), first])
    credit -= 1
    answer: list[Any] = []
    ended = False
    while True:
        while rest and credit > 0:
            sock.send_multipart([protocol.pack(Code.CHUNK, request_id), rest.pop()])
            credit -= 1
        if not rest and not ended:
            sock.send_multipart([protocol.pack(Code.CHOKE, request_id)])
            ended = True
        header, payload = recv(sock)
        assert header[1] == request_id
        if header[0] == Code.CREDIT:
            credit += header[2]
            most = max(most, credit)
            continue
        if header[0] == Code.CHUNK:
            answer.append(payload[0])
            continue
        answer.extend(payload)
        return (header, b"".join(answer)), most


class _Peek:
    """An iterator that can say whether it has more."""

    def __init__(self, source: Iterator[bytes]) -> None:
        self.source = source
        self.next: bytes | None = next(source, None)

    def __bool__(self) -> bool:
        return self.next is not None

    def pop(self) -> bytes:
        item = self.next
        assert item is not None
        self.next = next(self.source, None)
        return item


@pytest.fixture
def node(node_process: Any, tmp_path: Path) -> NodeProcess:
    process = node_process("--app-uids", "none")
    manifest = write_app(tmp_path / "up", APP, TASKS, engine={"pool-limit": 2, "pool-min": 2})
    process.cli("app", "deploy", str(manifest), "--name", "up")
    with process.client(wait=30) as client:
        assert client.call("up", "echo", b"warm") == b"warm"
    return process


def _info(node: NodeProcess) -> dict[str, Any]:
    with node.client(wait=10) as client:
        return client.control("info")["apps"]["up"]


def test_a_streamed_body_reaches_the_handler_whole_within_the_window(node: NodeProcess) -> None:
    pieces = [bytes([i % 251]) * (64 * KiB) for i in range(200)]
    sock = dealer(node.endpoint)
    try:
        (header, answer), most = upload(sock, 1, "up", "digest", pieces)
    finally:
        sock.close()
    assert header[0] == Code.CHOKE, header
    size, digest, count = answer.decode().split()
    whole = b"".join(pieces)
    assert int(size) == len(whole) and digest == hashlib.sha256(whole).hexdigest()
    assert int(count) == 200
    assert most <= 8


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_a_1_gib_body_keeps_node_and_slave_memory_flat(node: NodeProcess) -> None:
    slaves = [s["pid"] for s in _info(node)["slaves"] if s["pid"]]
    watched = [node.process.pid, *slaves]
    before = {pid: _rss(pid) for pid in watched}
    peak = dict(before)
    piece = b"\x5a" * MiB
    sent = 0

    def pieces() -> Iterator[bytes]:
        nonlocal sent
        for i in range(1024):
            if i % 32 == 0:
                for pid in watched:
                    peak[pid] = max(peak[pid], _rss(pid))
            sent += 1
            yield piece

    sock = dealer(node.endpoint)
    try:
        (header, answer), most = upload(sock, 1, "up", "digest", pieces())
    finally:
        sock.close()
    assert header[0] == Code.CHOKE, header
    size, digest, _count = answer.decode().split()
    assert int(size) == GiB == sent * MiB
    expected = hashlib.sha256()
    for _ in range(1024):
        expected.update(piece)
    assert digest == expected.hexdigest()
    assert most <= 8
    for pid in watched:  # the window is 8 pieces of 1 MiB: far below the body
        grown = peak[pid] - before[pid]
        assert grown < 64 * MiB, f"process {pid} grew by {grown >> 20} MiB for a 1 GiB body"


def test_a_queued_streamed_request_holds_one_piece_until_its_job_starts(
        node: NodeProcess) -> None:
    """While its job waits in the queue, a streamed request may send one piece (as a plain
    request holds one body); the rest of the window comes when the job starts."""
    sock = dealer(node.endpoint)
    try:
        for rid in (1, 2):  # both slaves busy
            sock.send_multipart([protocol.pack(Code.REQUEST, rid, "up", "nap", None), b"3"])
        wait_until(lambda: _info(node)["pool"]["busy"] == 2, message="both slaves busy")
        sock.send_multipart([protocol.pack(Code.REQUEST, 3, "up", "digest", {"stream": True}),
                             b"a" * KiB])
        sock.send_multipart([protocol.pack(Code.CHUNK, 3), b"too soon"])
        sock.send_multipart([protocol.pack(Code.REQUEST, 4, "up", "digest", {"stream": True}),
                             b"b" * KiB])
        seen: dict[int, list[Any]] = {3: [], 4: [], 1: [], 2: []}
        while not (seen[3] and any(h[0] == Code.CREDIT for h in seen[4])):
            header, _ = recv(sock)
            seen[header[1]].append(header)
        assert seen[3][0][0] == Code.ERROR and seen[3][0][2] == 400, seen[3]
        assert "credit" in seen[3][0][3]
        # Request 4 got the rest of the window only once a slave took it.
        grant = next(h for h in seen[4] if h[0] == Code.CREDIT)
        naps_done = [h[0] for h in seen[1] + seen[2]]
        assert grant[2] == 7 and naps_done == [Code.CHOKE], (seen[4], naps_done)
        for _ in range(7):
            sock.send_multipart([protocol.pack(Code.CHUNK, 4), b"b" * KiB])
        sock.send_multipart([protocol.pack(Code.CHOKE, 4)])
        while True:
            header, payload = recv(sock)
            if header[1] == 4 and header[0] != Code.CREDIT:
                break
        assert header[0] == Code.CHOKE, header
        assert payload[0].split()[0] == str(8 * KiB).encode()
    finally:
        sock.close()


def test_a_piece_past_the_credit_fails_the_request_with_400(node: NodeProcess) -> None:
    sock = dealer(node.endpoint)
    try:
        sock.send_multipart([protocol.pack(Code.REQUEST, 7, "up", "slow", {"stream": True}),
                             b"a"])
        for _ in range(20):  # never waits for credit
            sock.send_multipart([protocol.pack(Code.CHUNK, 7), b"b" * KiB])
        while True:
            header, _ = recv(sock)
            if header[0] != Code.CREDIT:
                break
        assert header[0] == Code.ERROR and header[2] == 400, header
        assert "credit" in header[3].lower(), header[3]
        # The node goes on; the request's later pieces are dropped without a word.
        sock.send_multipart([protocol.pack(Code.CHOKE, 7), b"late"])
        sock.send_multipart([protocol.pack(Code.CHUNK, 99), b"unknown id"])
        assert not sock.poll(300)
    finally:
        sock.close()
    with node.client(wait=30) as client:
        assert client.call("up", "echo", b"still") == b"still"


def test_a_handler_that_fails_early_answers_before_the_body_ends(node: NodeProcess) -> None:
    sock = dealer(node.endpoint)
    try:
        sock.send_multipart([protocol.pack(Code.REQUEST, 3, "up", "fail_early",
                                           {"stream": True}), b"first"])
        header, _ = recv(sock)
        while header[0] == Code.CREDIT:  # the rest of the window, as the job starts
            header, _ = recv(sock)
        assert header[0] == Code.ERROR and header[2] == 502, header
        assert "refused before reading" in header[3]
        for _ in range(5):  # the client had not noticed: its pieces go nowhere
            sock.send_multipart([protocol.pack(Code.CHUNK, 3), b"more"])
        assert not sock.poll(300)
    finally:
        sock.close()


@pytest.mark.parametrize(("app", "event", "policy", "expect"), [
    ("@node", "list", {"stream": True}, "control request"),
    ("up", "digest", {"stream": "yes"}, "policy.stream"),
    ("up", "oneway", {"stream": True}, "native-sink"),
])
def test_streams_that_cannot_be_are_refused_with_400(node: NodeProcess, app: str, event: str,
                                                     policy: dict[str, Any],
                                                     expect: str) -> None:
    sock = dealer(node.endpoint)
    try:
        sock.send_multipart([protocol.pack(Code.REQUEST, 5, app, event, policy), b""])
        header, _ = recv(sock)
    finally:
        sock.close()
    assert header[0] == Code.ERROR and header[2] == 400 and expect in header[3], header


def test_a_streamed_request_needs_an_id(node: NodeProcess) -> None:
    sock = dealer(node.endpoint)
    try:
        sock.send_multipart([protocol.pack(Code.REQUEST, None, "up", "digest",
                                           {"stream": True}), b"x"])
        header, _ = recv(sock)
    finally:
        sock.close()
    assert header[0] == Code.ERROR and header[2] == 400 and "request_id" in header[3]


@pytest.mark.parametrize("how", ["cancel", "leave"])
def test_a_body_given_up_midway_frees_the_slave(node: NodeProcess, how: str) -> None:
    before = _info(node)["jobs"]["abandoned"]
    sock = dealer(node.endpoint)
    sock.send_multipart([protocol.pack(Code.REQUEST, 11, "up", "digest", {"stream": True}),
                         b"x" * KiB])
    for _ in range(3):
        sock.send_multipart([protocol.pack(Code.CHUNK, 11), b"y" * KiB])
    wait_until(lambda: _info(node)["pool"]["busy"] >= 1, message="the job to start")
    if how == "cancel":
        sock.send_multipart([protocol.pack(Code.CANCEL, 11)])
    sock.close()  # leaving: the node sees the connection drop
    wait_until(lambda: _info(node)["jobs"]["abandoned"] > before, timeout=20,
               message="the request to be counted abandoned")
    wait_until(lambda: _info(node)["pool"]["busy"] == 0, timeout=20,
               message="the slave to be free again")
    with node.client(wait=30) as client:
        assert client.call("up", "echo", b"next") == b"next"


def test_a_runtime_that_does_not_stream_gets_the_body_gathered(node_process: Any,
                                                               tmp_path: Path) -> None:
    worker = Path(__file__).parent / "languages" / "workers" / "raw_worker.py"
    folder = tmp_path / "raw"
    folder.mkdir()
    shutil.copy(worker, folder / "raw_worker.py")
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({
        "type": "exec", "args": {"command": [sys.executable, "raw_worker.py"]},
        "engine": {"pool-limit": 1}, "tasks": {"echo": {"type": "native-server"}}}))
    process = node_process("--app-uids", "none")
    process.cli("app", "deploy", str(manifest), "--name", "raw")
    pieces = [bytes([i]) * (256 * KiB) for i in range(40)]
    sock = dealer(process.endpoint)
    try:
        (header, answer), most = upload(sock, 1, "raw", "echo", pieces)
        assert header[0] == Code.CHOKE and answer == b"".join(pieces)
        assert most <= 8
        # Past 64 MiB the node would hold it whole: refused, saying why.
        big = [b"z" * MiB] * 70
        (header, _), _ = upload(sock, 2, "raw", "echo", big)
        assert header[0] == Code.ERROR and header[2] == 400, header
        assert "does not read streamed bodies" in header[3]
        # Cancelled while its body is gathered, the job frees its slave at once: the slave
        # has seen nothing of it (no kill, no wait for termination-timeout).
        with process.client(wait=10) as client:
            pids = [s["pid"] for s in client.control("info")["apps"]["raw"]["slaves"]]
        sock.send_multipart([protocol.pack(Code.REQUEST, 3, "raw", "echo", {"stream": True}),
                             b"part"])
        sock.send_multipart([protocol.pack(Code.CANCEL, 3)])
        with process.client(wait=10) as client:
            assert client.call("raw", "echo", b"after") == b"after"
            info = client.control("info")["apps"]["raw"]
        assert [s["pid"] for s in info["slaves"]] == pids
        assert info["jobs"]["abandoned"] == 1
    finally:
        sock.close()


def test_a_stalled_body_is_failed_with_400() -> None:
    """``native_stream.watch``: a client that stops sending while it may is failed; one
    whose handler does not read is not."""
    import asyncio

    from cocaine_core import native_stream
    from cocaine_core.engine.body import BodyStream
    from cocaine_core.engine.job import Job

    class Sink:
        def __init__(self) -> None:
            self.errors: list[tuple[int, str]] = []

        def chunk(self, data: bytes) -> None: ...
        def choke(self) -> None: ...

        def error(self, code: int, message: str) -> None:
            self.errors.append((code, message))

    async def run() -> tuple[Sink, Sink]:
        stalled, full = Sink(), Sink()
        cancelled: list[str] = []
        jobs = []
        for sink, fill in ((stalled, 1), (full, 8)):
            stream = BodyStream()
            stream.bind(cancelled.append, b"")
            stream.attach(lambda piece: None)  # running on a slave
            for _ in range(fill):
                stream.feed(b"p")
            job = Job("e", b"", {}, sink, stream=stream)
            native_stream.watch(None, job, timeout=0.3)  # type: ignore[arg-type]
            jobs.append(job)
        await asyncio.sleep(1.0)
        assert len(cancelled) == 1
        return stalled, full

    stalled, full = asyncio.run(run())
    assert stalled.errors and stalled.errors[0][0] == 400 and "stalled" in stalled.errors[0][1]
    assert not full.errors


GREEDY_WORKER = """
import os, threading, time, msgpack, zmq
endpoint, slave_id = os.environ["COCAINE_ENDPOINT"], os.environ["COCAINE_SLAVE_ID"]
context = zmq.Context()
main = context.socket(zmq.DEALER)
main.setsockopt(zmq.ROUTING_ID, slave_id.encode())
main.setsockopt(zmq.RCVHWM, 16)
main.connect(endpoint)
main.send(msgpack.packb([1, slave_id, os.getpid(), {"stream": True}]))
main.recv_multipart()
main.send(msgpack.packb([3, slave_id]))
def beat():
    hb = context.socket(zmq.DEALER)
    hb.setsockopt(zmq.ROUTING_ID, (slave_id + "/hb").encode())
    hb.connect(endpoint)
    while True:
        hb.send(msgpack.packb([3, slave_id]))
        time.sleep(0.2)
threading.Thread(target=beat, daemon=True).start()
job = msgpack.unpackb(main.recv_multipart()[0])[1]
while True:  # grants credit for pieces it never takes off its socket
    main.send(msgpack.packb([12, job, 8]))
    time.sleep(0.005)
"""


def test_a_slave_that_grants_without_reading_is_replaced_not_fed(node_process: Any,
                                                                 tmp_path: Path) -> None:
    folder = tmp_path / "greedy"
    folder.mkdir()
    (folder / "worker.py").write_text(GREEDY_WORKER)
    (folder / "manifest.json").write_text(json.dumps({
        "type": "exec", "args": {"command": [sys.executable, "worker.py"]},
        "engine": {"pool-limit": 1}, "tasks": {"take": {"type": "native-server"}}}))
    process = node_process("--app-uids", "none")
    process.cli("app", "deploy", str(folder / "manifest.json"), "--name", "greedy")
    before = _rss(process.process.pid)
    sock = dealer(process.endpoint)
    try:
        header = None
        credit, sent = 0, 0  # the REQUEST's piece used the first credit
        piece = b"g" * MiB
        sock.send_multipart([protocol.pack(Code.REQUEST, 1, "greedy", "take",
                                           {"stream": True}), piece])
        while sent < 2000:
            if credit <= 0 or sock.poll(0):
                header, _ = recv(sock)
                if header[0] != Code.CREDIT:
                    break
                credit += header[2]
                continue
            sock.send_multipart([protocol.pack(Code.CHUNK, 1), piece])
            credit, sent = credit - 1, sent + 1
        grown = _rss(process.process.pid) - before
    finally:
        sock.close()
    assert header is not None and header[0] == Code.ERROR and header[2] == 500, header
    assert "does not read what the engine sends it" in header[3], header
    assert "its body streamed" in header[3], header
    assert sent < 500, f"the node took {sent} MiB for a slave that reads nothing"
    assert grown < 300 * MiB, f"the node grew by {grown >> 20} MiB"


def test_a_streamed_request_id_in_use_and_foreign_codes_are_refused(node: NodeProcess) -> None:
    sock = dealer(node.endpoint)
    try:
        sock.send_multipart([protocol.pack(Code.REQUEST, 5, "up", "digest", {"stream": True}),
                             b"one"])
        sock.send_multipart([protocol.pack(Code.REQUEST, 5, "up", "digest", {"stream": True}),
                             b"two"])
        sock.send_multipart([protocol.pack(Code.CREDIT, 5, 3)])  # a node's message, not ours
        sock.send_multipart([protocol.pack(Code.HEADERS, 5, {"status": 200})])
        errors = []
        while len(errors) < 3:
            header, _ = recv(sock)
            if header[0] == Code.ERROR:
                errors.append(header)
        assert errors[0][1] == 5 and errors[0][2] == 400 and "in use" in errors[0][3]
        assert [(e[1], e[2]) for e in errors[1:]] == [(None, 400), (None, 400)], errors
        sock.send_multipart([protocol.pack(Code.CHOKE, 5)])  # the first goes on, whole
        while True:
            header, payload = recv(sock)
            if header[0] != Code.CREDIT:
                break
        assert header[:2] == [Code.CHOKE, 5] and payload[0].startswith(b"3 "), (header, payload)
    finally:
        sock.close()


NOISY_WORKER = """
import os, threading, time, msgpack, zmq
endpoint, slave_id = os.environ["COCAINE_ENDPOINT"], os.environ["COCAINE_SLAVE_ID"]
context = zmq.Context()
main = context.socket(zmq.DEALER)
main.setsockopt(zmq.ROUTING_ID, slave_id.encode())
main.connect(endpoint)
main.send(msgpack.packb([1, slave_id, os.getpid(), {"stream": True}]))
main.recv_multipart()
main.send(msgpack.packb([3, slave_id]))
while True:
    fields = msgpack.unpackb(main.recv_multipart()[0])
    if fields[0] == 4:
        for code in (12, 13, 5, 6, 7):  # job ids of every wrong kind
            for bad in ([1], {"a": 1}, "x", 1.5, True):
                for _ in range(200):
                    main.send(msgpack.packb([code, bad, 1, "m", ""]))
        main.send_multipart([msgpack.packb([6, fields[1]]), b"done"])
"""


def test_job_ids_of_the_wrong_kind_from_a_slave_are_dropped_quietly(node_process: Any,
                                                                     tmp_path: Path) -> None:
    folder = tmp_path / "noisy"
    folder.mkdir()
    (folder / "worker.py").write_text(NOISY_WORKER)
    (folder / "manifest.json").write_text(json.dumps({
        "type": "exec", "args": {"command": [sys.executable, "worker.py"]},
        "engine": {"pool-limit": 1}, "tasks": {"go": {"type": "native-server"}}}))
    process = node_process("--app-uids", "none")
    process.cli("app", "deploy", str(folder / "manifest.json"), "--name", "noisy")
    with process.client(wait=30) as client:
        assert client.call("noisy", "go") == b"done"
        assert client.call("noisy", "go") == b"done"
    lines = (process.folder / "node.log").read_text().splitlines()
    assert len(lines) < 30, "\n".join(lines[-10:])
    assert any("job id is not an integer" in line for line in lines)
