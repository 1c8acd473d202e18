"""The pool and the queue: limits, growth, shrinking, order."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cocaine_core.errors import ServiceError
from cocaine_core.testing import call_or_error as call_in_thread
from cocaine_core.testing import wait_until

APP = '''
import os
import time


def slow(request):
    time.sleep(float(request.data or 0.5))
    return str(os.getpid())


def echo(request):
    return request.data


def record(request):
    with open(os.environ["COCAINE_TEST_LOG"], "a") as f:
        f.write(request.data.decode() + "\\n")
    time.sleep(0.05)
    return request.data
'''

TASKS = {"slow": {"type": "native-server"}, "echo": {"type": "native-server"},
         "record": {"type": "native-server"}}


def test_queue_limit_refuses_at_once_with_503(cocaine_node, make_app):
    manifest = make_app(APP, TASKS, engine={"pool-limit": 1, "queue-limit": 1})
    cocaine_node.add_app("q", manifest)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(call_in_thread, cocaine_node.endpoint, "q", "slow", b"1.5")
        wait_until(lambda: cocaine_node.info("q")["pool"]["busy"] == 1, message="a busy slave")
        second = pool.submit(call_in_thread, cocaine_node.endpoint, "q", "slow", b"0.1")
        wait_until(lambda: cocaine_node.info("q")["queue"]["depth"] == 1, message="one queued")
        started = time.monotonic()
        with cocaine_node.client() as client, pytest.raises(ServiceError) as error:
            client.call("q", "slow", b"0.1")
        assert time.monotonic() - started < 1.0, "a refusal must not wait for the queue"
        assert error.value.code == 503
        assert "queue is full" in error.value.message
        assert isinstance(first.result(), bytes) and isinstance(second.result(), bytes)
    assert cocaine_node.info("q")["jobs"]["refused"] == 1


def test_pool_grows_to_limit_and_shrinks_to_min(cocaine_node, make_app):
    manifest = make_app(APP, TASKS, engine={"pool-limit": 3, "pool-min": 1,
                                            "idle-timeout": 1.0})
    cocaine_node.add_app("grow", manifest)
    wait_until(lambda: cocaine_node.info("grow")["pool"]["idle"] == 1,
               message="pool-min slave warm before any job")
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(call_in_thread, cocaine_node.endpoint, "grow", "slow", b"0.8")
                   for _ in range(8)]
        wait_until(lambda: cocaine_node.info("grow")["pool"]["total"] == 3,
                   message="the pool to grow to pool-limit")
        pids = {f.result() for f in futures}
    assert len(pids) == 3, "jobs were spread over every slave"
    assert cocaine_node.info("grow")["pool"]["total"] <= 3
    wait_until(lambda: cocaine_node.info("grow")["pool"]["total"] == 1, timeout=15,
               message="idle slaves above pool-min to retire")
    assert cocaine_node.info("grow")["spawns"] == 3


def test_urgent_jobs_jump_the_queue(cocaine_node, make_app, tmp_path, monkeypatch):
    log = tmp_path / "order.log"
    monkeypatch.setenv("COCAINE_TEST_LOG", str(log))
    manifest = make_app(APP, TASKS, engine={"pool-limit": 1})
    cocaine_node.add_app("u", manifest)
    with ThreadPoolExecutor(6) as pool:
        blocker = pool.submit(call_in_thread, cocaine_node.endpoint, "u", "slow", b"1.0")
        wait_until(lambda: cocaine_node.info("u")["pool"]["busy"] == 1, message="busy slave")
        normal = []
        for name in ("n1", "n2"):
            normal.append(pool.submit(call_in_thread, cocaine_node.endpoint, "u", "record",
                                      name.encode()))
            wait_until(lambda n=len(normal): cocaine_node.info("u")["queue"]["depth"] == n,
                       message="job queued")
        urgent = pool.submit(call_in_thread, cocaine_node.endpoint, "u", "record", b"urgent",
                             urgent=True)
        for future in (blocker, urgent, *normal):
            assert isinstance(future.result(), bytes)
    assert log.read_text().split() == ["urgent", "n1", "n2"]


def test_concurrency_runs_async_jobs_together(cocaine_node, make_app):
    code = '''
import asyncio

async def wait(request):
    await asyncio.sleep(0.5)
    return b"ok"
'''
    manifest = make_app(code, {"wait": {"type": "native-server"}},
                        engine={"pool-limit": 1, "concurrency": 8})
    cocaine_node.add_app("c", manifest)
    with cocaine_node.client() as client:
        client.call("c", "wait")  # warm the slave
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: call_in_thread(cocaine_node.endpoint, "c", "wait"),
                                range(8)))
    elapsed = time.monotonic() - started
    assert results == [b"ok"] * 8
    assert cocaine_node.info("c")["pool"]["total"] == 1
    assert elapsed < 3.0, f"8 async jobs of 0.5 s on one slave took {elapsed:.2f} s"
