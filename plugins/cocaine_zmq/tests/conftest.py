"""Fixtures of the cocaine-zmq tests: a ZeroMQ peer in its own process, endpoints, app output.

The node and app factories (``cocaine_node``, ``make_app``) come from ``cocaine_core.testing``
through the repository's root conftest.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cocaine_core.testing import free_port

PEER = Path(__file__).with_name("peer.py")


def enc(frames: list[bytes]) -> list[str]:
    """Frames as the peer's JSON spells them."""
    return [frame.decode("latin-1") for frame in frames]


def dec(frames: list[str] | None) -> list[bytes] | None:
    """The peer's JSON frames back to bytes."""
    return None if frames is None else [frame.encode("latin-1") for frame in frames]


class Peer:
    """Runs ``peer.py`` specs in a separate process (its own ZeroMQ context)."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[str]] = []

    def start(self, op: str, **spec: Any) -> subprocess.Popen[str]:
        """Start a spec in the background; ``result`` collects it."""
        process = subprocess.Popen([sys.executable, str(PEER), json.dumps({"op": op, **spec})],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.running.append(process)
        return process

    def result(self, process: subprocess.Popen[str], timeout: float = 90) -> dict[str, Any]:
        """Wait for a started spec; its printed JSON."""
        try:
            out, err = process.communicate(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, f"peer failed ({process.returncode}): {err}"
        return json.loads(out)

    def __call__(self, op: str, timeout: float = 90, **spec: Any) -> dict[str, Any]:
        """Run a spec to its end and return what it printed."""
        return self.result(self.start(op, **spec), timeout)

    def req(self, endpoint: str, *requests: list[bytes], timeout: float = 30) -> list[Any]:
        """REQ round trips: each request's reply frames (None if it timed out)."""
        result = self("req", endpoint=endpoint, requests=[enc(r) for r in requests],
                      recv_timeout=timeout)
        return [dec(reply) for reply in result["replies"]]

    def close(self) -> None:
        """Kill whatever is still running."""
        for process in self.running:
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    """A ZeroMQ peer in another process; ``peer.req(endpoint, [frames])`` and friends."""
    runner = Peer()
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture
def tcp() -> Callable[[], str]:
    """A factory of free ``tcp://127.0.0.1:PORT`` endpoints."""
    return lambda: f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A temporary folder with a short path, for ipc endpoints (paths are limited to 107
    bytes) and files apps write."""
    path = Path(tempfile.mkdtemp(prefix="czmq-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines an app wrote to ``path`` (none if it does not exist yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


@pytest.fixture
def lines() -> Callable[[Path], list[dict[str, Any]]]:
    """``lines(path)``: the JSON lines an app wrote so far."""
    return read_lines


#: App code the tests share: handlers that record what they got as JSON lines in ``OUT``.
RECORDER = '''
import json, os, time
from cocaine_zmq import frames_of

OUT = {out!r}


def record(request):
    frames = [f.decode("latin-1") for f in frames_of(request)]
    line = json.dumps({{"event": request.event, "frames": frames,
                       "topic": request.meta.get("topic")}})
    with open(OUT, "a") as f:
        f.write(line + "\\n")
'''


@pytest.fixture
def recorder_code() -> Callable[[Path], str]:
    """``recorder_code(out)``: app code whose ``record`` handler appends a JSON line to ``out``
    for every job: its event, frames and topic."""
    return lambda out: RECORDER.format(out=str(out))


def listening_socket(address: str) -> socket.socket:
    """A plain (non-ZeroMQ) socket listening at a ``tcp://`` or ``ipc://`` endpoint."""
    if address.startswith("ipc://"):
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(address[len("ipc://"):])
    else:
        host, port = address[len("tcp://"):].rsplit(":", 1)
        sock = socket.socket()
        sock.bind((host, int(port)))
    sock.listen()
    return sock


@pytest.fixture
def occupy() -> Iterator[Callable[[str], socket.socket]]:
    """``occupy(endpoint)``: something else listens there for the rest of the test."""
    taken: list[socket.socket] = []

    def factory(address: str) -> socket.socket:
        sock = listening_socket(address)
        taken.append(sock)
        return sock

    try:
        yield factory
    finally:
        for sock in taken:
            sock.close()


@pytest.fixture
def is_free() -> Callable[[str], bool]:
    """``is_free(endpoint)``: whether a plain socket can listen there right now."""

    def check(address: str) -> bool:
        try:
            listening_socket(address).close()
        except OSError:
            return False
        return True

    return check


def open_fds() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def fd_count() -> Callable[[], int]:
    """``fd_count()``: this process's open file descriptors."""
    return open_fds
