"""Growth in a burst with real processes (issue 20): the template forks several slaves for one
request, within the node's --max-slaves; a template killed in the middle of a burst leaves
nothing behind, and the app serves the next burst."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cocaine_core.appinfo import AppInfo, SlaveBudget
from cocaine_core.backends.process import ProcessBackend, node_processes
from cocaine_core.manifest import load_manifest
from cocaine_core.testing import call_or_error as call
from cocaine_core.testing import wait_until

APP = '''
import os
import time


def slow(request):
    time.sleep(float(request.data or 0.5))
    return str(os.getpid())
'''

TASKS = {"slow": {"type": "native-server"}}


class Recorder:
    """What the backend reports (``BackendEvents``)."""

    def __init__(self) -> None:
        self.spawned: dict[str, int] = {}
        self.failed: list[tuple[str, str]] = []
        self.exited: list[str] = []
        self.lost: list[int] = []

    def slave_spawned(self, slave_id: str, pid: int) -> None:
        self.spawned[slave_id] = pid

    def slave_exited(self, slave_id: str, status: int) -> None:
        self.exited.append(slave_id)

    def spawn_failed(self, slave_id: str, reason: str) -> None:
        self.failed.append((slave_id, reason))

    def backend_lost(self, status: int) -> None:
        self.lost.append(status)


async def until(predicate: Any, timeout: float = 20.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def with_backend(make_app: Any, budget: SlaveBudget, scenario: Any) -> None:
    """Run ``scenario(backend, events, app)`` with a started process backend (stopped after)."""
    run_dir = Path(tempfile.mkdtemp(prefix="cg-"))  # short: ipc paths have a limit
    app = AppInfo(name="burst", manifest=load_manifest(make_app(APP, TASKS)), run_dir=run_dir,
                  slaves=budget)

    async def main() -> None:
        events = Recorder()
        # Nobody binds the endpoint: the slaves wait for their configure until they are killed.
        backend = ProcessBackend(app, f"ipc://{run_dir}/engine", "cocaine_python.runtime",
                                 events, startup_timeout=30)
        await backend.start()
        try:
            await scenario(backend, events, app)
        finally:
            await backend.stop()

    try:
        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def test_one_request_forks_several_slaves_within_max_slaves(make_app):
    async def scenario(backend: ProcessBackend, events: Recorder, app: AppInfo) -> None:
        backend.spawn_many(["a", "b", "c", "d"])
        await until(lambda: len(events.spawned) == 3, what="three slaves forked")
        assert events.failed == [("d", app.slaves.refusal())], "the fourth is past the cap"
        assert backend.template is not None
        parents = node_processes(os.getpid())
        assert all(parents.get(pid) == backend.template.pid for pid in events.spawned.values())
        assert app.slaves.used == 3

    budget = SlaveBudget(3)
    with_backend(make_app, budget, scenario)
    assert budget.used == 0, "every slave given back once gone"


def test_a_template_killed_while_it_forks_a_burst_leaves_nothing_behind(make_app):
    async def scenario(backend: ProcessBackend, events: Recorder, app: AppInfo) -> None:
        backend.spawn_many([f"s{i}" for i in range(12)])  # 8 in flight, 4 waiting
        await until(lambda: events.spawned, what="the first fork")
        assert backend.template is not None
        os.kill(backend.template.pid, signal.SIGKILL)
        await until(lambda: events.lost, what="the template's loss")
        assert sorted(events.exited) == sorted(events.spawned), "each forked slave's end said"
        assert app.slaves.used == 0
        await until(lambda: not node_processes(os.getpid()), what="no process left")

    with_backend(make_app, SlaveBudget(64), scenario)


def test_the_app_serves_the_next_burst_after_its_template_died_in_one(cocaine_node, make_app):
    manifest = make_app(APP, TASKS, engine={"pool-limit": 4, "pool-min": 1})
    cocaine_node.add_app("burst", manifest)
    wait_until(lambda: cocaine_node.info("burst")["pool"]["idle"] == 1, message="a warm slave")
    template = cocaine_node.engine("burst").backend.template.pid
    with ThreadPoolExecutor(10) as pool:
        first = [pool.submit(call, cocaine_node.endpoint, "burst", "slow", b"0.3")
                 for _ in range(5)]
        wait_until(lambda: cocaine_node.info("burst")["pool"]["total"] > 1, message="growth")
        os.kill(template, signal.SIGKILL)
        for future in first:
            result = future.result(timeout=30)
            assert isinstance(result, bytes) or result.code in (500, 503), result
        wait_until(lambda: cocaine_node.info("burst")["state"] == "running" and
                   cocaine_node.engine("burst").backend.template.pid != template, timeout=30,
                   message="the app loaded again")
        second = [pool.submit(call, cocaine_node.endpoint, "burst", "slow", b"0.5")
                  for _ in range(5)]
        wait_until(lambda: cocaine_node.info("burst")["pool"]["total"] == 4, timeout=15,
                   message="the pool grown to its limit for the second burst")
        pool_info = cocaine_node.info("burst")["pool"]
        assert pool_info["total"] + pool_info["spare"] <= 4
        answers = [future.result(timeout=30) for future in second]
    assert all(isinstance(answer, bytes) for answer in answers), answers


def test_a_burst_past_max_slaves_waits_for_the_slaves_starting_instead_of_a_503(cocaine_node,
                                                                               make_app):
    """A burst at an idle app whose pool-limit is above the node's --max-slaves: the pool
    forks what the cap allows, and the jobs wait for those slaves. Before, the next look of
    the pool asked for one more, was refused at the cap, and, no slave being ready yet, every
    queued job was refused with 503 (saying the app 'could not start' a slave)."""
    cocaine_node.call_soon(lambda: setattr(cocaine_node.node.slaves, "limit", 2))
    manifest = make_app(APP, TASKS, engine={"pool-limit": 8, "pool-min": 0})
    cocaine_node.add_app("capped", manifest)
    template = cocaine_node.engine("capped").backend.template.pid
    os.kill(template, signal.SIGSTOP)  # the slaves asked for start only once it goes on
    try:
        with ThreadPoolExecutor(6) as pool:
            burst = [pool.submit(call, cocaine_node.endpoint, "capped", "slow", b"0.2")
                     for _ in range(6)]
            wait_until(lambda: cocaine_node.info("capped")["queue"]["depth"]
                       + sum(future.done() for future in burst) == 6,
                       message="every job of the burst queued or answered")
            os.kill(template, signal.SIGCONT)
            answers = [future.result(timeout=30) for future in burst]
    finally:
        os.kill(template, signal.SIGCONT)
    assert all(isinstance(answer, bytes) for answer in answers), answers
    assert cocaine_node.info("capped")["pool"]["total"] <= 2


def test_a_spare_never_takes_the_last_slave_another_app_needs(cocaine_node, make_app):
    """A spare is optional: it does not take the node's last free slave under --max-slaves.
    Before, a busy app's spare took it, and an app with no slave yet refused its first job
    with 503 ('the node runs its maximum of 3 slaves')."""
    cocaine_node.call_soon(lambda: setattr(cocaine_node.node.slaves, "limit", 3))
    cocaine_node.add_app("busy", make_app(APP, TASKS, engine={"pool-limit": 4, "pool-min": 2}))
    cocaine_node.add_app("idle", make_app(APP, TASKS, engine={"pool-limit": 2}))
    wait_until(lambda: cocaine_node.info("busy")["pool"]["idle"] == 2, message="two slaves")
    with ThreadPoolExecutor(2) as pool:
        load = [pool.submit(call, cocaine_node.endpoint, "busy", "slow", b"3")
                for _ in range(2)]
        wait_until(lambda: cocaine_node.info("busy")["pool"]["busy"] == 2,
                   message="two busy slaves")
        busy = cocaine_node.engine("busy")
        cocaine_node.call_soon(busy.pool.keep_spare)  # the supervisor's step, at once
        first = call(cocaine_node.endpoint, "idle", "slow", b"0")
        assert isinstance(first, bytes), first
        assert cocaine_node.info("busy")["pool"]["spare"] == 0, "no spare in the last slave"
        assert all(isinstance(future.result(timeout=30), bytes) for future in load)
