"""A request's answer: the job's sink, writing the HTTP response on the request's connection.

The head goes out with the first chunk (or with the whole answer): the status and headers the
handler set (a HEADERS message: ``head(meta)``), or 200 and ``application/octet-stream``. An
answer in one message gets ``Content-Length``; one that streams goes out chunked (to an
HTTP/1.0 client: raw, the connection's end marking the answer's). Engine errors become their
HTTP status with a short text/plain body; an error after the head went out can only cut the
response short: the connection is closed without the final chunk.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from cocaine_core.protocol import Status

if TYPE_CHECKING:
    from cocaine_http.connection import HttpConnection
    from cocaine_http.incoming import Incoming

OnHanded = Callable[[], None] | None

#: Engine error codes (``protocol.Status``) and the HTTP status each becomes.
ERROR_STATUS: dict[int, int] = {
    Status.BAD_REQUEST: 400,
    Status.UNAUTHORIZED: 401,
    Status.NOT_FOUND: 404,
    Status.SERVER_ERROR: 500,
    Status.APP_ERROR: 502,
    Status.UNAVAILABLE: 503,
    Status.TIMEOUT: 504,
    Status.DEADLINE: 504,
}
#: Headers the server writes itself: a handler's own are dropped (they would contradict the
#: framing of the answer).
OWN_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                         "upgrade", "trailer", "te", "date"})
TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
DEFAULT_TYPE = ("Content-Type", "application/octet-stream")
#: Statuses whose response never has a body (nor Content-Length).
BODYLESS = frozenset({204, 304})


def reason(status: int) -> str:
    """The reason phrase of ``status`` (empty for a code HTTP does not name)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


_date: list[tuple[int, str]] = [(0, "")]


def http_date() -> str:
    """The ``Date`` header's value now (made once a second)."""
    now = int(time.time())
    second, text = _date[0]
    if second != now:
        text = formatdate(now, usegmt=True)
        _date[0] = (now, text)
    return text


