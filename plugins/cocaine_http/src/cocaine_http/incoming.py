"""One request as it is read: its head, its body's progress, and the job that answers it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httptools

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
        "head_size",
        "headers",
        "headers_done",
        "job",
        "keep_alive",
        "method",
        "path",
        "pending",
        "query",
        "started_in",
        "stream",
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
        #: Body bytes read and not yet given to the job (it waits for room, or to start).
        self.pending = bytearray()
        #: The whole request has been read.
        self.complete = False
        self.driver: HttpServer | None = None
        self.answer: Answer | None = None
        self.job: Job | None = None
        self.stream: BodyStream | None = None

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
