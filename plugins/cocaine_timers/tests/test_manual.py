"""manual-scheduler: the handler's answer is the delay until its next run."""

from __future__ import annotations

import itertools
import time

import msgpack
import pytest
from cocaine_timers.manual import AnswerError, ManualScheduler, parse_answer

from cocaine_core.testing import wait_until

CHAIN = '''
def step(request):
    start = time.time()
    run = _runs() + 1
    _record(request, start, run=run)
    return 0.1 if run < 3 else None
'''

FAIL_FIRST = '''
def step(request):
    start = time.time()
    run = _runs() + 1
    _record(request, start, run=run)
    if run == 1:
        raise RuntimeError("first run fails")
    return None
'''


def test_chains_three_runs_then_stops(cocaine_node, make_app, recorder):
    manifest = make_app(recorder.code(CHAIN), tasks={"step": {"type": "manual-scheduler"}},
                        engine={"pool-limit": 1})
    cocaine_node.add_app("chain", manifest)
    wait_until(lambda: len(recorder.jobs()) >= 3, timeout=20, message="3 runs")
    info = wait_until(lambda: (i := cocaine_node.info("chain")["tasks"]["step"])["state"]
                      == "finished" and i, timeout=10, message="the schedule to stop")
    time.sleep(0.4)  # four times the delay: a fourth run would have come by now
    jobs = recorder.jobs()
    assert [job["run"] for job in jobs] == [1, 2, 3]
    assert [job["meta"]["run"] for job in jobs] == [1, 2, 3]
    for before, after in itertools.pairwise(jobs):
        assert after["meta"]["fired"] - before["end"] >= 0.095
        assert after["meta"]["fired"] - before["end"] < 1.0
    assert info["fires"] == 3 and info["done"] == 3 and info["next"] is None
    assert info["last-answer"] is None


def test_an_error_waits_retry_seconds(cocaine_node, make_app, recorder):
    manifest = make_app(recorder.code(FAIL_FIRST),
                        tasks={"step": {"type": "manual-scheduler", "retry": 0.3}},
                        engine={"pool-limit": 1})
    cocaine_node.add_app("retry", manifest)
    wait_until(lambda: len(recorder.jobs()) >= 2, timeout=20, message="2 runs")
    info = wait_until(lambda: (i := cocaine_node.info("retry")["tasks"]["step"])["state"]
                      == "finished" and i, timeout=10, message="the schedule to stop")
    first, second = recorder.jobs()
    assert second["meta"]["fired"] - first["end"] >= 0.29
    assert info["failed"] == 1 and "RuntimeError: first run fails" in info["last-error"]


def test_answers_and_errors_with_an_injected_clock(fake_driver):
    scheduler, engine, clock = fake_driver(ManualScheduler, {"retry": 5})
    clock.advance(0)
    assert len(engine.jobs) == 1  # the first run is at start
    engine.jobs[0].chunk(msgpack.packb(2))
    engine.jobs[0].complete()
    assert scheduler.next_at == pytest.approx(clock.monotonic() + 2)
    clock.advance(2)
    engine.jobs[1].chunk(b"not a number")
    engine.jobs[1].complete()
    assert scheduler.failed == 1 and scheduler.done == 1
    assert scheduler.next_at == pytest.approx(clock.monotonic() + 5)
    clock.advance(5)
    engine.jobs[2].fail(504, "the job ran past its timeout")
    assert scheduler.next_at == pytest.approx(clock.monotonic() + 5)
    clock.advance(5)
    engine.jobs[3].complete()  # no answer: stop
    clock.advance(3600)
    assert len(engine.jobs) == 4 and scheduler.info()["state"] == "finished"


@pytest.mark.parametrize(("answer", "seconds"), [
    (b"", None),
    (msgpack.packb(None), None),
    (msgpack.packb(30), 30.0),
    (msgpack.packb(2.5), 2.5),
    (msgpack.packb(100_000), 100_000.0),
    (b"2.5", 2.5),
    (b" 10\n", 10.0),
    (b"0", 48.0),  # one digit is also one msgpack integer, which wins (see the docstring)
    (b"0.0", 0.0),
])
def test_parse_answer(answer, seconds):
    assert parse_answer(answer) == seconds


@pytest.mark.parametrize("answer", [b"soon", msgpack.packb(-1), b"-3", msgpack.packb(True),
                                    b"nan", msgpack.packb([1, 2])])
def test_parse_answer_refuses(answer):
    with pytest.raises(AnswerError):
        parse_answer(answer)
