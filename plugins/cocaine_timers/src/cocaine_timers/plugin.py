"""The cocaine-timers plugin module: registers the four time-driven drivers."""

from __future__ import annotations

from cocaine_core import hookimpl
from cocaine_core.plugins import BoundRegistry


@hookimpl
def cocaine_register_drivers(registry: BoundRegistry) -> None:
    """Register ``recurring-timer``, ``drifting-timer``, ``cron`` and ``manual-scheduler``."""
    from cocaine_timers.cron import Cron
    from cocaine_timers.drifting import DriftingTimer
    from cocaine_timers.manual import ManualScheduler
    from cocaine_timers.recurring import RecurringTimer

    registry.add("recurring-timer", RecurringTimer)
    registry.add("drifting-timer", DriftingTimer)
    registry.add("cron", Cron)
    registry.add("manual-scheduler", ManualScheduler)
