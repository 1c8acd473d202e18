"""``LineWriter``: what an app prints, handed on line by line to the slave channel."""

from __future__ import annotations

import pytest
from cocaine_python.output import MAX_LINE, LineWriter


class Channel:
    """Records ``log(stream, line)`` calls, as ``SlaveChannel.log`` would forward them."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def log(self, stream: str, text: str) -> None:
        self.lines.append((stream, text))


def test_complete_lines_go_at_once_partial_ones_on_flush():
    channel = Channel()
    out = LineWriter(channel, "stdout")
    assert out.write("one\ntw") == len("one\ntw")
    assert channel.lines == [("stdout", "one")]
    out.write("o\n\nthree")
    assert channel.lines == [("stdout", "one"), ("stdout", "two"), ("stdout", "")]
    out.flush()
    assert channel.lines[-1] == ("stdout", "three")
    out.flush()  # nothing left: nothing more
    assert len(channel.lines) == 4


def test_print_works_through_it():
    channel = Channel()
    print("a", 1, sep="-", file=LineWriter(channel, "stderr"))
    assert channel.lines == [("stderr", "a-1")]


def test_an_endless_line_is_cut_not_kept():
    channel = Channel()
    out = LineWriter(channel, "stdout")
    out.write("x" * (2 * MAX_LINE + 5))  # one piece, one char over (the node says: cut)
    assert channel.lines == [("stdout", "x" * (MAX_LINE + 1))]
    out.write("x" * 5 * MAX_LINE)  # the rest of the line is dropped as it comes
    out.write("xx\nnext\n" + "y" * (MAX_LINE + 9) + "\n")
    assert channel.lines[1:] == [("stdout", "next"), ("stdout", "y" * (MAX_LINE + 1))]
    out.write("z" * (MAX_LINE + 1))
    out.flush()  # ends the line: what follows is a new one
    out.write("after\n")
    assert channel.lines[-1] == ("stdout", "after")


def test_it_is_a_text_stream():
    out = LineWriter(Channel(), "stdout")
    assert out.writable() and not out.isatty()
    with pytest.raises(TypeError, match="write\\(\\) argument must be str, not bytes"):
        out.write(b"bytes")  # type: ignore[arg-type]
