"""Output that never blocks the node: a bounded queue, drained by a writer thread.

A node's stdout and stderr may be a pipe nobody reads (a supervisor that stopped reading, a
``| less`` left open): once the pipe's buffer is full, every write waits, and a write from the
event loop would stop the node, signals included. So log records and whatever Python code
writes to ``sys.stdout`` or ``sys.stderr`` only join a bounded queue; a daemon thread writes
them out, in order. When the queue is full, what comes is dropped and counted; once writing has
resumed (the queue half empty again), one warning says how many lines were dropped. (A reader
that is merely slow, or rich rendering a burst on a terminal, drops lines the same way.)

The thread writes with ``os.write`` on the file descriptor, holding no lock that the
interpreter needs at exit: a thread stuck on a full pipe cannot stop the process from ending.
At exit the queue gets about a second to drain, never more.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import io
import logging
import os
import threading
from collections.abc import Callable
from typing import TextIO

from cocaine_core import fdwait

#: Turns a prepared log record into the text written (one line, or more for a traceback).
Render = Callable[[logging.LogRecord], str]

#: Most records or writes queued before more are dropped.
DEFAULT_CAPACITY = 10_000
#: Most items the writer takes at once (what it holds is beyond the queue's bound).
BATCH = 256
#: Seconds the queue gets to drain at exit.
CLOSE_TIMEOUT = 1.0
#: The logger that says how many lines were dropped.
NOTE_LOGGER = "cocaine.log"


def dropped_note(count: int) -> str:
    """The line that says ``count`` lines were dropped."""
    return f"[{count} log lines dropped: the node's output was not read fast enough]"


class Sink:
    """Where queued text goes: a file descriptor, or a stream that has none (a test's capture).

    Only the writer thread writes to a sink, and a write never raises: a reader that went away
    (EPIPE) or a closed descriptor makes the sink discard what follows.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.encoding = getattr(stream, "encoding", None) or "utf-8"
        self.broken = stream is None  # a process started without this stream
        self.fd: int | None = None
        with contextlib.suppress(Exception):
            self.fd = stream.fileno() if stream is not None else None

    def isatty(self) -> bool:
        """Whether the sink is a terminal."""
        try:
            if self.fd is not None:
                return os.isatty(self.fd)
            return self.stream is not None and self.stream.isatty()
        except Exception:
            return False

    def write(self, text: str) -> None:
        """Write ``text`` whole, however long it takes; never raises."""
        if self.broken or not text:
            return
        if self.fd is None:
            try:
                assert self.stream is not None
                self.stream.write(text)
                self.stream.flush()
            except Exception:  # closed, or not a stream after all: nothing more goes there
                self.broken = True
            return
        view = memoryview(text.encode(self.encoding, "backslashreplace"))
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:  # someone made the descriptor non-blocking: wait here
                fdwait.wait([], [self.fd], 1.0)
            except OSError:
                self.broken = True
                return


class OutputQueue:
    """Log records and text on their way to sinks, in order, written by a daemon thread."""

    def __init__(self, render: Render, log_sink: Sink, capacity: int = DEFAULT_CAPACITY) -> None:
        self.render = render
        self.log_sink = log_sink
        self.capacity = capacity
        #: Lines dropped since the queue was made.
        self.dropped_total = 0
        self._items: collections.deque[tuple[Sink, str | logging.LogRecord] | None] = \
            collections.deque()
        self._changed = threading.Condition(threading.Lock())
        self._dropping = False
        self._dropped = 0  # lines dropped since the last note
        self._closed = False
        self._thread = threading.Thread(target=self._write_out, name="cocaine-log-writer",
                                        daemon=True)
        self._thread.start()

    def put_record(self, record: logging.LogRecord) -> bool:
        """Queue a prepared record for the log sink; False if it was dropped."""
        return self._put((self.log_sink, record), 1)

    def put_text(self, sink: Sink, text: str) -> bool:
        """Queue text for ``sink``; False if it was dropped."""
        return self._put((sink, text), text.count("\n"))

    def _put(self, item: tuple[Sink, str | logging.LogRecord], lines: int) -> bool:
        with self._changed:
            if self._closed:
                return False
            if self._dropping or len(self._items) >= self.capacity:
                # Once full, drop until the writer has caught up: a note per line is noise.
                self._dropping = True
                self._dropped += lines
                self.dropped_total += lines
                return False
            self._items.append(item)
            self._changed.notify()
            return True

    def close(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Stop taking output; give the writer ``timeout`` seconds to write what is queued.

        Returns whether everything was written: the writer may be stuck on a full pipe, and
        then the process ends without it (the thread is a daemon).
        """
        with self._changed:
            if not self._closed:
                self._closed = True
                if self._dropped:
                    self._items.append((self.log_sink, self._note(self._dropped)))
                    self._dropping, self._dropped = False, 0
                self._items.append(None)
                self._changed.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the writer thread ---------------------------------------------------------------------

    def _write_out(self) -> None:
        while True:
            with self._changed:
                while not self._items:
                    self._changed.wait()
                batch = [self._items.popleft() for _ in range(min(BATCH, len(self._items)))]
            done = self._write_batch(batch)
            with self._changed:
                if self._dropping and len(self._items) <= self.capacity // 2:
                    # Writing goes on: say what was lost, in its place, then take output again.
                    if self._dropped:
                        self._items.append((self.log_sink, self._note(self._dropped)))
                    self._dropping, self._dropped = False, 0
            if done:
                return

    def _write_batch(self, batch: list[tuple[Sink, str | logging.LogRecord] | None]) -> bool:
        # Consecutive items for one sink become one write.
        run: list[str] = []
        sink: Sink | None = None
        for item in batch:
            if item is None or item[0] is not sink:
                if sink is not None:
                    sink.write("".join(run))
                if item is None:
                    return True
                sink, run = item[0], []
            run.append(item[1] if isinstance(item[1], str) else self._render(item[1]))
        if sink is not None:
            sink.write("".join(run))
        return False

    def _render(self, record: logging.LogRecord) -> str:
        try:
            return self.render(record)
        except Exception as exc:  # a bug in a formatter must not end the writer
            return f"(a log record could not be written: {exc!r}; its message: {record.msg})\n"

    def _note(self, count: int) -> logging.LogRecord:
        return logging.LogRecord(NOTE_LOGGER, logging.WARNING, __file__, 0, dropped_note(count),
                                 None, None)


class QueuedHandler(logging.Handler):
    """A logging handler that never blocks: records join an ``OutputQueue``."""

    def __init__(self, output: OutputQueue) -> None:
        super().__init__()
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record``, its message and traceback already made text (or drop it)."""
        self.output.put_record(prepare(record))

    def close(self) -> None:
        """Give the queue a bounded time to drain (``logging.shutdown`` calls this at exit)."""
        self.output.close()
        super().close()


def prepare(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of ``record`` safe to render later, in another thread: its message is merged
    with its arguments and its traceback made text, now, while they are what they were."""
    prepared = copy.copy(record)
    try:
        prepared.msg = record.getMessage()
    except Exception as exc:  # what logging's handleError would print, as the message
        prepared.msg = f"{record.msg!r} % {record.args!r} (a bad log call: {exc!r})"
    prepared.args = None
    if record.exc_info:
        prepared.exc_text = record.exc_text or _formatter.formatException(record.exc_info)
        prepared.exc_info = None
    return prepared


_formatter = logging.Formatter()


class QueuedStream(io.TextIOBase):
    """A stand-in for ``sys.stdout`` or ``sys.stderr`` whose writes join an ``OutputQueue``."""

    def __init__(self, output: OutputQueue, sink: Sink) -> None:
        super().__init__()
        self.output = output
        self.sink = sink

    @property
    def encoding(self) -> str:  # type: ignore[override]
        """The encoding of the stream it stands for."""
        return self.sink.encoding

    @property
    def errors(self) -> str:  # type: ignore[override]
        """Characters the encoding cannot write become escapes."""
        return "backslashreplace"

    def write(self, text: str) -> int:
        """Queue ``text`` (or drop it, when the queue is full); returns at once."""
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if text:
            self.output.put_text(self.sink, text)
        return len(text)

    def flush(self) -> None:
        """Nothing to do: the writer thread writes as soon as the sink takes it."""

    def writable(self) -> bool:
        """Always."""
        return True

    def isatty(self) -> bool:
        """Whether the stream it stands for is a terminal."""
        return self.sink.isatty()

    def fileno(self) -> int:
        """The descriptor of the stream it stands for (a child process may inherit it)."""
        if self.sink.fd is None:
            raise io.UnsupportedOperation("fileno")
        return self.sink.fd
