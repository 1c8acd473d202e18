"""The cocaine-timers plugin module (its drivers land with the event-sources work)."""
