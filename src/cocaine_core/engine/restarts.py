"""How fast the pool replaces slaves that die: restart intensity, and start back-off.

``CrashBackoff``, for slaves that crash after they were ready, as an OTP supervisor's restart
intensity: a few crashes are replaced at once; more than ``INTENSITY`` crashes within
``PERIOD`` seconds hold further spawns back, for ``BASE`` seconds and then twice as long at
each further crash, up to ``CEILING``, and cap the pool at the slaves still alive (slaves that
keep dying of memory are better fewer). Slaves alive keep serving meanwhile, and queued jobs
wait for them. Once ``PERIOD`` passes with no crash the hold is forgotten, and the cap rises
by one slave per quiet ``PERIOD`` (a probe) until it is gone. Only slaves that die before
finishing a single job count: the intensity stops a crash loop (slaves that die without doing
any work, of their code or of memory), while a slave lost after useful work (an operator's or a
chaos test's ``kill -9``, a slow leak reaching its limit) is replaced at once, however often.

``StartBackoff``, for slaves that die or are killed before they were ready (a stalled
template, a fork refused by a limit, the OOM killer): spawns wait ``BASE`` seconds and then
twice as long at each failure in a row, up to ``START_CEILING``, until a slave becomes ready.
Neither ever marks an app broken: only its code's own faults do (``loader.py``).
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
#: The most a spawn waits after slaves failed to start.
START_CEILING = 10.0


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
        #: The most slaves the pool may have for now (None: pool-limit), and since when.
        self.cap: int | None = None
        self._capped_at = 0.0

    def crashed(self, now: float, reason: str, alive: int, *, worked: bool = False) -> float:
        """Record a crash at ``now`` with ``alive`` slaves left; return how long spawning is
        now held back (0: not). A slave that ``worked`` (finished a job before it died) is
        counted in ``total`` but not towards the intensity: it is replaced at once."""
        self._forget_old(now)
        self.total += 1
        self.last_reason = reason
        if worked:
            return 0.0
        self._crashes.append(now)
        excess = len(self._crashes) - self.intensity
        if excess <= 0:
            if self.cap is not None:  # a probe failed: back to the slaves alive, at once
                self.cap = max(1, min(alive, self.cap))
                self._capped_at = now
            return 0.0
        self.hold = min(self.ceiling, self.base * 2 ** min(excess - 1, 32))
        self.hold_until = now + self.hold
        self.cap = max(1, min(alive, self.cap or alive))
        self._capped_at = now
        return self.hold

    def limit(self, pool_limit: int, now: float) -> int:
        """The pool's limit for now: ``pool_limit``, or the cap, raised by one slave for each
        quiet ``PERIOD`` since it was set."""
        if self.cap is None:
            return pool_limit
        if now - self._capped_at > self.period and not self._crashes_since(self._capped_at):
            self.cap += 1
            self._capped_at = now
            if self.cap >= pool_limit:
                self.cap = None
                return pool_limit
        return min(pool_limit, self.cap)

    def _crashes_since(self, moment: float) -> bool:
        return bool(self._crashes) and self._crashes[-1] > moment

    def allows(self, now: float) -> bool:
        """Whether a slave may be spawned at ``now``."""
        return now >= self.hold_until

    def _forget_old(self, now: float) -> None:
        while self._crashes and now - self._crashes[0] > self.period:
            self._crashes.popleft()
        if not self._crashes:
            self.hold = 0.0

    def recent(self, now: float | None = None) -> int:
        """Crashes within the last ``PERIOD`` (of ``now``, if given: older ones forgotten)."""
        if now is not None:
            self._forget_old(now)
        return len(self._crashes)

    def info(self, now: float) -> dict[str, Any]:
        """Recent crashes, the hold left, and the last reason, for ``cocaine info``."""
        self._forget_old(now)
        return {"recent": len(self._crashes), "total": self.total,
                "backoff-s": round(max(0.0, self.hold_until - now), 3),
                "last-exit": self.last_reason, "pool-cap": self.cap}


class StartBackoff:
    """Slaves that failed to start in a row, and how long the next spawn waits."""

    def __init__(self, base: float = BASE, ceiling: float = START_CEILING) -> None:
        self.base = base
        self.ceiling = ceiling
        #: Failures in a row, and the last one's reason.
        self.failures = 0
        self.last_reason: str | None = None

    def failed(self, reason: str) -> float:
        """Count a failed start; return how long spawning now waits."""
        self.failures += 1
        self.last_reason = reason
        return min(self.ceiling, self.base * 2 ** min(self.failures - 1, 32))

    def succeeded(self) -> None:
        """A slave became ready: forget the failures."""
        self.failures = 0
