"""cocaine-timers: the time-driven drivers ``recurring-timer``, ``drifting-timer``, ``cron`` and
``manual-scheduler``. See README.md and docs/drivers.md."""
