"""Routing what an app prints to the node's log, without ever blocking the handler."""

from __future__ import annotations

import io
import logging
import sys
from typing import Any

from cocaine_core.backends.output import MAX_LINE
from cocaine_core.errortext import escape


class LineWriter(io.TextIOBase):
    """A text stream that hands each complete line to ``channel.log(stream, line)``."""

    def __init__(self, channel: Any, stream: str) -> None:
        super().__init__()
        self._channel = channel
        self._stream = stream
        self._partial = ""
        self._skipping = False  # the rest of a line already cut, up to its newline

    def writable(self) -> bool:
        """Always writable."""
        return True

    def write(self, text: str) -> int:
        """Buffer ``text``; pass on every complete line. A line longer than ``MAX_LINE`` goes
        as its first ``MAX_LINE + 1`` characters (the node says it was cut) and the rest of it
        is dropped as it comes, never kept."""
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        rest = text
        if self._skipping:
            end = text.find("\n")
            if end < 0:
                return len(text)
            self._skipping, rest = False, text[end + 1:]
        lines = (self._partial + rest).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._channel.log(self._stream, escape(line[:MAX_LINE + 1]))  # \udc80 escaped
        if len(self._partial) > MAX_LINE:
            self._channel.log(self._stream, escape(self._partial[:MAX_LINE + 1]))
            self._partial, self._skipping = "", True
        return len(text)

    def flush(self) -> None:
        """Pass on a partial line (it ends there)."""
        if self._partial:
            self._channel.log(self._stream, escape(self._partial))
            self._partial = ""
        self._skipping = False

    def isatty(self) -> bool:
        """Never a terminal."""
        return False


def capture_output(channel: Any) -> None:
    """Send ``print`` and ``logging`` output of this process to the node's log."""
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout = LineWriter(channel, "stdout")
    sys.stderr = LineWriter(channel, "stderr")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (old_out, old_err):
            handler.setStream(sys.stderr)
