"""``http-server`` against hostile clients: pipelined requests from a client that does not
read, answers that pile up on many connections, bodies that trickle, endless trailers and
chunk extensions, CONNECT and HTTP/0.9, and a port another app of the node serves."""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
import time

import pytest
from cocaine_http import listener as listener_module

from cocaine_core.errors import NodeError
from cocaine_core.testing import free_port, wait_until

MiB = 2**20


def address(url: str) -> tuple[str, int]:
    """``(host, port)`` of a base URL."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def rss() -> int:
    """This process's resident memory in bytes (the node under test runs in it)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def slow_reader(url: str) -> socket.socket:
    """A connection with a 4 KiB receive buffer (set before connecting)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(address(url))
    return sock


def settled(read: object, polls: int = 6) -> int:
    """Wait until ``read()`` gives the same number ``polls`` times in a row; that number."""
    seen: list[int] = []

    def still() -> bool:
        seen.append(read())  # type: ignore[operator]
        return len(seen) > polls and len(set(seen[-polls:])) == 1

    wait_until(still, timeout=60, interval=0.1, message="the bytes sent to settle")
    return seen[-1]


def read_answers(socks: list[socket.socket], count: int, timeout: float = 120
                 ) -> list[list[bytes]]:
    """Read ``count`` whole answers (Content-Length framed) from each socket, all at once;
    each answer's head and body."""
    sel = selectors.DefaultSelector()
    buffers = {sock: b"" for sock in socks}
    answers: dict[socket.socket, list[bytes]] = {sock: [] for sock in socks}
    for sock in socks:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while any(len(a) < 2 * count for a in answers.values()) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                data = sock.recv(1 << 20)
                if not data:
                    sel.unregister(sock)
                    continue
                buffers[sock] += data
                while True:
                    head_end = buffers[sock].find(b"\r\n\r\n")
                    if head_end < 0:
                        break
                    head = buffers[sock][:head_end]
                    length = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
                    end = head_end + 4 + length
                    if len(buffers[sock]) < end:
                        break
                    answers[sock].append(head)
                    answers[sock].append(buffers[sock][head_end + 4:end])
                    buffers[sock] = buffers[sock][end:]
    finally:
        sel.close()
    return [[*answers[sock]] for sock in socks]


def test_pipelined_requests_wait_for_a_client_that_does_not_read(serve, task_info):
    """A client pipelines 300 requests for 1 MiB answers and reads nothing: the server
    starts the next request only once the client has read the answer before, so what it
    holds stays bounded; once the client reads, every answer arrives, in order."""
    url = serve({"big": {}})["big"]
    count, size = 300, MiB
    before = rss()
    sock = slow_reader(url)
    try:
        sock.sendall(b"".join(b"GET /big?%d HTTP/1.1\r\nHost: x\r\n\r\n" % (size + i)
                              for i in range(count)))
        sent = settled(lambda: task_info("big")["bytes-out"])
        grown = rss() - before
        # The transport's buffer, one answer and the kernel's buffers: a few MiB. The old
        # server wrote all 300 answers (300 MiB) into its buffer.
        assert sent < 16 * MiB, sent
        assert grown < 64 * MiB, grown
        assert task_info("big")["requests"] < 10
        got = read_answers([sock], count)[0]
    finally:
        sock.close()
    lengths = [len(body) for body in got[1::2]]
    assert lengths == [size + i for i in range(count)]


def test_answers_waiting_on_many_connections_stay_within_the_budget(serve, task_info,
                                                                     monkeypatch):
    """Eight connections that do not read each ask for a big answer: once the listener's
    backlog passes its budget, no connection starts a new request; as the clients read,
    the held ones start and every client gets its whole answer."""
    budget, size, count = 16 * MiB, 8 * MiB, 8
    monkeypatch.setattr(listener_module, "BACKLOG_BUDGET", budget, raising=False)
    url = serve({"big": {}})["big"]
    socks: list[socket.socket] = []
    try:
        for i in range(count):
            sock = slow_reader(url)
            socks.append(sock)
            sock.sendall(b"GET /big?%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)

            def answered_or_held(n: int = i + 1) -> bool:
                info = task_info("big")
                return info.get("held-back", False) or \
                    (info["requests"] == n and info["bytes-out"] >= n * size)

            wait_until(answered_or_held, timeout=30, message="the answer or the hold")
        settled(lambda: task_info("big")["bytes-out"])
        info = task_info("big")
        # What waits in the node: the budget and the one answer that passed it (what the
        # kernel took is the sockets' buffers); the old server wrote all 8 (64 MiB).
        assert info["requests"] < count, info
        assert info["held-back"] and info["backlog"] <= budget + size, info
        got = read_answers(socks, 1)
    finally:
        for sock in socks:
            sock.close()
    assert [len(answer[1]) for answer in got] == [size] * count
    assert all(answer[0].startswith(b"HTTP/1.1 200 OK") for answer in got)
    wait_until(lambda: not task_info("big")["held-back"])


def trickle(url: str, path: str, piece: bytes, every: float, limit: float) -> tuple[bytes, float]:
    """Send a chunked POST whose body comes ``piece`` every ``every`` seconds until an
    answer comes (or ``limit`` seconds); the answer and when it came."""
    with socket.create_connection(address(url), timeout=limit) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     .encode())
        started = time.monotonic()
        sock.settimeout(every)
        got = b""
        while time.monotonic() - started < limit:
            with contextlib.suppress(OSError):  # closed on us: the answer is read below
                sock.sendall(piece)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            got += data
            if b"\r\n\r\n" in got:
                sock.settimeout(5)
                while chunk := sock.recv(65536):
                    got += chunk
                break
        return got, time.monotonic() - started


