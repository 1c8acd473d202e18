"""cocaine-timers: see README.md."""
