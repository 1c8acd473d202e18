"""A log that says a repeated thing once in a while instead of once per message.

A sink fed oversized messages, or a server whose clients keep sending bad requests or
vanishing, would otherwise write a line per message. The first line of each kind is always
written at once. Drivers of every distribution use it (``from cocaine_core.ratelog import
RateLimitedLog``).
"""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """Writes each kind of line at most once per ``interval`` seconds, counting the others."""

    def __init__(self, logger: logging.Logger, prefix: str = "", interval: float = 10.0) -> None:
        self.logger = logger
        self.prefix = prefix
        self.interval = interval
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def log(self, level: int, kind: str, message: str) -> None:
        """Write ``message`` unless a line of the same ``kind`` was written moments ago."""
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return
        skipped = self._skipped.pop(kind, 0)
        self._last[kind] = now
        if skipped and last is not None:
            message += f" ({skipped} more like this in the last {now - last:.0f} s)"
        self.logger.log(level, "%s%s", self.prefix, message)

    def warning(self, kind: str, message: str) -> None:
        """``log`` at WARNING."""
        self.log(logging.WARNING, kind, message)

    def info(self, kind: str, message: str) -> None:
        """``log`` at INFO."""
        self.log(logging.INFO, kind, message)
