"""What every timer shares: arming one alarm, firing jobs, learning how they end, reporting.

A timer driver arms one alarm at a time on its ``Clock``; when the alarm rings it submits a
job whose sink is a ``TimerSink``, so the driver learns how each job ended (done, failed,
timed out or refused) and can count it, log it, and, for the drifting timer and the manual
scheduler, decide when to run next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from cocaine_core.drivers import Driver
from cocaine_core.protocol import Status
from cocaine_timers.clock import Clock, LoopClock, TimerHandle

if TYPE_CHECKING:
    from cocaine_core.drivers import EngineHandle
    from cocaine_core.manifest import TaskConfig

log = logging.getLogger("cocaine.timers")

#: Most bytes of a job's answer a timer keeps (the manual scheduler reads it).
ANSWER_LIMIT = 1024
#: Refusals of one task are logged at most this often (seconds); the count is always kept.
REFUSAL_LOG_EVERY = 5.0

#: How a job ended, as a timer sees it: ``(code, message, answer)``; code None means done.
Outcome = tuple[int | None, str, bytes]


class TimerSink:
    """A job's sink that keeps the start of its answer and tells the timer how it ended."""

    __slots__ = ("_on_end", "answer", "truncated")

    def __init__(self, on_end: Callable[[Outcome], None]) -> None:
        self._on_end = on_end
        self.answer = bytearray()
        self.truncated = False

    def chunk(self, data: bytes) -> None:
        """Keep the answer's first ``ANSWER_LIMIT`` bytes."""
        room = ANSWER_LIMIT - len(self.answer)
        if len(data) > room:
            self.truncated = True
        self.answer += data[:max(room, 0)]

    def choke(self) -> None:
        """The job is done."""
        self._on_end((None, "", bytes(self.answer)))

    def error(self, code: int, message: str) -> None:
        """The job failed or was refused."""
        self._on_end((int(code), message, bytes(self.answer)))


def format_time(wall: float | None, zone: tzinfo | None = None) -> str | None:
    """A wall-clock time as ISO 8601 with milliseconds, in ``zone`` (default: local)."""
    if wall is None:
        return None
    moment = datetime.fromtimestamp(wall, zone) if zone else \
        datetime.fromtimestamp(wall).astimezone()
    return moment.isoformat(timespec="milliseconds")


class TimerDriver(Driver):
    """Base of the timer drivers: one alarm, job accounting, ``info``.

    A subclass implements ``begin`` (arm the first alarm) and may override ``job_ended``.
    ``clock`` may be given to drive the timer by hand (tests); by default it is the loop's.
    """

    def __init__(self, task: TaskConfig, engine: EngineHandle,
                 clock: Clock | None = None) -> None:
        super().__init__(task, engine)
        self._given_clock = clock
        self.clock: Clock = clock  # type: ignore[assignment]  # set for real in start()
        self.fires = 0
        self.done = 0
        self.failed = 0
        self.refused = 0
        self.running = 0
        self.last_error: str | None = None
        self.stopped = False
        #: Monotonic time of the armed alarm (None: nothing armed).
        self.next_at: float | None = None
        self._alarm: TimerHandle | None = None
        self._refusals_unlogged = 0
        self._refusal_logged_at = float("-inf")

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the loop's clock (unless one was given) and arm the first alarm."""
        if self._given_clock is None:
            self.clock = LoopClock(asyncio.get_running_loop())
        self.begin()

    def begin(self) -> None:
        """Arm the first alarm (the clock is set)."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Disarm: no job is fired after this; jobs already running finish on their own."""
        self.stopped = True
        self.disarm()

    # -- alarms -------------------------------------------------------------------------------

    def arm(self, when: float, callback: Callable[[], None]) -> None:
        """Replace the alarm with one at monotonic ``when``."""
        self.disarm()
        if self.stopped:
            return
        self.next_at = when
        self._alarm = self.clock.call_at(when, self._ring(callback))

    def disarm(self) -> None:
        """Cancel the alarm, if any."""
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        self.next_at = None

    def _ring(self, callback: Callable[[], None]) -> Callable[[], None]:
        def ring() -> None:
            self._alarm = None
            self.next_at = None
            if self.stopped:
                return
            try:
                callback()
            except Exception:  # a timer's bug must not kill the node's loop
                log.exception("task '%s': timer failed", self.task.name)
        return ring

    # -- jobs ---------------------------------------------------------------------------------

    def fire(self, meta: dict[str, Any]) -> None:
        """Submit one job for this task with ``meta``; ``job_ended`` learns how it ends."""
        self.fires += 1
        self.running += 1
        job = self.make_job(b"", meta, TimerSink(self._ended))
        self.engine.submit(job)

    def _ended(self, outcome: Outcome) -> None:
        code, message, _answer = outcome
        self.running -= 1
        if code is None:
            self.done += 1
        elif code == Status.UNAVAILABLE:
            self.refused += 1
            self.last_error = f"{code}: {message}"
            self._log_refusal(message)
        else:
            self.failed += 1
            self.last_error = f"{code}: {message}"
            log.warning("task '%s': job failed with %s: %s", self.task.name, code, message)
        try:
            self.job_ended(outcome)
        except Exception:
            log.exception("task '%s': timer failed after a job ended", self.task.name)

    def job_ended(self, outcome: Outcome) -> None:
        """Called once per fired job when it ends (after it was counted)."""

    def _log_refusal(self, message: str) -> None:
        self._refusals_unlogged += 1
        now = time.monotonic()
        if now - self._refusal_logged_at < REFUSAL_LOG_EVERY:
            return
        count, self._refusals_unlogged = self._refusals_unlogged, 0
        self._refusal_logged_at = now
        what = "a run was" if count == 1 else f"{count} runs were"
        log.warning("task '%s': %s refused and dropped (%d so far): %s", self.task.name, what,
                    self.refused, message)

    # -- reporting ----------------------------------------------------------------------------

    def next_wall(self) -> float | None:
        """The wall-clock time of the armed alarm, if any."""
        if self.next_at is None or self.clock is None:
            return None
        return self.clock.time() + (self.next_at - self.clock.monotonic())

    def info(self) -> dict[str, Any]:
        """Next run, runs fired and how they ended, the last error."""
        return {**super().info(), "next": format_time(self.next_wall()), "fires": self.fires,
                "done": self.done, "failed": self.failed, "refused": self.refused,
                "running": self.running, "last-error": self.last_error}
