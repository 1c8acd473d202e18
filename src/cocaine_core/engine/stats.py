"""How an app's jobs end, each counted once: counters, latency percentiles and, by event,
codes and latency histograms (``event_stats.py``) for ``cocaine info``; and the one place a
job is finished with each outcome."""

from __future__ import annotations

import collections
import time

import attrs

from cocaine_core.engine.event_stats import ABANDONED, DONE, EventStats
from cocaine_core.engine.job import Job
from cocaine_core.protocol import Status


@attrs.define
class JobStats:
    """What happened to an app's jobs: counts by outcome, and recent latencies."""

    done: int = 0
    failed: int = 0
    timed_out: int = 0
    refused: int = 0
    expired: int = 0
    abandoned: int = 0
    retried: int = 0
    latencies: collections.deque[float] = attrs.field(
        factory=lambda: collections.deque(maxlen=2048))
    by_event: EventStats = attrs.field(factory=EventStats)

    # The ways a job ends: each finishes the job and counts it, unless it had already ended
    # (a job whose client left is counted once, as abandoned, however it ends on its slave).

    def refuse(self, job: Job, message: str) -> None:
        """Refuse ``job`` with 503 (no capacity)."""
        if not job.finished:
            self.refused += 1
            self.by_event.of(job.event).count(Status.UNAVAILABLE)
            job.refuse(message)

    def expire(self, job: Job) -> None:
        """Fail ``job`` with 520: its deadline passed before it could start."""
        if not job.finished:
            self.expired += 1
            self.by_event.of(job.event).count(Status.DEADLINE)
            job.fail(Status.DEADLINE, "the job's deadline passed before it could start")

    def abandon(self, job: Job) -> None:
        """End ``job`` unheard: its client left. Taken out of its queue first, it never
        starts; running, it finishes on its slave and its answer goes nowhere."""
        if not job.finished:
            self.abandoned += 1
            self.by_event.of(job.event).count(ABANDONED)
            job.abandon()

    def succeed(self, job: Job, last: bytes | None = None) -> None:
        """Complete ``job``; ``last`` is its final chunk, if any."""
        if not job.finished:
            self.done += 1
            seconds = time.monotonic() - job.created
            self.latencies.append(seconds)
            counts = self.by_event.of(job.event)
            counts.count(DONE)
            counts.observe(seconds)
            job.complete(last)

    def fail(self, job: Job, code: int, message: str) -> None:
        """Fail ``job`` with ``code``."""
        if not job.finished:
            self.failed += 1
            self._ran(job, code)
            job.fail(code, message)

    def time_out(self, job: Job) -> None:
        """Fail ``job`` with 504: it ran past its timeout."""
        if not job.finished:
            self.timed_out += 1
            self._ran(job, Status.TIMEOUT)
            job.fail(Status.TIMEOUT, f"the job ran past its timeout of {job.timeout:g} s and "
                                     f"its slave was stopped")

    def _ran(self, job: Job, code: int) -> None:
        counts = self.by_event.of(job.event)
        counts.count(int(code))
        counts.observe(time.monotonic() - job.created)

    def percentile(self, fraction: float) -> float | None:
        """The latency (seconds) below which ``fraction`` of recent jobs finished."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
        return ordered[index]

    def as_dict(self) -> dict[str, object]:
        """The stats as JSON-able data; latencies in milliseconds."""
        p50, p99 = self.percentile(0.5), self.percentile(0.99)
        return {
            "done": self.done,
            "failed": self.failed,
            "timed-out": self.timed_out,
            "refused": self.refused,
            "expired": self.expired,
            "abandoned": self.abandoned,
            "retried": self.retried,
            "latency-ms": {
                "p50": None if p50 is None else round(p50 * 1000, 3),
                "p99": None if p99 is None else round(p99 * 1000, 3),
            },
            "events": self.by_event.as_dict(),
        }
