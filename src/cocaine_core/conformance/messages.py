"""What a slave may send the engine, checked field by field (docs/protocol.md, "Engine ↔ slave").

``parse`` turns the frames a ROUTER received into a ``Message`` or raises ``ProtocolViolation``
naming the message and what the protocol says instead (a CHOKE_BATCH's entries and frames
included: ``batch_problem``). ``Answer`` gathers one job's answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cocaine_core import protocol
from cocaine_core.errors import ProtocolError
from cocaine_core.protocol import Code

#: The slave id the kit gives the worker (``COCAINE_SLAVE_ID``).
SLAVE_ID = "conformance-1"
#: The routing identity of the worker's main socket.
MAIN = SLAVE_ID.encode()
#: The app name the kit gives the worker (``COCAINE_APP``).
APP = "conformance"
#: The most entries in a CHOKE_BATCH (docs/protocol.md, Batches).
BATCH_MAX = 64


class ProtocolViolation(Exception):
    """A message the protocol does not allow: the rule being checked fails, naming it."""


@dataclass(frozen=True)
class Message:
    """One message from the worker: who sent it, its code, header fields, payload, when."""

    identity: bytes
    code: int
    fields: list[Any]
    payload: bytes | None
    at: float
    #: Every payload frame (``payload`` is the first): a CHOKE_BATCH has one per last chunk.
    frames: tuple[bytes, ...] = ()


@dataclass
class Answer:
    """One job's answer as it arrives: chunks, then how it ended."""

    job_id: int
    event: str
    sent_at: float
    auto_credit: bool = True
    chunks: list[bytes] = field(default_factory=list)
    end: str | None = None  # "choke" or "error"
    code: int | None = None
    message: str = ""
    ended_at: float | None = None
    owed: int = 0  # chunks received and not yet given back as CREDIT
    size: int = 0  # bytes of chunks received
    streamed: bool = False  # its INVOKE said {"stream": true}: the kit sends the body in pieces
    pieces: int = 0  # pieces of its body sent (the INVOKE's, if not empty, included)
    granted: int = 0  # pieces the worker said its handler read (CREDIT from the worker)
    per_piece: bool = False  # the handler answers a chunk per piece it reads (``sizes``)
    head: dict[str, Any] | None = None  # its HEADERS' map
    batched: bool = False  # its CHOKE came as an entry of a CHOKE_BATCH

    @property
    def done(self) -> bool:
        """Whether the job has ended (CHOKE or ERROR)."""
        return self.end is not None

    def body(self) -> bytes:
        """The chunks joined."""
        return b"".join(self.chunks)

    def describe(self) -> str:
        """How the job ended, for a person."""
        if self.end == "error":
            return f"ERROR {self.code}: {short(self.message)}"
        if self.end == "choke":
            return f"{len(self.chunks)} chunk(s), {len(self.body())} bytes, then CHOKE"
        return f"no end yet after {len(self.chunks)} chunk(s)"


def short(value: Any, limit: int = 160) -> str:
    """``repr``-like text of ``value`` cut to ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more]"


def who(identity: bytes) -> str:
    """The socket a message came from, for a person."""
    if identity == MAIN:
        return "the main socket"
    return f"the socket {short(identity.decode('utf-8', 'backslashreplace'), 60)!s}"


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_id(value: Any) -> bool:
    return value is None or _is_int(value)


#: Per code a slave may send: name, required field checks, optional field checks, and the
#: least and most payload frames.
_SHAPES: dict[int, tuple[str, list[tuple[str, Callable[[Any], bool]]],
                         list[tuple[str, Callable[[Any], bool]]], int, int]] = {
    Code.HANDSHAKE: ("HANDSHAKE", [("slave_id: str", _is_str), ("pid: int", _is_int)],
                     [("features: map", lambda v: isinstance(v, dict))], 0, 0),
    Code.HEARTBEAT: ("HEARTBEAT", [("slave_id: str", _is_str)], [], 0, 0),
    Code.CHUNK: ("CHUNK", [("job_id: int", _is_int)], [], 1, 1),
    Code.CHOKE: ("CHOKE", [("job_id: int", _is_int)], [], 0, 1),
    Code.ERROR: ("ERROR", [("job_id: int or nil", _is_id), ("code: int", _is_int),
                           ("message: str", _is_str)],
                 [("traceback: str", lambda v: v is None or isinstance(v, str))], 0, 0),
    Code.CREDIT: ("CREDIT", [("job_id: int", _is_int), ("n: int", _is_int)], [], 0, 0),
    Code.HEADERS: ("HEADERS", [("job_id: int", _is_int),
                               ("{status, headers}: map", lambda v: isinstance(v, dict))],
                   [], 0, 0),
    Code.CHOKE_BATCH: ("CHOKE_BATCH", [("[[job_id, with_last], ...]: array",
                                        lambda v: isinstance(v, list))], [], 0, BATCH_MAX),
    Code.LOG: ("LOG", [("slave_id: str", _is_str),
                       ("stream: 'stdout' or 'stderr'", lambda v: v in ("stdout", "stderr")),
                       ("text: str", _is_str)],
               [("dropped: int", _is_int)], 0, 0),
}


def name_of(code: int) -> str:
    """A message code's name (``CHUNK``), or the number for an unknown one."""
    try:
        return Code(code).name
    except ValueError:
        return f"code {code}"


