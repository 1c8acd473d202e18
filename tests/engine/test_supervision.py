"""Real processes at a bad moment: slow imports, a stalled or killed template, a handler in a C
call that holds the GIL, a node that was itself stopped. None of them breaks the app."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cocaine_core.backends.process import node_processes
from cocaine_core.client import Client, wait_for_node
from cocaine_core.testing import call_or_error as call
from cocaine_core.testing import free_port, leftover_slaves, wait_until

COCAINE = str(Path(sys.executable).with_name("cocaine"))

APP = '''
import os
import re
import time

# A slow import while the flag file exists (a busy machine, a cold disk).
while os.path.exists(os.environ.get("COCAINE_TEST_SLOW_FLAG", "/nonexistent")):
    time.sleep(0.05)


def pid(request):
    return str(os.getpid())


def slow(request):
    time.sleep(float(request.data or 1))
    return str(os.getpid())


def regex(request):
    # One C call that holds the GIL and burns CPU for seconds: the heartbeat thread is silent.
    re.match(r"(a+)+$", "a" * int(request.data) + "b")
    return str(os.getpid())
'''

TASKS = {name: {"type": "native-server"} for name in ("pid", "slow", "regex")}


def template_pid(node, app: str) -> int | None:
    """The pid of the app's template; None while the app has none (it is being loaded again:
    its backend is made anew)."""
    backend = node.engine(app).backend
    template = getattr(backend, "template", None)
    return None if template is None else template.pid


def children_of(pid: int) -> set[int]:
    """Live templates and slaves of this process's node whose parent is ``pid``."""
    return {child for child, parent in node_processes(os.getpid()).items() if parent == pid}


def run_in_own_session(manifest: Path, endpoint: str, output: Any) -> subprocess.Popen[bytes]:
    """``cocaine run`` in a process group of its own (so the test can stop or signal it
    whole), its output to ``output``; returns once the node answers."""
    process = subprocess.Popen([COCAINE, "run", str(manifest), "--listen", endpoint,
                                "--log-format", "plain"], stdout=output,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_node(endpoint, timeout=30)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def test_an_import_slower_than_startup_timeout_is_retried_not_fatal(cocaine_node, make_app,
                                                                    tmp_path, monkeypatch):
    flag = tmp_path / "slow"
    flag.touch()
    monkeypatch.setenv("COCAINE_TEST_SLOW_FLAG", str(flag))
    manifest = make_app(APP, TASKS, engine={"startup-timeout": 0.5})
    cocaine_node.add_app("slowpoke", manifest)  # returns: no CancelledError, no exit
    info = cocaine_node.info("slowpoke")
    assert info["state"] == "starting", "a slow import is the moment's fault, not the code's"
    assert "engine.startup-timeout" in info["load"]["last-failure"]
    flag.unlink()  # the machine is quiet again
    wait_until(lambda: cocaine_node.info("slowpoke")["state"] == "running", timeout=60,
               message="the app to load once the import is fast enough")
    assert isinstance(call(cocaine_node.endpoint, "slowpoke", "pid"), bytes)


def test_a_stalled_template_while_the_pool_grows_neither_breaks_nor_leaks(cocaine_node,
                                                                         make_app):
    manifest = make_app(APP, TASKS, engine={"pool-limit": 4, "startup-timeout": 1})
    cocaine_node.add_app("stall", manifest)
    template = template_pid(cocaine_node, "stall")
    with ThreadPoolExecutor(4) as pool:
        busy = pool.submit(call, cocaine_node.endpoint, "stall", "slow", b"6")
        wait_until(lambda: cocaine_node.info("stall")["pool"]["busy"] == 1, message="busy")
        os.kill(template, signal.SIGSTOP)  # a swap storm: the template cannot fork
        try:
            waiting = [pool.submit(call, cocaine_node.endpoint, "stall", "pid")
                       for _ in range(3)]
            time.sleep(5)  # new slaves given up on, again and again: the pool cannot grow
            assert cocaine_node.info("stall")["state"] == "running"
        finally:
            os.kill(template, signal.SIGCONT)
        assert isinstance(busy.result(timeout=30), bytes)
        for future in waiting:
            result = future.result(timeout=30)
            assert isinstance(result, bytes) or result.code == 503, result
    assert cocaine_node.info("stall")["state"] == "running"
    assert isinstance(call(cocaine_node.endpoint, "stall", "pid"), bytes)

    def no_leaks() -> bool:
        known = {s["pid"] for s in cocaine_node.info("stall")["slaves"]
                 if s["state"] != "killed"}
        return children_of(template) <= known
    wait_until(no_leaks, timeout=15, message="every slave forked after SIGCONT to be known "
                                             "to the engine or gone")


def test_a_killed_template_with_pool_min_comes_back_quietly(cocaine_node, make_app, caplog):
    manifest = make_app(APP, TASKS, engine={"pool-min": 2, "pool-limit": 3})
    cocaine_node.add_app("phoenix", manifest)
    wait_until(lambda: cocaine_node.info("phoenix")["pool"]["idle"] == 2, message="pool-min")
    caplog.set_level(logging.INFO, logger="cocaine")
    caplog.clear()
    first = template_pid(cocaine_node, "phoenix")
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: cocaine_node.info("phoenix")["pool"]["idle"] == 2 and
               template_pid(cocaine_node, "phoenix") not in (None, first), timeout=15,
               message="a new template with pool-min slaves")
    assert isinstance(call(cocaine_node.endpoint, "phoenix", "pid"), bytes)
    assert cocaine_node.info("phoenix")["state"] == "running"
    assert len(caplog.records) < 30, "a lost template is said, not flooded"


