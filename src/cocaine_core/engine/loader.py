"""Loading an app's code: starting its backend, judging each failure, retrying, healing.

Only the code's own faults (its import raised, a handler is missing), ``START_ATTEMPTS`` times
in a row, each on a fresh template, mark an app broken. Everything else is the moment's fault
(a load slower than ``startup-timeout`` on a busy machine, a template killed by the OOM killer
or an operator, a template lost after it had loaded): it is retried with back-off, capped at
``LOAD_BACKOFF_MAX``, for as long as it takes, while whatever slaves live keep serving. A
broken app tries its code again now and then (after ``BROKEN_RETRY``, doubling up to
``BROKEN_RETRY_MAX``), as Kubernetes' CrashLoopBackOff does, so it heals when the cause goes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from cocaine_core.errors import AppLoadError

if TYPE_CHECKING:
    from cocaine_core.backends import BackendEvents
    from cocaine_core.engine.engine import Engine

log = logging.getLogger("cocaine.engine")

#: The code's faults in a row before the app is broken.
START_ATTEMPTS = 3
#: Wait before the n-th retry of a load: BACKOFF * 2 ** (n - 1), at most LOAD_BACKOFF_MAX.
BACKOFF = 0.5
LOAD_BACKOFF_MAX = 30.0
#: A broken app's code is tried again after BROKEN_RETRY, then twice as long, up to the max.
BROKEN_RETRY = 30.0
BROKEN_RETRY_MAX = 300.0


class CodeLoader:
    """Starts an engine's backend until the app's code loads, or the code is shown broken."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: Loads tried, failures in a row (any kind), and the code's own faults in a row.
        self.attempts = 0
        self.failures = 0
        self.code_faults = 0
        self.last_failure: str | None = None
        self.next_try_at: float | None = None
        self._broken_retry = BROKEN_RETRY
        self._task: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """Whether a load is under way in the background."""
        return self._task is not None and not self._task.done()

    async def load_once(self) -> bool:
        """Make a backend and start it; True if the code loaded."""
        engine = self.engine
        self.attempts += 1
        events: BackendEvents = engine.pool
        backend = engine.backend_class(engine.app, engine.endpoint, engine.language.runtime,
                                       events, startup_timeout=engine.config.startup_timeout)
        engine.backend = backend
        try:
            await backend.start()
        except AppLoadError as exc:
            if engine.backend is backend:
                engine.backend = None
            self._failed(exc)
            return False
        self.failures = self.code_faults = 0
        self.last_failure = self.next_try_at = None
        self._broken_retry = BROKEN_RETRY
        return True

    def _failed(self, exc: AppLoadError) -> None:
        self.failures += 1
        self.code_faults = self.code_faults + 1 if exc.code_fault else 0
        self.last_failure = str(exc)
        if self.failures & (self.failures - 1) == 0:  # 1st, 2nd, 4th, 8th…: never a flood
            log.warning("app %s: could not load its code (%d time%s in a row): %s",
                        self.engine.name, self.failures, "" if self.failures == 1 else "s",
                        exc)

    def _delay(self) -> float:
        return min(LOAD_BACKOFF_MAX, BACKOFF * 2 ** min(self.failures - 1, 16))

    async def _wait(self, seconds: float) -> None:
        self.next_try_at = time.monotonic() + seconds
        await asyncio.sleep(seconds)
        self.next_try_at = None

    async def load(self, tries: int | None = None) -> bool:
        """Load the code, retrying with back-off, ``tries`` times at most (None: until it
        loads). True once loaded; False when tries ran out or the code proved broken (the
        engine is then told, and will try again now and then)."""
        tried = 0
        while True:
            if await self.load_once():
                return True
            tried += 1
            if self.code_faults >= START_ATTEMPTS:
                self.engine.mark_broken(self.last_failure or "its code does not load")
                return False
            if tries is not None and tried >= tries:
                return False
            await self._wait(self._delay())

    def keep_loading(self) -> None:
        """Go on loading in the background (after a first round failed for the moment's
        sake, or after the template was lost); the engine hears ``code_loaded``."""
        if self.busy:
            return

        async def run() -> None:
            await self._wait(self._delay() if self.failures else 0.0)
            if await self.load():
                self.engine.code_loaded()

        self._start(run())

    def heal_later(self) -> None:
        """Try a broken app's code again after a while, less often each time it fails."""
        if self.busy:
            return

        async def run() -> None:
            while True:
                await self._wait(self._broken_retry)
                self._broken_retry = min(BROKEN_RETRY_MAX, self._broken_retry * 2)
                if await self.load_once():
                    self.engine.code_loaded()
                    return
                self.engine.broken_reason = self.last_failure

        self._start(run())

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        self._task = asyncio.get_running_loop().create_task(work)
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        # A node's problem (a plugin refusing the template) must be said, not lost in a task.
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("app %s: loading its code failed: %s", self.engine.name, exc,
                      exc_info=exc)

    def cancel(self) -> None:
        """Stop loading in the background (the app stops or restarts)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def reset(self) -> None:
        """Forget past failures (a restart: the code may have changed)."""
        self.cancel()
        self.failures = self.code_faults = 0
        self.last_failure = self.next_try_at = None
        self._broken_retry = BROKEN_RETRY

    def info(self, now: float) -> dict[str, Any]:
        """The loads so far, the last failure and when the next try is, for ``cocaine info``."""
        return {"attempts": self.attempts, "failures-in-a-row": self.failures,
                "last-failure": self.last_failure,
                "next-try-s": None if self.next_try_at is None
                else round(max(0.0, self.next_try_at - now), 3)}