def parse(frames: list[bytes], at: float) -> Message:
    """Check one received message (identity first) against the protocol; ProtocolViolation
    naming it if it breaks the protocol."""
    if len(frames) < 2:
        raise ProtocolViolation("a message with no header frame (only the routing identity)")
    identity, header, payload = frames[0], frames[1], frames[2:]
    source = who(identity)
    try:
        fields = protocol.unpack(header)
    except ProtocolError:
        raise ProtocolViolation(f"{source} sent a header frame that is not a msgpack array "
                                f"starting with a message code: {short(header[:80])} "
                                f"({len(frames) - 1} frame(s))") from None
    code = fields[0]
    shape = _SHAPES.get(code)
    if shape is None:
        raise ProtocolViolation(f"{source} sent {short(fields)}: {name_of(code)} is not a "
                                f"message a slave sends (1, 3, 5, 6, 7, 9, 12, 13 or 15)")
    name, required, optional, least, most = shape
    values = fields[1:]
    if not len(required) <= len(values) <= len(required) + len(optional):
        expected = ", ".join(f for f, _ in required + optional)
        raise ProtocolViolation(f"{source} sent the {name} {short(fields)} with "
                                f"{len(values)} field(s) after the code; expected [{code}, "
                                f"{expected}] (the last {len(optional)} optional)")
    for (what, check), value in zip(required + optional, values, strict=False):
        if not check(value):
            raise ProtocolViolation(f"{source} sent the {name} {short(fields)}: "
                                    f"{short(value, 60)} is not {what}")
    if not least <= len(payload) <= most:
        raise ProtocolViolation(f"{source} sent the {name} {short(fields)} with "
                                f"{len(payload)} payload frame(s); it takes "
                                f"{least if least == most else f'{least} to {most}'}")
    if code in (Code.HEARTBEAT, Code.LOG) and fields[1] != SLAVE_ID:
        raise ProtocolViolation(f"{source} sent the {name} {short(fields)}: it carries slave "
                                f"id {fields[1]!r}, the kit gave {SLAVE_ID!r}")
    problem = batch_problem(fields[1], len(payload)) if code == Code.CHOKE_BATCH else None
    if problem is not None:
        raise ProtocolViolation(f"{source} sent a malformed CHOKE_BATCH {short(fields)}: "
                                f"{problem}")
    return Message(identity, code, fields, payload[0] if payload else None, at, tuple(payload))


def batch_problem(entries: list[Any], frames: int) -> str | None:
    """What is wrong with a CHOKE_BATCH's entries (1 to 64 ``[job_id: int, with_last: bool]``)
    and its ``frames`` payload frames (one per entry whose ``with_last`` is true), or None."""
    if not 1 <= len(entries) <= BATCH_MAX:
        return f"it has {len(entries)} entries; a CHOKE_BATCH stands for 1 to {BATCH_MAX} CHOKEs"
    for index, entry in enumerate(entries):
        if (not isinstance(entry, list) or len(entry) != 2 or not _is_int(entry[0])
                or not isinstance(entry[1], bool)):
            return (f"entry {index} {short(entry, 60)} is not [job_id: int, with_last: bool] "
                    f"(each entry is exactly the CHOKE [6, job_id] it stands for)")
    lasts = sum(1 for _, with_last in entries if with_last)
    if lasts != frames:
        return (f"{lasts} of its entries say with_last, but {frames} payload frame(s) "
                f"follow; one frame per entry whose with_last is true, in order: that job's "
                f"last chunk")
    return None


def head_problem(head: dict[str, Any]) -> str | None:
    """What is wrong with a HEADERS map (``{"status": 100..599, "headers": [[name, value],
    ...]}``, at most 64 pairs of str without CR or LF), or None if nothing is."""
    status, headers = head.get("status"), head.get("headers", [])
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        return f"its status {short(status, 40)} is not an int in 100..599"
    if not isinstance(headers, list) or len(headers) > 64:
        return "its headers are not a list of at most 64 [name, value] pairs"
    for pair in headers:
        if (not isinstance(pair, list) or len(pair) != 2 or not all(map(_is_str, pair))
                or any(c in text for text in pair for c in "\r\n")):
            return (f"header {short(pair, 60)} is not a [name, value] pair of str without "
                    f"line breaks")
    return None


def chokes(message: Message) -> list[Message]:
    """The CHOKEs a CHOKE_BATCH (checked by ``parse``) stands for, in order, each with its
    last chunk if its entry says ``with_last``."""
    lasts = iter(message.frames)
    return [Message(message.identity, Code.CHOKE, [Code.CHOKE, job_id],
                    next(lasts) if with_last else None, message.at)
            for job_id, with_last in message.fields[1]]
