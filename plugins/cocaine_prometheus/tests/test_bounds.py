"""The listener's bounds, in this process: what clients that never read cost in memory, how
often a flood of scrapes reads the node and renders, and the HTTP versions served."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from typing import Any

from cocaine_prometheus.listener import CHUNK_SIZE, WRITE_BUFFER, HttpListener, Limits, Page
from cocaine_prometheus.site import Site
from cocaine_prometheus.state import RecentEvents

#: A /metrics as big as 12 apps of 256 events make (4.7 MB).
BIG = Page(200, "text/plain", b"cocaine_app_requests_total 1\n" * 170_000)


def _non_reader(port: int) -> socket.socket:
    """A connection with a tiny receive buffer (that the test never reads)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    sock.connect_ex(("127.0.0.1", port))
    return sock


def test_clients_that_never_read_hold_a_bounded_part_of_a_big_page() -> None:
    clients = 20

    async def router(path: str) -> Page:
        return BIG

    async def scenario() -> tuple[int, int, float]:
        listener = HttpListener("127.0.0.1", 0, router, Limits(write_timeout=2.0))
        await listener.start()
        port = listener.sockname[1]
        socks = [_non_reader(port) for _ in range(clients)]
        loop = asyncio.get_running_loop()
        try:
            for sock in socks:
                await loop.sock_sendall(sock, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
            most = biggest = 0
            deadline = loop.time() + 10
            # Until the write timeout closes them all: sample what they hold unsent.
            while listener.connections < clients and loop.time() < deadline:
                await asyncio.sleep(0.01)
            began = loop.time()
            while listener.connections and loop.time() < deadline:
                sizes = [w.transport.get_write_buffer_size() for w in listener._open]
                most = max(most, sum(sizes))
                biggest = max([biggest, *sizes])
                await asyncio.sleep(0.02)
            assert listener.connections == 0, "the non-readers were not closed in time"
            return most, biggest, loop.time() - began
        finally:
            for sock in socks:
                sock.close()
            await listener.close()

    most, biggest, closed_after = asyncio.run(scenario())
    assert biggest <= WRITE_BUFFER, f"one connection held {biggest} bytes unsent"
    assert most <= clients * WRITE_BUFFER, f"{clients} connections held {most} bytes"
    assert most >= CHUNK_SIZE, "nothing was written"
    assert closed_after < 8, f"the non-readers were closed after {closed_after:.1f} s"


def test_a_costly_page_is_served_for_ten_times_what_it_cost() -> None:
    calls: list[float] = []

    def info() -> dict[str, Any]:  # a node whose info costs 0.1 s to read: fresh >= 1 s
        calls.append(time.monotonic())
        time.sleep(0.1)
        return {"node": "n1", "version": "9.9", "apps": {}}

    async def flood() -> float:
        site = Site(info, RecentEvents())
        try:
            began = time.monotonic()
            while time.monotonic() - began < 1.5 or (len(calls) < 2
                                                     and time.monotonic() - began < 6):
                pages = await asyncio.gather(*(site.route("/metrics") for _ in range(8)))
                assert all(page.status == 200 for page in pages)
            return time.monotonic() - began
        finally:
            site.close()

    elapsed = asyncio.run(flood())
    assert len(calls) >= 2, "the page was never refreshed"
    assert len(calls) <= 1 + elapsed / 1.0, f"{len(calls)} readings in {elapsed:.2f} s"
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert min(gaps) >= 1.0, f"readings {gaps} s apart"


def _exchange(port: int, data: bytes, timeout: float = 5) -> tuple[bytes, float]:
    """Send ``data``; what came back until the server closed, and how long that took."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received, time.monotonic() - began


def test_only_http_1_0_and_1_1_are_served() -> None:
    async def router(path: str) -> Page:
        return Page(200, "text/plain", b"ok\n")

    async def scenario() -> None:
        listener = HttpListener("127.0.0.1", 0, router)
        await listener.start()
        port = listener.sockname[1]
        try:
            for request, status in ((b"GET /metrics\r\n", b"400"),
                                    (b"GET /metrics\r\n\r\n", b"400"),
                                    (b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n", b"505"),
                                    (b"GET /metrics HTTP/1.0\r\n\r\n", b"200")):
                answer, took = await asyncio.to_thread(_exchange, port, request)
                assert answer.startswith(b"HTTP/1.1 " + status + b" "), (request, answer[:80])
                assert took < 3, f"{request!r} was held {took:.1f} s"
        finally:
            await listener.close()

    asyncio.run(scenario())
