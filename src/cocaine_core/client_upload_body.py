"""The state of one streamed request, shared by ``client_upload`` (``Client.open``) and
``client_upload_async``: its credit, the body gathered but not sent, the answer's chunks not
yet read, and how it ended; and the bounds of it all."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cocaine_core import protocol
from cocaine_core.client_frames import decode_answer, sent_deadline
from cocaine_core.errors import ProtocolError, ServiceError
from cocaine_core.protocol import CONTROL_APP, Code, Status

if TYPE_CHECKING:
    from cocaine_core.client_links import LinkFailed

#: The node's window: pieces of a body on their way to the handler (docs/protocol.md).
WINDOW = 8
#: Pieces of credit a streamed request starts with: the rest of the window comes as CREDIT
#: once its job runs (a queued request holds one piece in the node, as a plain one does).
FIRST_CREDIT = 1
#: The largest piece sent (a larger write is split; at most the client's max_message - 4 KiB).
PIECE = 2**20
#: Writes smaller than this are gathered into one piece before they are sent.
COALESCE = 256 * 2**10
#: The most answer chunks (and bytes) kept while the body is still being written.
ANSWER_CHUNKS, ANSWER_BYTES = 64, 16 * 2**20
#: The largest credit one CREDIT message may grant (more is a node's mistake).
MAX_CREDIT = 2**20

#: What ``write`` takes.
Piece = bytes | bytearray | memoryview | str


def open_frames(request_id: int, app: str, event: str, urgent: bool, timeout: float | None,
                deadline: float | None, retry: bool, wait: float | None) -> list[bytes]:
    """The REQUEST of a streamed request (no body frame: every piece follows as a CHUNK)."""
    if app == CONTROL_APP:
        raise ServiceError(Status.BAD_REQUEST, "@node (the control service) takes its "
                                               "arguments whole, never as a streamed body: "
                                               "use control(method, **args)")
    policy: dict[str, Any] = {"urgent": urgent, "timeout": timeout,
                              "deadline": sent_deadline(deadline, wait), "stream": True}
    if not retry:
        policy["retry"] = False
    return [protocol.pack(Code.REQUEST, request_id, app, event, policy)]


def piece_limit(max_message: int | None) -> int:
    """The largest piece a client whose node takes ``max_message`` bytes sends."""
    return PIECE if max_message is None else max(1, min(PIECE, max_message - 4096))


class Body:
    """What one streamed request has sent and received: its credit, the body gathered but not
    sent, the answer's chunks not yet read, and how it ended. Shared by both clients."""

    def __init__(self, request_id: int, endpoint: str, limit: int) -> None:
        self.id = request_id
        self.endpoint = endpoint
        self.limit = limit
        self.coalesce = min(COALESCE, limit)
        self.credit = FIRST_CREDIT
        self.gathered = bytearray()
        self.answer: deque[bytes] = deque()
        self.answer_bytes = 0
        self.error: ServiceError | None = None
        self.done = False  # the answer ended (CHOKE or ERROR), or the request failed
        self.ended = False  # the body is complete (CHOKE sent)
        self.closed = False
        #: Pieces sent, and the most sent beyond the credit seen (0: the window held).
        self.pieces = 0

    def writable(self) -> bool:
        """Whether the body takes more: False once the answer has ended (the handler wants no
        more of it: what is written then is dropped); raises the request's error, and when
        the request was closed or its body ended."""
        if self.error is not None:
            raise self.error
        if self.closed:
            raise ServiceError(Status.BAD_REQUEST, "this request is closed (cancelled): open "
                                                   "another to send more")
        if self.ended:
            raise ServiceError(Status.BAD_REQUEST, "the body was ended (end()): nothing more "
                                                   "can be written to this request")
        return not self.done

    def pieces_of(self, data: Piece) -> Iterator[bytes]:
        """The pieces ready to send once ``data`` is written; what is left (less than
        ``coalesce`` bytes) stays gathered. Each piece is a copy of its own (ZeroMQ may send
        it after ``write`` returned, when the caller reuses its buffer)."""
        if isinstance(data, str):
            data = data.encode()
        elif not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"write() takes bytes, bytearray, memoryview or str; got "
                            f"{type(data).__name__}")
        view = memoryview(data).cast("B")
        if self.gathered:
            room = self.coalesce - len(self.gathered)
            self.gathered += view[:room]
            view = view[room:]
            if len(self.gathered) < self.coalesce:
                return
            yield self.rest()
        while len(view) >= self.coalesce:
            yield bytes(view[:self.limit])
            view = view[self.limit:]
        self.gathered += view

    def rest(self) -> bytes:
        """What is gathered, taken."""
        piece = bytes(self.gathered)
        self.gathered.clear()
        return piece

    @property
    def full(self) -> bool:
        """Whether the answer's chunks not yet read reached the bound."""
        return len(self.answer) >= ANSWER_CHUNKS or self.answer_bytes >= ANSWER_BYTES

    def take(self, code: int, payload: bytes | None, fields: list[Any]) -> None:
        """Take one message of the node for this request."""
        if code == Code.CREDIT:
            n = fields[2] if len(fields) > 2 else None
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_CREDIT:
                self.fail(ServiceError(Status.SERVER_ERROR, f"the node at {self.endpoint} "
                                                            f"sent a bad CREDIT ({n!r})"))
            else:
                self.credit += n
        elif code in (Code.CHUNK, Code.CHOKE):
            if payload:
                self.answer.append(payload)
                self.answer_bytes += len(payload)
            elif code == Code.CHUNK:
                self.answer.append(b"")
            self.done = code == Code.CHOKE
        elif code == Code.ERROR:
            self.fail(ServiceError(int(fields[2]), str(fields[3])))

    def take_frames(self, frames: list[bytes]) -> None:
        """Take a message as it came; one for another request (abandoned before) is dropped."""
        try:
            rid, code, payload, fields = decode_answer(frames)
        except ProtocolError:
            return
        if rid == self.id:
            self.take(code, payload, fields)

    def fail(self, error: ServiceError) -> None:
        """The request failed with ``error`` (the node ended it, or the connection did)."""
        if self.error is None:
            self.error = error
        self.done = True

    def next_chunk(self) -> bytes | None:
        """The next answer chunk kept (None: none now); the error once every one was read."""
        if self.answer:
            chunk = self.answer.popleft()
            self.answer_bytes -= len(chunk)
            return chunk
        if self.error is not None:
            raise self.error
        return None

    def not_read(self) -> ServiceError:
        """The error of a blocking write that needs credit while the answer is not read."""
        return ServiceError(Status.BAD_REQUEST, f"the handler answers while it reads, and "
                                                f"{len(self.answer)} chunks "
                                                f"({self.answer_bytes} bytes) of its answer "
                                                f"wait unread here: take them between writes "
                                                f"(received(), or iterate the request), or "
                                                f"use AsyncClient.open with a task reading")

    def no_credit(self, wait: float | None) -> ServiceError:
        """The error of a write that got no credit within ``wait``."""
        return ServiceError(Status.SERVER_ERROR, f"the node at {self.endpoint} took no more "
                                                 f"of the body within {wait or 0:g} s: the "
                                                 f"handler does not read it (request.stream) "
                                                 f"or is slow, or the app is busy; wait longer "
                                                 f"(Client(wait=...), --wait)")


def link_error(failure: LinkFailed) -> ServiceError:
    """A failed link as the error of the streamed request on it (never resent)."""
    if failure.dropped:
        return ServiceError(Status.SERVER_ERROR, f"the connection to the node at "
                                                 f"{failure.endpoint} dropped during a "
                                                 f"streamed request: {failure.what()}; it is "
                                                 f"not resent (its body is not kept)")
    return failure.error or ServiceError(Status.UNAVAILABLE, f"the node at {failure.endpoint} "
                                                             f"is unreachable: "
                                                             f"{failure.what()}")
