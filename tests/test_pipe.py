"""The node-template pipe (``backends/pipe.py``): never blocks, bounded, msgpack only."""

from __future__ import annotations

import socket
import struct

import pytest

from cocaine_core.backends.pipe import MAX_FRAME, FramedPipe, PipeFull


def test_a_reader_that_never_reads_fills_the_buffer_and_the_writer_is_told_not_blocked():
    ours, theirs = socket.socketpair()
    try:
        pipe = FramedPipe(ours, max_out=64 * 1024)
        with pytest.raises(PipeFull):
            for number in range(1_000_000):  # the kernel's buffer, then ours, fill up
                pipe.send(["fork", f"app.{number}"])
        assert 0 < pipe.pending <= 64 * 1024
        reader = FramedPipe(theirs)
        received: list = []
        while pipe.pending or len(received) < number:
            pipe.flush()
            received += reader.receive()
        assert received[:2] == [["fork", "app.0"], ["fork", "app.1"]]
        assert len(received) == number
    finally:
        ours.close()
        theirs.close()


def test_a_frame_past_the_bound_is_refused_and_eof_is_said():
    ours, theirs = socket.socketpair()
    reader = FramedPipe(theirs)
    ours.sendall(struct.pack("!I", MAX_FRAME + 1))
    with pytest.raises(ValueError, match="frame"):
        reader.receive()
    ours.close()
    reader._in.clear()
    with pytest.raises(EOFError):
        reader.receive()
    reader.close()
