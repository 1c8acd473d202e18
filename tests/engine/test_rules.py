"""The engine's rules, exactly, with pretend slaves (``fake_backend``): no process is started,
so each rule is checked step by step and in well under a second."""

from __future__ import annotations

import asyncio
import time

from cocaine_core.engine.job import Job
from cocaine_core.engine.restarts import INTENSITY
from tests.engine.fake_backend import (
    Answer,
    FakeBackend,
    backend,
    hold,
    own_pid,
    ready,
    run,
    submit,
    until,
)


def test_pool_grows_by_threshold_to_its_limit_and_refuses_past_the_queue(fake_engine):
    engine = fake_engine(pool_limit=2, queue_limit=2, termination_timeout=0.1)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        await engine.start()
        answers = [submit(engine, b"%d" % i) for i in range(2)]
        await until(lambda: sum(len(s.jobs) for s in backend(engine).live()) == 2,
                    what="two jobs running")
        answers += [submit(engine, b"%d" % i) for i in range(2, 4)]
        assert engine.info()["pool"]["total"] == 2, "never past pool-limit"
        assert engine.info()["queue"]["depth"] == 2
        refused = submit(engine)
        assert refused.done.is_set() and refused.code == 503
        assert "queue is full" in refused.message
        for slave in backend(engine).live():
            slave.answer_all()
        await until(lambda: sum(len(s.jobs) for s in backend(engine).live()) == 2)
        for slave in backend(engine).live():
            slave.answer_all()
        for answer in answers:
            await asyncio.wait_for(answer.done.wait(), 5)
        assert [a.chunks for a in answers] == [[b"0"], [b"1"], [b"2"], [b"3"]]
        await engine.stop()

    run(scenario)


def test_a_slave_that_crashes_after_it_was_ready_is_replaced_then_held_back(fake_engine):
    engine = fake_engine(pool_limit=3, pool_min=2)

    async def scenario() -> None:
        await engine.start()
        fake = backend(engine)
        await until(lambda: len(ready(engine)) == 2, what="two ready")
        survivor = ready(engine)[0]
        crashes = 0
        # Crash the other slave again and again: replaced at once while within the intensity.
        while crashes <= INTENSITY:
            victim = await until(lambda: next((s for s in ready(engine)
                                               if s is not survivor), None),
                                 what="a replacement slave")
            victim.exit(-9)
            crashes += 1
        info = await until(lambda: engine.info()["crashes"]["backoff-s"] > 0 and
                           engine.info(), what="a back-off")
        assert info["crashes"]["recent"] == INTENSITY + 1
        assert "killed by signal 9" in info["crashes"]["last-exit"]
        spawned = len(fake.spawned)
        await asyncio.sleep(0.3)
        assert len(fake.spawned) == spawned, "no new slave while held back"
        answer = submit(engine, b"still served")
        await asyncio.wait_for(answer.done.wait(), 2)
        assert answer.chunks == [b"still served"] and survivor.served == 1
        await engine.stop()

    run(scenario)


def test_slaves_killed_after_they_worked_are_replaced_at_once_past_the_intensity(fake_engine):
    engine = fake_engine(pool_limit=2, pool_min=2)

    async def scenario() -> None:
        await engine.start()
        fake = backend(engine)
        await until(lambda: len(ready(engine)) == 2, what="two ready")
        for kill in range(3 * INTENSITY):
            answer = submit(engine, b"work")
            await asyncio.wait_for(answer.done.wait(), 2)
            assert answer.chunks == [b"work"]
            victim = next(s for s in ready(engine) if s.served)  # a slave that worked
            victim.exit(-9)
            await until(lambda: len(ready(engine)) == 2,
                        what=f"the pool back to two after kill {kill + 1}")
        info = engine.info()["crashes"]
        assert info["backoff-s"] == 0 and info["pool-cap"] is None, info
        assert info["total"] == 3 * INTENSITY and info["recent"] == 0
        assert len(fake.spawned) == 2 + 3 * INTENSITY
        await engine.stop()

    run(scenario)


def test_max_requests_retires_a_slave_gracefully_and_replaces_it(fake_engine):
    engine = fake_engine(pool_limit=1, max_requests=3)

    async def scenario() -> None:
        await engine.start()
        answers = []
        for i in range(7):
            answers.append(submit(engine, b"%d" % i))
            await asyncio.wait_for(answers[-1].done.wait(), 5)
        assert all(a.code is None for a in answers), "recycling fails no job"
        served = [s.served for s in backend(engine).spawned]
        assert served == [3, 3, 1], served
        await engine.stop()

    run(scenario)


def test_max_rss_retires_a_slave_once_its_job_ends(fake_engine):
    engine = fake_engine(pool_limit=1, max_rss="1M")
    FakeBackend.behaviour = hold
    FakeBackend.pid = own_pid()  # this test process: certainly over 1 MiB

    async def scenario() -> None:
        await engine.start()
        answer = submit(engine)
        first = await until(lambda: next((s for s in backend(engine).live() if s.jobs), None))
        await until(lambda: engine.info()["slaves"][0]["state"] == "retiring",
                    what="the slave to be marked for retirement")
        assert first.alive, "a busy slave finishes its job first"
        first.answer_all()
        await asyncio.wait_for(answer.done.wait(), 5)
        assert answer.code is None
        await until(lambda: not first.alive, what="the retired slave to exit")
        await engine.stop()

    run(scenario)


