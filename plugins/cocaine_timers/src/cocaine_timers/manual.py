"""The ``manual-scheduler`` driver: each run's answer says when the next one starts."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import msgpack

from cocaine_core import schema
from cocaine_core.schema import Key
from cocaine_timers.timer import Outcome, TimerDriver, log

if TYPE_CHECKING:
    from cocaine_core.drivers import EngineHandle
    from cocaine_core.manifest import TaskConfig
    from cocaine_timers.clock import Clock


#: The shortest wait between runs (seconds): an answer of 0 runs the next one this much later,
#: so a handler answering 0 polls, it does not spin. The longest: 31 days, as for the
#: timers' interval; an answer past it is an error (and the next run comes ``retry`` later).
MIN_DELAY = 0.01
MAX_DELAY = 31 * 86400.0
RETRY = Key("retry", schema.seconds(MIN_DELAY, MAX_DELAY), 60.0,
            "seconds to wait after a run that failed before running again")


class AnswerError(ValueError):
    """An answer that is not a number of seconds; the message shows what came."""


def parse_answer(answer: bytes) -> float | None:
    """The seconds until the next run that a handler answered, or None to stop.

    Read in this order: an empty answer stops; an answer that is exactly one msgpack value
    (what a Python handler's ``return 30`` or ``return 2.5`` sends) is that value, nil
    stopping; anything else is UTF-8 text holding a number (``"2.5"``). A single digit
    character is also one msgpack integer (``"5"`` is 53), and is read as such.
    """
    if not answer.strip():
        return None
    try:
        value = msgpack.unpackb(answer, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        value = _from_text(answer)
    else:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            # One msgpack value that is no number may still be text ("x" is a fixint too).
            value = _from_text(answer)
    if not math.isfinite(value) or not 0 <= value <= MAX_DELAY:
        raise AnswerError(f"the answer {value!r} is not a number of seconds from 0 to "
                          f"{MAX_DELAY:.0f} (31 days)")
    return float(value)


def _from_text(answer: bytes) -> float:
    try:
        return float(answer.decode("utf-8").strip())
    except (UnicodeDecodeError, ValueError):
        shown = answer[:40] + (b"..." if len(answer) > 40 else b"")
        raise AnswerError(f"the answer {shown!r} is not a number of seconds (return a "
                          f"number, or None to stop)") from None


class ManualScheduler(TimerDriver):
    """Runs the event when the app starts, then when each run's answer says.

    A run that answers a number of seconds is followed by the next that many seconds after it
    ends; an empty answer or None stops the schedule until the app restarts. A run that fails,
    times out, is refused, or answers something else is logged, and the next run comes
    ``retry`` seconds after it ended.
    """

    keys = (RETRY,)

    def __init__(self, task: TaskConfig, engine: EngineHandle,
                 clock: Clock | None = None) -> None:
        super().__init__(task, engine, clock)
        self.retry = min(max(self.options["retry"], MIN_DELAY), MAX_DELAY)
        self.finished = False
        self.last_answer: float | None = None

    def begin(self) -> None:
        """Run once now."""
        self._arm_in(0.0)

    def _arm_in(self, seconds: float) -> None:
        planned = self.clock.time() + seconds
        self.arm(self.clock.monotonic() + seconds, functools.partial(self._run, planned))

    def _run(self, planned: float) -> None:
        self.fire({"scheduled": planned, "run": self.fires + 1, "fired": self.clock.time()})

    def job_ended(self, outcome: Outcome) -> None:
        """Read the answer and arm the next run, or stop; wait ``retry`` after an error."""
        code, _message, answer = outcome
        if code is not None:  # counted and logged already
            self._arm_in(self.retry)
            return
        try:
            seconds = parse_answer(answer)
        except AnswerError as exc:
            self.failed += 1
            self.done -= 1
            self.last_error = str(exc)
            log.warning("task '%s': %s; next run in %g s (retry)", self.task.name, exc,
                        self.retry)
            self._arm_in(self.retry)
            return
        self.last_answer = seconds
        if seconds is None:
            self.finished = True
            log.info("task '%s': the app answered no delay; schedule stopped", self.task.name)
            return
        self._arm_in(max(seconds, MIN_DELAY))

    def info(self) -> dict[str, Any]:
        """Adds the state (waiting, running or finished) and the last answer in seconds."""
        state = "finished" if self.finished else "running" if self.running else "waiting"
        return {**super().info(), "state": state, "last-answer": self.last_answer}
