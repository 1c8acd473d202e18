"""Jobs by event: how each ended (by code) and how long it took (a fixed-bucket histogram),
for ``cocaine info`` and the exporters built on it (``cocaine-prometheus``).

Counters only grow, as Prometheus expects of them. The events of an app are bounded: the
first ``MAX_EVENTS`` kept apart, the rest counted together under ``OTHER``, whatever a client
asks for.
"""

from __future__ import annotations

import bisect
from typing import Any

#: Upper bounds of the latency buckets, in seconds (a job longer than the last is counted
#: only in the total).
BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                              2.5, 5.0, 10.0, 30.0, 60.0)
#: Events kept apart per app; beyond, jobs are counted under ``OTHER``.
MAX_EVENTS = 256
OTHER = "(other)"

#: The code a job is counted under when it did not end with an error code of its own.
DONE, ABANDONED = 200, 499


class EventCounts:
    """One event's jobs: counts by code, and a latency histogram of the jobs that ran."""

    __slots__ = ("buckets", "codes", "seconds", "total")

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self.buckets = [0] * len(BUCKETS)
        self.total = 0
        self.seconds = 0.0

    def count(self, code: int) -> None:
        """Count one job that ended with ``code``."""
        self.codes[code] = self.codes.get(code, 0) + 1

    def observe(self, seconds: float) -> None:
        """Count one job that ran for ``seconds`` (from its arrival to its end)."""
        index = bisect.bisect_left(BUCKETS, seconds)
        if index < len(self.buckets):
            self.buckets[index] += 1
        self.total += 1
        self.seconds += seconds

    def as_dict(self) -> dict[str, Any]:
        """Codes as strings, and the histogram with cumulative counts per bucket."""
        cumulative, running = [], 0
        for count in self.buckets:
            running += count
            cumulative.append(running)
        return {"codes": {str(code): n for code, n in sorted(self.codes.items())},
                "seconds": {"buckets": list(BUCKETS), "counts": cumulative,
                            "sum": round(self.seconds, 6), "count": self.total}}


class EventStats:
    """An app's jobs by event (at most ``MAX_EVENTS`` of them, then ``OTHER``)."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: dict[str, EventCounts] = {}

    def of(self, event: str) -> EventCounts:
        """The counts of ``event`` (made at its first job)."""
        counts = self.events.get(event)
        if counts is None:
            if len(self.events) >= MAX_EVENTS:
                event = OTHER
                counts = self.events.get(OTHER)
            if counts is None:
                counts = self.events[event] = EventCounts()
        return counts

    def as_dict(self) -> dict[str, Any]:
        """Every event's counts, by name."""
        return {event: counts.as_dict() for event, counts in sorted(self.events.items())}
