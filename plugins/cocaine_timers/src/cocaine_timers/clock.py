"""Clocks the timers read and arm: the event loop's own, or one a test moves by hand.

A timer needs two readings (``monotonic()`` for intervals, which never jump; ``time()`` for
wall-clock schedules and the times it reports) and one action, ``call_at(when, callback)`` on
the monotonic scale. ``LoopClock`` maps these to the asyncio loop the node runs on, so a timer
sleeps in the loop's own timer heap and never polls. ``ManualClock`` is the injected clock of
the tests: nothing happens until ``advance`` moves it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    """What ``call_at`` returns: a pending call that can be cancelled."""

    def cancel(self) -> None:
        """Forget the call if it has not run yet."""


class Clock(Protocol):
    """The time source and alarm a timer driver uses."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (the scale of ``call_at``)."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (what schedules and reports use)."""

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Call ``callback`` once ``monotonic()`` reaches ``when``."""


class LoopClock:
    """The asyncio loop's clock: ``loop.time()`` is monotonic, alarms are ``loop.call_at``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def monotonic(self) -> float:
        """The loop's monotonic time."""
        return self.loop.time()

    def time(self) -> float:
        """The system's wall-clock time."""
        return time.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Schedule ``callback`` in the loop's timer heap."""
        return self.loop.call_at(when, callback)


class _ManualHandle:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock for tests: time stands still until ``advance`` moves it, running due calls.

    ``wall`` is the wall-clock time at monotonic zero; ``jump_wall`` moves the wall clock
    alone (an NTP step, a suspend), as a real system clock may.
    """

    def __init__(self, wall: float = 1_700_000_000.0, monotonic: float = 1000.0) -> None:
        self.now = monotonic
        self.wall_offset = wall - monotonic
        self._heap: list[tuple[float, int, _ManualHandle]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        """The current monotonic time."""
        return self.now

    def time(self) -> float:
        """The current wall-clock time."""
        return self.now + self.wall_offset

    def call_at(self, when: float, callback: Callable[[], None]) -> _ManualHandle:
        """Remember ``callback`` for ``when``."""
        handle = _ManualHandle(when, callback)
        heapq.heappush(self._heap, (when, next(self._order), handle))
        return handle

    def pending(self) -> list[float]:
        """The monotonic times of the calls still to come, soonest first."""
        return sorted(when for when, _, handle in self._heap if not handle.cancelled)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running every call that falls due, in order."""
        self.advance_to(self.now + seconds)

    def advance_to(self, when: float) -> None:
        """Move time forward to ``when``, running every call due by then at its own time."""
        while self._heap and self._heap[0][0] <= when:
            due, _, handle = heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            self.now = max(self.now, due)
            handle.callback()
        self.now = max(self.now, when)

    def jump_wall(self, seconds: float) -> None:
        """Step the wall clock by ``seconds`` (either way); monotonic time is untouched."""
        self.wall_offset += seconds
