"""cron: five or six fields and macros, time zones, daylight saving as cron users expect it."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from cocaine_timers.cron import Cron, CronExpressionError, CronSchedule, zone_for

from cocaine_core.errors import ManifestError
from cocaine_core.manifest import parse_manifest
from cocaine_core.testing import wait_until

BERLIN = ZoneInfo("Europe/Berlin")
UTC = ZoneInfo("UTC")
DAY = 86_400.0


def at(zone, *fields):
    """Epoch seconds of a local time in ``zone``."""
    return datetime(*fields, tzinfo=zone).timestamp()


def fired(engine):
    """The local times the fired jobs were scheduled for."""
    return [job.meta["local"] for job in engine.jobs]


def test_spring_forward_runs_the_skipped_time_at_the_jump(fake_driver):
    # 2025-03-30 in Berlin: 02:00 CET becomes 03:00 CEST; there is no 02:30 that day.
    _cron, engine, clock = fake_driver(Cron, {"schedule": "30 2 * * *",
                                             "timezone": "Europe/Berlin"},
                                      wall=at(BERLIN, 2025, 3, 29, 12, 0))
    clock.advance(2 * DAY)
    assert fired(engine) == ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]
    for job in engine.jobs:  # each fired at its instant, not early, not late
        assert job.meta["fired"] == pytest.approx(job.meta["scheduled"], abs=1e-6)


def test_fall_back_runs_a_fixed_time_once_and_wildcard_hours_normally(fake_driver):
    # 2025-10-26 in Berlin: 03:00 CEST becomes 02:00 CET; 02:00-02:59 happens twice.
    start = at(BERLIN, 2025, 10, 25, 12, 0)
    _daily, daily_engine, daily_clock = fake_driver(
        Cron, {"schedule": "30 2 * * *", "timezone": "Europe/Berlin"}, wall=start)
    daily_clock.advance(2 * DAY)
    assert fired(daily_engine) == ["2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]

    _hourly, hourly_engine, hourly_clock = fake_driver(
        Cron, {"schedule": "0 * * * *", "timezone": "Europe/Berlin"},
        wall=at(BERLIN, 2025, 10, 26, 0, 30))
    hourly_clock.advance(4 * 3600)
    assert fired(hourly_engine) == ["2025-10-26T01:00:00+02:00", "2025-10-26T02:00:00+02:00",
                                    "2025-10-26T02:00:00+01:00", "2025-10-26T03:00:00+01:00"]
    instants = [job.meta["scheduled"] for job in hourly_engine.jobs]
    assert [b - a for a, b in itertools.pairwise(instants)] == [3600.0] * 3


def test_same_expression_in_two_time_zones(fake_driver):
    start = at(UTC, 2025, 6, 1, 0, 30)
    times = {}
    for zone in ("America/New_York", "Asia/Tokyo"):
        cron, engine, clock = fake_driver(Cron, {"schedule": "0 9 * * *", "timezone": zone},
                                          wall=start)
        clock.advance(DAY)
        assert len(engine.jobs) == 1
        times[zone] = datetime.fromtimestamp(engine.jobs[0].meta["scheduled"], UTC)
        assert cron.info()["timezone"] == zone
    assert times["America/New_York"] == datetime(2025, 6, 1, 13, 0, tzinfo=UTC)  # EDT, -4
    assert times["Asia/Tokyo"] == datetime(2025, 6, 2, 0, 0, tzinfo=UTC)  # JST, +9


def test_missed_times_are_not_replayed(fake_driver):
    # Started at 12:05: the 12:00 run is not made up for.
    cron, engine, clock = fake_driver(Cron, {"schedule": "*/10 * * * *", "timezone": "UTC"},
                                      wall=at(UTC, 2025, 1, 1, 12, 5))
    assert cron.info()["next"] == "2025-01-01T12:10:00+00:00"
    clock.advance(300)
    assert fired(engine) == ["2025-01-01T12:10:00+00:00"]
    # The wall clock steps three hours forward (a suspend, an NTP step): one run, the rest
    # counted as skipped, and the schedule goes on from the new time.
    clock.jump_wall(3 * 3600)
    clock.advance(61)
    assert len(engine.jobs) == 2 and cron.skipped == 17
    assert cron.info()["next"] == "2025-01-01T15:20:00+00:00"


def test_wall_clock_stepped_back_does_not_fire_early(fake_driver):
    _cron, engine, clock = fake_driver(Cron, {"schedule": "0 * * * *", "timezone": "UTC"},
                                      wall=at(UTC, 2025, 1, 1, 12, 30))
    clock.advance(20 * 60)
    clock.jump_wall(-600)  # now 12:40 again
    clock.advance(19 * 60)
    assert engine.jobs == []
    clock.advance(61)
    assert fired(engine) == ["2025-01-01T13:00:00+00:00"]


def test_macros_and_seconds_field():
    hourly = CronSchedule("@hourly", UTC)
    assert hourly.next_after(at(UTC, 2025, 1, 1, 12, 0, 1)) == \
        datetime(2025, 1, 1, 13, 0, tzinfo=UTC)
    seconds = CronSchedule("*/15 * * * * *", UTC)  # six fields: seconds first
    assert seconds.next_after(at(UTC, 2025, 1, 1, 12, 0, 1)) == \
        datetime(2025, 1, 1, 12, 0, 15, tzinfo=UTC)
    assert CronSchedule("@reboot", UTC).next_after(0) is None


def test_reboot_fires_once_at_start(fake_driver):
    cron, engine, clock = fake_driver(Cron, {"schedule": "@reboot", "timezone": "UTC"})
    clock.advance(DAY)
    assert len(engine.jobs) == 1 and cron.info()["next"] is None


@pytest.mark.parametrize(("expression", "message"), [
    ("61 * * * *", "its minute field is malformed or out of range"),
    ("* * *", "has 3 fields"),
    ("@often", "unknown macro '@often'"),
    ("0 0 30 2 *", "day-of-month field"),
])
def test_bad_expressions_say_what_is_wrong(expression, message):
    with pytest.raises(CronExpressionError, match=message):
        CronSchedule(expression, UTC)


def test_bad_expression_and_zone_are_manifest_errors(tmp_path):
    (tmp_path / "app.py").write_text("def a(request):\n    pass\n")
    data = {"type": "python", "args": {"source": "app.py"},
            "tasks": {"a": {"type": "cron", "schedule": "0 25 * * *",
                            "timezone": "Europe/Berln"}}}
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, root=tmp_path)
    text = str(caught.value)
    assert "tasks.a.schedule: \"0 25 * * *\" is not a cron expression: its hour field" in text
    assert "tasks.a.timezone: unknown time zone 'Europe/Berln'; did you mean " \
           "'Europe/Berlin'?" in text


def test_default_zone_is_local():
    zone, name = zone_for(None)
    assert name and datetime.now(zone).utcoffset() is not None


def test_seconds_field_on_the_real_clock(cocaine_node, make_app, recorder):
    manifest = make_app(recorder.code('''
def second(request):
    _record(request, time.time())
'''), tasks={"second": {"type": "cron", "schedule": "* * * * * *", "timezone": "UTC"}})
    cocaine_node.add_app("seconds", manifest)
    wait_until(lambda: len(recorder.jobs()) >= 3, timeout=15, message="3 runs")
    info = cocaine_node.info("seconds")["tasks"]["second"]
    cocaine_node.remove_app("seconds")
    jobs = sorted(recorder.jobs(), key=lambda job: job["meta"]["scheduled"])
    scheduled = [job["meta"]["scheduled"] for job in jobs]
    assert all(float(moment).is_integer() for moment in scheduled)
    assert [b - a for a, b in itertools.pairwise(scheduled)] == \
        [1.0] * (len(scheduled) - 1)
    for job in jobs:
        assert 0 <= job["meta"]["fired"] - job["meta"]["scheduled"] < 0.5
        assert job["meta"]["local"].endswith("+00:00")
    assert info["timezone"] == "UTC" and info["next"].endswith("+00:00")