def test_a_handler_holding_the_gil_in_a_busy_c_call_is_not_killed(cocaine_node, make_app):
    manifest = make_app(APP, TASKS, engine={"heartbeat-timeout": 1})
    cocaine_node.add_app("gil", manifest)
    started = time.monotonic()
    result = call(cocaine_node.endpoint, "gil", "regex", b"26")  # seconds in one C call
    assert isinstance(result, bytes), result
    assert time.monotonic() - started > 1.5, "the call outlived heartbeat-timeout"


def test_a_node_stopped_with_its_slaves_does_not_kill_them_for_silence(make_app):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    manifest = make_app(APP, TASKS, engine={"heartbeat-timeout": 1}, name="paused")
    process = run_in_own_session(manifest, endpoint, subprocess.DEVNULL)
    try:
        with ThreadPoolExecutor(1) as pool:
            with Client(endpoint, wait=30) as client:
                wait_until(lambda: client.control("info")["apps"].get("paused", {}).get(
                    "state") == "running", timeout=30, message="the app")
            job = pool.submit(call, endpoint, "paused", "slow", b"3")
            with Client(endpoint, wait=30) as client:
                before = wait_until(lambda: [s["pid"] for s in client.control("info")["apps"]
                                             ["paused"]["slaves"] if s["jobs"]],
                                    message="a busy slave")
            os.killpg(process.pid, signal.SIGSTOP)  # Ctrl-Z: the node and all its slaves
            time.sleep(2.5)
            os.killpg(process.pid, signal.SIGCONT)
            assert job.result(timeout=30) == str(before[0]).encode(), "the job finished"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
    assert not leftover_slaves(process.pid)


def test_sigterm_to_the_whole_process_group_under_load_ends_the_node(make_app):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    manifest = make_app(APP, TASKS, engine={"pool-min": 2, "pool-limit": 3,
                                            "termination-timeout": 1}, name="group")
    process = run_in_own_session(manifest, endpoint, subprocess.PIPE)
    try:
        with ThreadPoolExecutor(4) as pool:
            with Client(endpoint, wait=30) as client:
                wait_until(lambda: client.control("info")["apps"].get("group", {}).get(
                    "pool", {}).get("idle", 0) >= 2, timeout=30, message="pool-min")
            for _ in range(8):
                pool.submit(call, endpoint, "group", "slow", b"0.3")
            os.killpg(process.pid, signal.SIGTERM)  # a shell's kill %1, stopasgroup
            started = time.monotonic()
            process.wait(timeout=30)
            assert time.monotonic() - started < 10, "drained within its time"
        output = process.stdout.read().decode()
        assert output.count("\n") < 200, "no flood of log lines"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    wait_until(lambda: not leftover_slaves(process.pid), timeout=5, message="no slave left")
