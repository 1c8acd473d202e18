"""A node holding many connections still starts apps: the descriptors its processes inherit
are numbered past 1024, which ``select`` refuses (the template failed to load every app)."""

from __future__ import annotations

import resource
import socket
from pathlib import Path
from typing import Any

import pytest

from cocaine_core.testing import wait_until, write_app

CONNECTIONS = 1100


@pytest.fixture
def many_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < CONNECTIONS + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))


def _held_descriptors(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def test_an_app_deploys_while_the_node_holds_over_1024_connections(
        node_process: Any, tmp_path: Path, many_descriptors: None) -> None:
    node = node_process()
    port = int(node.endpoint.rsplit(":", 1)[1])
    held: list[socket.socket] = []
    try:
        for _ in range(CONNECTIONS):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        wait_until(lambda: _held_descriptors(node.process.pid) > CONNECTIONS, timeout=30,
                   message="the node to accept the connections")
        manifest = write_app(tmp_path / "app", "def echo(request):\n    return request.data\n",
                             {"echo": {"type": "native-server"}})
        node.cli("app", "deploy", str(manifest), "--name", "crowded")
        with node.client(wait=30) as client:
            assert client.call("crowded", "echo", b"still here") == b"still here"
    finally:
        for sock in held:
            sock.close()
