"""A node whose stdout and stderr go to a pipe nobody reads keeps serving, and SIGTERM ends it.

Each test starts a real ``cocaine run`` or ``cocaine node`` with both streams on the write end
of an ``os.pipe()`` the test does not read, makes an app print far more than a pipe holds (its
lines go to the node's log, tagged ``[app/pid]``), waits until the pipe is full, and then asks
for answers with a bound. ``tests/cli/test_log_queue.py`` tests the queue itself.
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cocaine_core.client import Client, wait_for_node
from cocaine_core.testing import free_port, leftover_slaves, wait_until, write_app

COCAINE = str(Path(sys.executable).with_name("cocaine"))

APP = '''
import os
import sys
import time


def spam(request):
    count = int(request.data or 1000)
    for number in range(count):
        line = f"spam {number:06d} " + "x" * 100
        # Four ways out, each with its own budget of 1000 lines a second (twice in a burst),
        # and paced below it (500 lines in at least 0.3 s, about 420 a second each way), so
        # that every line reaches the node's log, which gets more than its queue holds.
        if number % 500 == 499:
            time.sleep(0.3)
        if number % 4 < 2:
            print(line, file=sys.stderr if number % 4 else sys.stdout)
        else:
            os.write(number % 4 - 1, (line + "\\n").encode())
    return str(count)


def echo(request):
    return request.data
'''

TASKS = {"spam": {"type": "native-server"}, "echo": {"type": "native-server"}}
#: The app's drain time: SIGTERM must end the node within it, plus the ~1 s the log gets.
TERMINATION_TIMEOUT = 2.0
#: Most seconds any answer may take while the pipe is stalled (generous: a busy 2-core box).
ANSWER_BOUND = 5.0
#: Lines one ``spam`` call prints: about 260 KB of log, several pipes' worth.
SPAM_LINES = 2000
#: Calls that print more than the node's log queue holds (10,000 lines) beyond a full pipe.
DROP_CALLS = 12


def pipe_bytes(fd: int) -> int:
    """How many bytes wait unread in the pipe ``fd``."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]


def pipe_size(fd: int) -> int:
    """The capacity of the pipe ``fd`` (64 KiB unless changed)."""
    return fcntl.fcntl(fd, 1032)  # F_GETPIPE_SZ


def read_available(fd: int, timeout: float = 0.2) -> bytes:
    """What the pipe ``fd`` holds now, and what arrives within ``timeout`` of silence."""
    chunks = []
    while select.select([fd], [], [], timeout)[0]:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def read_until(fd: int, into: bytearray, stop: threading.Event) -> None:
    """Read the pipe ``fd`` into ``into`` until ``stop`` is set, then what is left."""
    while not stop.is_set():
        into.extend(read_available(fd, 0.05))
    into.extend(read_available(fd))


