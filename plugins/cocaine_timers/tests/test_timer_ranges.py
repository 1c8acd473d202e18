"""Every timer number has a range (issue 13): an interval of 1e-9 ms once ran 99k jobs in 30 s
at 81% CPU; an interval or answer of 1e300 made a next run no date can hold."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cocaine_timers.drifting import DriftingTimer
from cocaine_timers.manual import AnswerError, ManualScheduler, parse_answer
from cocaine_timers.recurring import RecurringTimer

from cocaine_core.errors import ManifestError
from cocaine_core.manifest import TaskConfig, parse_manifest


def problems_of(tmp_path: Path, task: dict[str, Any]) -> dict[str, str]:
    """The problems by key path of a manifest with the one task ``tick``."""
    (tmp_path / "app.py").write_text("def tick(request):\n    pass\n")
    data = {"type": "python", "args": {"source": "app.py"}, "tasks": {"tick": task}}
    try:
        parse_manifest(data, root=tmp_path)
    except ManifestError as exc:
        return {p.path: p.message for p in exc.problems}
    return {}


@pytest.mark.parametrize("kind", ["recurring-timer", "drifting-timer"])
@pytest.mark.parametrize("interval", [1e-9, 9.99, 31 * 86_400_000 + 1, 1e300])
def test_an_interval_out_of_range_is_refused_naming_it(tmp_path, kind, interval):
    found = problems_of(tmp_path, {"type": kind, "interval": interval})
    assert found["tasks.tick.interval"].startswith(
        "must be a number of milliseconds from 10 to 2678400000 (31 days), got "), found


@pytest.mark.parametrize("kind", ["recurring-timer", "drifting-timer"])
@pytest.mark.parametrize("interval", [0, -5, math.nan, math.inf])
def test_an_interval_of_nothing_or_forever_is_refused(tmp_path, kind, interval):
    assert "tasks.tick.interval" in problems_of(tmp_path, {"type": kind, "interval": interval})


@pytest.mark.parametrize("kind", ["recurring-timer", "drifting-timer"])
@pytest.mark.parametrize("interval", [10, 60_000, 31 * 86_400_000])
def test_an_interval_in_range_is_accepted(tmp_path, kind, interval):
    assert problems_of(tmp_path, {"type": kind, "interval": interval}) == {}


def test_the_message_shows_the_value_as_written(tmp_path):
    found = problems_of(tmp_path, {"type": "recurring-timer", "interval": 1e-9})
    assert found["tasks.tick.interval"].endswith("got 1e-09")


@pytest.mark.parametrize("retry", [0.001, 1e300, 31 * 86400 + 1])
def test_a_manual_retry_out_of_range_is_refused(tmp_path, retry):
    found = problems_of(tmp_path, {"type": "manual-scheduler", "retry": retry})
    assert found["tasks.tick.retry"].startswith(
        "must be a number of seconds from 0.01 to 2678400 (31 days), got "), found


@pytest.mark.parametrize("driver_class", [RecurringTimer, DriftingTimer])
def test_the_timer_loop_never_arms_below_its_floor(driver_class):
    """The guard behind the check: a driver given a tiny interval some other way (a stored
    manifest from before the range, a test) still waits 10 ms between alarms."""
    task = TaskConfig(name="tick", type="timer", event="tick", options={"interval": 1e-9})
    timer = driver_class(task, engine=None, clock=None)  # type: ignore[arg-type]
    assert timer.interval == 0.01


@pytest.mark.parametrize("answer", [msgpack.packb(1e300), b"1e300",
                                    msgpack.packb(31 * 86400 + 1)])
def test_a_manual_answer_past_31_days_is_an_error(answer):
    with pytest.raises(AnswerError, match=r"from 0 to 2678400 \(31 days\)"):
        parse_answer(answer)


@pytest.mark.parametrize("answer", [msgpack.packb(math.inf), b"inf", b"nan", b"-inf"])
def test_a_manual_answer_of_forever_is_an_error(answer):
    with pytest.raises(AnswerError):
        parse_answer(answer)


#: The manual scheduler's shortest wait (``manual.MIN_DELAY``), in seconds.
MIN_DELAY = 0.01


def test_a_manual_answer_of_0_waits_the_floor(fake_driver):
    """A handler answering 0 polls every 10 ms; it does not spin."""
    timer, engine, clock = fake_driver(ManualScheduler, {})
    clock.advance(0)
    assert len(engine.jobs) == 1
    engine.jobs[0].chunk(msgpack.packb(0))
    engine.jobs[0].complete()
    assert timer.next_at == pytest.approx(clock.monotonic() + MIN_DELAY)
    clock.advance(MIN_DELAY / 2)
    assert len(engine.jobs) == 1
    clock.advance(MIN_DELAY)
    assert len(engine.jobs) == 2
