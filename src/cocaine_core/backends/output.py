"""What an app writes to its stdout and stderr file descriptors, into the node's log, tagged.

The template's fds 1 and 2 (hence every slave's, and those of any process they start) are
pipes that the node reads on its loop, never blocking. Each complete line is logged through
``cocaine.app`` as ``[app] line``, with control characters escaped, so nothing an app writes
can pass for a line of the node's own. Per app and stream, lines are at most ``MAX_LINE``
bytes (the rest is cut and said), and a budget of ``LINES_PER_SECOND`` lines and
``BYTES_PER_SECOND`` bytes (twice that in a burst) holds the flood an app can make: past it,
lines are read and dropped, counted, and the count is said once per ``NOTICE_INTERVAL``.
The python runtime's ``print`` goes another way (the slave channel's LOG messages, tagged
with the slave); this catches everything else: ``os.write(1, ...)``, C libraries, children.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from cocaine_core.errortext import printable as escape

app_log = logging.getLogger("cocaine.app")

#: Longest line logged, in bytes; the rest of a longer one is dropped and said.
MAX_LINE = 8192
#: The steady rate of lines and bytes an app's stream may log; a burst may reach twice it.
LINES_PER_SECOND = 1000
BYTES_PER_SECOND = 2**20
#: Seconds between two notices of dropped lines.
NOTICE_INTERVAL = 5.0
#: Bytes read per wake-up, at most (the loop serves others between reads).
READ_CHUNK = 64 * 2**10


class OutputBudget:
    """A token bucket of lines and bytes per second."""

    def __init__(self, lines: float = LINES_PER_SECOND, size: float = BYTES_PER_SECOND) -> None:
        self.rate_lines, self.rate_bytes = lines, size
        self.lines, self.bytes = 2 * lines, 2 * size
        self._at = time.monotonic()

    def allows(self, size: int, lines: int = 1) -> bool:
        """Take ``lines`` lines of ``size`` bytes from the budget; False (nothing taken) if
        spent. Never more than a burst is asked for: a bigger ask is taken as a burst."""
        lines, size = min(lines, int(2 * self.rate_lines)), min(size, int(2 * self.rate_bytes))
        now = time.monotonic()
        elapsed, self._at = now - self._at, now
        self.lines = min(2 * self.rate_lines, self.lines + elapsed * self.rate_lines)
        self.bytes = min(2 * self.rate_bytes, self.bytes + elapsed * self.rate_bytes)
        if self.lines < lines or self.bytes < size:
            return False
        self.lines -= lines
        self.bytes -= size
        return True


class AppOutput:
    """Reads one stream (``stdout`` or ``stderr``) of an app's processes into the log."""

    def __init__(self, app: str, stream: str, fd: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.app, self.stream, self.fd, self.loop = app, stream, fd, loop
        self.level = logging.WARNING if stream == "stderr" else logging.INFO
        self.budget = OutputBudget()
        #: Lines logged, lines dropped (all told), and drops not yet said.
        self.logged = self.dropped = self.unsaid = 0
        self.cut = 0
        self._partial = bytearray()
        self._skipping = False
        self._notice: asyncio.TimerHandle | None = None
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self._take(data)

    def _take(self, data: bytes) -> None:
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            if self._partial or self._skipping:
                self._partial += data[start:end]
                self._line(bytes(self._partial))
                self._partial.clear()
            else:
                self._line(data[start:end])
            start = end + 1
        if self._skipping:
            return
        self._partial += data[start:]
        if len(self._partial) > MAX_LINE:
            self._line(bytes(self._partial))  # said now, cut; its rest is skipped to \n
            self._partial.clear()
            self._skipping = True

    def _line(self, raw: bytes) -> None:
        if self._skipping:
            self._skipping = False
            return
        extra = len(raw) - MAX_LINE
        if not self.budget.allows(min(len(raw), MAX_LINE)):
            self._drop()
            return
        text = escape(raw[:MAX_LINE].decode("utf-8", "backslashreplace"))
        if extra > 0:
            self.cut += 1
            text += f" [cut: longer than {MAX_LINE} bytes]"
        self.logged += 1
        app_log.log(self.level, "[%s] %s", self.app, text)

    def _drop(self) -> None:
        self.dropped += 1
        self.unsaid += 1
        if self._notice is None:
            self._notice = self.loop.call_later(NOTICE_INTERVAL, self._say_dropped)

    def _say_dropped(self) -> None:
        self._notice = None
        if self.unsaid:
            app_log.warning("[%s] [%d lines of %s from app %s dropped: it wrote more than "
                            "%d lines or %d KiB a second]", self.app, self.unsaid,
                            self.stream, self.app, LINES_PER_SECOND, BYTES_PER_SECOND // 1024)
            self.unsaid = 0

    def drain(self) -> None:
        """Read what is already in the pipe, without waiting for more."""
        with contextlib.suppress(OSError):
            for _ in range(64):
                data = os.read(self.fd, READ_CHUNK)
                if not data:
                    break
                self._take(data)

    def close(self) -> None:
        """Stop reading: log a partial last line and the drops not yet said, close the fd."""
        if self.fd < 0:
            return
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.fd)
        if self._partial and not self._skipping:
            self._line(bytes(self._partial))
        self._partial.clear()
        if self._notice is not None:
            self._notice.cancel()
        self._say_dropped()
        os.close(self.fd)
        self.fd = -1

    def info(self) -> dict[str, int]:
        """Lines logged, dropped, and cut to ``MAX_LINE``."""
        return {"logged": self.logged, "dropped": self.dropped, "cut": self.cut}
