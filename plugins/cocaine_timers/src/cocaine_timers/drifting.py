"""The ``drifting-timer`` driver: the next run starts ``interval`` after the previous one ends."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from cocaine_timers.recurring import INTERVAL, interval_seconds
from cocaine_timers.timer import Outcome, TimerDriver

if TYPE_CHECKING:
    from cocaine_core.drivers import EngineHandle
    from cocaine_core.manifest import TaskConfig
    from cocaine_timers.clock import Clock


class DriftingTimer(TimerDriver):
    """Fires one job ``interval`` after the app starts, then ``interval`` after each job ends.

    A job ends when it is done, fails, times out or is refused; whichever it is, the next run
    waits a full ``interval`` from that moment. Runs never overlap; the schedule drifts by the
    time each job takes.
    """

    keys = (INTERVAL,)

    def __init__(self, task: TaskConfig, engine: EngineHandle,
                 clock: Clock | None = None) -> None:
        super().__init__(task, engine, clock)
        self.interval = interval_seconds(self.options["interval"])

    def begin(self) -> None:
        """Arm the first run one interval from now."""
        self._arm_next()

    def _arm_next(self) -> None:
        planned = self.clock.time() + self.interval
        self.arm(self.clock.monotonic() + self.interval, functools.partial(self._tick, planned))

    def _tick(self, planned: float) -> None:
        self.fire({"scheduled": planned, "run": self.fires + 1, "fired": self.clock.time()})

    def job_ended(self, outcome: Outcome) -> None:
        """Arm the next run one interval from now."""
        self._arm_next()
