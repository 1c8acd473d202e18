"""drifting-timer: the next run starts interval after the previous one ends; never overlaps."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from cocaine_timers.drifting import DriftingTimer

from cocaine_core.testing import wait_until

SLOW = '''
def tick(request):
    start = time.time()
    time.sleep(0.25)
    _record(request, start)
'''


def test_slow_job_never_overlaps_and_spacing_is_job_time_plus_interval(cocaine_node, make_app,
                                                                      recorder):
    manifest = make_app(recorder.code(SLOW), tasks={"tick": {"type": "drifting-timer",
                                                             "interval": 100}},
                        engine={"pool-limit": 4, "pool-min": 2})
    cocaine_node.add_app("drift", manifest)
    wait_until(lambda: len(recorder.jobs()) >= 6, timeout=20, message="6 runs")
    info = cocaine_node.info("drift")["tasks"]["tick"]
    cocaine_node.remove_app("drift")
    jobs = recorder.jobs()
    assert [job["meta"]["run"] for job in jobs] == list(range(1, len(jobs) + 1))
    for before, after in itertools.pairwise(jobs):
        assert after["start"] >= before["end"]  # never two at once
        # The next run fires one interval after the previous ended (the engine hears of the
        # end a little after the handler returns: allow for that, and a loaded machine).
        gap = after["meta"]["fired"] - before["end"]
        assert 0.095 <= gap <= 0.6, gap
        spacing = after["meta"]["fired"] - before["meta"]["fired"]
        assert 0.34 <= spacing <= 1.0, spacing
    assert info["running"] <= 1 and "overlaps" not in info


@pytest.mark.parametrize("end", ["complete", "fail", "timeout"])
def test_next_run_waits_an_interval_after_any_end(fake_driver, end):
    timer, engine, clock = fake_driver(DriftingTimer, {"interval": 100})
    clock.advance(0.1)
    assert len(engine.jobs) == 1
    clock.advance(5)  # the job runs long: nothing else fires meanwhile
    assert len(engine.jobs) == 1 and timer.next_at is None
    job = engine.jobs[0]
    ended_at = clock.monotonic()
    if end == "complete":
        job.complete()
    elif end == "fail":
        job.fail(502, "ValueError: boom")
    else:
        job.fail(504, "the job ran past its timeout")
    assert timer.next_at == pytest.approx(ended_at + 0.1)
    clock.advance(0.1)
    assert len(engine.jobs) == 2
    assert engine.jobs[1].meta["scheduled"] == pytest.approx(clock.time())
    assert (timer.done, timer.failed) == ((1, 0) if end == "complete" else (0, 1))


def test_refused_run_is_followed_by_the_next_an_interval_later(fake_driver):
    timer, engine, clock = fake_driver(DriftingTimer, {"interval": 100})
    engine.refuse = True
    clock.advance(0.1)
    assert timer.refused == 1
    assert timer.next_at == pytest.approx(clock.monotonic() + 0.1)
    engine.refuse = False
    clock.advance(0.1)
    assert len(engine.jobs) == 1 and timer.fires == 2


def test_stop_disarms(fake_driver):
    timer, engine, clock = fake_driver(DriftingTimer, {"interval": 100})
    clock.advance(0.1)
    asyncio.run(timer.stop())
    engine.jobs[0].complete()  # a run that ends after stop arms nothing
    clock.advance(1)
    assert len(engine.jobs) == 1 and timer.next_at is None