def head_bytes(status: int, headers: list[tuple[str, str]]) -> bytes:
    """The status line and headers of a response, up to and including the empty line."""
    lines = [f"HTTP/1.1 {status} {reason(status)}", f"Date: {http_date()}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def checked_head(meta: Any) -> tuple[int, list[tuple[str, str]]] | str:
    """The status and headers of a HEADERS message, or what is wrong with them."""
    if not isinstance(meta, dict):
        return "the answer's head is not a map"
    status = meta.get("status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        return f"the handler set the status {status!r}: it must be a number from 200 to 599"
    headers: list[tuple[str, str]] = []
    for pair in meta.get("headers") or []:
        if not isinstance(pair, list | tuple) or len(pair) != 2 or \
                not all(isinstance(item, str) for item in pair):
            return f"the handler set a header {pair!r:.80}: headers are [name, value] strings"
        name, value = pair
        if not TOKEN.match(name):
            return f"the handler set a header named {name!r:.80}, which HTTP does not allow"
        if BAD_VALUE.search(value):
            return f"the handler's header {name} has a control character (a line break?) " \
                   f"in its value"
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return f"the handler's header {name} has characters outside Latin-1; " \
                   f"percent-encode them"
        if name.lower() not in OWN_HEADERS:
            headers.append((name, value))
    return status, headers


class Answer:
    """The sink of one request's job: turns the job's answer into the HTTP response."""

    __slots__ = ("conn", "done", "head_only", "headers", "incoming", "on_handed", "raw",
                 "started", "status")

    def __init__(self, conn: HttpConnection, incoming: Incoming) -> None:
        self.conn = conn
        self.incoming = incoming
        self.status = 200
        self.headers: list[tuple[str, str]] | None = None
        #: The head went out (the answer streams).
        self.started = False
        #: The answer is complete (or cut short), or the client is gone.
        self.done = False
        self.head_only = incoming.method == "HEAD"
        #: Streamed to an HTTP/1.0 client: no chunked framing, the close ends the answer.
        self.raw = incoming.version == "1.0"
        self.on_handed: OnHanded = None

    def watch_handoff(self, on_handed: OnHanded) -> None:
        """Call ``on_handed`` once each chunk has left for the client (the transport's
        buffer is below its high-water mark), so a client that does not read holds the
        handler back."""
        self.on_handed = on_handed

    def head(self, meta: dict[str, Any]) -> None:
        """The status and headers the handler set (before its first chunk)."""
        if self.started or self.done:
            return
        checked = checked_head(meta)
        if isinstance(checked, str):
            self.conn.log.warning("bad-head", f"an answer was refused: {checked}")
            self.fail(500, f"the handler's answer could not be sent: {checked}")
            return
        self.status, self.headers = checked

    def chunk(self, data: bytes) -> None:
        """One chunk of a streamed answer (the head first, if it has not gone out)."""
        if self.done:
            return
        out = []
        if not self.started:
            self.started = True
            out.append(self._head(None))
        if data and not self.head_only and self.status not in BODYLESS:
            out.append(data if self.raw else b"%x\r\n%b\r\n" % (len(data), data))
        self.conn.write(b"".join(out))
        self.conn.handed(self.on_handed)

    def last(self, data: bytes) -> None:
        """The answer's last chunk and its end."""
        if self.done:
            return
        if self.started:
            self._end(b"" if self.head_only or not data else
                      data if self.raw else b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.started = True
            self._whole(data)

    def choke(self) -> None:
        """The answer is complete."""
        if self.done:
            return
        if self.started:
            self._end(b"")
        else:
            self.started = True
            self._whole(b"")

    def error(self, code: int, message: str) -> None:
        """The job failed: its HTTP status and message, or, after the head went out, the
        response cut short (the connection closed without its final chunk)."""
        if self.done:
            return
        if self.started:
            self.done = True
            self.conn.log.info("cut", f"an answer was cut short by an error after its head "
                                      f"went out ({code}: {message[:200]})")
            self.conn.abort_answer(self.incoming)
            return
        self.fail(ERROR_STATUS.get(code, 500), message)

    def fail(self, status: int, message: str, close: bool = False) -> None:
        """Answer with ``status`` and ``message`` as text/plain (the server's own errors); an
        answer already on its way is cut short instead."""
        if self.done:
            return
        if self.started:
            self.done = True
            self.conn.abort_answer(self.incoming)
            return
        self.started = True
        headers = [("Content-Type", "text/plain; charset=utf-8")]
        if status == 503:
            headers.append(("Retry-After", "1"))
        self.status, self.headers = status, headers
        if close:
            self.incoming.keep_alive = False
        self._whole((message.rstrip("\n") + "\n").encode("utf-8", "replace"))

    # -- the response -------------------------------------------------------------------------

    def _head(self, length: int | None) -> bytes:
        headers = list(self.headers) if self.headers is not None else []
        if self.status not in BODYLESS and \
                not any(n.lower() == "content-type" for n, _ in headers):
            headers.append(DEFAULT_TYPE)
        if self.status in BODYLESS:
            pass
        elif length is not None:
            headers.append(("Content-Length", str(length)))
        elif self.raw:
            self.incoming.keep_alive = False  # HTTP/1.0: the close ends a streamed answer
        else:
            headers.append(("Transfer-Encoding", "chunked"))
        keep = self.conn.keeps(self.incoming)
        if not keep:
            headers.append(("Connection", "close"))
        elif self.incoming.version == "1.0":
            headers.append(("Connection", "keep-alive"))
        (self.incoming.driver or self.conn.listener).count(self.status)
        return head_bytes(self.status, headers)

    def _whole(self, data: bytes) -> None:
        head = self._head(len(data))
        body = b"" if self.head_only or self.status in BODYLESS else data
        self.done = True
        self.conn.write(head + body)
        self.conn.answered(self.incoming)

    def _end(self, data: bytes) -> None:
        self.done = True
        tail = b"" if self.raw or self.head_only or self.status in BODYLESS else b"0\r\n\r\n"
        self.conn.write(data + tail)
        self.conn.answered(self.incoming)
