"""One HTTP connection: an asyncio Protocol that parses requests with httptools (llhttp).

Requests are answered one at a time, in order: while an answer is on its way, what the client
sends next (pipelined requests) waits unparsed, up to ``HOLD_LIMIT`` bytes (then reading
pauses). A request's body streams into its job (``BodyStream``): reading pauses while the
job's stream has no room (the handler has not read what it was given) and resumes on its
credit, so an upload of any size crosses the node a few pieces at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING

import httptools

from cocaine_core.engine.body import BodyStream
from cocaine_http.answer import Answer
from cocaine_http.incoming import Incoming
from cocaine_http.pacing import PIECE, Pacing
from cocaine_http.routing import admit
from cocaine_http.wire import HIGH_WATER

if TYPE_CHECKING:
    from cocaine_http.listener import Listener

#: Most headers in one request.
MAX_HEADERS = 256


class _Stop(Exception):
    """Raised in a parser callback: the connection answered and stops parsing."""


class HttpConnection(Pacing):
    """An HTTP/1.1 connection of a ``Listener``."""

    def __init__(self, listener: Listener) -> None:
        super().__init__(listener)
        self.log = listener.log
        self.limits = listener.limits
        self.parser = httptools.HttpRequestParser(self)
        self.remote = "?"
        self.queue: deque[Incoming] = deque()
        self.held = bytearray()
        self.feeds = 0
        self.refused = self.stopping = False
        #: The client has shut its sending side: close once what it sent is answered.
        self._eof = False
        self._pumping = self._again = self._in_parser = self._fresh_feed = False
        self._answered_at = time.monotonic()
        self._waiting = False
        #: The request the parser is reading (its callbacks' subject).
        self._parsing = Incoming(0)
        self._last_body = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection (closed at once past ``max-connections``), arm its timer."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.remote = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
        if not self.listener.opened(self):
            self.lost = self.refused = True
            transport.abort()
            return
        transport.set_write_buffer_limits(high=HIGH_WATER)
        self._arm("header", self.limits.header_timeout)

    def data_received(self, data: bytes) -> None:
        """Parse what came (or hold it while a request is answered)."""
        self.listener.bytes_in += len(data)
        if self.closing or self.lost:
            return  # lingering: the rest of an unread body is dropped
        if self._blocked():
            self.held += data
            self._update_reading()
            return
        self._feed(data)
        self._pump()

    def eof_received(self) -> bool | None:
        """The client sent all it will (it may still read): answer every request it sent
        whole, then close."""
        head = self.queue[0] if self.queue else None
        if head is not None and head.complete and not self.closing:
            self._eof = True
            return True
        self._close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """The client is gone: the jobs of its requests are cancelled."""
        if self.refused:
            return
        self.lost = True
        self._drop_timer()
        self.listener.closed(self)
        for incoming in self.queue:
            if incoming.answer is not None:
                incoming.answer.done = True
            incoming.cancel("its client disconnected")
            self._uncount(incoming)
        self.queue.clear()
        self.held.clear()
        self._unhanded.clear()

    # -- the parser's callbacks (httptools) ----------------------------------------------------

    def on_message_begin(self) -> None:
        """A request starts."""
        incoming = self._parsing = Incoming(self.feeds)
        incoming.whole_feed = self._fresh_feed
        self._fresh_feed = False
        self.queue.append(incoming)
        if self._timer_kind == "idle":
            spent = time.monotonic() - self._answered_at
            self._arm("header", max(0.0, self.limits.header_timeout - spent))

    def on_url(self, url: bytes) -> None:
        """A piece of the request target."""
        incoming = self._parsing
        incoming.url += url
        self._grow_head(incoming, len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        """One header (trailers, after a chunked body, are counted and dropped)."""
        incoming = self._parsing
        if incoming.headers_done:
            incoming.trailer_size += len(name) + len(value) + 4
            if incoming.trailer_size > self.limits.max_header and not self.closing:
                self._refuse(incoming, 431, f"the request's trailers are over "
                                            f"{self.limits.max_header} bytes (max-header)")
            return
        incoming.headers.append([name.decode("latin-1").lower(), value.decode("latin-1")])
        self._grow_head(incoming, len(name) + len(value) + 4)
        if len(incoming.headers) > MAX_HEADERS:
            self._refuse(incoming, 431, f"the request has more than {MAX_HEADERS} headers")

    def on_headers_complete(self) -> None:
        """The request's head is read: a request with a body starts now (if it is next),
        its body streaming in; one without starts once it is complete."""
        incoming, parser = self._parsing, self.parser
        incoming.method = parser.get_method().decode("latin-1")
        incoming.version = parser.get_http_version()
        incoming.keep_alive = parser.should_keep_alive()
        incoming.upgrade = parser.should_upgrade()
        incoming.expects_body = incoming.header("transfer-encoding") is not None or \
            (incoming.content_length() or 0) > 0
        incoming.headers_done = True
        if incoming.expects_body and self.queue and incoming is self.queue[0] and \
                self._may_start():
            self._start(incoming)

    def on_body(self, body: bytes) -> None:
        """A piece of a request's body."""
        incoming = self._parsing
        incoming.body_size += len(body)
        driver = incoming.driver
        if driver is not None and incoming.body_size > driver.max_body:
            self._refuse(incoming, 413, f"the request's body is over {driver.max_body} bytes, "
                                        f"this path's max-body; send less")
        if (incoming.stream is not None and incoming.stream.closed) or \
                (incoming.answer is not None and incoming.answer.done):
            return  # the job has ended: the rest of the body is dropped
        incoming.pending += body
        self._last_body = time.monotonic()

    def on_message_complete(self) -> None:
        """The request is read whole: start it if it has no body and is next."""
        incoming = self._parsing
        incoming.complete = True
        if self.queue and incoming is self.queue[0]:
            if self._timer_kind == "body":
                self._disarm()
            if incoming.job is None and not (incoming.answer and incoming.answer.done) and \
                    (incoming.answer is not None or self._may_start()):
                self._start(incoming)

    # -- reading ------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        last = self.queue[-1] if self.queue else None
        body_before = last.body_size if last is not None and last.headers_done and \
            not last.complete and last.header("transfer-encoding") is not None else -1
        self.feeds += 1
        self._fresh_feed = not self.queue or self.queue[-1].complete
        self._in_parser = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # refused when it starts (it is marked ``upgrade``), then closed
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Stop) and not self.closing:
                raise
        except httptools.HttpParserError as exc:
            self._bad_request(f"the request is not valid HTTP/1.1: {exc}")
        finally:
            self._in_parser = False
        incoming = self.queue[-1] if self.queue else None
        if body_before >= 0 and incoming is last and last is not None and \
                not last.complete and not self.closing:
            self._count_framing(last, len(data), last.body_size - body_before)
        if incoming is not None and not incoming.headers_done and not self.closing:
            # The head's bytes held inside the parser (a header not yet complete) count too.
            if incoming.started_in < self.feeds:
                incoming.head_size += len(data)
            elif incoming.whole_feed:
                incoming.head_size = max(incoming.head_size, len(data))
            self._grow_head(incoming, 0)

    def _pump(self) -> None:
        """Move on: start the next request, give its body to its job, parse what waited."""
        if self._pumping or self._in_parser:
            self._again = True
            return
        self._pumping = True
        if self._waiting and not self._held():
            self._waiting = False
            if not self.closing:
                self._arm("header", self.limits.header_timeout)
        try:
            while not (self.closing or self.lost):
                self._again = False
                head = self.queue[0] if self.queue else None
                if head is not None and head.job is None and head.headers_done and \
                        not (head.answer and head.answer.done) and \
                        (head.complete or (head.expects_body and head.answer is None)) and \
                        (head.answer is not None or self._may_start()):
                    self._start(head)
                if head is not None and head.stream is not None:
                    head.give(PIECE)
                if self.held and not self._blocked():
                    data = bytes(self.held)
                    self.held.clear()
                    self._feed(data)
                    continue
                if not self._again:
                    break
        finally:
            self._pumping = False
        if self._eof and not self.closing and (not self.queue or not self.queue[0].complete):
            self._close()
            return
        self._update_reading()

    def _on_credit(self, pieces: int) -> None:
        """The handler read pieces of a body: give it more, read on."""
        if not self.lost:
            self._pump()

    # -- requests -----------------------------------------------------------------------------

    def _start(self, incoming: Incoming) -> None:
        """Route the request and check it (once), then give it to its task's job: at once
        if its body streams, once it is complete if it has none or a short one."""
        if self._timer_kind == "header":
            self._disarm()
        if incoming.answer is None:
            incoming.answer = Answer(self, incoming)
            refusal = admit(self.listener, incoming)
            if refusal is not None:
                status, message = refusal
                self._refuse(incoming, status, message,
                             close=status != 404 or not incoming.complete)
                return
            if incoming.expects_body and not incoming.complete and \
                    (incoming.header("expect") or "").lower() == "100-continue":
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        driver = incoming.driver
        assert driver is not None
        if driver.handed:  # routed before a redeploy, given after: to the new version
            driver = incoming.driver = self.listener.route(incoming.path) or driver
        if incoming.complete and len(incoming.pending) <= PIECE:
            body, incoming.pending = bytes(incoming.pending), bytearray()
            self._count(incoming)
            incoming.job = driver.submit_request(body, incoming.meta(self.remote),
                                                 incoming.answer)
            return
        if not incoming.complete and (incoming.content_length() or PIECE + 1) <= PIECE:
            return  # a short body is given whole: this goes on once it is read
        incoming.stream = BodyStream(on_credit=self._on_credit)
        self._count(incoming)
        incoming.job = driver.submit_request(b"", incoming.meta(self.remote), incoming.answer,
                                             incoming.stream)

    def _count(self, incoming: Incoming) -> None:
        incoming.inflight = True
        self.listener.started()

    def _uncount(self, incoming: Incoming) -> None:
        if incoming.inflight:
            incoming.inflight = False
            self.listener.finished()

    def _refuse(self, incoming: Incoming, status: int, message: str,
                close: bool = True) -> None:
        """Answer ``status`` for ``incoming`` and close (stopping the parser if it runs).
        A request behind the one being answered is dropped instead: that one is answered,
        then the connection closes."""
        self.log.info(f"refused-{status}", f"{self.remote}: answered {status}: {message}")
        head = self.queue[0] if self.queue else incoming
        if incoming is head:
            incoming.cancel(message)
            if incoming.answer is None:
                incoming.answer = Answer(self, incoming)
            incoming.answer.fail(status, message, close=close)
        else:
            self._drop_after_head()
        if close and self._in_parser:
            raise _Stop(message)

    def _bad_request(self, message: str) -> None:
        self.log.info("bad-request", f"{self.remote}: answered 400: {message}")
        head = self.queue[0] if self.queue else None
        if head is not None and head.complete:
            self._drop_after_head()  # what follows the request being answered is bad
            return
        if head is None:
            head = Incoming(self.feeds)
            self.queue.append(head)
        head.cancel(message)
        if head.answer is None:
            head.answer = Answer(self, head)
        head.answer.fail(400, message, close=True)

    def _drop_after_head(self) -> None:
        """Forget what follows the request being answered; close once it is answered."""
        self.stopping = True
        while len(self.queue) > 1:
            self.queue.pop()
        self.held.clear()

    # -- answers ------------------------------------------------------------------------------

    def keeps(self, incoming: Incoming) -> bool:
        """Whether the connection stays open after ``incoming``'s answer."""
        return incoming.keep_alive and not self.stopping and not self.listener.stopping and \
            (incoming.driver is None or not incoming.driver.stopping or incoming.driver.handed)

    def answered(self, incoming: Incoming) -> None:
        """``incoming``'s answer is written whole: go on with the next request, or close."""
        self._uncount(incoming)
        if self.lost:
            return
        incoming.cancel("its answer was already sent")
        if self.queue and self.queue[0] is incoming:
            self.queue.popleft()
        if not (self.keeps(incoming) and incoming.complete):
            self._close(linger=not incoming.complete)
            return
        self._answered_at = time.monotonic()
        if not self.queue and not self.held:
            self._arm("idle", self.limits.idle_timeout)
        else:
            self._arm("header", self.limits.header_timeout)
        self._pump()

    def abort_answer(self, incoming: Incoming) -> None:
        """An answer that had started failed: cut the connection."""
        incoming.cancel("its answer failed")
        if self.transport is not None and not self.lost:
            self.transport.abort()

    def close_if_idle(self) -> None:
        """The listener stops: close now if no request is on its way, else after it."""
        self.stopping = True
        if not self.queue:
            self._close()
