"""Growth in a burst (issue 20): the pool adds every slave its waiting jobs need in one step,
keeps as many spares as it grew by lately, and never passes pool-limit. Pretend slaves
(``fake_backend``): each rule checked step by step."""

from __future__ import annotations

import pytest

from cocaine_core.engine import growth
from tests.engine.fake_backend import FakeBackend, backend, hold, run, submit, until


def running(engine) -> int:
    return sum(len(s.jobs) for s in backend(engine).live())


def test_waiting_jobs_grow_the_pool_by_all_they_need_in_one_step(fake_engine):
    """Jobs that waited while spawning was held (a back-off) are met by one look of the pool,
    not one slave per supervisor tick."""
    engine = fake_engine(pool_limit=6, pool_min=1, termination_timeout=0.1)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        await engine.start()
        await until(lambda: engine.info()["pool"]["idle"] == 1, what="the warm slave")
        engine.pool.hold_spawns(60)
        answers = [submit(engine) for _ in range(5)]  # one runs, four wait
        assert engine.info()["pool"]["total"] == 1 and engine.info()["queue"]["depth"] == 4
        engine.pool.reset_holds()
        engine.pool.maybe_grow()
        # queued > pool x grow-threshold (1) grows the pool to 4: three slaves at once.
        assert engine.info()["pool"]["total"] == 4, "one step adds the three slaves wanted"
        await until(lambda: running(engine) == 4, what="four jobs running")
        while not all(answer.done.is_set() for answer in answers):
            for slave in backend(engine).live():
                slave.answer_all()
            await until(lambda: running(engine) or all(a.done.is_set() for a in answers),
                        what="the last job to start")
        for answer in answers:
            await until(answer.done.is_set, what="the answers")
        await engine.stop()

    run(scenario)


def test_a_burst_past_pool_limit_grows_the_pool_to_the_limit_only(fake_engine):
    engine = fake_engine(pool_limit=3, termination_timeout=0.1)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        await engine.start()
        for _ in range(10):
            submit(engine)
            pool = engine.info()["pool"]
            assert pool["total"] + pool.get("spare", 0) <= 3
        assert engine.info()["pool"]["total"] == 3
        await until(lambda: running(engine) == 3, what="three jobs running")
        assert len(backend(engine).spawned) == 3, "no slave forked past pool-limit"
        await engine.stop()

    run(scenario)


@pytest.mark.parametrize(("limit", "spares"), [(8, 3), (5, 1)])
def test_after_a_burst_the_pool_keeps_as_many_spares_as_it_grew_by(fake_engine, monkeypatch,
                                                                  limit, spares):
    """A pool of one busy slave grows by three for a burst, then keeps three spares (within
    pool-limit: pool + spares never pass it; its first slave is no burst and not counted),
    and one again once the burst is forgotten."""
    monkeypatch.setattr(growth, "GROWTH_MEMORY", 1.0)
    engine = fake_engine(pool_limit=limit, termination_timeout=0.1)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        await engine.start()
        submit(engine)
        await until(lambda: engine.info()["pool"]["spare"] == 1, what="one spare")
        for _ in range(4):
            submit(engine)
        assert engine.info()["pool"]["total"] == 4, "the burst met in one step"
        await until(lambda: running(engine) == 4, what="the burst running")
        await until(lambda: engine.info()["pool"]["spare"] == spares, what=f"{spares} spares")
        pool = engine.info()["pool"]
        assert pool["total"] + pool["spare"] <= limit
        await until(lambda: engine.info()["pool"]["spare"] == 1, what="back to one spare")
        await engine.stop()

    run(scenario)


def test_a_node_at_its_max_slaves_forks_no_spare_and_holds_nothing_back(fake_engine):
    """A spare is optional: at the node's cap it is not asked for, so no refusal holds the
    pool's spawning back (as a failed start would)."""
    engine = fake_engine(pool_limit=4, termination_timeout=0.1)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        budget = engine.app.slaves
        budget.used = budget.limit  # the node's other apps hold it all (the fake counts none)
        await engine.start()
        submit(engine)
        await until(lambda: running(engine) == 1, what="a busy slave")
        for _ in range(3):
            engine.pool.keep_spare()  # the supervisor's step, as at each tick
        assert engine.info()["pool"]["spare"] == 0
        assert engine.pool.starts.failures == 0 and engine.pool.can_spawn()
        budget.used = 0
        await until(lambda: engine.info()["pool"]["spare"] == 1, what="a spare, once there is room")
        await engine.stop()

    run(scenario)


