"""The ``cron`` driver: jobs at the times a cron expression names, in a time zone.

Expressions are read and evaluated by cronsim, which follows Debian's cron, daylight-saving
quirks included (see docs/drivers.md for why cronsim and not croniter). This module adds the
``@hourly``-style macros, ``@reboot``, time-zone names, and the timing: each run is armed on
the loop's monotonic clock for the wall-clock instant cronsim gives, and the wall clock is
re-read at least every ``RESYNC`` seconds so a stepped clock cannot delay a run for long.
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from cocaine_core import schema
from cocaine_core.errors import Problem
from cocaine_core.schema import Key
from cocaine_timers.timer import TimerDriver, format_time, log

if TYPE_CHECKING:
    from cocaine_core.drivers import EngineHandle
    from cocaine_core.manifest import TaskConfig
    from cocaine_timers.clock import Clock

#: The usual macros, as the five fields they stand for. ``@reboot`` is handled apart.
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
REBOOT = "@reboot"
#: Longest sleep before the wall clock is read again (seconds).
RESYNC = 60.0
#: A wake-up this close before the scheduled instant counts as on time (seconds).
EARLY_TOLERANCE = 0.002
#: Most missed times counted after a long sleep (counting is all that is done with them).
MISSED_COUNT_LIMIT = 10_000

FIELDS_HELP = ("five fields (minute hour day-of-month month day-of-week), six with seconds "
               "first, or one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, "
               "@hourly, @reboot")


class CronExpressionError(ValueError):
    """A schedule that is not a cron expression; the message says what is wrong."""


class CronSchedule:
    """A checked cron expression in a time zone: ``next_after(t)`` gives the next run."""

    def __init__(self, expression: str, zone: tzinfo) -> None:
        self.expression = expression
        self.zone = zone
        text = " ".join(expression.split())
        self.reboot = text.lower() == REBOOT
        self.fields = "" if self.reboot else MACROS.get(text.lower(), text)
        if self.reboot:
            return
        if text.startswith("@") and text.lower() not in MACROS:
            raise CronExpressionError(f"unknown macro {text!r}; expected {FIELDS_HELP}")
        count = len(self.fields.split())
        if count not in (5, 6):
            raise CronExpressionError(f"has {count} field{'s' if count != 1 else ''}; "
                                      f"expected {FIELDS_HELP}")
        try:
            # cronsim checks the fields when it is made, and finds no time at all (e.g.
            # "0 0 30 2 *") only when asked for one.
            next(CronSim(self.fields, datetime.now(zone)))
        except CronSimError as exc:
            raise CronExpressionError(_explain(str(exc))) from None
        except StopIteration:
            raise CronExpressionError("never matches (no such time in the next 50 years)") \
                from None

    def next_after(self, wall: float) -> datetime | None:
        """The first run strictly after epoch time ``wall``, aware in the zone (None: never)."""
        if self.reboot:
            return None
        start = datetime.fromtimestamp(wall, self.zone)
        try:
            times = CronSim(self.fields, start)
            candidate = next(times)
            # cronsim reads fixed-time jobs on naive local time, where the second pass of a
            # repeated hour (fall back) looks like the first: skip instants already past.
            while candidate.timestamp() <= wall:
                candidate = next(times)
        except StopIteration:
            return None
        return candidate

    def count_between(self, after: float, until: float) -> int:
        """How many runs fall in (after, until], up to ``MISSED_COUNT_LIMIT``."""
        count, moment = 0, after
        while count < MISSED_COUNT_LIMIT:
            following = self.next_after(moment)
            if following is None or following.timestamp() > until:
                break
            count += 1
            moment = following.timestamp()
        return count


def _explain(message: str) -> str:
    """cronsim's "Bad minute" as "the minute field is out of range or malformed"."""
    if message.startswith("Bad "):
        return f"its {message[4:]} field is malformed or out of range; expected {FIELDS_HELP}"
    return message


def local_zone() -> tuple[tzinfo, str]:
    """The machine's time zone and its name: ``TZ``, else /etc/localtime, else the offset.

    A zone from the tz database follows daylight-saving changes; the last resort, a fixed
    offset, does not (it is logged).
    """
    candidates = []
    if os.environ.get("TZ"):
        candidates.append(os.environ["TZ"].removeprefix(":"))
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    for name in candidates:
        try:
            return ZoneInfo(name), name
        except (ZoneInfoNotFoundError, ValueError, OSError):
            continue
    try:
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime"), "localtime"
    except (OSError, ValueError):
        pass
    offset = datetime.now().astimezone().utcoffset() or timedelta(0)
    log.warning("no time zone database entry for this machine's zone; cron uses the fixed "
                "offset %s, which does not follow daylight-saving changes", offset)
    return timezone(offset), f"UTC{'+' if offset >= timedelta(0) else '-'}{abs(offset)}"


