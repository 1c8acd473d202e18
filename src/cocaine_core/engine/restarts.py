"""Restart intensity: how fast the pool replaces slaves that crash after they were ready.

As an OTP supervisor does: a few crashes are replaced at once; more than ``INTENSITY`` crashes
within ``PERIOD`` seconds hold further spawns back, for ``BASE`` seconds and then twice as long
at each further crash, up to ``CEILING``. Slaves still alive keep serving meanwhile, and queued
jobs wait for them (within the queue limit and their deadlines). Once ``PERIOD`` passes with no
crash, the back-off is forgotten.
"""

from __future__ import annotations

import collections
from typing import Any

#: Crashes within ``PERIOD`` that are replaced at once.
INTENSITY = 5
#: Seconds over which crashes are counted.
PERIOD = 10.0
#: The first hold, in seconds, and the most any hold lasts.
BASE = 0.5
CEILING = 30.0


class CrashBackoff:
    """Counts recent slave crashes and says how long spawning is held back."""

    def __init__(self, intensity: int = INTENSITY, period: float = PERIOD, base: float = BASE,
                 ceiling: float = CEILING) -> None:
        self.intensity = intensity
        self.period = period
        self.base = base
        self.ceiling = ceiling
        self._crashes: collections.deque[float] = collections.deque()
        #: Spawning waits until this monotonic time.
        self.hold_until = 0.0
        #: The current hold in seconds (0 while crashes are within the intensity).
        self.hold = 0.0
        #: Crashes since the engine started, and the last one's reason.
        self.total = 0
        self.last_reason: str | None = None

    def crashed(self, now: float, reason: str) -> float:
        """Record a crash at ``now``; return how long spawning is now held back (0: not)."""
        self._forget_old(now)
        self._crashes.append(now)
        self.total += 1
        self.last_reason = reason
        excess = len(self._crashes) - self.intensity
        if excess <= 0:
            return 0.0
        self.hold = min(self.ceiling, self.base * 2 ** min(excess - 1, 32))
        self.hold_until = now + self.hold
        return self.hold

    def allows(self, now: float) -> bool:
        """Whether a slave may be spawned at ``now``."""
        return now >= self.hold_until

    def _forget_old(self, now: float) -> None:
        while self._crashes and now - self._crashes[0] > self.period:
            self._crashes.popleft()
        if not self._crashes:
            self.hold = 0.0

    def info(self, now: float) -> dict[str, Any]:
        """Recent crashes, the hold left, and the last reason, for ``cocaine info``."""
        self._forget_old(now)
        return {"recent": len(self._crashes), "total": self.total,
                "backoff-s": round(max(0.0, self.hold_until - now), 3),
                "last-exit": self.last_reason}
