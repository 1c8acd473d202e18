"""Failures are contained per job: hung, killed and overtime slaves, deadlines, broken apps."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cocaine_core.client import Client
from cocaine_core.errors import ServiceError
from cocaine_core.testing import call_or_error as call
from cocaine_core.testing import process_gone, wait_until

APP = '''
import contextlib
import os
import time


def pid(request):
    return str(os.getpid())


def slow(request):
    time.sleep(float(request.data or 1))
    return str(os.getpid())


def mark_then_sleep(request):
    path = request.data.decode()
    with open(path, "a") as f:
        f.write(str(os.getpid()) + "\\n")
    time.sleep(3)
    return b"done"


def chunk_then_sleep(request):
    yield b"first"
    time.sleep(30)
'''

TASKS = {name: {"type": "native-server"} for name in
         ("pid", "slow", "mark_then_sleep", "chunk_then_sleep")}


def busy_slave_pid(node, app: str) -> int:
    def find() -> int | None:
        slaves = [s for s in node.info(app)["slaves"] if s["jobs"]]
        return slaves[0]["pid"] if slaves else None
    return wait_until(find, message="a busy slave")


def test_hung_slave_is_killed_after_heartbeat_timeout(cocaine_node, make_app):
    manifest = make_app(APP, TASKS, engine={"heartbeat-timeout": 1.0, "pool-limit": 2})
    cocaine_node.add_app("hb", manifest)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(call, cocaine_node.endpoint, "hb", "slow", b"20")
        pid = busy_slave_pid(cocaine_node, "hb")
        os.kill(pid, signal.SIGSTOP)
        try:
            result = future.result(timeout=20)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert isinstance(result, ServiceError) and result.code == 500
    assert "no heartbeat" in result.message and "not retried" in result.message
    wait_until(lambda: process_gone(pid), message="the hung slave to be gone")
    with Client(cocaine_node.endpoint, wait=30) as client:
        assert int(client.call("hb", "pid")) != pid


def test_long_job_keeps_beating(cocaine_node, make_app):
    manifest = make_app(APP, TASKS, engine={"heartbeat-timeout": 0.5})
    cocaine_node.add_app("beat", manifest)
    with Client(cocaine_node.endpoint, wait=30) as client:
        assert client.call("beat", "slow", b"2")  # four heartbeat timeouts long


def test_killed_slave_job_is_retried_once_on_another(cocaine_node, make_app, tmp_path):
    marks = tmp_path / "marks"
    manifest = make_app(APP, TASKS, engine={"pool-limit": 2})
    cocaine_node.add_app("k", manifest)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(call, cocaine_node.endpoint, "k", "mark_then_sleep", str(marks))
        first = int(wait_until(lambda: marks.exists() and marks.read_text().split(),
                               message="the job to start")[0])
        os.kill(first, signal.SIGKILL)
        assert future.result(timeout=30) == b"done"
    pids = [int(p) for p in marks.read_text().split()]
    assert len(pids) == 2 and pids[0] != pids[1]
    assert cocaine_node.info("k")["jobs"]["retried"] == 1


def test_killed_slave_after_a_chunk_fails_with_500(cocaine_node, make_app):
    manifest = make_app(APP, TASKS)
    cocaine_node.add_app("k2", manifest)
    with Client(cocaine_node.endpoint, wait=30) as client:
        chunks = client.stream("k2", "chunk_then_sleep")
        assert next(chunks) == b"first"
        pid = busy_slave_pid(cocaine_node, "k2")
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(ServiceError) as error:
            next(chunks)
    assert error.value.code == 500
    assert f"slave {pid} was killed by signal 9" in error.value.message


def test_job_timeout_is_504_and_slave_is_replaced(cocaine_node, make_app):
    tasks = dict(TASKS, slow={"type": "native-server", "timeout": 0.5})
    manifest = make_app(APP, tasks, engine={"termination-timeout": 0.5})
    cocaine_node.add_app("t", manifest)
    with Client(cocaine_node.endpoint, wait=30) as client:
        before = int(client.call("t", "pid"))
        started = time.monotonic()
        with pytest.raises(ServiceError) as error:
            client.call("t", "slow", b"10")
        assert error.value.code == 504 and "timeout of 0.5 s" in error.value.message
        assert time.monotonic() - started < 5
        after = int(client.call("t", "pid"))
        assert after != before
        # the policy's timeout overrides the task's
        with pytest.raises(ServiceError) as error:
            client.call("t", "slow", b"3", timeout=0.3)
        assert error.value.code == 504 and "timeout of 0.3 s" in error.value.message
    assert cocaine_node.info("t")["jobs"]["timed-out"] == 2


def test_deadline_passed_before_start_is_520(cocaine_node, make_app):
    manifest = make_app(APP, TASKS, engine={"pool-limit": 1})
    cocaine_node.add_app("d", manifest)
    with ThreadPoolExecutor(1) as pool:
        blocker = pool.submit(call, cocaine_node.endpoint, "d", "slow", b"1.5")
        busy_slave_pid(cocaine_node, "d")
        with Client(cocaine_node.endpoint, wait=30) as client, \
                pytest.raises(ServiceError) as error:
            client.call("d", "pid", deadline=0.3)
        assert error.value.code == 520 and "deadline" in error.value.message
        assert isinstance(blocker.result(), bytes)
    assert cocaine_node.info("d")["jobs"]["expired"] == 1


@pytest.mark.parametrize("code,reason", [
    ("def pid(request)\n    return 1\n", "syntax error in"),
    ("def other(request):\n    return 1\n", "has no handler 'pid'"),
    ("import no_such_module_anywhere\n", "ModuleNotFoundError"),
])
def test_broken_app_answers_503_with_the_reason(cocaine_node, make_app, code, reason):
    manifest = make_app(code, {"pid": {"type": "native-server"}})
    engine = cocaine_node.add_app("broken", manifest)
    info = cocaine_node.info("broken")
    assert info["state"] == "broken" and reason in info["broken"]
    assert engine.load_attempts == 3, "a few tries, then no more"
    with Client(cocaine_node.endpoint, wait=30) as client, pytest.raises(ServiceError) as error:
        client.call("broken", "pid")
    assert error.value.code == 503 and reason in error.value.message
    if "other" in code:
        assert "it defines: other" in error.value.message
    assert engine.load_attempts == 3 and engine.spawns == 0
