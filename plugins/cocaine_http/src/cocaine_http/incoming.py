"""One request as it is read: its head, its body's progress, and the job that answers it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httptools

from cocaine_http.keys import DEFAULT_MIN_BODY_RATE

if TYPE_CHECKING:
    from cocaine_core.engine.body import BodyStream
    from cocaine_core.engine.job import Job
    from cocaine_http.answer import Answer
    from cocaine_http.driver import HttpServer


class Incoming:
    """A request on a connection, from its first byte to the end of its answer."""

    __slots__ = (
        "answer",
        "body_size",
        "complete",
        "driver",
        "expects_body",
        "framing",
        "head_size",
        "headers",
        "headers_done",
        "inflight",
        "job",
        "keep_alive",
        "method",
        "path",
        "pending",
        "query",
        "read_since",
        "read_time",
        "started_in",
        "stream",
        "trailer_size",
        "upgrade",
        "url",
        "version",
        "whole_feed",
    )

    def __init__(self, started_in: int) -> None:
        #: Which ``feed`` of the connection saw its first byte (to count its head's size).
        self.started_in = started_in
        #: Every byte of that feed was its (nothing came before it in that feed).
        self.whole_feed = False
        self.method = "GET"
        self.url = bytearray()
        #: The target's path (as sent, percent-encoded) and raw query, once it is routed.
        self.path = self.query = ""
        self.headers: list[list[str]] = []
        self.version = "1.1"
        self.keep_alive = True
        self.upgrade = False
        self.head_size = 0
        self.headers_done = False
        self.expects_body = False
        #: Bytes of the body read so far.
        self.body_size = 0
        #: Seconds the server spent reading the body (paused time not counted), and since
        #: when it reads (None: paused).
        self.read_time = 0.0
        self.read_since: float | None = None
        #: Bytes of chunked framing (sizes, extensions) read with no body bytes, and bytes
        #: of trailers: each bounded by ``max-header``.
        self.framing = self.trailer_size = 0
        #: Body bytes read and not yet given to the job (it waits for room, or to start).
        self.pending = bytearray()
        #: The whole request has been read.
        self.complete = False
        self.driver: HttpServer | None = None
        self.answer: Answer | None = None
        self.job: Job | None = None
        self.stream: BodyStream | None = None
        #: Counted in its listener's requests in flight.
        self.inflight = False

    def header(self, name: str) -> str | None:
        """The value of the first header called ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def content_length(self) -> int | None:
        """The declared body length, or None (no Content-Length: chunked, or none)."""
        value = self.header("content-length")
        return int(value) if value is not None and value.isdigit() else None

    def split_url(self) -> None:
        """Set ``path`` and ``query`` from the request target.

        :raises httptools.HttpParserInvalidURLError: the target is not a path or a URL.
        """
        parsed = httptools.parse_url(bytes(self.url))
        self.path = (parsed.path or b"/").decode("latin-1")
        self.query = (parsed.query or b"").decode("latin-1")

    def meta(self, remote: str) -> dict[str, Any]:
        """What the handler gets as ``request.meta``."""
        return {"method": self.method, "path": self.path, "query": self.query,
                "headers": self.headers, "http_version": self.version, "remote": remote}

    def body_timeout(self) -> float:
        """Most seconds between two pieces of this request's body (its task's key)."""
        return self.driver.body_timeout if self.driver is not None else 30.0

    def reading(self, now: float) -> None:
        """The server reads the body (from ``now``)."""
        if self.read_since is None:
            self.read_since = now

    def paused(self, now: float) -> None:
        """The server stopped reading the body (the handler has not read): time not counted."""
        if self.read_since is not None:
            self.read_time += now - self.read_since
            self.read_since = None

    def too_slow(self, now: float) -> str | None:
        """Why the body is failed for its rate (read for more than ``body-timeout`` seconds
        at under ``min-body-rate`` bytes a second on average), or None."""
        rate = self.driver.min_body_rate if self.driver is not None else DEFAULT_MIN_BODY_RATE
        spent = self.read_time + (now - self.read_since if self.read_since is not None else 0)
        if not rate or spent <= self.body_timeout() or self.body_size >= rate * spent:
            return None
        return (f"the request's body came at {self.body_size / spent:.0f} bytes/s over "
                f"{spent:.1f} s, under min-body-rate ({rate} bytes/s)")

    def rate_check_in(self, now: float) -> float:
        """Seconds until the body's rate is to be checked (next)."""
        spent = self.read_time + (now - self.read_since if self.read_since is not None else 0)
        timeout = self.body_timeout()
        return max(0.05, timeout - spent + 0.01) if spent <= timeout else timeout

    def give(self, piece: int) -> None:
        """Feed the job's stream as much of the body read as it has room for, in pieces of
        at most ``piece`` bytes; end it once the body is complete and given."""
        stream, pending = self.stream, self.pending
        assert stream is not None
        if stream.closed:
            pending.clear()
            return
        while pending and stream.room() > 0:
            stream.feed(bytes(pending[:piece]))
            del pending[:piece]
        if self.complete and not pending and not stream.ended:
            stream.end()

    def cancel(self, why: str) -> None:
        """Nobody waits for this request's job any more: its body stops, it is cancelled."""
        job = self.job
        if job is None or job.finished:
            return
        if self.stream is not None:
            self.stream.abort(why)
        if not job.finished and self.driver is not None:
            self.driver.cancel(job, why)
