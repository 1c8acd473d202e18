"""The queue between the node and its output (``cocaine_core/cli/log_queue.py``): writers never
wait, what does not fit is dropped and counted, and the count is said once writing resumes."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from cocaine_core.cli.log_queue import (
    DEFAULT_CAPACITY,
    OutputQueue,
    QueuedHandler,
    QueuedStream,
    Sink,
    dropped_note,
    prepare,
)
from cocaine_core.testing import wait_until


class GatedStream(io.StringIO):
    """A stream without a file descriptor whose writes wait until the gate opens (a pipe
    nobody reads), and which remembers how many writes started."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.writes = 0

    def fileno(self) -> int:
        raise io.UnsupportedOperation("fileno")

    def write(self, text: str) -> int:
        self.writes += 1
        self.gate.wait()
        return super().write(text)


def render(record: logging.LogRecord) -> str:
    return f"{record.levelname} {record.getMessage()}\n"


@pytest.fixture
def gated() -> Iterator[tuple[GatedStream, OutputQueue, logging.Logger]]:
    """A queue of capacity 100 in front of a stream that blocks until ``stream.gate`` is set,
    and a logger that uses it; the gate is opened and the queue closed after the test."""
    stream = GatedStream()
    output = OutputQueue(render, Sink(stream), capacity=100)
    handler = QueuedHandler(output)
    logger = logging.getLogger(f"test.log_queue.{id(output)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield stream, output, logger
    stream.gate.set()
    logger.removeHandler(handler)
    handler.close()


def test_logging_to_a_stream_that_blocks_returns_at_once(gated) -> None:
    stream, output, logger = gated
    logger.info("first")
    wait_until(lambda: stream.writes, timeout=5, message="the writer to block")

    def log_many() -> None:
        for number in range(10_000):
            logger.info("line %d", number)

    logging_thread = threading.Thread(target=log_many)
    logging_thread.start()
    logging_thread.join(60)  # ~0.1 s: the bound only keeps a broken queue from hanging
    assert not logging_thread.is_alive() and not stream.gate.is_set()
    assert stream.writes == 1  # the writer still waits on its first write
    assert output.dropped_total == 10_000 - 100  # the queue holds 100


def test_the_drop_count_is_said_once_writing_resumes(gated) -> None:
    stream, output, logger = gated
    logger.info("before")
    wait_until(lambda: stream.writes, timeout=5, message="the writer to block")
    for number in range(250):
        logger.info("line %d", number)
    assert output.dropped_total == 150
    stream.gate.set()
    wait_until(lambda: "dropped" in stream.getvalue(), timeout=5, message="the note")
    logger.info("after")
    assert output.close(timeout=5)
    lines = stream.getvalue().splitlines()
    assert lines == ["INFO before", *(f"INFO line {n}" for n in range(100)),
                     f"WARNING {dropped_note(150)}", "INFO after"]
    assert dropped_note(150) == ("[150 log lines dropped: the node's output was not read fast "
                                 "enough]")


def test_dropping_goes_on_until_the_queue_is_half_empty() -> None:
    # One note for a stall, not a note per line when the reader is merely slow.
    stream = GatedStream()
    output = OutputQueue(render, Sink(stream), capacity=1000)
    output.put_text(output.log_sink, "first\n")
    wait_until(lambda: stream.writes, timeout=5, message="the writer to block")
    for number in range(1001):
        output.put_record(logging.makeLogRecord({"msg": f"line {number}"}))
    assert output.dropped_total == 1
    # The writer takes at most 256 items at a time: the queue is still more than half full.
    assert not output.put_record(logging.makeLogRecord({"msg": "refused"}))
    stream.gate.set()
    assert output.close(timeout=5)
    text = stream.getvalue()
    assert text.count("dropped") == 1 and dropped_note(2) in text
    assert "refused" not in text and "line 999" in text


def test_records_and_text_keep_their_order() -> None:
    stream = io.StringIO()
    output = OutputQueue(render, Sink(stream))
    handler = QueuedHandler(output)
    err = QueuedStream(output, output.log_sink)
    for number in range(3):
        handler.handle(logging.makeLogRecord({"msg": f"record {number}",
                                              "levelname": "INFO"}))
        print(f"print {number}", file=err)
    assert output.close(timeout=5)
    assert stream.getvalue().splitlines() == [
        "INFO record 0", "print 0", "INFO record 1", "print 1", "INFO record 2", "print 2"]


def test_close_waits_for_a_stalled_pipe_only_as_long_as_it_is_told() -> None:
    read_end, write_end = os.pipe()
    try:
        output = OutputQueue(render, Sink(os.fdopen(write_end, "w", closefd=False)))
        for number in range(DEFAULT_CAPACITY):
            output.put_text(output.log_sink, f"{number:0100d}\n")  # far more than a pipe
        started = time.monotonic()
        assert output.close(timeout=0.3) is False
        assert 0.25 < time.monotonic() - started < 2.0
        assert not output.put_text(output.log_sink, "after close\n")
    finally:
        os.close(read_end)  # the writer's write fails (EPIPE): its thread ends
        output._thread.join(5)
        os.close(write_end)


def test_a_reader_that_left_is_no_error() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    sink = Sink(os.fdopen(write_end, "w", closefd=False))
    output = OutputQueue(render, sink)
    output.put_text(sink, "nobody hears this\n")
    output.put_text(sink, "nor this\n")
    assert output.close(timeout=5)
    assert sink.broken
    os.close(write_end)


def test_a_non_blocking_descriptor_still_gets_everything() -> None:
    read_end, write_end = os.pipe()
    flags = fcntl.fcntl(write_end, fcntl.F_GETFL)
    fcntl.fcntl(write_end, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    sink = Sink(os.fdopen(write_end, "w", closefd=False))
    output = OutputQueue(render, sink)
    text = "".join(f"{number:099d}\n" for number in range(2000))  # 200 KB: EAGAIN at 64 KiB
    output.put_text(sink, text)
    received = bytearray()
    reader = threading.Thread(target=lambda: received.extend(iter_read(read_end)))
    reader.start()
    try:
        assert output.close(timeout=10)
    finally:
        os.close(write_end)
        reader.join(10)
        os.close(read_end)
    assert received.decode() == text


def iter_read(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_record_is_made_text_when_it_is_logged() -> None:
    items = ["a"]
    record = logging.makeLogRecord({"msg": "items %s", "args": (items,)})
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    prepared = prepare(record)
    items.append("b")  # later changes do not show
    assert prepared.msg == "items ['a']" and prepared.args is None
    assert prepared.exc_info is None
    assert prepared.exc_text and "ValueError: boom" in prepared.exc_text
    assert record.exc_info is not None  # the original is left as it was


def test_a_bad_log_call_is_a_message_not_an_error() -> None:
    record = logging.makeLogRecord({"msg": "%d things", "args": ("many",)})
    assert "a bad log call" in prepare(record).msg


def test_the_stand_in_stream_looks_like_the_stream_it_stands_for() -> None:
    read_end, write_end = os.pipe()
    try:
        sink = Sink(os.fdopen(write_end, "w", encoding="utf-8", closefd=False))
        output = OutputQueue(render, sink)
        stream = QueuedStream(output, sink)
        assert stream.fileno() == write_end and not stream.isatty()
        assert stream.encoding == "utf-8" and stream.writable()
        with pytest.raises(TypeError):
            stream.write(b"bytes")  # type: ignore[arg-type]
        assert stream.write("é\n") == 2
        stream.flush()
        assert output.close(timeout=5)
        assert os.read(read_end, 100) == "é\n".encode()
    finally:
        os.close(read_end)
        os.close(write_end)