def test_a_body_that_trickles_is_408_and_its_job_stopped(serve, folder):
    """A body that comes a byte at a time, each within body-timeout: once it has been read
    for longer than body-timeout at under min-body-rate, 408, closed, the job cancelled."""
    url = serve({"partial": {"body-timeout": 0.5}})["partial"]
    got, took = trickle(url, "/", b"1\r\nx\r\n", every=0.1, limit=10)
    assert got.startswith(b"HTTP/1.1 408 "), got[:300]
    assert b"min-body-rate (1024 bytes/s)" in got
    assert took < 5
    wait_until(lambda: (folder / "partial-finally").exists(), timeout=30,
               message="the handler's finally to run")


def test_min_body_rate_0_lets_a_slow_body_through(serve):
    """min-body-rate 0: a slow body is taken as long as each piece is within body-timeout."""
    url = serve({"upload": {"body-timeout": 0.5, "min-body-rate": 0}})["upload"]
    with socket.create_connection(address(url), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(12):
            sock.sendall(b"1\r\nx\r\n")
            time.sleep(0.1)  # the pace of the body, not a wait for a condition
        sock.sendall(b"0\r\n\r\n")
        got = b""
        while b"}" not in got and (chunk := sock.recv(65536)):
            got += chunk
    assert got.startswith(b"HTTP/1.1 200 OK") and b'"size": 12' in got


def test_trailers_over_max_header_are_431(serve, raw):
    """Trailers count against max-header: 5000 of them are refused."""
    url = serve({"upload": {}})["upload"]
    request = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
               + b"a: b\r\n" * 5000 + b"\r\n")
    got = raw(url.removeprefix("http://"), request, lambda got: False)
    assert got.startswith(b"HTTP/1.1 431 ") and b"trailers" in got, got[:300]
    small = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
             b"x-sum: 1\r\n\r\n")
    got = raw(url.removeprefix("http://"), small, lambda got: b"}" in got)
    assert got.startswith(b"HTTP/1.1 200 OK") and b'"size": 3' in got


def test_an_endless_chunk_extension_is_400(serve):
    """A chunk header whose extension never ends is refused past max-header (not read until
    body-timeout)."""
    url = serve({"upload": {}})["upload"]
    with socket.create_connection(address(url), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;e=")
        try:
            for _ in range(64):
                sock.sendall(b"e" * 8192)
        except OSError:
            pass  # refused and closed while sending
        sock.settimeout(5)
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    assert got.startswith(b"HTTP/1.1 400 ") and b"extensions" in got, got[:300]


@pytest.mark.parametrize(("request_line", "status"), [
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", b"501"),
    (b"GET / HTTP/0.9\r\n\r\n", b"505"),
])
def test_connect_is_501_and_http_0_9_is_505(serve, raw, request_line, status):
    """CONNECT: 501 (not a proxy); an HTTP/0.9 request line: 505; both closed."""
    url = serve({"echo": {}})["echo"]
    got = raw(url.removeprefix("http://"), request_line, lambda got: False)
    assert got.startswith(b"HTTP/1.1 " + status + b" "), got[:300]
    assert b"Connection: close" in got


@pytest.mark.parametrize("host", ["0.0.0.0", "localhost"])
def test_another_app_on_the_same_port_is_named(serve, host):
    """An app on 0.0.0.0:PORT or localhost:PORT while another app of the node serves
    127.0.0.1:PORT: the error names that app."""
    port = free_port()
    serve({"echo": {"listen": f"127.0.0.1:{port}"}}, name="first")
    with pytest.raises(NodeError) as caught:
        serve({"meta": {"listen": f"{host}:{port}"}}, name="second")
    assert f"cannot listen on {host}:{port}: app 'first' serves HTTP on 127.0.0.1:{port}" \
        in str(caught.value)
