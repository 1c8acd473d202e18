"""The engine tells a broken app from a bad moment (``fake_backend``: exact, no processes).

Only the code's own faults, again and again, make an app broken; slow or killed loads, lost
templates, slaves dying before they are ready, a node that did not run: all are retried or
forgiven, and a broken app is tried again now and then.
"""

from __future__ import annotations

import asyncio
import time

from cocaine_core.engine import loader
from tests.engine.fake_backend import (
    FakeBackend,
    backend,
    hold,
    ready,
    run,
    submit,
    until,
)


def test_slaves_dying_before_they_are_ready_never_break_the_app(fake_engine):
    engine = fake_engine(pool_limit=2)
    FakeBackend.fail_starts = 3  # an OOM killer at work: three new slaves die in a row

    async def scenario() -> None:
        await engine.start()
        refused = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            answer = submit(engine, b"late but served")
            await asyncio.wait_for(answer.done.wait(), 15)
            assert engine.state.value == "running", "never broken"
            if answer.code is None:
                break
            refused.append(answer)  # while no slave is ready: refused, saying why
            await asyncio.sleep(0.2)
        assert answer.chunks == [b"late but served"]
        assert all(a.code == 503 and "retrying" in a.message for a in refused)
        assert FakeBackend.fail_starts == 0
        await engine.stop()

    run(scenario)


def test_a_load_that_fails_for_the_moment_is_retried_until_it_works(fake_engine):
    engine = fake_engine()
    FakeBackend.load_error = "the app did not finish importing within 1 s"
    FakeBackend.load_fault_of_code = False
    FakeBackend.load_failures = 4  # a boot storm: four slow loads, then it is fine

    async def scenario() -> None:
        await engine.start()
        assert engine.state.value == "starting", "not broken: not the code's fault"
        assert "did not finish importing" in engine.info()["load"]["last-failure"]
        answer = submit(engine, b"waited for the load")
        await asyncio.wait_for(answer.done.wait(), 15)
        assert answer.chunks == [b"waited for the load"]
        assert engine.state.value == "running" and engine.load_attempts == 5
        await engine.stop()

    run(scenario)


def test_a_broken_app_is_tried_again_and_heals(fake_engine, monkeypatch):
    monkeypatch.setattr(loader, "BROKEN_RETRY", 0.2)
    engine = fake_engine()
    FakeBackend.load_error = "ModuleNotFoundError: No module named 'missing'"

    async def scenario() -> None:
        await engine.start()
        assert engine.state.value == "broken"
        assert submit(engine).code == 503
        FakeBackend.load_error = None  # the module was installed
        await until(lambda: engine.state.value == "running", what="the app to heal")
        answer = submit(engine, b"healed")
        await asyncio.wait_for(answer.done.wait(), 5)
        assert answer.chunks == [b"healed"] and engine.broken_reason is None
        await engine.stop()

    run(scenario)


def test_a_lost_template_with_pool_min_is_reloaded_without_spinning(fake_engine):
    engine = fake_engine(pool_limit=3, pool_min=2)

    async def scenario() -> None:
        await engine.start()
        await until(lambda: len(ready(engine)) == 2, what="pool-min ready")
        first = backend(engine)
        first.lose()
        await until(lambda: backend(engine) is not first and len(ready(engine)) == 2,
                    what="a new template with pool-min ready again")
        assert len(FakeBackend.made) == 2, "one reload, not a loop"
        assert engine.state.value == "running"
        await engine.stop()

    run(scenario)


def test_a_node_that_did_not_run_does_not_blame_its_slaves(fake_engine):
    engine = fake_engine(pool_limit=1, heartbeat_timeout=0.5)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        await engine.start()
        answer = submit(engine)
        slave = await until(lambda: next((s for s in backend(engine).live() if s.jobs), None))
        time.sleep(1.5)  # the whole node (this loop, its pretend slaves too) does not run
        await asyncio.sleep(0.5)
        assert slave.alive, "a node that was stopped cannot judge silence over that time"
        slave.answer_all()
        await asyncio.wait_for(answer.done.wait(), 5)
        assert answer.code is None
        await engine.stop()

    run(scenario)
