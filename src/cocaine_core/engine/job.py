"""A job: one event to be handled, where its answer goes, and the policy it runs under."""

from __future__ import annotations

import itertools
import time
from typing import Any, Protocol

import attrs

from cocaine_core.engine.body import BodyStream
from cocaine_core.errortext import MESSAGE_LIMIT, cut
from cocaine_core.protocol import Status


class JobSink(Protocol):
    """Where a job's answer goes: a client, a timer, a socket. Exactly one of ``choke`` or
    ``error`` is called, once, after any number of ``chunk`` calls."""

    def chunk(self, data: bytes) -> None:
        """One chunk of the answer."""

    def choke(self) -> None:
        """The answer is complete."""

    def error(self, code: int, message: str) -> None:
        """The job failed with ``code`` (see ``protocol.Status``) and a message."""

    # A sink may also define ``last(data)``: the final chunk and the end in one go (one
    # message instead of two); sinks without it get ``chunk(data)`` then ``choke()``.


class NullSink:
    """A sink that drops everything (jobs nobody waits for)."""

    def chunk(self, data: bytes) -> None:
        """Drop the chunk."""

    def choke(self) -> None:
        """Nothing to do."""

    def error(self, code: int, message: str) -> None:
        """Nothing to do."""


_ids = itertools.count(1)


@attrs.define(eq=False, slots=True)
class Job:
    """One event to run: ``event``, ``body``, ``meta``; its policy; its sink."""

    event: str
    body: bytes = b""
    meta: dict[str, Any] = attrs.field(factory=dict)
    sink: JobSink = attrs.field(factory=NullSink)
    urgent: bool = False
    #: Most seconds the job may run once started (None: no limit).
    timeout: float | None = None
    #: Monotonic time by which the job must have started (None: no deadline).
    deadline: float | None = None
    #: Whether the job runs again (once, on another slave) if its slave dies before it sent
    #: anything: off for handlers that must never run twice (task or request ``retry``).
    retry: bool = True
    id: int = attrs.field(factory=lambda: next(_ids))
    created: float = attrs.field(factory=time.monotonic)
    started: float | None = None
    attempts: int = 0
    sent_any: bool = False
    finished: bool = False
    #: Its client left before it ended (see ``abandon``).
    abandoned: bool = False
    #: Its body arrives in pieces while it runs (``body.py``); None: ``body`` is all of it.
    stream: BodyStream | None = None
    #: Its slave said how its answer should be presented (HEADERS: at most once).
    headed: bool = False

    def expired(self, now: float) -> bool:
        """Whether the deadline passed before the job started."""
        return self.deadline is not None and now >= self.deadline

    def overtime(self, now: float) -> bool:
        """Whether the job has run past its timeout."""
        return (self.timeout is not None and self.started is not None
                and now - self.started >= self.timeout)

    # The ways a job ends; each reaches the sink at most once (``abandon`` never does).

    def chunk(self, data: bytes) -> None:
        """Pass one chunk of the answer to the sink."""
        if not self.finished:
            self.sent_any = True
            self.sink.chunk(data)

    def complete(self, last: bytes | None = None) -> None:
        """Finish the job successfully, ``last`` being its final chunk if it has one."""
        if self.finished:
            return
        self.finished = True
        if self.stream is not None:
            self.stream.close()
        if last is None:
            self.sink.choke()
            return
        self.sent_any = True
        finish = getattr(self.sink, "last", None)
        if finish is not None:
            finish(last)
        else:
            self.sink.chunk(last)
            self.sink.choke()

    def fail(self, code: int, message: str) -> None:
        """Finish the job with an error; the message goes at most ``MESSAGE_LIMIT`` bytes
        long, valid UTF-8 (a slave of any language may send anything)."""
        if not self.finished:
            self.finished = True
            if self.stream is not None:
                self.stream.close()
            self.sink.error(int(code), cut(message, MESSAGE_LIMIT))

    def refuse(self, message: str) -> None:
        """Finish the job with 503 (no capacity)."""
        self.fail(Status.UNAVAILABLE, message)

    def abandon(self) -> None:
        """End the job without a word to its sink: nobody waits for the answer any more.

        A queue never hands out an ended job, so one still waiting never starts; one already
        running finishes on its slave, and what it sends goes nowhere.
        """
        if not self.finished:
            self.finished = True
            self.abandoned = True
            if self.stream is not None:
                self.stream.close()
