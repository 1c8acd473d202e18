"""``http-server``: a redeploy under load hands the listening socket to the new version, so
clients lose nothing (no refused or reset connection, no 503)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from cocaine_core.manifest import load_manifest

#: The app; ``{version}`` tells the versions apart in the answers.
VERSIONED = '''
VERSION = {version}


def echo(request):
    return b"v%d:" % VERSION + request.data
'''

#: Redeploys while the clients run.
REDEPLOYS = 3
#: Client threads that open a new connection for each request, and kept-alive ones.
FRESH_CLIENTS = 4
KEPT_CLIENTS = 2


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def exchange(sock: socket.socket, payload: bytes) -> tuple[bytes, bytes]:
    """Send one POST on ``sock``; its answer's head and body (b"" if the connection closed)."""
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(payload), payload))
    received = b""
    while b"\r\n\r\n" not in received:
        data = sock.recv(65536)
        if not data:
            return received, b""
        received += data
    head, _, body = received.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            break
        body += data
    return head, body


class Clients:
    """Threads that make requests until told to stop; what went wrong, and what came."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.errors: list[str] = []
        #: Versions answered, per thread, in order.
        self.seen: dict[str, list[int]] = {}
        self.threads = [threading.Thread(target=self._fresh, args=(f"fresh{i}",), daemon=True)
                        for i in range(FRESH_CLIENTS)]
        self.threads += [threading.Thread(target=self._kept, args=(f"kept{i}",), daemon=True)
                         for i in range(KEPT_CLIENTS)]

    def start(self) -> None:
        """Start every client."""
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        """Stop and join every client."""
        self.done.set()
        for thread in self.threads:
            thread.join(timeout=30)
            assert not thread.is_alive()

    def answers(self) -> int:
        """Answers received so far."""
        with self.lock:
            return sum(len(seen) for seen in self.seen.values())

    def _check(self, name: str, n: int, head: bytes, body: bytes) -> bool:
        payload = f"{name}-{n}".encode()
        status = head.split(b"\r\n", 1)[0]
        if status != b"HTTP/1.1 200 OK" or not body.endswith(b":" + payload) or \
                not body.startswith(b"v"):
            with self.lock:
                self.errors.append(f"{name} #{n}: {status!r} {body[:200]!r}")
            return False
        with self.lock:
            self.seen.setdefault(name, []).append(int(body[1:body.index(b":")]))
        return True

    def _fresh(self, name: str) -> None:
        n = 0
        while not self.done.is_set():
            n += 1
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=20) as sock:
                    head, body = exchange(sock, f"{name}-{n}".encode())
            except OSError as exc:
                with self.lock:
                    self.errors.append(f"{name} #{n}: {exc!r}")
                continue
            self._check(name, n, head, body)

    def _kept(self, name: str) -> None:
        n = 0
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=20) as sock:
                while not self.done.is_set():
                    n += 1
                    head, body = exchange(sock, f"{name}-{n}".encode())
                    if not self._check(name, n, head, body) or \
                            b"connection: close" in head.lower():
                        with self.lock:
                            self.errors.append(f"{name} #{n}: the kept-alive connection "
                                               f"was closed")
                        return
        except OSError as exc:
            with self.lock:
                self.errors.append(f"{name} #{n}: {exc!r}")


def test_a_redeploy_under_load_loses_no_request(cocaine_node: Any, make_app: Any) -> None:
    """Clients on new connections and on kept-alive ones send requests all through three
    redeploys: every request gets its own answer (no refused or reset connection, no 503),
    a kept-alive connection stays open and goes on with the new version, and the listener
    says it was handed over each time."""
    port = free_port()
    tasks = {"echo": {"type": "http-server", "listen": f"127.0.0.1:{port}"}}
    cocaine_node.add_app("web", make_app(VERSIONED.format(version=1), tasks=tasks))
    clients = Clients(port)
    clients.start()
    try:
        for version in range(2, REDEPLOYS + 2):
            before = clients.answers()
            deadline = time.monotonic() + 30
            while clients.answers() < before + 50 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert clients.answers() >= before + 50, "the clients made no progress"
            manifest = load_manifest(make_app(VERSIONED.format(version=version), tasks=tasks))
            cocaine_node.run(cocaine_node.node.run_app, "web", manifest)  # the deploy path
        last = REDEPLOYS + 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not clients.errors and \
                not all(seen and seen[-1] == last for seen in _seen(clients).values()):
            time.sleep(0.01)
    finally:
        clients.stop()
    assert clients.errors == []
    seen = _seen(clients)
    assert len(seen) == FRESH_CLIENTS + KEPT_CLIENTS
    for name, versions in seen.items():
        assert versions == sorted(versions), f"{name} went back to an old version"
        assert versions[-1] == last, f"{name} never reached the last version"
    info = cocaine_node.info("web")["tasks"]["echo"]
    assert info["handovers"] == REDEPLOYS
    assert info["connections-refused"] == 0 and info["connections-closed-stopping"] == 0
    assert info["statuses"].get("5xx", 0) == 0


def _seen(clients: Clients) -> dict[str, list[int]]:
    with clients.lock:
        return {name: list(versions) for name, versions in clients.seen.items()}


def test_a_new_version_on_another_address_closes_the_old_one(cocaine_node: Any,
                                                             make_app: Any) -> None:
    """A new version that listens elsewhere does not take the old socket: once the old
    version has stopped, its address refuses connections, and the new one serves."""
    old, new = free_port(), free_port()
    cocaine_node.add_app("web", make_app(VERSIONED.format(version=1), tasks={
        "echo": {"type": "http-server", "listen": f"127.0.0.1:{old}"}}))
    with socket.create_connection(("127.0.0.1", old), timeout=10) as sock:
        assert exchange(sock, b"a")[1] == b"v1:a"
    manifest = load_manifest(make_app(VERSIONED.format(version=2), tasks={
        "echo": {"type": "http-server", "listen": f"127.0.0.1:{new}"}}))
    cocaine_node.run(cocaine_node.node.run_app, "web", manifest)
    with socket.create_connection(("127.0.0.1", new), timeout=10) as sock:
        assert exchange(sock, b"b")[1] == b"v2:b"
    deadline = time.monotonic() + 30
    refused = False
    while not refused and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", old), timeout=10).close()
            time.sleep(0.02)
        except ConnectionRefusedError:
            refused = True
    assert refused, "the old version's address still listens"
    assert cocaine_node.info("web")["tasks"]["echo"]["handovers"] == 0


def test_an_app_on_port_0_keeps_its_port_across_a_redeploy(cocaine_node: Any,
                                                            make_app: Any) -> None:
    """``listen`` with port 0: the new version takes the server, so the port stays."""
    tasks = {"echo": {"type": "http-server", "listen": "127.0.0.1:0"}}
    cocaine_node.add_app("web", make_app(VERSIONED.format(version=1), tasks=tasks))
    bound = cocaine_node.info("web")["tasks"]["echo"]["listen"]
    manifest = load_manifest(make_app(VERSIONED.format(version=2), tasks=tasks))
    cocaine_node.run(cocaine_node.node.run_app, "web", manifest)
    info = cocaine_node.info("web")["tasks"]["echo"]
    assert (info["listen"], info["handovers"]) == (bound, 1)
    host, port = bound.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        assert exchange(sock, b"c")[1] == b"v2:c"