def test_a_job_whose_slave_died_before_answering_is_retried_once(fake_engine):
    engine = fake_engine(pool_limit=1)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        await engine.start()
        answer = submit(engine)
        first = await until(lambda: next((s for s in backend(engine).live() if s.jobs), None))
        first.exit(-9)
        second = await until(lambda: next((s for s in backend(engine).live() if s.jobs), None),
                             what="the retry on a new slave")
        second.exit(-9)
        await asyncio.wait_for(answer.done.wait(), 5)
        assert answer.code == 500 and "already retried once" in answer.message
        assert engine.stats.retried == 1
        await engine.stop()

    run(scenario)


def test_a_job_that_sent_a_chunk_is_not_retried(fake_engine):
    engine = fake_engine(pool_limit=1)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        await engine.start()
        answer = submit(engine)
        slave = await until(lambda: next((s for s in backend(engine).live() if s.jobs), None))
        slave.chunk(next(iter(slave.jobs)), b"half")
        await until(lambda: answer.chunks)
        slave.exit(-9)
        await asyncio.wait_for(answer.done.wait(), 5)
        assert answer.code == 500 and engine.stats.retried == 0
        await engine.stop()

    run(scenario)


def test_a_silent_slave_is_killed_and_its_job_fails_without_retry(fake_engine):
    engine = fake_engine(pool_limit=1, heartbeat_timeout=0.3)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        await engine.start()
        answer = submit(engine)
        slave = await until(lambda: next((s for s in backend(engine).live() if s.jobs), None))
        slave.beating = False
        await asyncio.wait_for(answer.done.wait(), 5)
        assert answer.code == 500 and "sent no heartbeat" in answer.message
        assert not slave.alive and engine.stats.retried == 0
        await engine.stop()

    run(scenario)


def test_urgent_jobs_jump_the_queue_and_expired_ones_never_start(fake_engine):
    engine = fake_engine(pool_limit=1)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        await engine.start()
        first = submit(engine, b"first")
        slave = await until(lambda: next((s for s in backend(engine).live() if s.jobs), None))
        late = submit(engine, b"late", deadline=time.monotonic() + 0.05)
        plain = submit(engine, b"plain")
        urgent = submit(engine, b"urgent", urgent=True)
        await asyncio.wait_for(late.done.wait(), 2)
        assert late.code == 520, "expired in the queue"
        order = []
        for _ in range(3):
            await until(lambda: slave.jobs)
            order.append(next(iter(slave.jobs.values())))
            slave.answer_all()
        assert order == [b"first", b"urgent", b"plain"]
        for answer in (first, plain, urgent):
            await asyncio.wait_for(answer.done.wait(), 2)
        await engine.stop()

    run(scenario)


def test_code_that_never_loads_marks_the_app_broken_after_three_tries(fake_engine):
    engine = fake_engine()
    FakeBackend.load_error = "SyntaxError: invalid syntax (app.py, line 1)"

    async def scenario() -> None:
        await engine.start()
        assert engine.state.value == "broken" and engine.load_attempts == 3
        answer = submit(engine)
        assert answer.code == 503 and "SyntaxError" in answer.message
        await engine.stop()

    run(scenario)


def test_a_busy_pool_keeps_a_spare_and_grows_into_it(fake_engine):
    engine = fake_engine(pool_limit=3, termination_timeout=0.1)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        await engine.start()
        submit(engine)
        await until(lambda: engine.info()["pool"]["spare"] == 1, what="a spare")
        spare = next(s for s in backend(engine).live() if not s.configured)
        submit(engine)
        submit(engine)
        await until(lambda: spare.jobs, what="the spare to take a job")
        await engine.stop()

    run(scenario)


def test_has_room_says_no_when_submit_would_refuse(fake_engine):
    """A driver asks ``has_room`` before it takes more input: it must agree with ``submit``,
    also in the moment a slave has answered and the next queued job is not started yet (a
    sink's callback): the queue is full then, and a submit would be refused."""
    engine = fake_engine(pool_limit=1, queue_limit=1, termination_timeout=0.1)
    FakeBackend.behaviour = hold
    seen: list[tuple[bool, int | None]] = []

    class Asking(Answer):
        def choke(self) -> None:
            room = engine.has_room()
            seen.append((room, submit(engine).code))
            super().choke()

    async def scenario() -> None:
        await engine.start()
        first = Asking()
        engine.submit(Job("echo", b"a", sink=first))
        await until(lambda: sum(len(s.jobs) for s in backend(engine).live()) == 1)
        queued = submit(engine, b"b")
        assert not engine.has_room()
        backend(engine).live()[0].answer_all()
        await asyncio.wait_for(first.done.wait(), 5)
        await until(lambda: sum(len(s.jobs) for s in backend(engine).live()) == 1,
                    what="the queued job to start")
        for slave in backend(engine).live():
            slave.answer_all()
        await asyncio.wait_for(queued.done.wait(), 5)
        await engine.stop()

    run(scenario)
    assert seen == [(False, 503)], seen