def test_a_pool_with_slaves_asks_for_none_past_max_slaves(fake_engine):
    """At the node's cap, a pool that has slaves lets its waiting jobs wait for them: a spawn
    asked for would be refused, and a refusal counts as a failed start (a back-off, and the
    queued jobs refused while no slave is ready)."""
    engine = fake_engine(pool_limit=4, termination_timeout=0.1)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        await engine.start()
        submit(engine)
        await until(lambda: running(engine) == 1, what="a busy slave")
        budget = engine.app.slaves
        budget.used = budget.limit  # the cap reached (the fake counts none of its own)
        answers = [submit(engine) for _ in range(3)]
        engine.pool.maybe_grow()
        assert engine.info()["pool"]["total"] == 1, "nothing asked for past the cap"
        assert engine.pool.starts.failures == 0 and engine.pool.can_spawn()
        assert not any(answer.done.is_set() for answer in answers), "the jobs wait"
        budget.used = 0
        engine.pool.maybe_grow()
        assert engine.info()["pool"]["total"] == 3, "grown as the waiting jobs need"
        await until(lambda: running(engine) == 3, what="the new slaves running jobs")
        await engine.stop()

    run(scenario)


def test_a_failed_start_refuses_no_job_while_another_slave_is_starting(fake_engine):
    """Queued jobs are refused when the app has no slave ready *and none starting*: a slave
    still starting will take them (its startup-timeout bounds the wait)."""
    engine = fake_engine(pool_limit=2, termination_timeout=0.1)

    async def scenario() -> None:
        await engine.start()
        answer = submit(engine)  # the first slave is asked for: starting, not ready
        assert engine.info()["pool"]["starting"] == 1
        engine.pool.start_failed("another fork failed")  # e.g. a second slave's spawn
        assert not answer.done.is_set(), "refused while a slave was starting"
        engine.pool.reset_holds()
        await until(answer.done.is_set, what="the answer")
        assert answer.code is None and answer.chunks == [b"x"]
        await engine.stop()

    run(scenario)


def test_slaves_forked_together_that_never_start_are_one_failed_start(fake_engine,
                                                                       monkeypatch):
    """A template that stalls during a burst leaves every slave of the request unstarted:
    they pass startup-timeout together and count as one failed start (the next spawn waits
    0.5 s), not as one per slave (4 slaves: 4 s; 8: the 10 s ceiling)."""
    engine = fake_engine(pool_limit=4, startup_timeout=0.3, termination_timeout=0.1)
    FakeBackend.behaviour = hold
    monkeypatch.setattr(FakeBackend, "spawn", lambda self, slave_id: None)  # stalled

    async def scenario() -> None:
        await engine.start()
        engine.pool.hold_spawns(60)
        answers = [submit(engine) for _ in range(4)]
        engine.pool.reset_holds()
        engine.pool.maybe_grow()
        assert engine.info()["pool"]["starting"] == 4, "one request for four slaves"
        await until(lambda: engine.pool.starts.failures, what="the start-up timeout")
        assert engine.pool.starts.failures == 1
        for answer in answers:  # no slave ready or starting: refused, saying why
            await until(answer.done.is_set, what="the refusals")
            assert answer.code == 503 and "startup-timeout" in answer.message
        await engine.stop()

    run(scenario)


def test_a_pool_at_max_slaves_still_grows_into_its_spare(fake_engine):
    """A spare is counted against --max-slaves already: at the cap, the pool still takes it
    in for waiting jobs (a configure message, no fork)."""
    engine = fake_engine(pool_limit=4, termination_timeout=0.1)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        await engine.start()
        submit(engine)
        await until(lambda: engine.info()["pool"]["spare"] == 1, what="one spare")
        spare = engine.pool.spares()[0]
        await until(lambda: spare.state.value == "spare", what="the spare connected")
        budget = engine.app.slaves
        budget.used = budget.limit  # the cap reached (the fake counts none of its own)
        submit(engine)
        submit(engine)  # two waiting for one slave: grow by one
        assert engine.info()["pool"]["total"] == 2, "the spare taken in"
        await until(lambda: running(engine) == 2, what="the spare running the job")
        assert len(backend(engine).spawned) == 2, "no fork"
        await engine.stop()

    run(scenario)
