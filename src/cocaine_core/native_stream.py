"""A client's streamed request on the node's endpoint: its body's pieces, credit, and stalls.

A request whose policy says ``stream`` is followed by ``[5, id] + piece`` messages and ends
with ``[6, id]`` (docs/protocol.md, streamed requests). Its job carries a ``BodyStream``
(``engine/body.py``); the pieces are found again through the requests in flight
(``InFlight``), and the node grants the client more (``[12, id, n]``) as the handler reads.
A client that stops sending while it may (``STALL_TIMEOUT``), or sends past its credit, has
its request failed with 400 and its job stopped; pieces of a request that has ended are
dropped without a word (the client learns of the end from the answer).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from cocaine_core import protocol
from cocaine_core.engine import body
from cocaine_core.engine.body import BodyOverrun, BodyStream
from cocaine_core.protocol import Code, Status

if TYPE_CHECKING:
    from cocaine_core.engine import Engine
    from cocaine_core.engine.job import Job
    from cocaine_core.native_sink import InFlight, NativeSink

#: Seconds a streamed request may go without a piece while it has credit to send one.
STALL_TIMEOUT = 60.0


def open_stream(sink: NativeSink) -> BodyStream:
    """The body stream of a client's streamed request answered through ``sink``: credit goes
    back to that client."""
    outbox, envelope, request_id = sink.outbox, sink.envelope, sink.request_id
    stream = BodyStream()

    def grant(pieces: int) -> None:
        outbox.send([*envelope, protocol.pack(Code.CREDIT, request_id, pieces)])

    stream.on_credit = grant
    return stream


def watch(engine: Engine, job: Job, timeout: float = STALL_TIMEOUT) -> None:
    """Fail ``job`` (400) if its client stops sending the body while it may."""
    stream = job.stream
    assert stream is not None
    loop = asyncio.get_running_loop()

    def check() -> None:
        if stream.closed or stream.ended:
            return
        idle = time.monotonic() - stream.touched
        if stream.room() == 0 or idle < timeout:  # a slow handler is not the client's stall
            loop.call_later(max(0.5, timeout - idle), check)
            return
        fail(engine, job, f"the request's body stalled: no piece came for {timeout:g} s "
                          f"while the node waited for one")

    loop.call_later(timeout, check)


def piece(in_flight: InFlight, client: bytes, request_id: Any, code: int,
          frames: list[bytes]) -> None:
    """A piece (CHUNK) or the end (CHOKE, maybe with a last piece) of a streamed request's
    body from ``client``."""
    entry = in_flight.get((client, request_id))
    if entry is None:
        return  # the request has ended (or never was): its answer told the client
    engine, job = entry
    stream = job.stream
    if stream is None:
        fail(engine, job, "the request did not say policy.stream = true, so no body pieces "
                          "may follow it")
        return
    try:
        if len(frames) > 2:
            stream.feed(frames[2])
        if code == Code.CHOKE:
            stream.end()
    except BodyOverrun as exc:
        fail(engine, job, f"{exc}: wait for CREDIT [12, id, n] before sending more "
                          f"(docs/protocol.md, streamed requests)")


def fail(engine: Engine, job: Job, message: str) -> None:
    """End a streamed request with 400 ``message`` and stop its job wherever it is."""
    sink = job.sink
    if job.stream is not None:
        job.stream.abort(message)  # cancelled by the engine that holds it now
    else:
        body.cancel(engine, job, message)
    sink.error(Status.BAD_REQUEST, message)
