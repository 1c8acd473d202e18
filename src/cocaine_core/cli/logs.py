"""Logging for commands that host apps: rich in a terminal, plain or JSON lines otherwise.

Nothing the node writes may block its event loop, so ``setup_logging`` puts a bounded queue
(``log_queue.py``) between the node and its stdout and stderr: log records, and whatever Python
code writes to ``sys.stdout`` or ``sys.stderr`` (an error message, a warning, a stray print),
are written out by a thread, and dropped and counted when nobody reads them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
from typing import TextIO, cast

from cocaine_core.cli.log_queue import OutputQueue, QueuedHandler, QueuedStream, Render, Sink
from cocaine_core.errors import NodeError

PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        data = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(),
                "logger": record.name, "message": record.getMessage()}
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["traceback"] = record.exc_text
        return json.dumps(data)


#: The levels and formats ``setup_logging`` takes.
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("auto", "rich", "plain", "json")


def setup_logging(level: str = "info", fmt: str = "auto") -> OutputQueue:
    """Send cocaine's logs to stderr: ``fmt`` is auto (rich on a terminal), plain or json.

    From here on nothing written through logging, ``sys.stdout`` or ``sys.stderr`` waits for
    the reader: it is queued (bounded), written by a thread, and flushed at exit for at most a
    second. Returns the queue (it counts what it dropped). An unknown level or format is a
    ``NodeError`` naming the choices, before anything changes.
    """
    if level.upper() not in LEVELS or fmt not in FORMATS:
        bad, choices = ((f"log level {level!r}", LEVELS) if level.upper() not in LEVELS
                        else (f"log format {fmt!r}", FORMATS))
        raise NodeError(f"unknown {bad}; choose one of: {', '.join(choices).lower()}")
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, QueuedHandler):
            old.close()
    stdout, stderr = _unwrapped(sys.stdout), _unwrapped(sys.stderr)
    for stream in (stdout, stderr):
        if stream is not None:
            with contextlib.suppress(Exception):  # what was written before keeps its place
                stream.flush()
    log_sink = Sink(stderr)
    if fmt == "auto":
        fmt = "rich" if log_sink.isatty() else "plain"
    output = OutputQueue(_renderer(fmt, log_sink), log_sink)
    sys.stderr = cast(TextIO, QueuedStream(output, log_sink))
    if stdout is not None:
        sys.stdout = cast(TextIO, QueuedStream(output, Sink(stdout)))
    logging.captureWarnings(True)
    root.addHandler(QueuedHandler(output))
    root.setLevel(level.upper())
    return output


def _unwrapped(stream: TextIO | None) -> TextIO | None:
    # setup_logging again (a test): the real stream, not the stand-in of the last call.
    return stream.sink.stream if isinstance(stream, QueuedStream) else stream


def _renderer(fmt: str, sink: Sink) -> Render:
    if fmt == "rich":
        return _rich_renderer(sink.isatty())
    formatter = JsonFormatter() if fmt == "json" else logging.Formatter(PLAIN_FORMAT)
    return lambda record: formatter.format(record) + "\n"


def _rich_renderer(terminal: bool) -> Render:
    # rich's own handler, rendering into a string in the writer thread: the same look as
    # ever, written like every other line.
    from rich.console import Console
    from rich.logging import RichHandler

    console = Console(file=io.StringIO(), force_terminal=terminal or None)
    handler = RichHandler(console=console, show_path=False, markup=False,
                          rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s", datefmt="%H:%M:%S"))

    def render(record: logging.LogRecord) -> str:
        with console.capture() as capture:
            handler.emit(record)
        return capture.get()

    return render
