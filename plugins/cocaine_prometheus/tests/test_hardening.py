"""The metrics listener of a real node holds against bad, slow and too many clients, and shows
only what it means to."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx

from cocaine_core.testing import wait_until

SECURITY = {"cache-control": "no-store", "x-content-type-options": "nosniff"}


def _address(served) -> tuple[str, int]:
    host, port = served.base.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _exchange(served, data: bytes, timeout: float = 15) -> bytes:
    """Send ``data`` on a new connection; what came back until the server closed it."""
    with socket.create_connection(_address(served), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def test_every_page_has_a_length_and_the_security_headers(metrics_node) -> None:
    for path, kind in (("/", "text/html"), ("/console.js", "text/javascript"),
                       ("/console.css", "text/css"), ("/api/state", "application/json"),
                       ("/metrics", "text/plain"), ("/nothing", "text/plain")):
        response = metrics_node.http.get(path)
        assert response.status_code == (404 if path == "/nothing" else 200), path
        assert response.headers["content-type"].startswith(kind), path
        assert int(response.headers["content-length"]) == len(response.content), path
        for name, value in SECURITY.items():
            assert response.headers[name] == value, (path, name)
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "unsafe" not in policy, policy
    head = metrics_node.http.head("/metrics")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 1000


def test_only_get_and_head_are_served(metrics_node) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        response = metrics_node.http.request(method, "/metrics")
        assert response.status_code == 405, method
        assert response.headers["allow"] == "GET, HEAD"
    answer = _exchange(metrics_node, b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 405 "), answer[:100]


def test_a_request_with_a_body_is_refused(metrics_node) -> None:
    answer = _exchange(metrics_node, b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                                     b"Content-Length: 5\r\n\r\nhello")
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
    answer = _exchange(metrics_node, b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]


def test_a_head_over_8_kib_is_refused_with_431(metrics_node) -> None:
    big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 9000 + b"\r\n\r\n"
    answer = _exchange(metrics_node, big)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    # Just under the bound is served.
    fine = (b"GET /console.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Filler: "
            + b"a" * 7000 + b"\r\n\r\n")
    assert _exchange(metrics_node, fine).startswith(b"HTTP/1.1 200 ")
    garbage = _exchange(metrics_node, b"\x16\x03\x01 not http at all\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 "), garbage[:100]


def test_a_silent_client_blocks_nobody_and_is_closed_after_the_header_timeout(
        metrics_node) -> None:
    silent = socket.create_connection(_address(metrics_node), timeout=30)
    trickle = socket.create_connection(_address(metrics_node), timeout=30)
    try:
        trickle.sendall(b"GET /metrics HTTP/1.1\r\nHo")  # and then nothing more
        opened = time.monotonic()
        for _ in range(5):  # scrapes go on meanwhile, each at once
            started = time.monotonic()
            assert metrics_node.http.get("/metrics").status_code == 200
            assert time.monotonic() - started < 2
        with metrics_node.node.client() as client:  # and so does the node's own work
            client.control("info")
        for sock in (silent, trickle):
            assert sock.recv(100) == b""  # closed by the server...
        assert 8 < time.monotonic() - opened < 20  # ...after its 10 s for a head
    finally:
        silent.close()
        trickle.close()


def test_connections_beyond_64_are_closed_at_once(metrics_node) -> None:
    held = [socket.create_connection(_address(metrics_node), timeout=10) for _ in range(64)]
    try:
        # Each is accepted (it answers), so the listener counts all 64 as open.
        for sock in held[:2]:
            sock.sendall(b"GET /console.css HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")

        # The 65th is accepted after the 64 (in order), and closed unanswered.
        with socket.create_connection(_address(metrics_node), timeout=10) as extra:
            started = time.monotonic()
            try:
                extra.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = extra.recv(100)
            except (ConnectionResetError, BrokenPipeError):
                answer = b""
            assert answer == b"" and time.monotonic() - started < 5
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: _scrapes(metrics_node), timeout=10,
               message="scrapes to be served again once the connections closed")


def _scrapes(served) -> bool:
    try:
        return httpx.get(f"{served.base}/metrics", timeout=5, trust_env=False).status_code == 200
    except httpx.TransportError:
        return False


def test_the_console_json_is_a_curated_subset(metrics_node, app_folder: Path) -> None:
    metrics_node.deploy("shop", app_folder)
    with metrics_node.node.client() as client:
        client.call("shop", "echo", b"x")
    info = metrics_node.info()
    state = metrics_node.http.get("/api/state").json()
    assert set(state) == {"time", "node", "apps", "events"}
    assert set(state["node"]) == {"name", "version", "uptime", "rss-bytes", "cpu-seconds",
                                  "slaves", "max-slaves"}
    assert state["node"]["name"] == info["node"]
    (shop,) = state["apps"]
    assert shop["name"] == "shop" and shop["state"] == "running" and shop["requests"] == 1
    text = json.dumps(state)
    pids = [str(s["pid"]) for s in info["apps"]["shop"]["slaves"] if s["pid"]]
    for secret in (info["store"]["uri"], info["endpoint"], *pids):
        assert secret not in text, secret
    for key in ('"store"', '"endpoint"', '"pid"', '"control"', '"clients"', '"curve-key"'):
        assert key not in text, key
    assert all(set(event) <= {"app", "topic", "time", "reason", "version", "status"}
               for event in state["events"])


def test_the_listener_closes_with_the_node(metrics_node) -> None:
    assert metrics_node.node.stop() == 0
    host, port = _address(metrics_node)
    with socket.socket() as sock:
        sock.settimeout(5)
        assert sock.connect_ex((host, port)) != 0
