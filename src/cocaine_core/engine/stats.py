"""Counters and latency percentiles of an app's jobs, for ``cocaine info``."""

from __future__ import annotations

import collections

import attrs


@attrs.define
class JobStats:
    """What happened to an app's jobs: counts by outcome, and recent latencies."""

    done: int = 0
    failed: int = 0
    timed_out: int = 0
    refused: int = 0
    expired: int = 0
    retried: int = 0
    latencies: collections.deque[float] = attrs.field(
        factory=lambda: collections.deque(maxlen=2048))

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
            "retried": self.retried,
            "latency-ms": {
                "p50": None if p50 is None else round(p50 * 1000, 3),
                "p99": None if p99 is None else round(p99 * 1000, 3),
            },
        }