def zone_for(name: str | None) -> tuple[tzinfo, str]:
    """The time zone called ``name`` (an IANA name), or the local one for None.

    Raises ValueError with a message saying what is wrong and what would do.
    """
    if name is None:
        return local_zone()
    try:
        return ZoneInfo(name), name
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    known = available_timezones()
    if not known:
        raise ValueError(f"unknown time zone {name!r}: this machine has no time zone "
                         f"database; install the system's tzdata package or pip install "
                         f"tzdata")
    hint = schema.did_you_mean(name, known) or \
        "; use an IANA name such as 'Europe/Berlin', 'America/New_York' or 'UTC'"
    raise ValueError(f"unknown time zone {name!r}{hint}")


class Cron(TimerDriver):
    """Fires at each time the ``schedule`` names, read in ``timezone``.

    Times are computed from now when the app starts: one missed while the node was down is
    not replayed. If the wall clock jumps forward past several runs, the first is fired and
    the rest are counted as skipped.
    """

    keys = (
        Key("schedule", schema.string, help="a cron expression, e.g. \"*/5 * * * *\""),
        Key("timezone", schema.string, None,
            "IANA time zone name, e.g. \"Europe/Berlin\"; default: the node's local zone"),
    )

    @classmethod
    def validate(cls, options: dict[str, Any], root: Path) -> list[Problem]:
        """Check the time zone and the expression, saying what is wrong with each."""
        problems = []
        try:
            zone, _ = zone_for(options.get("timezone"))
        except ValueError as exc:
            problems.append(Problem("timezone", str(exc)))
            zone = UTC
        try:
            CronSchedule(options["schedule"], zone)
        except CronExpressionError as exc:
            problems.append(Problem("schedule", f"{schema.show(options['schedule'])} is not a "
                                                f"cron expression: {exc}"))
        return problems

    def __init__(self, task: TaskConfig, engine: EngineHandle,
                 clock: Clock | None = None) -> None:
        super().__init__(task, engine, clock)
        self.zone, self.zone_name = zone_for(self.options.get("timezone"))
        self.schedule = CronSchedule(self.options["schedule"], self.zone)
        self.target: datetime | None = None
        self.skipped = 0

    def begin(self) -> None:
        """Plan the first run after now (or fire ``@reboot`` once)."""
        if self.schedule.reboot:
            now = self.clock.time()
            self.fire({"scheduled": now, "local": format_time(now, self.zone), "fired": now})
            return
        self._plan_after(self.clock.time())

    def _plan_after(self, wall: float) -> None:
        self.target = self.schedule.next_after(wall)
        if self.target is None:
            log.warning("task '%s': the schedule %r has no more times", self.task.name,
                        self.schedule.expression)
            self.disarm()
            return
        self._arm_for(self.target.timestamp())

    def _arm_for(self, wall: float) -> None:
        delay = min(max(wall - self.clock.time(), 0.0), RESYNC)
        self.arm(self.clock.monotonic() + delay, self._wake)

    def _wake(self) -> None:
        assert self.target is not None
        scheduled = self.target.timestamp()
        now = self.clock.time()
        if now < scheduled - EARLY_TOLERANCE:
            # A resync, or the wall clock was stepped back: sleep again for what is left.
            self._arm_for(scheduled)
            return
        missed = self.schedule.count_between(scheduled, now) if now - scheduled >= 1 else 0
        if missed:
            self.skipped += missed
            log.warning("task '%s': the clock moved %.1f s past %s; fired once, skipped %d "
                        "run(s)", self.task.name, now - scheduled, self.target.isoformat(),
                        missed)
        self.fire({"scheduled": scheduled, "local": self.target.isoformat(), "fired": now})
        self._plan_after(max(now, scheduled))

    def info(self) -> dict[str, Any]:
        """Next run in the task's zone, the zone, runs fired and skipped, the last error."""
        info = super().info()
        info["next"] = self.target.isoformat() if self.target is not None and \
            self.next_at is not None else None
        info["timezone"] = self.zone_name
        info["skipped"] = self.skipped
        return info

