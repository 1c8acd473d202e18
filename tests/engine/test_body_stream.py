"""``BodyStream``: the window a producer keeps to, what waits before a slave takes the job,
the end, and what an ended job drops (engine/body.py)."""

from __future__ import annotations

import pytest

from cocaine_core.engine.body import WINDOW, BodyOverrun, BodyStream
from cocaine_core.engine.job import Job


def test_a_producer_may_feed_the_window_then_waits_for_credit() -> None:
    granted: list[int] = []
    stream = BodyStream(on_credit=granted.append)
    stream.bind(lambda why: None, b"first")  # the job's body counts as one piece
    assert stream.room() == 0, "a queued job holds one piece"
    with pytest.raises(BodyOverrun, match="credit"):
        stream.feed(b"not yet")
    stream.attach(lambda piece: None)  # the job starts: the rest of the window
    assert granted == [WINDOW - 1] and stream.room() == WINDOW - 1
    granted.clear()
    for _ in range(WINDOW - 1):
        stream.feed(b"piece")
    assert stream.room() == 0
    with pytest.raises(BodyOverrun, match="credit"):
        stream.feed(b"one too many")
    stream.read(3)
    assert granted == [3] and stream.room() == 3
    stream.read(100)  # never more than was sent
    assert stream.unread == 0 and granted == [3, WINDOW - 3]


def test_pieces_wait_for_the_slave_in_order_then_flow_straight_to_it() -> None:
    sent: list[bytes | None] = []
    stream = BodyStream()
    stream.feed(b"a")
    stream.attach(sent.append)
    stream.feed(b"b")
    assert sent == [b"a", b"b"]
    stream.feed(b"c")
    stream.end()
    assert sent == [b"a", b"b", b"c", None]
    assert stream.room() == 0
    with pytest.raises(BodyOverrun, match="after the end"):
        stream.feed(b"late")


def test_an_ended_job_closes_its_stream_and_drops_what_comes() -> None:
    sent: list[bytes | None] = []
    stream = BodyStream()
    job = Job("e", b"", stream=stream)
    stream.feed(b"waiting")
    job.fail(500, "gone")
    assert stream.closed and stream.room() == 0
    stream.attach(sent.append)
    stream.feed(b"dropped")
    stream.end()
    assert sent == []


def test_abort_cancels_through_the_engine_that_holds_the_job_once() -> None:
    aborted: list[str] = []
    stream = BodyStream()
    stream.bind(aborted.append, b"")
    stream.bind(aborted.append, b"x")  # handed to a new engine: the first piece counts once
    assert stream.unread == 0
    stream.abort("client left")
    stream.abort("again")
    assert aborted == ["client left"]


def test_gathering_collects_the_body_and_grants_as_it_goes() -> None:
    granted: list[int] = []
    bodies: list[bytes] = []
    released: list[bool] = []
    stream = BodyStream(on_credit=granted.append)
    stream.bind(lambda why: None, b"ab")
    stream.gather(bodies.append, lambda why: None, b"ab", lambda: released.append(True))
    stream.feed(b"cd")
    stream.end()
    assert bodies == [b"abcd"] and granted == [1, WINDOW - 1, 1]
    stream.close()
    assert not released, "a body delivered does not release the slave"


def test_a_job_ended_while_gathering_releases_its_slave() -> None:
    released: list[bool] = []
    stream = BodyStream()
    stream.gather(lambda body: None, lambda why: None, b"", lambda: released.append(True))
    stream.feed(b"part")
    stream.close()
    stream.close()
    assert released == [True]


def test_headers_reach_the_sink_once_before_the_answer() -> None:
    from types import SimpleNamespace

    from cocaine_core.engine.body import job_flow
    from cocaine_core.protocol import Code

    heads: list[dict] = []

    class Sink:
        def head(self, meta: dict) -> None:
            heads.append(meta)

        def chunk(self, data: bytes) -> None: ...
        def choke(self) -> None: ...
        def error(self, code: int, message: str) -> None: ...

    job = Job("e", b"", sink=Sink())
    pool = SimpleNamespace(slaves={"s": SimpleNamespace(jobs={job.id: job})})
    job_flow(pool, "s", Code.HEADERS, [13, job.id, {"status": 201}])  # type: ignore[arg-type]
    job_flow(pool, "s", Code.HEADERS, [13, job.id, {"status": 500}])  # type: ignore[arg-type]
    job_flow(pool, "s", Code.HEADERS, [13, job.id + 1, {"status": 1}])  # type: ignore[arg-type]
    job_flow(pool, "other", Code.HEADERS, [13, job.id, {"status": 2}])  # type: ignore[arg-type]
    assert heads == [{"status": 201}]
