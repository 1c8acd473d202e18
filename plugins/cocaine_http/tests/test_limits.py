"""``http-server``: limits on heads, bodies, slow and idle clients, connections."""

from __future__ import annotations

import socket
import time

import httpx

from cocaine_core.testing import wait_until


def address(url: str) -> tuple[str, int]:
    """``(host, port)`` of a base URL."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def test_a_head_over_max_header_is_431_and_closed(serve, raw, task_info):
    """Request line and headers over max-header: 431, then the connection closes."""
    url = serve({"echo": {"max-header": 2048}})["echo"]
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n"
    answer = raw(url.removeprefix("http://"), big, lambda got: False)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"max-header" in answer
    assert b"Connection: close" in answer
    # A header that never ends is cut at the limit too, not held whole.
    endless = b"GET / HTTP/1.1\r\nX-Endless: " + b"b" * 3000
    answer = raw(url.removeprefix("http://"), endless, lambda got: False)
    assert answer.startswith(b"HTTP/1.1 431 ")
    small = httpx.get(url, headers={"X-Small": "a" * 1000})
    assert small.status_code == 200
    assert task_info("echo")["requests"] == 1  # the refused ones never became jobs


def test_a_body_over_max_body_is_413(serve, curl, tmp_path):
    """A declared length over max-body is refused before it is read; a chunked body is
    refused when it passes the limit."""
    url = serve({"echo": {"max-body": 1000}})["echo"]
    r = httpx.post(url, content=b"x" * 1001)
    assert r.status_code == 413 and "max-body of 1000 bytes" in r.text
    assert httpx.post(url, content=b"x" * 1000).content == b"x" * 1000
    out = curl("-i", "-H", "Transfer-Encoding: chunked", "-T", "-", url,
               stdin=b"y" * 5000)
    # curl sends "Expect: 100-continue" first: the body is welcome, then refused.
    assert out.stdout.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 "), out
    assert out.stdout.endswith(b"over 1000 bytes, this path's max-body; send less\n")


def test_a_slow_head_is_closed_after_header_timeout(serve, task_info):
    """Half a request line, then nothing: 408 and closed after header-timeout."""
    url = serve({"echo": {"header-timeout": 0.5}})["echo"]
    with socket.create_connection(address(url), timeout=10) as sock:
        sock.sendall(b"GET /slo")
        started = time.monotonic()
        got = b""
        while chunk := sock.recv(4096):
            got += chunk
        waited = time.monotonic() - started
    assert got.startswith(b"HTTP/1.1 408 ") and b"header-timeout" in got
    assert 0.4 < waited < 5
    assert wait_until(lambda: task_info("echo")["connections"] == 0)


def test_an_idle_kept_alive_connection_is_closed(serve):
    """After an answer, a connection with no next request closes after idle-timeout."""
    url = serve({"echo": {"idle-timeout": 0.3}})["echo"]
    with socket.create_connection(address(url), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        got = b""
        while chunk := sock.recv(4096):  # the answer, then the close
            got += chunk
    assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"\r\n\r\nhi")


def test_a_stalled_body_is_408_and_its_job_stopped(serve, folder):
    """A body that stops arriving: 408 after body-timeout, the connection closed."""
    url = serve({"upload": {"body-timeout": 0.5}})["upload"]
    with socket.create_connection(address(url), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        got = b""
        while chunk := sock.recv(4096):
            got += chunk
    assert got.startswith(b"HTTP/1.1 408 ") and b"body-timeout" in got
    # The server still serves.
    r = httpx.post(url, content=b"abc")
    assert r.json()["size"] == 3


def test_connections_past_max_connections_are_closed(serve, task_info):
    """Past max-connections, a new connection is closed at once (and counted)."""
    url = serve({"echo": {"max-connections": 2}})["echo"]
    first = socket.create_connection(address(url), timeout=10)
    second = socket.create_connection(address(url), timeout=10)
    try:
        wait_until(lambda: task_info("echo")["connections"] == 2)
        with socket.create_connection(address(url), timeout=10) as third:
            assert third.recv(10) == b""
        assert task_info("echo")["connections-refused"] == 1
        first.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert first.recv(4096).startswith(b"HTTP/1.1 200 OK")
    finally:
        first.close()
        second.close()
    wait_until(lambda: task_info("echo")["connections"] == 0)
    assert httpx.get(url).status_code == 200
