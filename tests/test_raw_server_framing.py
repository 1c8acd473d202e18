"""``raw-server`` framings and endpoints, without a node: frames cut, answers framed."""

from __future__ import annotations

import struct

import pytest

from cocaine_core.drivers.raw_endpoint import Address, parse
from cocaine_core.drivers.raw_framing import FrameTooLarge, decoder, encode, error_answer
from cocaine_core.schema import Invalid


def frames(framing: str, *reads: bytes, max_frame: int = 100, end: bool = False) -> list:
    """The frames a decoder hands out after ``reads`` (and the client's end)."""
    cut = decoder(framing, max_frame)
    out = []
    for data in reads:
        cut.feed(data)
        while (frame := cut.next_frame()) is not None:
            out.append(frame)
    if end:
        cut.end()
        while (frame := cut.next_frame()) is not None:
            out.append(frame)
    return out


def test_line_frames_across_reads():
    """Lines split anywhere across reads; \\r\\n and \\n; an unended last line at the end."""
    assert frames("line", b"ab", b"c\r", b"\nd\n\n", b"e") == [b"abc", b"d", b""]
    assert frames("line", b"ab\nlast", end=True) == [b"ab", b"last"]
    assert frames("line", b"x" * 5000 + b"\n" + b"y\n", max_frame=5000) == [b"x" * 5000, b"y"]


def test_line_too_long():
    """A line over max-frame is refused, with or without its newline come yet."""
    with pytest.raises(FrameTooLarge, match="over max-frame"):
        frames("line", b"12345\n", max_frame=4)
    with pytest.raises(FrameTooLarge):
        frames("line", b"123", b"456", max_frame=4)
    assert frames("line", b"1234\r", b"\n", max_frame=4) == [b"1234"]


def test_length_frames():
    """Prefix and body split anywhere; an empty frame; a prefix over max-frame at once."""
    data = struct.pack(">I", 3) + b"abc" + struct.pack(">I", 0)
    assert frames("length", *[data[i:i + 1] for i in range(len(data))]) == [b"abc", b""]
    with pytest.raises(FrameTooLarge, match="101 bytes"):
        frames("length", struct.pack(">I", 101))


def test_eof_frame():
    """The whole sending is one frame (even empty), handed out once; too much is refused."""
    assert frames("eof", b"a\n", b"b") == []
    assert frames("eof", b"a\n", b"b", end=True) == [b"a\nb"]
    assert frames("eof", end=True) == [b""]
    with pytest.raises(FrameTooLarge):
        frames("eof", b"x" * 60, b"x" * 60)


def test_answers_framed():
    """Answers and ERROR answers in each framing; a line error stays one line."""
    assert encode("line", b"hi") == b"hi\n"
    assert encode("length", b"hi") == b"\0\0\0\2hi"
    assert encode("eof", b"hi") == b"hi"
    assert error_answer("line", 502, "a\r\nb\nc") == b"ERROR 502 a b c"
    assert error_answer("length", 504, "a\nb") == b"ERROR 504 a\nb"


@pytest.mark.parametrize(("text", "address"), [
    ("tcp://127.0.0.1:7000", Address("tcp", "127.0.0.1", 7000)),
    ("tcp://[::1]:0", Address("tcp", "::1", 0)),
    ("tcp://localhost:65535", Address("tcp", "localhost", 65535)),
    ("unix:///run/a.sock", Address("unix", path="/run/a.sock")),
    ("unix:rel/a.sock", Address("unix", path="rel/a.sock")),
])
def test_endpoints_parsed(text, address):
    """Endpoints of every form, and their text back (IPv6 in brackets)."""
    assert parse(text) == address
    if address.scheme == "tcp":
        assert parse(address.text()) == address


@pytest.mark.parametrize(("text", "words"), [
    ("udp://1.2.3.4:5", "must be tcp://HOST:PORT or unix://PATH"),
    ("tcp://1.2.3.4", "port from 1 to 65535"),
    ("tcp://1.2.3.4:65536", "port from 1 to 65535"),
    ("tcp://::1:80", "IPv6 address in brackets"),
    ("tcp://[nope]:80", "not an IPv6 address"),
    ("unix://", "needs a path"),
])
def test_bad_endpoints(text, words):
    """Each bad endpoint says what is wrong."""
    with pytest.raises(Invalid, match=words.replace("[", r"\[").replace("/", "/")):
        parse(text)
