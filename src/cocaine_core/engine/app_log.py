"""What an app's slaves send into the node's log: escaped, tagged, bounded and counted.

Two things a slave sends reach the node's log: the lines its app prints (LOG messages, from
any language's runtime) and a failed handler's message and traceback (ERROR). Both come from
the app, so both are written here as the node's own lines never are: every line starts with
``[app/slave]``, and every character that is not printable (newline, ``\\r``, NUL, a terminal
escape, a Unicode line separator) is written as an escape. A traceback's lines after the first
each start with ``[app/slave] | ``, so no line of it can pass for a line of the node's.

Printed lines have the budget of ``backends/output.py`` (the raw fd path), per app and
stream: lines are cut at ``MAX_LINE`` bytes (and said so), and past ``LINES_PER_SECOND``
lines or ``BYTES_PER_SECOND`` bytes a second (twice that in a burst) they are dropped,
counted, and the count is said at most once per ``NOTICE_INTERVAL`` and when the app's last
slave exits. Lines a slave itself dropped (its buffer was full, or its own budget spent) are
counted in the same notice (LOG's optional ``dropped`` field). Failed handlers' tracebacks take
from the stderr budget too: a handler failing in a loop cannot flood the log either.
"""

from __future__ import annotations

import asyncio
import logging
import time

from cocaine_core.backends.output import (
    BYTES_PER_SECOND,
    LINES_PER_SECOND,
    MAX_LINE,
    NOTICE_INTERVAL,
    OutputBudget,
)
from cocaine_core.errortext import MESSAGE_LIMIT, TRACEBACK_LIMIT, cut, printable

app_log = logging.getLogger("cocaine.app")

STREAMS = ("stdout", "stderr")


def cut_line(text: str) -> tuple[str, int, bool]:
    """``text`` cut to at most ``MAX_LINE`` UTF-8 bytes, its size in bytes, and whether it
    was cut."""
    if len(text) <= MAX_LINE and text.isascii():
        return text, len(text), False
    data = text[:MAX_LINE + 1].encode("utf-8", "backslashreplace")
    if len(data) <= MAX_LINE:
        return text, len(data), False
    return data[:MAX_LINE].decode("utf-8", "ignore"), MAX_LINE, True


class _Stream:
    """The budget and counts of one stream of one app's printed lines."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.level = logging.WARNING if name == "stderr" else logging.INFO
        self.budget = OutputBudget()
        #: Lines logged, dropped (all told), not yet said, and cut to ``MAX_LINE``.
        self.logged = self.dropped = self.unsaid = self.cut = 0


class AppLog:
    """The node's log as one app's slaves reach it (one per engine, kept by its pool)."""

    def __init__(self, app: str) -> None:
        self.app = app
        self.streams = {name: _Stream(name) for name in STREAMS}
        self._notice: asyncio.TimerHandle | None = None
        self._next_notice = 0.0

    def line(self, slave: str, stream: str, text: str, dropped: int = 0) -> None:
        """A line slave ``slave`` printed on ``stream`` (anything but ``stdout`` counts as
        ``stderr``), and ``dropped`` lines it dropped before it: logged within the budget."""
        out = self.streams["stdout" if stream == "stdout" else "stderr"]
        if dropped > 0:
            self._drop(out, dropped)
        if not text and dropped > 0:
            return  # only a count
        text, size, was_cut = cut_line(text)
        if not out.budget.allows(size):
            self._drop(out, 1)
            return
        text = printable(text)
        if was_cut:
            out.cut += 1
            text += f" [cut: longer than {MAX_LINE} bytes]"
        out.logged += 1
        app_log.log(out.level, "[%s/%s] %s", self.app, slave, text)

    def failure(self, slave: str, job_id: int, code: int, message: str,
                traceback: str) -> None:
        """A handler failed: its message (one line, escaped) and traceback (each line escaped
        and tagged ``[app/slave] | ``), within the stderr budget."""
        message = cut(message, MESSAGE_LIMIT)
        traceback = cut(traceback, TRACEBACK_LIMIT, keep_end=True).rstrip()
        lines = traceback.split("\n")
        out = self.streams["stderr"]
        size = len(message) + sum(len(line) for line in lines)
        if not out.budget.allows(size, lines=1 + len(lines)):
            self._drop(out, 1 + len(lines))
            return
        first_line = message.split("\n", 1)[0][:200]
        said = (f" {printable(message)}" if first_line not in traceback[-2 * MESSAGE_LIMIT:]
                else "")
        tag = f"[{self.app}/{slave}]"
        body = "".join(f"\n{tag} | {printable(line)}" for line in lines)
        out.logged += 1 + len(lines)
        app_log.error("%s job %s failed with %s:%s%s", tag, job_id, code, said, body)

    def _drop(self, out: _Stream, count: int) -> None:
        out.dropped += count
        out.unsaid += count
        if self._notice is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a caller outside the engine): say it by time
            if time.monotonic() >= self._next_notice:
                self.say_dropped()
            return
        self._notice = loop.call_later(NOTICE_INTERVAL, self.say_dropped)

    def say_dropped(self) -> None:
        """Log the count of lines dropped and not yet said, one notice per stream."""
        if self._notice is not None:
            self._notice.cancel()
            self._notice = None
        self._next_notice = time.monotonic() + NOTICE_INTERVAL
        for out in self.streams.values():
            if out.unsaid:
                app_log.warning("[%s] [%d printed lines of %s from app %s dropped: it printed "
                                "more than %d lines or %d KiB a second]", self.app, out.unsaid,
                                out.name, self.app, LINES_PER_SECOND, BYTES_PER_SECOND // 1024)
                out.unsaid = 0

    def info(self) -> dict[str, dict[str, int]]:
        """Per stream: lines logged, dropped, and cut to ``MAX_LINE``."""
        return {out.name: {"logged": out.logged, "dropped": out.dropped, "cut": out.cut}
                for out in self.streams.values()}
