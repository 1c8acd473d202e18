"""The transport side of an HTTP connection: writing with flow control, its one timer,
and closing (lingering when the client may still be sending).

A chunk written while the transport's buffer is over its high-water mark (the client reads
slowly, or not at all) is said to have left (``on_handed``) only once the client has read
enough: the engine then holds the handler back, a few chunks ahead at most.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from cocaine_http.answer import OnHanded

if TYPE_CHECKING:
    from cocaine_http.listener import Listener

#: Seconds a connection closed with unread input keeps reading (and dropping) it, so the
#: client reads its answer instead of a reset.
LINGER = 2.0
#: The transport's write buffer: chunks past ``HIGH_WATER`` bytes wait for the client.
HIGH_WATER = 256 * 1024


class Wire(asyncio.Protocol):
    """Base of ``HttpConnection``: its transport, writes, timer and close."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.lost = self.closing = False
        self._reading = True
        self._writing_paused = False
        self._unhanded: deque[OnHanded] = deque()
        #: The wait being timed ("header", "idle", "body"; "" for none) and when it ends
        #: (the loop's clock). One timer handle serves them all: re-arming to a later time
        #: (every request on a kept-alive connection) only moves the deadline.
        self._timer_kind = ""
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def _expired(self, kind: str) -> None:
        """The wait ``kind`` has run out."""

    def _update_reading(self) -> None:
        """Pause or resume reading as the connection's state asks."""

    def _writable(self) -> None:
        """The client read what waited: requests held back may start."""

    def pause_writing(self) -> None:
        """The transport's buffer is over its high-water mark: hold chunks' hand-offs."""
        self._writing_paused = True

    def resume_writing(self) -> None:
        """The client read: every chunk waiting has now left."""
        self._writing_paused = False
        while self._unhanded and not self._writing_paused:
            on_handed = self._unhanded.popleft()
            if on_handed is not None:
                on_handed()
        if not self._writing_paused and not self.lost:
            self._writable()

    def write(self, data: bytes) -> None:
        """Send bytes of an answer."""
        if self.transport is not None and not self.lost and data:
            self.transport.write(data)
            self.listener.wrote(len(data))

    def handed(self, on_handed: OnHanded) -> None:
        """A chunk was written: say it left now, or once the client has read enough."""
        if self._writing_paused:
            self._unhanded.append(on_handed)
        elif on_handed is not None:
            on_handed()

    def _close(self, linger: bool = False) -> None:
        if self.closing or self.lost or self.transport is None:
            return
        self.closing = True
        self._drop_timer()
        transport = self.transport
        if linger and transport.can_write_eof():
            transport.write_eof()
            self._update_reading()
            if not self._reading:
                transport.resume_reading()
                self._reading = True
            asyncio.get_running_loop().call_later(LINGER, transport.close)
        else:
            transport.close()

    def _arm(self, kind: str, delay: float) -> None:
        """Time the wait ``kind``: ``_expired(kind)`` in ``delay`` seconds unless disarmed or
        armed again first."""
        loop = asyncio.get_running_loop()
        self._timer_kind, self._deadline = kind, loop.time() + delay
        timer = self._timer
        if timer is not None and timer.when() > self._deadline:
            timer.cancel()
            timer = None
        if timer is None:
            self._timer = loop.call_at(self._deadline, self._tick)

    def _disarm(self) -> None:
        self._timer_kind = ""

    def _drop_timer(self) -> None:
        """No more waits to time: the connection closes."""
        self._timer_kind = ""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        kind = self._timer_kind
        if not kind or self.lost:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:
            self._timer = loop.call_at(self._deadline, self._tick)
            return
        self._timer_kind = ""
        self._expired(kind)
