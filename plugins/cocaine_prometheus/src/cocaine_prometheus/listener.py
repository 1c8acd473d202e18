"""A small, hardened HTTP/1.1 server for ``/metrics`` and the console, on the node's loop.

HTTP is parsed by ``h11`` on asyncio streams. Every connection is a task of its own and every
wait has a timeout, so a slow or hostile client holds only its own connection, never the
node's loop or another client:

- GET and HEAD only (405 with ``Allow``); no request body (413 if one is announced);
- the request head at most ``max_head`` bytes (431), read within ``header_timeout``;
- a kept-alive connection waits ``idle_timeout`` for its next request, an answer is written
  within ``write_timeout``, else the connection is closed;
- at most ``max_connections`` at once: one more is closed at once, unanswered;
- HTTP/1.0 and 1.1 only (505 for another version, 400 for a request line without one);
- a body is written ``CHUNK_SIZE`` bytes at a time, each once the connection holds less than
  ``WRITE_BUFFER`` unsent: a client that does not read holds at most that much of the
  node's memory beyond the page (which every connection shares), and requests pipelined on
  one connection are answered one after the other;
- every answer has ``Content-Length``, ``Cache-Control: no-store``, ``nosniff`` and a strict
  ``Content-Security-Policy`` (scripts and styles from this listener only, nothing inline).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import attrs
import h11

log = logging.getLogger("cocaine.prometheus")

#: What a browser may load for a page of this listener: its own scripts, styles and JSON.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self'; connect-src 'self'; object-src 'none'; "
                           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)
#: Bytes read from a socket at a time.
READ_SIZE = 16384
#: Bytes of an answer's body handed to a connection at a time.
CHUNK_SIZE = 65536
#: The most a connection holds unsent, beyond the page it answers with (bytes).
WRITE_BUFFER = 262144
#: The HTTP versions served (h11 parses 1.0 and 1.1; another is answered 505).
VERSIONS = (b"1.0", b"1.1")


@attrs.frozen
class Limits:
    """The listener's bounds (seconds, bytes, connections)."""

    max_head: int = 8192
    header_timeout: float = 10.0
    idle_timeout: float = 5.0
    write_timeout: float = 10.0
    max_connections: int = 64


@attrs.frozen
class Page:
    """An answer: status, content type, body."""

    status: int
    content_type: str
    body: bytes


#: The routes: the answer to GET of a path (the query string taken off).
Router = Callable[[str], Awaitable[Page]]


def text_page(status: int, text: str) -> Page:
    """A plain-text answer (errors)."""
    return Page(status, "text/plain; charset=utf-8", text.encode() + b"\n")


