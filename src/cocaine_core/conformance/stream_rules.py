"""The rules about streamed request bodies and HEADERS (docs/protocol.md, "Streamed bodies"),
only for a worker whose handshake says ``stream``: ``streamed body`` and ``headers``.

The kit sends a streamed body as the engine does: the INVOKE says ``{"stream": true}`` and
carries the first piece, the next pieces follow as CHUNKs within the window (at most
``WINDOW`` sent and not granted back by the worker's CREDIT), and a CHOKE ends it. The harness
checks every CREDIT as it arrives (never more than was sent; for ``sizes``, whose handler
answers a chunk per piece it reads, never more than it answered plus the piece it holds).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from cocaine_core.conformance.harness import Harness
from cocaine_core.conformance.job_rules import WINDOW, Fail, Skip
from cocaine_core.conformance.messages import Answer, short
from cocaine_core.protocol import Code

#: The pieces of the body the ``echo`` part sends after an empty first piece: 24 pieces from
#: 1 byte to 64 KiB, every byte value among them (about 0.6 MiB).
ECHO_PIECES = tuple(bytes((i * 31 + k) % 256 for k in range(1 + (i * 9973) % 65536))
                    for i in range(24))
#: The pieces of the ``sizes`` part: piece i is i + 1 bytes long (the first, 1 byte, rides on
#: the INVOKE), 24 in all.
SIZES = tuple(range(1, 25))
#: How long the kit holds back the ``sizes`` answer's credit (its handler stops reading).
HOLD = 0.3
#: How long the kit waits, in the cancel part, for the handler to wait for a piece.
SETTLE = 0.3


def _skip_unless_stream(kit: Harness) -> None:
    if not kit.stream:
        raise Skip("the worker does not claim streamed bodies (features.stream)")


def _feed(kit: Harness, answer: Answer, pieces: Sequence[bytes], what: str) -> None:
    """Send ``pieces`` of ``answer``'s body within the window, waiting for the worker's
    CREDIT when it is used up; Fail if none comes within the kit's timeout (a stall)."""
    for piece in pieces:
        while answer.pieces - answer.granted >= WINDOW and not answer.done:
            granted = answer.granted
            if not kit.wait(lambda: answer.granted > granted or answer.done,  # noqa: B023
                            time.monotonic() + kit.timeout):
                raise Fail(f"{what}: the body stalled: the kit sent {answer.pieces} pieces, the "
                           f"worker granted {answer.granted} back (CREDIT) and then none for "
                           f"{kit.timeout:g} s, so the window of {WINDOW} is used up; a slave "
                           f"grants pieces as its handler reads them (at least every "
                           f"{WINDOW // 2}, and before it waits for more)")
        if answer.done:  # it answered before the whole body was sent: the rest is not needed
            return
        kit.feed(answer, piece)


def _hold(kit: Harness, answer: Answer, pieces: Sequence[bytes]) -> list[bytes]:
    """For ``HOLD`` seconds, send pieces as the window has room (each CREDIT is checked as
    it arrives); the pieces not sent."""
    rest = list(pieces)
    until = time.monotonic() + HOLD
    while time.monotonic() < until and not answer.done:
        while rest and answer.pieces - answer.granted < WINDOW:
            kit.feed(answer, rest.pop(0))
        kit.wait(lambda: bool(rest) and answer.pieces - answer.granted < WINDOW, until)
    return rest


def _finish(kit: Harness, answer: Answer, what: str) -> None:
    if not kit.wait(lambda: answer.done, time.monotonic() + kit.timeout):
        raise Fail(f"{what}: no end (CHOKE or ERROR) within {kit.timeout:g} s of the body's end "
                   f"({answer.describe()}; {answer.granted} of {answer.pieces} pieces granted)")
    if answer.end != "choke":
        raise Fail(f"{what} ended with {answer.describe()}, expected its answer and a CHOKE")


