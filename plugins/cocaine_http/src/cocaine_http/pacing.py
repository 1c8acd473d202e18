"""How an HTTP connection paces its client: when a request may start (the client reads what
it was sent, the listener's backlog is within its budget), when reading pauses, what the
head's and a chunked body's framing may cost, and what happens when a wait runs out.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING

from cocaine_http.wire import Wire

if TYPE_CHECKING:
    from cocaine_core.ratelog import RateLimitedLog
    from cocaine_http.incoming import Incoming
    from cocaine_http.listener import Limits

#: Bytes the client may send ahead while a request is answered, before reading pauses.
HOLD_LIMIT = 64 * 1024
#: Body pieces given to a job are up to this long (small reads are joined while it has no
#: room); reading pauses while this much waits for room.
PIECE = 256 * 1024


class Pacing(Wire):
    """Base of ``HttpConnection``: flow control of its requests, and its timeouts."""

    queue: deque[Incoming]
    held: bytearray
    limits: Limits
    log: RateLimitedLog
    remote: str
    #: A request waits to start (the client does not read, or the listener's backlog is
    #: over its budget): its header timer is off until it may go on.
    _waiting: bool
    _last_body: float

    def _pump(self) -> None:
        """Move on (``HttpConnection``)."""
        raise NotImplementedError

    def _refuse(self, incoming: Incoming, status: int, message: str,
                close: bool = True) -> None:
        """Answer ``status`` for ``incoming`` (``HttpConnection``)."""
        raise NotImplementedError

    def abort_answer(self, incoming: Incoming) -> None:
        """Cut the connection (``HttpConnection``)."""
        raise NotImplementedError

    def _count_framing(self, incoming: Incoming, size: int, body: int) -> None:
        """A feed of ``size`` bytes inside a chunked body gave ``body`` bytes of it: the rest
        (chunk sizes, extensions, trailers; 8 bytes a body byte are free) counts against
        max-header until body bytes come."""
        extra = size - body - 8 * body
        incoming.framing = max(0, extra) if body else incoming.framing + extra
        if incoming.framing > self.limits.max_header:
            self._refuse(incoming, 400, f"the request's chunked body sent over "
                                        f"{self.limits.max_header} bytes of chunk sizes, "
                                        f"extensions or trailers without data (max-header)")

    def _grow_head(self, incoming: Incoming, size: int) -> None:
        incoming.head_size += size
        if incoming.head_size > self.limits.max_header and not self.closing:
            self._refuse(incoming, 431, f"the request line and headers are over "
                                        f"{self.limits.max_header} bytes (max-header)")

    def _blocked(self) -> bool:
        """Whether input must wait unparsed: the request being answered was read whole, or
        new requests wait (``_held``) and no started request's body is being read."""
        head = self.queue[0] if self.queue else None
        if head is not None and head.complete:
            return True
        return self._held() and not (head is not None and head.answer is not None)

    def _held(self) -> bool:
        """Whether no new request may start: the client does not read what it was sent (the
        transport is over its high-water mark), or the listener's backlog is over its budget."""
        return self._writing_paused or not self.listener.may_start(self)

    def _may_start(self) -> bool:
        """Whether a request may start now (else it waits for ``go_on``)."""
        return not self._held()

    def go_on(self) -> None:
        """What held requests back is gone: start the next, read on."""
        if not self.lost:
            self._pump()

    def _writable(self) -> None:
        self.go_on()


    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or self.lost:
            return
        head = self.queue[0] if self.queue else None
        waiting = head is not None and len(head.pending) >= PIECE
        pause = not self.closing and (len(self.held) >= HOLD_LIMIT or waiting or
                                      (self._blocked() and self._held()))
        waiting = waiting or (head is not None and head.answer is None and self._held())
        if pause and self._reading:
            transport.pause_reading()
            self._reading = False
        elif not pause and not self._reading:
            transport.resume_reading()
            self._reading = True
        if head is not None and head.headers_done and not head.complete and not self.closing:
            now = time.monotonic()
            if waiting:
                head.paused(now)
                if self._timer_kind == "body":
                    self._disarm()  # the handler is slow (or held back), not the client
            elif self._timer_kind != "body":
                self._last_body = now
                head.reading(now)
                self._arm("body", min(head.body_timeout(), head.rate_check_in(now)))


    # -- timeouts -----------------------------------------------------------------------------

    def _expired(self, kind: str) -> None:
        """The wait ``kind`` has run out: close, or answer 408 and close."""
        if self.closing or self.lost:
            return
        head = self.queue[0] if self.queue else None
        if kind in ("header", "idle") and self._held() and (self.held or (
                head is not None and head.answer is None)):
            self._waiting = True  # the server holds the request back, not the client
            return
        if kind == "idle" or (kind == "header" and head is None and not self.held):
            self._close()
        elif kind == "header" and head is not None:
            self._refuse_late(head, f"the request's head did not arrive within "
                                    f"{self.limits.header_timeout:g} s (header-timeout)")
        elif kind == "body" and head is not None:
            now = time.monotonic()
            timeout = head.body_timeout()
            left = self._last_body + timeout - now
            slow = head.too_slow(now) if left > 0 else None
            if slow is not None:
                self._refuse_late(head, slow, "slow-body")
                return
            if left > 0:
                self._arm("body", min(left, head.rate_check_in(now)))
                return
            self._refuse_late(head, f"no part of the request's body came for {timeout:g} s "
                                    f"(body-timeout)")
        else:
            self._close()

    def _refuse_late(self, incoming: Incoming, message: str, kind: str = "timeout") -> None:
        self.log.info(kind, f"{self.remote}: {message}: closed")
        answer = incoming.answer
        if answer is not None and answer.started:
            incoming.cancel(message)
            self.abort_answer(incoming)
            return
        self._refuse(incoming, 408, message)
