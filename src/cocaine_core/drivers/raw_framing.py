"""The ``raw-server`` framings: cutting a connection's bytes into frames, and framing answers.

Three framings:

- ``line``: a frame ends with ``\\n`` (a ``\\r`` before it is dropped too); an answer is written
  followed by ``\\n``. A last line the client ends its sending without ``\\n`` is a frame too.
- ``length``: a frame is a 4-byte big-endian length, then that many bytes; so is an answer.
- ``eof``: everything the client sends until it closes its sending side is one frame; the
  answer is written as is, and then the connection is closed.

A decoder is fed what is read and hands frames out one at a time (``next_frame``), so a
connection that may not take more frames leaves the rest unread in the decoder's buffer (at
most one read plus ``max-frame``). A frame over ``max-frame`` raises ``FrameTooLarge``.
"""

from __future__ import annotations

import struct

FRAMINGS = ("line", "length", "eof")
#: The length prefix of ``length`` framing: 4 bytes, big-endian, unsigned.
PREFIX = struct.Struct(">I")
#: Largest answer the 4-byte prefix can carry.
MAX_PREFIXED = 2**32 - 1


class FrameTooLarge(Exception):
    """A frame longer than ``max-frame``; its message says how long and the limit."""


class FrameDecoder:
    """Base of the decoders: a buffer of bytes read and not yet handed out as frames."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self.buffer = bytearray()
        self.start = 0
        #: The client closed its sending side: no more bytes will come.
        self.ended = False

    def feed(self, data: bytes) -> None:
        """Add bytes read from the connection."""
        if self.start and self.start * 2 >= len(self.buffer):
            del self.buffer[:self.start]  # drop what was handed out, now and then
            self.rebase(self.start)
            self.start = 0
        self.buffer += data

    def rebase(self, shift: int) -> None:
        """The buffer's first ``shift`` bytes were dropped (decoders keeping offsets adjust)."""

    def end(self) -> None:
        """The client will send nothing more."""
        self.ended = True

    @property
    def pending(self) -> int:
        """Bytes held that are not yet part of a frame handed out."""
        return len(self.buffer) - self.start

    def next_frame(self) -> bytes | None:
        """The next whole frame, or None if there is none yet.

        :raises FrameTooLarge: the next frame is (or is already known to be) over max-frame.
        """
        raise NotImplementedError

    def leftover(self) -> int:
        """After the end: bytes of an incomplete frame that will never be completed."""
        return self.pending if self.ended else 0

    def _take(self, stop: int, skip: int) -> bytes:
        frame = bytes(self.buffer[self.start:stop])
        self.start = stop + skip
        return frame

    def _too_large(self, size: int | str) -> FrameTooLarge:
        return FrameTooLarge(f"a frame of {size} bytes is over max-frame ({self.max_frame} "
                             f"bytes)")


class LineDecoder(FrameDecoder):
    """Frames ending with ``\\n``; a ``\\r`` before it is dropped."""

    def __init__(self, max_frame: int) -> None:
        super().__init__(max_frame)
        self.scanned = 0  # where to go on looking for the next newline

    def rebase(self, shift: int) -> None:
        """Keep the scan position on the same byte."""
        self.scanned = max(0, self.scanned - shift)

    def next_frame(self) -> bytes | None:
        """The next line without its ending, or None; the unended last line after the end."""
        at = self.buffer.find(b"\n", max(self.scanned, self.start))
        if at < 0:
            self.scanned = len(self.buffer)
            # One byte of slack: a whole frame may still be waiting for its "\n" after a "\r".
            if self.pending > self.max_frame + 1:
                raise self._too_large(f"over {self.max_frame}")
            if self.ended and self.pending:
                return self._strip(self._take(len(self.buffer), 0))
            return None
        frame = self._strip(self._take(at, 1))
        self.scanned = self.start
        if len(frame) > self.max_frame:
            raise self._too_large(len(frame))
        return frame

    @staticmethod
    def _strip(frame: bytes) -> bytes:
        return frame[:-1] if frame.endswith(b"\r") else frame

    def leftover(self) -> int:
        """A last line without ``\\n`` is a frame, so nothing is ever left over."""
        return 0


class LengthDecoder(FrameDecoder):
    """Frames of a 4-byte big-endian length, then that many bytes."""

    def next_frame(self) -> bytes | None:
        """The next frame, or None if its prefix or bytes are not all here yet."""
        if self.pending < PREFIX.size:
            return None
        (size,) = PREFIX.unpack_from(self.buffer, self.start)
        if size > self.max_frame:
            raise self._too_large(size)
        if self.pending < PREFIX.size + size:
            return None
        self.start += PREFIX.size
        return self._take(self.start + size, 0)


class EofDecoder(FrameDecoder):
    """One frame: all the connection's bytes, handed out once the client's sending ends."""

    def feed(self, data: bytes) -> None:
        """Add bytes, refusing to hold more than max-frame of them."""
        super().feed(data)
        if self.pending > self.max_frame:
            raise self._too_large(f"over {self.max_frame}")

    def __init__(self, max_frame: int) -> None:
        super().__init__(max_frame)
        self.handed = False

    def next_frame(self) -> bytes | None:
        """The whole body once the client ended its sending (once), else None."""
        if not self.ended or self.handed:
            return None
        self.handed = True
        return self._take(len(self.buffer), 0)

    def leftover(self) -> int:
        """The body is always a frame."""
        return 0


def decoder(framing: str, max_frame: int) -> FrameDecoder:
    """A decoder for ``framing`` (one of ``FRAMINGS``)."""
    kinds: dict[str, type[FrameDecoder]] = {"line": LineDecoder, "length": LengthDecoder,
                                            "eof": EofDecoder}
    return kinds[framing](max_frame)


def encode(framing: str, answer: bytes) -> bytes:
    """``answer`` as written back in ``framing``."""
    if framing == "line":
        return answer + b"\n"
    if framing == "length":
        return PREFIX.pack(len(answer)) + answer
    return answer


def error_answer(framing: str, code: int, message: str) -> bytes:
    """The answer ``ERROR <code> <message>`` (before framing); in ``line`` framing the
    message's line breaks become spaces, so the answer stays one line."""
    if framing == "line":
        message = message.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return f"ERROR {int(code)} {message}".encode("utf-8", "replace")
