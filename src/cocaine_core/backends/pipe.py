"""The pipe between the node and a template: length-prefixed msgpack frames, never blocking.

Both ends write into a bounded buffer and flush it as far as the kernel takes it, and read
whatever has arrived, so neither the node's loop nor the template can ever block on the other
(two processes each blocked sending to a full pipe is how a node deadlocked with its template
at a few hundred forks). msgpack, not pickle: what a template sends (it runs the app's code)
must never be able to run code in the node.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgpack

_HEADER = struct.Struct("!I")
#: The largest frame either end accepts: messages are a few words, a configure some KiB.
MAX_FRAME = 4 * 2**20
#: Bytes read from the socket per call of ``receive``, at most.
READ_CHUNK = 256 * 2**10


class PipeFull(OSError):
    """The other end has not read what was sent: the outgoing buffer is at its bound."""


class FramedPipe:
    """One end of a stream socket carrying msgpack messages, in non-blocking mode."""

    def __init__(self, sock: socket.socket, *, max_out: int = 2**20) -> None:
        self.sock = sock
        self.sock.setblocking(False)
        self.max_out = max_out
        self._out = bytearray()
        self._in = bytearray()

    def fileno(self) -> int:
        """The socket's file descriptor (for select and the event loop)."""
        return self.sock.fileno()

    @property
    def pending(self) -> int:
        """Bytes sent but not yet taken by the kernel."""
        return len(self._out)

    def send(self, message: Any) -> None:
        """Queue ``message`` and write as much as the kernel takes now; ``PipeFull`` if the
        outgoing buffer would pass ``max_out``."""
        data = msgpack.packb(message, use_bin_type=True)
        if len(self._out) + _HEADER.size + len(data) > self.max_out:
            raise PipeFull(f"the pipe holds {len(self._out)} bytes its reader has not taken")
        self._out += _HEADER.pack(len(data))
        self._out += data
        self.flush()

    def flush(self) -> bool:
        """Write what the kernel takes without blocking; True once nothing is left."""
        while self._out:
            try:
                sent = self.sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                return False
            del self._out[:sent]
        return True

    def receive(self) -> list[Any]:
        """The messages that have arrived completely (maybe none); ``EOFError`` once the other
        end has closed, ``ValueError`` for a frame past ``MAX_FRAME`` or not msgpack."""
        closed = False
        try:
            chunk = self.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            chunk = None
        if chunk == b"":
            closed = True
        elif chunk:
            self._in += chunk
        messages = []
        while len(self._in) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._in)
            if size > MAX_FRAME:
                raise ValueError(f"a frame of {size} bytes (at most {MAX_FRAME})")
            if len(self._in) < _HEADER.size + size:
                break
            body = bytes(self._in[_HEADER.size:_HEADER.size + size])
            del self._in[:_HEADER.size + size]
            try:
                messages.append(msgpack.unpackb(body, raw=False))
            except Exception as exc:  # msgpack raises several kinds for bad input
                raise ValueError(f"a frame that is not msgpack: {exc}") from None
        if closed and not messages:
            raise EOFError("the other end closed the pipe")
        return messages

    def close(self) -> None:
        """Close the socket; what was not flushed is lost."""
        self.sock.close()
