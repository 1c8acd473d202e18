"""Starting and stopping: graceful drain, a dying node, garbage on the wire, noisy handlers."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgpack
import pytest
import zmq

from cocaine_core.client import Client
from cocaine_core.errors import ServiceError
from cocaine_core.testing import call_or_error as call
from cocaine_core.testing import free_port, leftover_slaves, process_gone, wait_until

APP = '''
import os
import sys
import time


def slow(request):
    time.sleep(float(request.data or 0.5))
    return b"finished"


def echo(request):
    return request.data


def noisy(request):
    line = "x" * 99
    for _ in range(100_000):  # 10 MB
        print(line)
    print("to stderr", file=sys.stderr)
    return b"quiet now"
'''

TASKS = {name: {"type": "native-server"} for name in ("slow", "echo", "noisy")}
COCAINE = str(Path(sys.executable).with_name("cocaine"))


def test_graceful_stop_under_load(cocaine_node, make_app):
    manifest = make_app(APP, TASKS, engine={"pool-limit": 2, "termination-timeout": 5})
    engine = cocaine_node.add_app("g", manifest)
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(call, cocaine_node.endpoint, "g", "slow", b"1.0")
                   for _ in range(6)]
        wait_until(lambda: cocaine_node.info("g")["pool"]["busy"] == 2, message="busy pool")
        wait_until(lambda: cocaine_node.info("g")["queue"]["depth"] >= 1, message="a queue")
        cocaine_node.remove_app("g")
        results = [f.result() for f in futures]
    finished = [r for r in results if r == b"finished"]
    refused = [r for r in results if isinstance(r, ServiceError)]
    assert len(finished) == 2, "jobs in flight finish"
    assert len(refused) == 4 and all(r.code == 503 and "stopping" in r.message for r in refused)
    assert engine.state.value == "stopped"
    assert not leftover_slaves()


def test_stop_kills_jobs_past_termination_timeout(cocaine_node, make_app):
    manifest = make_app(APP, TASKS, engine={"termination-timeout": 0.5})
    cocaine_node.add_app("g2", manifest)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(call, cocaine_node.endpoint, "g2", "slow", b"30")
        wait_until(lambda: cocaine_node.info("g2")["pool"]["busy"] == 1, message="busy")
        started = time.monotonic()
        cocaine_node.remove_app("g2")
        assert time.monotonic() - started < 5
        result = future.result()
    assert isinstance(result, ServiceError) and "termination-timeout" in result.message
    assert not leftover_slaves()


def test_garbage_frames_get_400_and_the_node_keeps_serving(cocaine_node, make_app):
    cocaine_node.add_app("e", make_app(APP, TASKS))
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(cocaine_node.endpoint)
    garbage = [
        [b"\xff\xfe not msgpack"],
        [msgpack.packb({"a": 1})],
        [msgpack.packb([10])],
        [msgpack.packb([10, 7, "e"])],
        [msgpack.packb([10, 8, 5, "echo", {}])],
        [msgpack.packb([10, 9, "e", "echo", {"timeout": "soon"}])],
        [msgpack.packb([10, 10, "e", "echo", {"urgent": 3}])],
        [msgpack.packb([10, 11, "e", "echo", [1, 2]])],
        [msgpack.packb([99, 12])],
        [b""],
    ]
    try:
        for frames in garbage:
            sock.send_multipart(frames)
            assert sock.poll(10_000), f"no answer to {frames!r}"
            reply = msgpack.unpackb(sock.recv_multipart()[0])
            assert reply[0] == 7 and reply[2] == 400, reply
            assert reply[3], "the error says what is wrong"
    finally:
        sock.close()
        context.term()
    with Client(cocaine_node.endpoint, wait=30) as client:
        assert client.call("e", "echo", b"fine") == b"fine"


def test_handler_printing_10_mb_never_blocks(cocaine_node, make_app):
    cocaine_node.add_app("n", make_app(APP, TASKS))
    with Client(cocaine_node.endpoint, wait=60) as client:
        started = time.monotonic()
        assert client.call("n", "noisy") == b"quiet now"
        assert client.call("n", "echo", b"next") == b"next"
        assert time.monotonic() - started < 30


def run_node(manifest: Path, endpoint: str) -> subprocess.Popen[bytes]:
    """``cocaine run`` of ``manifest``, once it serves (killed if it never does)."""
    process = subprocess.Popen([COCAINE, "run", str(manifest), "--listen", endpoint],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def up() -> bool:
        # A client per look: it signs with the run's key, which the node makes as it starts
        # when the run has none yet (a client made before would stay unsigned).
        try:
            with Client(endpoint, wait=1) as client:
                return manifest.parent.name in client.control("list")
        except ServiceError:
            assert process.poll() is None, process.stdout.read().decode()
            return False
    try:
        wait_until(up, timeout=30, message="cocaine run to serve")
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def remove_run_dir(output: bytes) -> None:
    """Remove the run folder a killed ``cocaine run`` made (it logged its events socket there)
    and could not remove itself."""
    found = re.search(rb"ipc://(/tmp/cocaine-run-[A-Za-z0-9_]+)/events", output)
    if found:
        shutil.rmtree(found.group(1).decode(), ignore_errors=True)


def slave_pids(endpoint: str, app: str) -> list[int]:
    with Client(endpoint, wait=10) as client:
        return [s["pid"] for s in client.control("info")["apps"][app]["slaves"]]


def test_cocaine_run_serves_and_sigterm_drains(make_app):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    manifest = make_app(APP, TASKS, name="hello")
    process = run_node(manifest, endpoint)
    try:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(call, endpoint, "hello", "slow", b"1.0")
            wait_until(lambda: slave_pids(endpoint, "hello"), message="a slave")
            with Client(endpoint, wait=10) as client:
                wait_until(lambda: client.control("info")["apps"]["hello"]["pool"]["busy"],
                           message="busy")
            process.send_signal(signal.SIGTERM)
            assert future.result() == b"finished"
        assert process.wait(timeout=30) == 0
        output = process.stdout.read().decode()
        assert "serving app 'hello'" in output
        assert not leftover_slaves(process.pid)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_killed_node_leaves_no_slave_behind(make_app):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    manifest = make_app(APP, TASKS, engine={"pool-min": 2}, name="orphans")
    process = run_node(manifest, endpoint)
    try:
        pids = wait_until(lambda: len(slave_pids(endpoint, "orphans")) >= 2 and
                          slave_pids(endpoint, "orphans"), message="two slaves (and a spare)")
        assert leftover_slaves(process.pid)
        process.kill()
        process.wait()
        killed_at = time.monotonic()
        wait_until(lambda: not leftover_slaves(process.pid), timeout=5,
                   message="slaves to exit after the node was killed")
        assert time.monotonic() - killed_at < 2.0
        assert all(process_gone(pid) for pid in pids)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        remove_run_dir(process.stdout.read())


@pytest.mark.parametrize("pool_min", [0, 1])
def test_cocaine_run_reload_restarts_slaves_on_change(make_app, pool_min):
    """With pool-min 1 the pool asks for a slave while the new code loads: that fork request
    reached the template with its configure, was lost, and the app served nothing until the
    startup-timeout (here a minute, past the wait below) killed the slave that never came."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    manifest = make_app("def echo(request):\n    return b'v1'\n",
                        {"echo": {"type": "native-server"}}, name="reload",
                        engine={"pool-min": pool_min, "startup-timeout": 60})
    process = subprocess.Popen([COCAINE, "run", str(manifest), "--listen", endpoint,
                                "--reload"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with Client(endpoint, wait=5) as client:
            wait_until(lambda: _try(client, "reload", "echo") == b"v1", timeout=30,
                       message="v1")
            (manifest.parent / "app.py").write_text("def echo(request):\n    return b'v2'\n")
            wait_until(lambda: _try(client, "reload", "echo") == b"v2", timeout=30,
                       message="v2 after the change")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _try(client: Client, app: str, event: str) -> bytes | None:
    try:
        return client.call(app, event)
    except ServiceError:
        return None
