"""What the cluster tests share: nodes of one cluster on a LAN of namespaces, and an app that
says which host served it."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cocaine_core.client import Client
from cocaine_core.errors import ServiceError
from cocaine_core.testing import NodeProcess, wait_until, write_app
from cocaine_core.testing_netns import Host, Lan

#: An app whose ``where`` answers the address of the host it ran on (after ``sleep`` seconds
#: given in the body), and whose ``stream`` sends one chunk, then waits, then another.
WHERE_APP = """
import socket, time

def _address(gateway):
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((gateway, 9))  # UDP: nothing is sent; the route picks our address
        return probe.getsockname()[0]
    finally:
        probe.close()

def where(request):
    gateway, _, sleep = request.data.decode().partition(" ")
    time.sleep(float(sleep or 0))
    return _address(gateway)

def stream(request):
    gateway, _, sleep = request.data.decode().partition(" ")
    yield _address(gateway)
    time.sleep(float(sleep or 0))
    yield "end"
"""


def key_file(folder: Path) -> Path:
    """A new cluster key in ``folder`` (mode 0600)."""
    from cocaine_core.cluster.key import write_key_file

    path = folder / "cluster.key"
    write_key_file(path)
    return path


def start_nodes(lan: Lan, folder: Path, names: list[str], *extra: str,
                key: Path | None = None, cluster: str = "blue",
                static: bool = True) -> list[tuple[Host, NodeProcess]]:
    """One node per name, each on a host of its own, in one cluster (``--peer`` lists every
    other node's link with ``static``, else mDNS finds them)."""
    key = key or key_file(folder)
    hosts = [lan.add_host(name) for name in names]
    links = [f"tcp://{host.address}:10054" for host in hosts]
    nodes = []
    for host in hosts:
        peers = [arg for link in links for arg in ("--peer", link)] if static else []
        node = host.node(folder / host.name, "--cluster", cluster, "--cluster-key", str(key),
                         *peers, *extra)
        nodes.append((host, node.spawn()))
    for _, node in nodes:
        node.wait_ready(timeout=60)
    return nodes


def deploy(nodes: list[tuple[Host, NodeProcess]], folder: Path, engine: dict[str, Any],
           name: str = "where") -> Path:
    """Deploy the ``where`` app (with ``engine`` settings) to every node."""
    manifest = write_app(folder / f"app-{name}", WHERE_APP,
                         {"where": {"type": "native-server"},
                          "stream": {"type": "native-server"}}, engine=engine)
    for _, node in nodes:
        node.cli("app", "deploy", str(manifest), "--name", name)
    return manifest


def cluster_view(node: NodeProcess) -> dict[str, Any]:
    """What ``cocaine cluster nodes --json`` of ``node`` prints (asked through a client, not
    the command: a poll costs milliseconds instead of a process's start)."""
    with Client(node.endpoint, wait=20) as client:
        return dict(client.control("cluster-nodes"))


def wait_peered(nodes: list[tuple[Host, NodeProcess]], app: str | None = None,
                timeout: float = 30.0) -> None:
    """Wait until every node hears every other as up (and, with ``app``, running it)."""
    def peered() -> bool:
        for _, node in nodes:
            view = cluster_view(node)
            up = [n for n in view["nodes"] if n["state"] == "up" and
                  (app is None or n["apps"].get(app, {}).get("state") == "running")]
            if len(up) != len(nodes):
                return False
        return True

    wait_until(peered, timeout=timeout, interval=0.3, message="every node to hear the others")


def cluster_info(node: NodeProcess) -> dict[str, Any]:
    """The ``cluster`` part of ``cocaine info`` of ``node``."""
    with Client(node.endpoint, wait=20) as client:
        return dict(client.control("info")["cluster"])


class Load:
    """Requests to one node from ``threads`` threads, until stopped: answers by host, errors."""

    def __init__(self, endpoint: str, body: bytes, threads: int = 8, event: str = "where",
                 app: str = "where") -> None:
        self.endpoint, self.body, self.event, self.app = endpoint, body, event, app
        self.served: Counter[str] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self) -> None:
        with Client(self.endpoint, wait=60) as client:
            while not self._stop.is_set():
                try:
                    self.served[client.call(self.app, self.event, self.body).decode()] += 1
                except ServiceError as exc:
                    self.errors.append(f"{exc.code} {exc.message}")

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str,
                 explain: Callable[[], Any] | None = None) -> None:
        """Wait until ``predicate`` holds while the load runs; on a timeout, the failure
        also shows what was served and ``explain()`` (for example the nodes' cluster views)."""
        try:
            wait_until(predicate, timeout=timeout, interval=0.1, message=what)
        except AssertionError as exc:
            seen = {"served": dict(self.served), "errors": self.errors[:5]}
            if explain is not None:
                try:
                    seen["explain"] = explain()
                except Exception as why:  # the explanation must not hide the failure
                    seen["explain"] = f"could not be had: {why!r}"
            raise AssertionError(f"{exc}; {json.dumps(seen, default=str)[:20000]}") from None

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        deadline = time.monotonic() + 90
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
