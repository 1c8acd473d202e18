"""The ``recurring-timer`` driver: a job every ``interval`` on a fixed grid, runs may overlap."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

from cocaine_core import schema
from cocaine_core.schema import Key
from cocaine_timers.timer import TimerDriver, log

if TYPE_CHECKING:
    from cocaine_core.drivers import EngineHandle
    from cocaine_core.manifest import TaskConfig
    from cocaine_timers.clock import Clock

#: The shortest interval (ms): below it a timer is a busy loop (1e-9 ms once ran 99k jobs in
#: 30 s at 81% CPU); a job's round trip through the queue and a slave takes about a millisecond,
#: so 10 ms is the fastest poll that is still a schedule. The longest: 31 days (past that, cron
#: says it better, and a next run must stay a date the loop and ``info`` can hold).
MIN_INTERVAL_MS = 10
MAX_INTERVAL_MS = 31 * 86_400_000
INTERVAL = Key("interval", schema.milliseconds(MIN_INTERVAL_MS, MAX_INTERVAL_MS),
               help="milliseconds between runs")


def interval_seconds(milliseconds: float) -> float:
    """A checked interval in seconds, held within its range even if it came from elsewhere
    than a checked manifest (the timer loop's guard: no interval makes a busy loop)."""
    return min(max(milliseconds, MIN_INTERVAL_MS), MAX_INTERVAL_MS) / 1000.0


class RecurringTimer(TimerDriver):
    """Fires tick n at ``start + n * interval`` on the monotonic clock (n = 1, 2, …).

    The grid is fixed when the app starts, so however long jobs take or however late the loop
    is, ticks never drift. A tick fires even while earlier jobs run (an overlap, counted). If
    the loop was so late that later ticks are already due, only the latest fires and the
    others are counted as skipped. A tick the queue refuses is counted, logged and dropped.
    """

    keys = (INTERVAL,)

    def __init__(self, task: TaskConfig, engine: EngineHandle,
                 clock: Clock | None = None) -> None:
        super().__init__(task, engine, clock)
        self.interval = interval_seconds(self.options["interval"])
        self.origin = 0.0
        self.origin_wall = 0.0
        self.overlaps = 0
        self.skipped = 0

    def begin(self) -> None:
        """Fix the grid at now and arm tick 1."""
        self.origin = self.clock.monotonic()
        self.origin_wall = self.clock.time()
        self._arm_tick(1)

    def _arm_tick(self, n: int) -> None:
        self.arm(self.origin + n * self.interval, functools.partial(self._tick, n))

    def _tick(self, n: int) -> None:
        # The latest tick due by now: n itself unless the loop ran very late.
        due = max(n, math.floor((self.clock.monotonic() - self.origin) / self.interval))
        if due > n:
            self.skipped += due - n
            log.warning("task '%s': the loop was %.3f s late; skipped %d tick(s)",
                        self.task.name, self.clock.monotonic() - (self.origin + n *
                                                                  self.interval), due - n)
        self._arm_tick(due + 1)
        if self.running:
            self.overlaps += 1
        self.fire({"scheduled": self.origin_wall + due * self.interval, "tick": due,
                   "fired": self.clock.time()})

    def info(self) -> dict[str, Any]:
        """Adds overlaps (ticks fired while earlier runs were still running) and skipped."""
        return {**super().info(), "overlaps": self.overlaps, "skipped": self.skipped}