class HttpListener:
    """Serves ``router``'s pages on ``host``:``port`` until ``close``."""

    def __init__(self, host: str, port: int, router: Router, limits: Limits | None = None
                 ) -> None:
        self.host, self.port = host, port
        self.router = router
        self.limits = limits or Limits()
        #: Connections closed unanswered because ``max_connections`` were open.
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._open: dict[asyncio.StreamWriter, asyncio.Task[None] | None] = {}

    @property
    def sockname(self) -> tuple[str, int]:
        """The host and port actually bound (the port chosen when 0 was asked)."""
        assert self._server is not None, "the listener is not started"
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._open)

    @property
    def buffered(self) -> int:
        """Bytes the open connections hold unsent now (at most ``WRITE_BUFFER`` each)."""
        return sum(writer.transport.get_write_buffer_size() for writer in self._open)

    async def start(self) -> None:
        """Bind and listen; OSError if the address cannot be had (in use, not local)."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  reuse_address=True, limit=READ_SIZE)

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        # Aborted, a connection's reads end and its writes fail: its task ends by itself
        # (cancelling it instead makes asyncio log each one as an error).
        tasks = [t for t in self._open.values() if t is not None]
        for writer in list(self._open):
            writer.transport.abort()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=5)
            for task in late:
                task.cancel()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._open) >= self.limits.max_connections:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("metrics listener: %d connections open, the most it takes; closed "
                            "%d more unanswered", len(self._open), self.refused)
            writer.transport.abort()
            return
        self._open[writer] = asyncio.current_task()
        # Paused (drain waits) above this, so a write of one more chunk stays in WRITE_BUFFER.
        writer.transport.set_write_buffer_limits(high=WRITE_BUFFER - CHUNK_SIZE)
        try:
            await Exchange(reader, writer, self.router, self.limits).run()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client left or stalled: its connection only
        except Exception:
            log.exception("metrics listener: a connection failed")
        finally:
            self._open.pop(writer, None)
            writer.transport.abort()


class Exchange:
    """One connection: requests read and answered one after the other (keep-alive)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 router: Router, limits: Limits) -> None:
        self.reader, self.writer = reader, writer
        self.router, self.limits = router, limits
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head)

    async def run(self) -> None:
        """Answer requests until the client closes, errs, stalls or asks to close."""
        kept_alive = False
        while True:
            try:
                request = await self._read_head(kept_alive)
                if not isinstance(request, h11.Request):
                    return  # closed, or nothing came in time
                await self._answer(request)
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                await self._error(status, "request head too large" if status == 431
                                  else f"bad request: {exc}")
                return
            if self.http.our_state is not h11.DONE or self.http.their_state is not h11.DONE:
                return
            self.http.start_next_cycle()
            kept_alive = True

    async def _read_head(self, kept_alive: bool) -> h11.Request | None:
        """The next request head; None if the client closed or stalled."""
        loop = asyncio.get_running_loop()
        # A new connection has header_timeout for its head; a kept-alive one idle_timeout
        # until its next request begins, then header_timeout for the rest of it.
        deadline = None if kept_alive else loop.time() + self.limits.header_timeout
        taken = 0  # bytes read for this head: never more than max_head (h11 alone bounds
        # only a head still incomplete, not one that arrives whole in one read)
        line = None if kept_alive else b""  # a new connection's request line, until seen
        while True:
            event = self.http.next_event()
            if isinstance(event, h11.Request):
                return event
            if event is not h11.NEED_DATA:
                return None  # ConnectionClosed (or PAUSED, which a new cycle never is)
            if taken >= self.limits.max_head:
                raise h11.RemoteProtocolError("request head too large", error_status_hint=431)
            wait = self.limits.idle_timeout if deadline is None else deadline - loop.time()
            if wait <= 0:
                return None
            try:
                data = await asyncio.wait_for(
                    self.reader.read(min(READ_SIZE, self.limits.max_head - taken)), wait)
            except TimeoutError:
                return None
            if deadline is None:
                deadline = loop.time() + self.limits.header_timeout
            taken += len(data)
            if line is not None:
                line = _check_request_line(line + data)
            self.http.receive_data(data)

    async def _answer(self, request: h11.Request) -> None:
        if request.http_version not in VERSIONS:
            await self._error(505, "only HTTP/1.0 and HTTP/1.1 are served here")
            return
        if request.method not in (b"GET", b"HEAD"):
            await self._error(405, "only GET and HEAD are served here",
                              [("Allow", "GET, HEAD")])
            return
        if _announces_body(request):
            await self._error(413, "requests here have no body")
            return
        if not isinstance(self.http.next_event(), h11.EndOfMessage):
            await self._error(400, "bad request")
            return
        path = request.target.split(b"?", 1)[0].decode("latin-1")
        try:
            page = await self.router(path)
        except Exception:
            log.exception("metrics listener: the page %s failed", path)
            page = text_page(500, "internal error (see the node's log)")
        await self._send(page, head=request.method == b"HEAD")

    async def _error(self, status: int, text: str,
                     extra: list[tuple[str, str]] | None = None) -> None:
        """Answer ``status`` and close (if an answer may still be sent)."""
        if self.http.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        phrase = _reason(status).decode()
        await self._send(text_page(status, f"{status} {phrase}: {text}"), head=False,
                         extra=[*(extra or []), ("Connection", "close")])

    async def _send(self, page: Page, head: bool,
                    extra: list[tuple[str, str]] | None = None) -> None:
        """Write ``page`` within ``write_timeout``, its body a chunk at a time: the page's
        bytes are shared, never copied whole per connection."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.write_timeout
        headers = [("Content-Type", page.content_type),
                   ("Content-Length", str(len(page.body))), *SECURITY_HEADERS, *(extra or [])]
        self.writer.write(self.http.send(h11.Response(
            status_code=page.status, headers=headers, reason=_reason(page.status))) or b"")
        if not head and page.body:
            body = memoryview(page.body)
            for start in range(0, len(body), CHUNK_SIZE):
                # h11 passes a memoryview through as it is (its stubs say bytes).
                chunk = h11.Data(data=body[start:start + CHUNK_SIZE])  # type: ignore[arg-type]
                for part in self.http.send_with_data_passthrough(chunk) or ():
                    self.writer.write(part)
                await self._drain(deadline)
        self.writer.write(self.http.send(h11.EndOfMessage()) or b"")
        await self._drain(deadline)

    async def _drain(self, deadline: float) -> None:
        """Wait until the connection holds less than its bound unsent; TimeoutError past
        ``deadline`` (the client does not take its answer)."""
        wait = deadline - asyncio.get_running_loop().time()
        if wait <= 0:
            raise TimeoutError
        await asyncio.wait_for(self.writer.drain(), wait)


def _check_request_line(head: bytes) -> bytes | None:
    """``head`` while its request line is incomplete, None once it is whole and has a
    version; RemoteProtocolError (400) for a line without one: an HTTP/0.9 request ends
    with that line, so h11 would wait for the rest of a head that never comes."""
    stripped = head.lstrip(b"\r\n")
    end = stripped.find(b"\n")
    if end < 0:
        return head
    if len(stripped[:end].rstrip(b"\r").split(b" ")) != 3:
        raise h11.RemoteProtocolError("the request line has no HTTP version (HTTP/0.9 is not "
                                      "served; send HTTP/1.1)", error_status_hint=400)
    return None


def _announces_body(request: h11.Request) -> bool:
    for name, value in request.headers:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length" and value.strip() != b"0":
            return True
    return False


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
