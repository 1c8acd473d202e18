"""The worker's last lines of output, for a failure's report: its stdout and stderr, read by a
thread each, and the LOG messages it sends, each line cut to ``LINE_LIMIT`` characters and the
last ``TAIL_LINES`` kept."""

from __future__ import annotations

import collections
import contextlib
import threading
from typing import IO

#: Lines of the worker's output (and LOG messages) kept for a failure's report.
TAIL_LINES = 200
#: Longest line kept, in characters.
LINE_LIMIT = 500


class OutputTail:
    """The last lines a worker printed or sent as LOG, each tagged with where it came from."""

    def __init__(self) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._lock = threading.Lock()
        self._readers: list[threading.Thread] = []

    def follow(self, name: str, pipe: IO[bytes]) -> None:
        """Read ``pipe`` (the worker's ``name``: stdout or stderr) line by line, on a daemon
        thread, until it ends."""
        reader = threading.Thread(target=self._read, args=(name, pipe),
                                  name=f"conformance-{name}", daemon=True)
        reader.start()
        self._readers.append(reader)

    def _read(self, name: str, pipe: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            while line := pipe.readline(64 * 1024):  # bounded: a line without end is cut
                self.keep(name, line.decode("utf-8", "backslashreplace").rstrip("\n"))

    def keep(self, name: str, text: str) -> None:
        """Keep one line, tagged ``[name]``, cut to ``LINE_LIMIT`` characters."""
        if len(text) > LINE_LIMIT:
            text = text[:LINE_LIMIT] + f"… [{len(text) - LINE_LIMIT} more characters]"
        with self._lock:
            self.lines.append(f"[{name}] {text}")

    def last(self, lines: int) -> list[str]:
        """The last ``lines`` lines kept."""
        with self._lock:
            return list(self.lines)[-lines:]

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds per reader for it to end; whether all have."""
        for reader in self._readers:
            reader.join(timeout=timeout)
        return not any(reader.is_alive() for reader in self._readers)
