"""recurring-timer: a fixed grid from the app's start; runs overlap; refused ticks are dropped."""

from __future__ import annotations

import itertools
import statistics

import pytest
from cocaine_timers.recurring import RecurringTimer

from cocaine_core.errors import ManifestError
from cocaine_core.manifest import load_manifest
from cocaine_core.testing import wait_until

SLOW = '''
def tick(request):
    start = time.time()
    time.sleep(0.25)
    _record(request, start)
'''


def test_slow_job_overlaps_and_ticks_stay_on_the_grid(cocaine_node, make_app, recorder):
    manifest = make_app(recorder.code(SLOW), tasks={"tick": {"type": "recurring-timer",
                                                             "interval": 100}},
                        engine={"pool-limit": 6, "pool-min": 4})
    cocaine_node.add_app("grid", manifest)
    wait_until(lambda: len(recorder.jobs()) >= 15, timeout=20, message="15 ticks")
    info = cocaine_node.info("grid")["tasks"]["tick"]
    cocaine_node.remove_app("grid")
    jobs = sorted(recorder.jobs(), key=lambda job: job["meta"]["tick"])
    ticks = [job["meta"]["tick"] for job in jobs]
    assert ticks == sorted(set(ticks)) and ticks[0] >= 1
    # Scheduled times are exactly on the grid origin + n * interval...
    origin = jobs[0]["meta"]["scheduled"] - ticks[0] * 0.1
    for job in jobs:
        assert job["meta"]["scheduled"] == pytest.approx(origin + job["meta"]["tick"] * 0.1,
                                                         abs=1e-6)
    # ... and ticks fire at them, late by loop jitter only, however long the jobs take.
    lateness = [job["meta"]["fired"] - job["meta"]["scheduled"] for job in jobs]
    assert min(lateness) >= -0.005
    assert statistics.median(lateness) < 0.05, lateness
    assert lateness[-1] < 0.25, lateness  # no drift accumulates
    # Runs overlap: a tick fired while the previous job still ran.
    assert info["overlaps"] > 0
    overlapping = sum(1 for a, b in itertools.pairwise(jobs) if b["start"] < a["end"])
    assert overlapping > 0
    assert info["next"] is not None and info["fires"] >= 15


def test_a_refused_tick_is_counted_and_never_queued_later(cocaine_node, make_app, recorder):
    # One slave, no queue: every tick that comes while the slave is busy is refused.
    manifest = make_app(recorder.code(SLOW), tasks={"tick": {"type": "recurring-timer",
                                                             "interval": 100}},
                        engine={"pool-limit": 1, "pool-min": 1, "queue-limit": 0})
    cocaine_node.add_app("full", manifest)
    wait_until(lambda: len(recorder.jobs()) >= 3, timeout=20, message="3 runs")
    cocaine_node.remove_app("full")
    ran = recorder.jobs()
    # remove_app drains: nothing runs afterwards, so the record is final.
    ticks = [job["meta"]["tick"] for job in ran]
    assert ticks == sorted(ticks)
    # While a 250 ms run holds the only slave, the next ticks are refused: gaps of 2 or more.
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert all(gap >= 2 for gap in gaps), ticks


def test_refusals_show_in_info(cocaine_node, make_app, recorder):
    manifest = make_app(recorder.code(SLOW), tasks={"tick": {"type": "recurring-timer",
                                                             "interval": 100}},
                        engine={"pool-limit": 1, "pool-min": 1, "queue-limit": 0})
    cocaine_node.add_app("refusing", manifest)
    info = wait_until(lambda: (i := cocaine_node.info("refusing")["tasks"]["tick"])["refused"]
                      >= 3 and i["done"] >= 1 and i, timeout=20, message="3 refusals")
    assert info["last-error"].startswith("503: queue is full")
    assert info["fires"] >= info["done"] + info["refused"] + info["failed"]


def test_grid_with_an_injected_clock(fake_driver):
    timer, engine, clock = fake_driver(RecurringTimer, {"interval": 100})
    start = clock.monotonic()
    clock.advance(0.099)
    assert engine.jobs == []  # the first run comes after one interval
    clock.advance(0.001)
    assert [job.meta["tick"] for job in engine.jobs] == [1]
    clock.advance(0.35)  # ticks 2, 3 and 4, each at its own time
    assert [job.meta["tick"] for job in engine.jobs] == [1, 2, 3, 4]
    assert timer.overlaps == 3  # no job ended
    for job in engine.jobs:
        assert job.meta["scheduled"] == pytest.approx(clock.wall_offset + start
                                                      + job.meta["tick"] * 0.1)
    assert timer.next_at == pytest.approx(start + 0.5)


def test_a_late_loop_skips_ticks_instead_of_bursting(fake_driver):
    timer, engine, clock = fake_driver(RecurringTimer, {"interval": 100})
    start = clock.monotonic()
    # The loop was blocked: tick 1's alarm runs only at 0.35 s.
    clock.now = start + 0.35
    clock.advance(0)
    assert [job.meta["tick"] for job in engine.jobs] == [3]
    assert timer.skipped == 2
    assert timer.next_at == pytest.approx(start + 0.4)  # back on the grid


def test_injected_refusal_is_counted(fake_driver):
    timer, engine, clock = fake_driver(RecurringTimer, {"interval": 50})
    engine.refuse = True
    clock.advance(0.2)
    assert timer.fires == 4 and timer.refused == 4 and timer.running == 0
    assert engine.jobs == []
    assert timer.info()["last-error"] == "503: queue is full"


def test_interval_is_checked(tmp_path):
    (tmp_path / "app.py").write_text("def tick(request):\n    pass\n")
    (tmp_path / "manifest.json").write_text(
        '{"type": "python", "args": {"source": "app.py"}, '
        '"tasks": {"tick": {"type": "recurring-timer", "interval": -5}}}')
    with pytest.raises(ManifestError, match=r"tasks\.tick\.interval: must be a number of "
                                            r"milliseconds from 10 to "):
        load_manifest(tmp_path / "manifest.json")
