"""Batches between the engine and its slaves (docs/protocol.md, Batches), exact, on the fake
backend: jobs handed to a slave together go in one INVOKE_BATCH, a CHOKE_BATCH ends several,
a slave that did not say ``batch`` gets plain INVOKEs, and a job inside a batch is cancelled,
timed out or retried as a job alone is."""

from __future__ import annotations

import asyncio

from cocaine_core.engine import Job
from tests.engine.fake_backend import Answer, FakeBackend, FakeSlave, hold, ready, run, until


def jobs(count: int, **policy: object) -> list[tuple[Job, Answer]]:
    """``count`` echo jobs, their bodies b"0", b"1", ..., and their answers."""
    made = []
    for index in range(count):
        answer = Answer()
        made.append((Job("echo", str(index).encode(), sink=answer, **policy), answer))
    return made


async def one_ready(engine: object) -> FakeSlave:
    """Start the engine and wait for its one ready slave."""
    await engine.start()  # type: ignore[attr-defined]
    slaves = await until(lambda: ready(engine), what="a ready slave")  # type: ignore[arg-type]
    return slaves[0]


def test_jobs_handed_together_go_in_one_message_and_one_message_ends_them(fake_engine):
    engine = fake_engine(concurrency=8, pool_limit=1, pool_min=1)
    FakeBackend.batch = True
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        slave = await one_ready(engine)
        assert slave.settings["batch"] is True
        made = jobs(8)
        for job, _ in made:  # one turn of the loop, as a drain of 8 requests is
            engine.submit(job)
        await until(lambda: len(slave.jobs) == 8, what="the jobs at the slave")
        assert slave.invokes == [8], "one INVOKE_BATCH"
        ids = [job.id for job, _ in made]
        # Six in one CHOKE_BATCH (one of them without a last chunk), two one by one.
        slave.answer_batch(ids[:6], {ids[2]: None})
        slave.answer(ids[6])
        slave.answer_batch(ids[7:])
        for _, answer in made:
            await asyncio.wait_for(answer.done.wait(), 5)
        got = [answer.chunks for _, answer in made]
        assert got == [[b"0"], [b"1"], [], [b"3"], [b"4"], [b"5"], [b"6"], [b"7"]]
        assert all(answer.code is None for _, answer in made)
        assert engine.stats.done == 8
        await engine.stop()

    run(scenario)


def test_a_slave_that_does_not_say_batch_gets_one_invoke_per_job(fake_engine):
    engine = fake_engine(concurrency=8, pool_limit=1, pool_min=1)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        slave = await one_ready(engine)
        assert slave.settings["batch"] is False
        made = jobs(5)
        for job, _ in made:
            engine.submit(job)
        await until(lambda: len(slave.jobs) == 5, what="the jobs at the slave")
        assert slave.invokes == [1] * 5
        slave.answer_all()
        for _, answer in made:
            await asyncio.wait_for(answer.done.wait(), 5)
        assert [a.chunks for _, a in made] == [[str(i).encode()] for i in range(5)]
        await engine.stop()

    run(scenario)


def test_no_batches_at_concurrency_1(fake_engine):
    engine = fake_engine(concurrency=1, pool_limit=1, pool_min=1)
    FakeBackend.batch = True

    async def scenario() -> None:
        slave = await one_ready(engine)
        assert slave.settings["batch"] is False
        made = jobs(4)
        for job, _ in made:
            engine.submit(job)
        for _, answer in made:
            await asyncio.wait_for(answer.done.wait(), 5)
        assert slave.invokes == [1] * 4
        await engine.stop()

    run(scenario)


def test_a_job_cancelled_inside_a_batch_is_cancelled_alone(fake_engine):
    engine = fake_engine(concurrency=4, pool_limit=1, pool_min=1)
    FakeBackend.batch = True
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        slave = await one_ready(engine)
        made = jobs(4)
        for job, _ in made:
            engine.submit(job)
        engine.cancel(made[1][0], "its client left")  # before the batch has even left
        await until(lambda: slave.cancelled, what="the CANCEL")
        assert slave.invokes == [4] and slave.cancelled == [made[1][0].id]
        slave.answer_batch([job.id for job, _ in made])  # it ended anyway: goes nowhere
        for index in (0, 2, 3):
            await asyncio.wait_for(made[index][1].done.wait(), 5)
        assert not made[1][1].done.is_set() and made[1][1].chunks == []
        assert (engine.stats.done, engine.stats.abandoned) == (3, 1)
        await until(lambda: not engine.pool.slaves[slave.id].jobs, what="the slave free")
        await engine.stop()

    run(scenario)


def test_a_timeout_inside_a_batch_fails_that_job_and_the_others_run_again(fake_engine):
    engine = fake_engine(concurrency=4, pool_limit=1, pool_min=1)
    FakeBackend.batch = True
    first: list[FakeSlave] = []

    def behaviour(slave: FakeSlave, job_id: int) -> None:
        if not first or slave is first[0]:  # the first slave holds its jobs
            first[:] = [slave]
        else:
            slave.answer(job_id)

    FakeBackend.behaviour = behaviour

    async def scenario() -> None:
        slave = await one_ready(engine)
        made = jobs(3) + jobs(1, timeout=0.3)
        for job, _ in made:
            engine.submit(job)
        for _, answer in made:
            await asyncio.wait_for(answer.done.wait(), 10)
        assert slave.invokes == [4] and not slave.alive, "the slave was stopped"
        assert made[3][1].code == 504
        assert [a.chunks for _, a in made[:3]] == [[b"0"], [b"1"], [b"2"]]
        assert engine.stats.retried == 3
        second = await until(lambda: ready(engine), what="a new slave")
        assert second[0].invokes == [3], "the three run again, together"
        await engine.stop()

    run(scenario)
