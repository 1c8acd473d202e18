"""``http-server``: answers streamed out, bodies streamed in, pipelining, bad requests."""

from __future__ import annotations

import hashlib
import json
import os
import socket

import httpx

from cocaine_core.testing import wait_until


def address(url: str) -> tuple[str, int]:
    """``(host, port)`` of a base URL."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def test_a_streamed_answer_arrives_chunk_by_chunk(serve, folder):
    """A generator's chunks go out chunked as produced: the first arrives while the handler
    still waits to produce the second."""
    url = serve({"stream": {}})["stream"]
    with httpx.stream("GET", url, timeout=30) as r:
        assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
        assert r.headers["content-type"] == "text/plain"
        pieces = r.iter_raw()
        assert next(pieces) == b"first\n"
        (folder / "go").touch()
        assert b"".join(pieces) == b"second\n"


def test_a_client_that_leaves_stops_the_handler(serve, folder, task_info):
    """A client that disconnects in the middle of a streamed answer: the handler is stopped
    (its generator's finally runs), and the server serves on."""
    url = serve({"forever": {"path": "/forever"}, "echo": {"path": "/echo"}})["forever"]
    with socket.create_connection(address(url), timeout=10) as sock:
        sock.sendall(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
        wait_until(lambda: (folder / "streaming").exists(), timeout=30)
    wait_until(lambda: (folder / "finally").exists(), timeout=30,
               message="the handler's finally to run")
    assert httpx.post(url + "/echo", content=b"on").content == b"on"


def test_a_client_that_leaves_mid_upload_stops_the_handler(serve, folder):
    """A client that disconnects in the middle of its body: the handler reading it is
    stopped (its finally runs), and the server serves on."""
    url = serve({"partial": {"path": "/partial"}, "echo": {"path": "/echo"}})["partial"]
    with socket.create_connection(address(url), timeout=10) as sock:
        sock.sendall(b"POST /partial HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        sock.sendall(b"x" * 1_000_000)
        wait_until(lambda: (folder / "reading").exists(), timeout=30)
    wait_until(lambda: (folder / "partial-finally").exists(), timeout=30,
               message="the handler's finally to run")
    assert httpx.post(url + "/echo", content=b"on").content == b"on"


def test_a_client_that_does_not_read_holds_the_handler_back(serve, folder, task_info):
    """A client that reads nothing: what the server holds for it stays bounded (the
    handler waits for credit), far below what the handler would produce."""
    url = serve({"forever": {}})["forever"]
    with socket.create_connection(address(url), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: (folder / "streaming").exists(), timeout=30)
        sent = [task_info("forever")["bytes-out"]]

        def settled() -> bool:
            sent.append(task_info("forever")["bytes-out"])
            return sent[-1] == sent[-2] and len(sent) > 5

        wait_until(settled, timeout=30, interval=0.1, message="the answer to stop growing")
        # Socket buffers and 256 KiB of transport buffer plus the window: a few MiB at most.
        assert sent[-1] < 16 * 2**20
    wait_until(lambda: (folder / "finally").exists(), timeout=30)


def test_pipelined_requests_are_answered_in_order(serve, raw):
    """Requests sent back to back on one connection get their answers in the same order."""
    url = serve({"echo": {}})["echo"]
    requests = b"".join(b"POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b"
                        % (i, len(b"body-%d" % i), b"body-%d" % i) for i in range(20))
    requests += b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = raw(url.removeprefix("http://"), requests, lambda got: False)
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in answer.split(b"HTTP/1.1 200 OK")[1:]]
    assert bodies == [b"body-%d" % i for i in range(20)] + [b""]


def test_a_client_that_shuts_its_side_gets_every_answer(serve):
    """Pipelined requests, then the client's side shut (``nc -N``): every one answered, in
    order, then the connection closes."""
    url = serve({"echo": {}})["echo"]
    with socket.create_connection(address(url), timeout=10) as sock:
        sock.sendall(b"".join(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n%d"
                              % i for i in range(5)))
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    assert [part[-1:] for part in got.split(b"HTTP/1.1 200 OK")[1:]] == \
        [b"0", b"1", b"2", b"3", b"4"]


def test_bodies_stream_into_the_handler(serve, curl):
    """A body sent in pieces (chunked, from a generator or from curl's stdin) reaches the
    handler's request.stream whole and in order."""
    url = serve({"upload": {}})["upload"]
    data = os.urandom(3 * 2**20 + 17)
    digest = hashlib.sha256(data).hexdigest()

    def pieces():
        for start in range(0, len(data), 100_000):
            yield data[start:start + 100_000]

    r = httpx.post(url, content=pieces(), timeout=60)  # chunked
    assert r.json()["sha256"] == digest and r.json()["streamed"]
    r = httpx.post(url, content=data, timeout=60)  # with Content-Length
    assert r.json()["sha256"] == digest and r.json()["streamed"]
    assert r.json()["pieces"] >= len(data) // (256 * 1024)  # pieces of at most 256 KiB
    out = curl("-H", "Transfer-Encoding: chunked", "-T", "-", url, stdin=data)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["sha256"] == digest
    small = httpx.post(url, content=b"x" * 1000).json()  # short: given whole, one piece
    assert (small["size"], small["pieces"], small["streamed"]) == (1000, 1, False)
    assert httpx.post(url, content=b"").json()["size"] == 0


def test_bad_http_is_400_and_closed(serve, raw):
    """Bytes that are not HTTP: 400, then the connection closes."""
    url = serve({"echo": {}})["echo"]
    answer = raw(url.removeprefix("http://"), b"HELLO THERE\r\n\r\n", lambda got: False)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request") and b"Connection: close" in answer
    answer = raw(url.removeprefix("http://"),
                 b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", lambda g: False)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request")


def test_upgrades_are_refused(serve, raw):
    """A websocket handshake is answered 501 (the server does not switch protocols)."""
    url = serve({"echo": {}})["echo"]
    answer = raw(url.removeprefix("http://"),
                 b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n\r\n",
                 lambda got: False)
    assert answer.startswith(b"HTTP/1.1 501 Not Implemented") and b"websocket" in answer


def test_head_requests_get_no_body(serve):
    """HEAD: the handler runs, the head says the length, no body follows."""
    url = serve({"meta": {}})["meta"]
    r = httpx.head(url)
    assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) > 10
