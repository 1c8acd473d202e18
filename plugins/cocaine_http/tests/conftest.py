"""Fixtures of the cocaine-http tests: apps served over HTTP, raw sockets, curl.

The node and app factories (``cocaine_node``, ``make_app``) come from ``cocaine_core.testing``
through the repository's root conftest.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

#: Handlers the tests share. ``{folder}`` is a folder of the test's for markers and barriers.
APP = '''
import hashlib, json, os, time
from cocaine_python import Response

FOLDER = {folder!r}


def wait_for(name, timeout=30):
    path = os.path.join(FOLDER, name)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)


def mark(name, text=""):
    with open(os.path.join(FOLDER, name), "w") as f:
        f.write(text)


def echo(request):
    return request.data


def meta(request):
    return Response(json.dumps(request.meta), headers={{"Content-Type": "application/json"}})


def created(request):
    return Response(b"made", status=201, headers=[["X-Thing", "a b"], ["Set-Cookie", "a=1"],
                                                   ["Set-Cookie", "b=2"]])


def missing(request):
    return Response("nothing here", status=404, headers={{"Content-Type": "text/plain"}})


def big(request):
    return b"x" * int(request.meta["query"])


def boom(request):
    raise ValueError("boom")


def slow(request):
    time.sleep(float(request.meta["query"] or "0.2"))
    return b"slept"


def held(request):
    wait_for("release")
    return b"released"


def stream(request):
    yield Response(status=200, headers={{"Content-Type": "text/plain"}})
    yield b"first\\n"
    wait_for("go")
    yield b"second\\n"


def forever(request):
    try:
        i = 0
        while True:
            yield b"x" * 65536
            i += 1
            if i == 4:
                mark("streaming")
    finally:
        mark("finally")


def partial(request):
    try:
        for piece in request.stream:
            mark("reading")
    finally:
        mark("partial-finally")


def upload(request):
    size, digest, pieces = 0, hashlib.sha256(), 0
    for piece in request.stream:
        size += len(piece)
        digest.update(piece)
        pieces += 1
    return json.dumps({{"size": size, "sha256": digest.hexdigest(), "pieces": pieces,
                       "streamed": request.stream.streamed}})
'''


@pytest.fixture
def folder() -> Iterator[Path]:
    """A short temporary folder for the app's markers."""
    path = Path(tempfile.mkdtemp(prefix="chttp-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def serve(cocaine_node: Any, make_app: Callable[..., Path], folder: Path
          ) -> Callable[..., dict[str, str]]:
    """``serve(tasks, engine=..., name=...)``: start an app whose tasks (event: options) are
    http-servers on 127.0.0.1 (port 0 unless given); the base URL of each task's server."""

    def start(tasks: dict[str, dict[str, Any]], engine: dict[str, Any] | None = None,
              name: str = "web") -> dict[str, str]:
        tasks = {event: {"type": "http-server", "listen": "127.0.0.1:0", **options}
                 for event, options in tasks.items()}
        cocaine_node.add_app(name, make_app(APP.format(folder=str(folder)), tasks=tasks,
                                            engine=engine, name=name))
        info = cocaine_node.info(name)["tasks"]
        return {event: f"http://{info[event]['listen']}" for event in tasks}

    return start


@pytest.fixture
def task_info(cocaine_node: Any) -> Callable[..., dict[str, Any]]:
    """``task_info(event, app="web")``: one task's info (its driver's counters)."""
    return lambda event, app="web": cocaine_node.info(app)["tasks"][event]


@pytest.fixture
def curl() -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """``curl(*args)``: run curl, its output as bytes."""
    return run_curl


@pytest.fixture
def raw() -> Callable[..., bytes]:
    """``raw(address, data, until)``: bytes on a new connection, and what came back."""
    return raw_exchange


def run_curl(*args: str, timeout: float = 30, stdin: bytes | None = None
         ) -> subprocess.CompletedProcess[bytes]:
    """Run curl (silent, errors shown, no proxy) with ``args``."""
    return subprocess.run(["curl", "-sS", "--noproxy", "*", *args], input=stdin,
                          capture_output=True, timeout=timeout, check=False)


def raw_exchange(address: str, data: bytes, until: Callable[[bytes], bool],
                 timeout: float = 15) -> bytes:
    """Send ``data`` on a new connection to ``address`` (``host:port``); read until
    ``until(received)`` or the connection closes."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until(sock, until, timeout)


def read_until(sock: socket.socket, until: Callable[[bytes], bool], timeout: float = 15
               ) -> bytes:
    """Read from ``sock`` until ``until(received)`` or it closes (or ``timeout``)."""
    received = b""
    deadline = time.monotonic() + timeout
    while not until(received) and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        if not data:
            break
        received += data
    return received