class StalledNode:
    """A ``cocaine`` hosting process whose stdout and stderr are a pipe this test holds."""

    def __init__(self, args: list[str], endpoint: str) -> None:
        self.endpoint = endpoint
        self.read_end, write_end = os.pipe()
        env = {**os.environ, "COCAINE_LOAD_PLUGINS": "python"}
        self.process = subprocess.Popen([COCAINE, *args], stdin=subprocess.DEVNULL,
                                        stdout=write_end, stderr=write_end, env=env,
                                        start_new_session=True)
        os.close(write_end)
        self.spammed = 0

    def wait_answers(self, app: str) -> None:
        """Wait until ``app`` is running (the output so far fits in the pipe)."""
        wait_for_node(self.endpoint, timeout=30)
        with Client(self.endpoint, wait=10) as client:
            wait_until(lambda: client.control("info")["apps"].get(app, {}).get("state") ==
                       "running", timeout=30, message=f"the app {app} to run")

    def spam(self, client: Client, app: str) -> None:
        """Make ``app`` print ``SPAM_LINES`` lines."""
        assert client.call(app, "spam", str(SPAM_LINES)) == str(SPAM_LINES).encode()
        self.spammed += 1

    def stall(self, app: str, calls: int = 3) -> None:
        """Make ``app`` print ``calls`` times ``SPAM_LINES`` lines (several pipes' worth), and
        wait until the pipe holds at least half its size and stops taking more."""
        with Client(self.endpoint, wait=ANSWER_BOUND) as client:
            for _ in range(calls):
                self.spam(client, app)
        # A full pipe may hold less than its size: a write that does not fit in the last
        # page takes a new one.
        half = pipe_size(self.read_end) // 2
        last = [-1, time.monotonic()]

        def stuck() -> bool:
            now, held = time.monotonic(), pipe_bytes(self.read_end)
            if held != last[0]:
                last[:] = [held, now]
            return held >= half and now - last[1] > 0.5

        wait_until(stuck, timeout=3 * ANSWER_BOUND, message="the pipe to fill")

    def close(self) -> None:
        """Kill what is left (the process group: the node and its slaves); close the pipe."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        os.close(self.read_end)


@pytest.fixture
def app_manifest(tmp_path: Path) -> Path:
    return write_app(tmp_path / "chatty", APP, TASKS,
                     {"termination-timeout": TERMINATION_TIMEOUT, "pool-limit": 2})


@pytest.fixture
def stalled(tmp_path: Path, app_manifest: Path) -> Iterator[Any]:
    """A factory: ``stalled(command, log_format)`` starts ``cocaine run`` or ``cocaine node``
    (with the app deployed) on a pipe nobody reads; everything is killed after the test."""
    started: list[StalledNode] = []
    run_dirs: list[Path] = []

    def start(command: str, log_format: str) -> StalledNode:
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        if command == "run":
            args = ["run", str(app_manifest), "--name", "chatty", "--listen", endpoint]
        else:
            run_dir = Path("/tmp") / f"cocaine-logpipe-{free_port()}"
            run_dirs.append(run_dir)
            args = ["node", "--listen", endpoint, "--storage",
                    f"files://{tmp_path / 'storage'}", "--run-dir", str(run_dir)]
        node = StalledNode([*args, "--log-format", log_format], endpoint)
        started.append(node)
        if command == "node":
            wait_for_node(endpoint, timeout=30)
            deployed = subprocess.run([COCAINE, "app", "deploy", str(app_manifest), "--name",
                                       "chatty", "--node", endpoint], capture_output=True,
                                      timeout=120, env={**os.environ,
                                                        "COCAINE_LOAD_PLUGINS": "python"})
            assert deployed.returncode == 0, deployed.stderr.decode()
        node.wait_answers("chatty")
        return node

    yield start
    for node in started:
        node.close()
    import shutil

    for run_dir in run_dirs:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.parametrize(("command", "log_format"),
                         [("run", "plain"), ("run", "rich"), ("node", "json")])
def test_a_stalled_log_pipe_does_not_freeze_the_node(stalled: Any, command: str,
                                                     log_format: str) -> None:
    node = stalled(command, log_format)
    node.stall("chatty")
    with Client(node.endpoint, wait=ANSWER_BOUND) as client:
        for number in range(5):
            started = time.monotonic()
            assert client.call("chatty", "echo", str(number)) == str(number).encode()
            assert client.control("info")["apps"]["chatty"]["state"] == "running"
            assert time.monotonic() - started < ANSWER_BOUND
        node.spam(client, "chatty")  # more output while stalled is dropped, not waited for
        assert client.call("chatty", "echo", b"still") == b"still"
    started = time.monotonic()
    node.process.send_signal(signal.SIGTERM)
    try:
        code = node.process.wait(timeout=TERMINATION_TIMEOUT + 1 + 10)
    except subprocess.TimeoutExpired:
        pytest.fail("SIGTERM did not end the node while its log pipe was stalled")
    assert code == 0
    assert time.monotonic() - started < TERMINATION_TIMEOUT + 1 + 10
    wait_until(lambda: not leftover_slaves(node.process.pid), timeout=10,
               message="the slaves to exit")


def test_dropped_lines_are_counted_once_the_pipe_is_read(stalled: Any) -> None:
    node = stalled("run", "json")
    node.stall("chatty", calls=DROP_CALLS)
    output = bytearray()
    reading = threading.Event()
    reader = threading.Thread(target=read_until, args=(node.read_end, output, reading))
    with Client(node.endpoint, wait=ANSWER_BOUND) as client:
        node.spam(client, "chatty")
        reader.start()  # from now on the pipe is read, and stays read until the node ends
        try:
            wait_until(lambda: b"lines dropped" in output, timeout=10,
                       message="the note of dropped lines")
            assert client.call("chatty", "echo", b"after") == b"after"
            node.process.send_signal(signal.SIGTERM)
            assert node.process.wait(timeout=TERMINATION_TIMEOUT + 1 + 10) == 0
        finally:
            reading.set()
            reader.join(10)
    records = [json.loads(line) for line in output.decode().splitlines()]
    notes = [r for r in records if "lines dropped" in r["message"]]
    assert notes and all(r["level"] == "warning" for r in notes)
    dropped = sum(int(r["message"].strip("[").split()[0]) for r in notes)
    spam = sum(1 for r in records if "] spam " in r["message"])
    assert notes[0]["message"].endswith(" log lines dropped: the node's output was not read "
                                        "fast enough]")
    assert dropped > 0
    # Not every line printed reaches the node's log: between slave and engine, lines beyond
    # ZeroMQ's high-water mark are lost (see slave_channel.py). What reached it was written or
    # counted.
    assert spam + dropped <= node.spammed * SPAM_LINES
    assert records[-1]["message"] == "node stopped"
