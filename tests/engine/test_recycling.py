"""Real slaves: recycling (max-requests, max-rss) and the restart intensity of crashing slaves."""

from __future__ import annotations

import logging

from cocaine_core.errors import ServiceError
from cocaine_core.testing import wait_until

APP = '''
import os

hoard = []


def pid(request):
    return str(os.getpid())


def grow(request):
    hoard.append(bytearray(int(request.data)))  # touched: resident
    return str(os.getpid())


def crash(request):
    os._exit(3)
'''

TASKS = {name: {"type": "native-server"} for name in ("pid", "grow", "crash")}


def test_max_requests_replaces_a_slave_after_n_jobs_and_fails_none(cocaine_node, make_app):
    manifest = make_app(APP, TASKS, engine={"pool-limit": 1, "max-requests": 3})
    cocaine_node.add_app("recycled", manifest)
    with cocaine_node.client() as client:
        pids = [client.call("recycled", "pid").decode() for _ in range(7)]
    assert pids[0] == pids[1] == pids[2] != pids[3]
    assert pids[3] == pids[4] == pids[5] != pids[6]
    jobs = cocaine_node.info("recycled")["jobs"]
    assert jobs["done"] == 7 and jobs["failed"] == 0 and jobs["retried"] == 0


def test_max_rss_replaces_a_slave_that_grew(cocaine_node, make_app):
    manifest = make_app(APP, TASKS, engine={"pool-limit": 1, "max-rss": "64M"})
    cocaine_node.add_app("fat", manifest)
    with cocaine_node.client() as client:
        first = client.call("fat", "grow", b"100000000").decode()  # 100 MB, kept
        wait_until(lambda: all(s["pid"] != int(first) for s in cocaine_node.info("fat")["slaves"]),
                   message="the grown slave to be replaced")
        assert client.call("fat", "pid").decode() != first
    assert cocaine_node.info("fat")["jobs"]["failed"] == 0


def test_crashing_slaves_are_held_back_and_the_app_serves_again(cocaine_node, make_app,
                                                               caplog):
    manifest = make_app(APP, TASKS, engine={"pool-limit": 2})
    cocaine_node.add_app("crashy", manifest)
    caplog.set_level(logging.WARNING, logger="cocaine.engine")
    with cocaine_node.client() as client:
        for _ in range(4):  # each job crashes its slave, is retried once, crashes another
            try:
                client.call("crashy", "crash")
            except ServiceError as exc:
                assert exc.code == 500 and "exited with 3" in exc.message
        crashes = wait_until(lambda: (c := cocaine_node.info("crashy")["crashes"])
                             ["backoff-s"] > 0 and c, message="a back-off")
        assert crashes["recent"] >= 6 and "exited with 3" in crashes["last-exit"]
        assert client.call("crashy", "pid"), "served again once the back-off ends"
    held = [r for r in caplog.records if "new slaves wait" in r.getMessage()]
    assert 1 <= len(held) <= 3, "the back-off is said, not repeated per crash"
