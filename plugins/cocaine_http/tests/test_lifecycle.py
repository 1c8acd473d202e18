"""``http-server``: an app that stops answers what it started, then closes; odd answers."""

from __future__ import annotations

import socket
import threading

import httpx


def address(url: str) -> tuple[str, int]:
    """``(host, port)`` of a base URL."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def test_an_app_that_stops_answers_what_it_started(serve, cocaine_node, folder):
    """While the app stops: a request in flight still gets its answer (Connection: close),
    an idle kept-alive connection is closed, new connections are refused."""
    url = serve({"held": {"path": "/held"}, "echo": {"path": "/echo"}})["held"]
    idle = socket.create_connection(address(url), timeout=10)
    busy = socket.create_connection(address(url), timeout=10)
    try:
        idle.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n1")
        assert idle.recv(4096).endswith(b"\r\n\r\n1")
        busy.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        stopper = threading.Thread(target=cocaine_node.remove_app, args=("web",))
        stopper.start()
        assert idle.recv(4096) == b""  # closed: no request was on its way
        (folder / "release").touch()
        answer = b""
        while chunk := busy.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in answer
        assert answer.endswith(b"released")
        stopper.join(timeout=60)
        assert not stopper.is_alive()
    finally:
        idle.close()
        busy.close()
    try:
        refused = httpx.get(url + "/echo", timeout=5)
    except httpx.ConnectError:
        refused = None
    assert refused is None


def test_http_1_0_gets_a_streamed_answer_ended_by_the_close(serve, folder, raw):
    """An HTTP/1.0 client cannot read chunked: a streamed answer goes out raw, then the
    connection closes."""
    url = serve({"stream": {}})["stream"]
    (folder / "go").touch()
    answer = raw(url.removeprefix("http://"), b"GET / HTTP/1.0\r\n\r\n", lambda got: False)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Transfer-Encoding" not in head
    assert b"Connection: close" in head and body == b"first\nsecond\n"


def test_expect_100_continue_is_answered_only_for_a_body_that_is_welcome(serve, raw):
    """Expect: 100-continue gets "100 Continue" when the body will be read; a body over
    max-body gets 413 at once, without it."""
    url = serve({"echo": {"max-body": 10}})["echo"]
    host, port = address(url)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        assert sock.recv(4096).endswith(b"\r\n\r\nhello")
    answer = raw(f"{host}:{port}", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n"
                                   b"Expect: 100-continue\r\n\r\n", lambda got: False)
    assert answer.startswith(b"HTTP/1.1 413 ")
