"""Fixtures of the cocaine-prometheus tests: a real ``cocaine node --metrics`` with a real app,
scrapes parsed by ``prometheus_client``'s parser, and a real headless Chromium driven over the
DevTools protocol (``cdp.py``).

The node factory (``node_process``) comes from ``cocaine_core.testing`` through the
repository's root conftest.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from cocaine_core.testing import NodeProcess, free_port, wait_until, write_app

sys.path.insert(0, str(Path(__file__).parent))  # cdp.py, the DevTools client

#: The app the tests call: a success, an error (500), a slow job, and one that waits.
APP = '''
import time


def echo(request):
    return request.data


def fail(request):
    raise ValueError("this event always fails")


def slow(request):
    time.sleep(float(request.data or b"0.2"))
    return b"slept"
'''
TASKS = {event: {"type": "native-server"} for event in ("echo", "fail", "slow")}


class MetricsNode:
    """A node process serving ``/metrics`` and the console on ``base``."""

    def __init__(self, node: NodeProcess, base: str) -> None:
        self.node = node
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=10, trust_env=False)

    def deploy(self, name: str, folder: Path, code: str = APP,
               tasks: dict[str, Any] | None = None, engine: dict[str, Any] | None = None
               ) -> None:
        """Deploy an app (``APP`` unless given) under ``name`` and wait until it serves."""
        manifest = write_app(folder / name, code, tasks or TASKS, engine)
        self.node.cli("app", "deploy", str(manifest), "--name", name)

    def info(self) -> dict[str, Any]:
        """The node's ``cocaine info``."""
        with self.node.client() as client:
            return client.control("info")

    def scrape(self) -> dict[str, list[Sample]]:
        """``/metrics`` parsed: every sample by its family's name."""
        response = self.http.get("/metrics")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        return {family.name: family.samples
                for family in text_string_to_metric_families(response.text)}

    def value(self, family: str, sample: str | None = None, **labels: str) -> float | None:
        """The value of ``sample`` (default: the family's name) with ``labels`` in a scrape."""
        for found in self.scrape().get(family, []):
            if found.name == (sample or family) and all(
                    found.labels.get(k) == v for k, v in labels.items()):
                return found.value
        return None


@pytest.fixture
def metrics_node(node_process: Callable[..., NodeProcess]) -> Iterator[MetricsNode]:
    """A real ``cocaine node --metrics 127.0.0.1:PORT`` (a free port), once it answers there."""
    port = free_port()
    node = node_process("--metrics", f"127.0.0.1:{port}")
    served = MetricsNode(node, f"http://127.0.0.1:{port}")
    wait_until(lambda: _answers(served), timeout=20, message="the metrics listener to answer")
    try:
        yield served
    finally:
        served.http.close()


def _answers(served: MetricsNode) -> bool:
    try:
        return served.http.get("/metrics").status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def app_folder() -> Iterator[Path]:
    """A short temporary folder for apps."""
    path = Path(tempfile.mkdtemp(prefix="cprom-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's ``chromium``) with a DevTools client; killed after."""
    from cdp import Browser, find_chromium

    binary = find_chromium()
    if binary is None:
        pytest.skip("chromium is not installed (scripts/test installs Debian's chromium)")
    profile = Path(tempfile.mkdtemp(prefix="cprom-chromium-", dir="/tmp"))
    started = Browser(binary, profile)
    try:
        started.start()
        yield started
    finally:
        started.kill()
        shutil.rmtree(profile, ignore_errors=True)
        profile.with_name(f"{profile.name}.log").unlink(missing_ok=True)  # Chromium's output
