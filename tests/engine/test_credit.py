"""Credit (engine/credit.py): a slave runs at most a window ahead of its job's client."""

from __future__ import annotations

import asyncio

from cocaine_core.engine import Job, credit
from cocaine_core.engine.slave_handle import SlaveState
from cocaine_core.protocol import Status
from tests.engine.fake_backend import FakeBackend, backend, hold, run, until


class ClientThatDoesNotRead:
    """A sink like a client's whose socket is full: it keeps every chunk, hands none on."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.code: int | None = None
        self.message = ""
        self.done = asyncio.Event()
        self.on_handed = None

    def watch_handoff(self, on_handed) -> None:  # type: ignore[no-untyped-def]
        self.on_handed = on_handed

    def chunk(self, data: bytes) -> None:
        self.chunks.append(data)

    def choke(self) -> None:
        self.done.set()

    def error(self, code: int, message: str) -> None:
        self.code, self.message = code, message
        self.done.set()


def test_a_slave_that_does_not_wait_for_credit_is_stopped_at_the_window(fake_engine) -> None:
    engine = fake_engine(pool_limit=1)
    FakeBackend.behaviour = hold  # the fake slave predates CREDIT: it never waits

    async def scenario() -> None:
        await engine.start()
        sink = ClientThatDoesNotRead()
        job = Job("echo", b"x", sink=sink)
        engine.submit(job)
        slave = await until(lambda: next((s for s in backend(engine).live() if s.jobs), None))
        assert not engine.pool.slaves[slave.id].flow
        for _ in range(credit.WINDOW + 5):
            slave.chunk(job.id, b"c" * 1000)
        await asyncio.wait_for(sink.done.wait(), 5)
        assert sink.code == Status.SERVER_ERROR
        assert "without waiting for credit" in sink.message
        assert len(sink.chunks) == credit.WINDOW  # the node held no more than the window
        handle = engine.pool.slaves.get(slave.id)
        assert handle is None or handle.state is SlaveState.KILLED  # replaced
        await engine.stop()

    run(scenario)


def test_chunks_that_leave_at_once_never_count_against_the_window(fake_engine) -> None:
    engine = fake_engine(pool_limit=1)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        await engine.start()
        chunks: list[bytes] = []
        done = asyncio.Event()

        class Collector:
            def chunk(self, data: bytes) -> None:
                chunks.append(data)

            def choke(self) -> None:
                done.set()

            def error(self, code: int, message: str) -> None:
                raise AssertionError(message)

        job = Job("echo", b"x", sink=Collector())
        engine.submit(job)
        slave = await until(lambda: next((s for s in backend(engine).live() if s.jobs), None))
        for _ in range(credit.WINDOW * 4):
            slave.chunk(job.id, b"c")
        slave.answer(job.id, b"end")
        await asyncio.wait_for(done.wait(), 5)
        assert len(chunks) == credit.WINDOW * 4 + 1
        await engine.stop()

    run(scenario)
