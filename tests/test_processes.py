"""Every process an app starts stops with the app, whatever happens to the node.

A handler starts ``sleep 1000`` with ``subprocess``, forks a copy of itself that sleeps
without exec, and starts a daemon that double-forks and calls ``setsid``. Before, all three
were re-parented to PID 1 and outlived the app's removal, the node's SIGTERM and its SIGKILL,
holding the node's log open. Now the template reaps and kills its whole tree, and the node
kills what a SIGKILLed template left (``backends/orphans.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocaine_core.backends.process import node_processes
from cocaine_core.client import Client
from cocaine_core.testing import process_gone, wait_until, write_app

APP = '''
import os
import subprocess
import time


def popen(request):
    return str(subprocess.Popen(["sleep", "1000"]).pid)


def fork(request):
    pid = os.fork()
    if pid == 0:
        time.sleep(1000)  # a copy of the slave, never exec'd
        os._exit(0)
    return str(pid)


def daemon(request):
    r, w = os.pipe()
    first = os.fork()
    if first == 0:
        os.setsid()
        if os.fork() == 0:
            os.write(w, str(os.getpid()).encode())
            os.close(w)
            os.execvp("sleep", ["sleep", "1000"])
        os._exit(0)
    os.close(w)
    os.waitpid(first, 0)
    pid = os.read(r, 64)
    os.close(r)
    return pid
'''

TASKS = {name: {"type": "native-server"} for name in ("popen", "fork", "daemon")}


@pytest.fixture
def started() -> Iterator[list[int]]:
    """The pids a test's app started; any left are killed after it (they leaked)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _start_processes(endpoint: str, app: str, pids: list[int]) -> None:
    with Client(endpoint, wait=30) as client:
        for event in ("popen", "fork", "daemon"):
            pid = int(client.call(app, event))
            pids.append(pid)
    assert not any(process_gone(pid) for pid in pids)


def _all_gone(pids: list[int], timeout: float = 15) -> None:
    wait_until(lambda: all(process_gone(pid) for pid in pids), timeout=timeout,
               message=f"the processes the app started to stop "
                       f"({[p for p in pids if not process_gone(p)]} still alive)")


def test_removing_the_app_stops_what_its_handlers_started(cocaine_node, tmp_path: Path,
                                                         started: list[int]) -> None:
    cocaine_node.add_app("kids", write_app(tmp_path / "kids", APP, TASKS))
    _start_processes(cocaine_node.endpoint, "kids", started)
    cocaine_node.remove_app("kids")
    _all_gone(started)


@pytest.mark.parametrize("fault", ["node SIGTERM", "node SIGKILL", "template SIGKILL"])
def test_what_handlers_started_stops_whatever_happens_to_the_node(
        fault: str, node_process, tmp_path: Path, started: list[int]) -> None:
    node = node_process()
    manifest = write_app(tmp_path / "kids", APP, TASKS)
    node.cli("app", "deploy", str(manifest), "--name", "kids")
    _start_processes(node.endpoint, "kids", started)
    pid = node.process.pid
    started.extend(node_processes(pid))  # the template and slaves too
    if fault == "node SIGTERM":
        assert node.stop() == 0
    elif fault == "node SIGKILL":
        node.kill()
    else:
        template = next(p for p, parent in node_processes(pid).items() if parent == pid)
        os.kill(template, signal.SIGKILL)
        # The node lives on, and serves the app again from a new template.
        with Client(node.endpoint, wait=30) as client:
            wait_until(lambda: client.control("info")["apps"]["kids"]["state"] == "running",
                       timeout=20, message="the app running again")
    _all_gone(started)