def streamed_body(kit: Harness) -> str:
    """Only for a worker that claims ``stream``: a streamed ``echo`` answers the whole body and
    the worker grants CREDIT as its handler reads (the body never stalls); ``sizes`` grants
    no piece its handler has not read; pieces for an ended job are dropped; CANCEL stops a
    handler waiting for a piece."""
    _skip_unless_stream(kit)
    # An unknown event: 404 at once; the pieces the engine still sends for it are dropped.
    unknown = kit.invoke("no-such-event", b"first", streamed=True)
    if not kit.wait(lambda: unknown.done, time.monotonic() + kit.timeout):
        raise Fail(f"a streamed INVOKE of `no-such-event`: no end within {kit.timeout:g} s")
    if unknown.end != "error" or unknown.code != 404:
        raise Fail(f"a streamed INVOKE of `no-such-event` ended with {unknown.describe()}, "
                   f"expected ERROR 404")
    for piece in (b"late", b"pieces"):
        kit.feed(unknown, piece)
    kit.end_body(unknown)

    echo = kit.invoke("echo", b"", streamed=True)
    what = f"a streamed `echo` of {len(ECHO_PIECES)} pieces"
    _feed(kit, echo, ECHO_PIECES, what)
    kit.end_body(echo)
    _finish(kit, echo, what)
    body = b"".join(ECHO_PIECES)
    if echo.body() != body:
        raise Fail(f"{what} ({len(body)} bytes) came back as {len(echo.body())} bytes that "
                   f"differ: the handler reads every piece, in order")
    took = (echo.ended_at or echo.sent_at) - echo.sent_at

    sizes = kit.invoke("sizes", b"s", streamed=True, auto_credit=not kit.flow)
    sizes.per_piece = True
    what = f"a streamed `sizes` of {len(SIZES)} pieces"
    pieces = [b"s" * n for n in SIZES[1:]]
    # While the answer's credit is held the handler stops reading (it may hold back up to 3
    # pieces it read): send what the window allows, never waiting for it to open.
    rest = _hold(kit, sizes, pieces)
    answered = len(sizes.chunks)
    if kit.flow:
        kit.send(Code.CREDIT, sizes.job_id, 10 * len(SIZES))
    _feed(kit, sizes, rest, what)
    kit.end_body(sizes)
    _finish(kit, sizes, what)
    expected = [str(n).encode() for n in SIZES]
    if sizes.chunks != expected:
        raise Fail(f"{what} answered {short(sizes.chunks, 120)}, expected a chunk per piece "
                   f"with its size, in order ({short(expected, 60)})")

    waiting = kit.invoke("echo", b"one", streamed=True)
    kit.feed(waiting, b"two")
    kit.wait(lambda: waiting.granted >= 2 or waiting.done, time.monotonic() + SETTLE)
    kit.send(Code.CANCEL, waiting.job_id)
    cancelled = time.monotonic()
    if not kit.wait(lambda: waiting.done, cancelled + 2.0):
        raise Fail("a streamed `echo` whose body had 2 of its pieces did not end (CHOKE or "
                   "ERROR) within 2 s of its CANCEL [11, id]: a handler waiting for a piece "
                   "stops when the job is cancelled")
    return (f"`echo` of {len(ECHO_PIECES)} pieces ({len(body) // 1024} KiB) whole in "
            f"{took:.2f} s, {echo.granted} granted; `sizes` of {len(SIZES)} pieces in order, "
            f"{sizes.granted} granted, {answered} answered while its credit was held; the "
            f"pieces of an ended job dropped; CANCEL mid-body ended the job in "
            f"{(waiting.ended_at or cancelled) - cancelled:.2f} s")


def headers(kit: Harness) -> str:
    """Only for a worker that claims ``stream``: ``status 201`` sends HEADERS (status 201,
    ``X-Conformance: yes``) before its answer; ``status 600`` fails with 502 and no HEADERS."""
    _skip_unless_stream(kit)
    good = kit.invoke("status", b"201")
    bad = kit.invoke("status", b"600")
    for answer, name in ((good, "`status 201`"), (bad, "`status 600`")):
        if not kit.wait(lambda: answer.done, time.monotonic() + kit.timeout):  # noqa: B023
            raise Fail(f"{name}: no end (CHOKE or ERROR) within {kit.timeout:g} s")
    if good.end != "choke" or good.body() != b"status 201":
        raise Fail(f"`status 201` ended with {good.describe()}, expected 'status 201' and a "
                   f"CHOKE")
    head = good.head
    if head is None:
        raise Fail("`status 201` answered without a HEADERS [13, id, {status, headers}] "
                   "before its answer")
    pairs = [(str(name).lower(), value) for name, value in head.get("headers", [])]
    if head.get("status") != 201 or ("x-conformance", "yes") not in pairs:
        raise Fail(f"`status 201` sent HEADERS {short(head)}, expected status 201 and the "
                   f"header X-Conformance: yes")
    if bad.end != "error" or bad.code != 502 or bad.head is not None:
        raise Fail(f"`status 600` ended with {bad.describe()}"
                   f"{' after a HEADERS' if bad.head is not None else ''}; expected ERROR 502 "
                   f"and no HEADERS (600 is not an HTTP status: the library refuses it)")
    return (f"`status 201`: HEADERS {short(head, 80)} then 'status 201'; `status 600`: "
            f"ERROR 502 {short(bad.message, 60)}")
