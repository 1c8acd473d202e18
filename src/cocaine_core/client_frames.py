"""The frames of a client's request and of the node's answer (docs/protocol.md)."""

from __future__ import annotations

from typing import Any

from cocaine_core import protocol
from cocaine_core.errors import ProtocolError
from cocaine_core.protocol import Code
from cocaine_core.trust.keys import Signer

#: What a request's body may be given as: bytes, text (sent as UTF-8), or nothing.
Body = bytes | str | None


def request_body(data: Body, limit: int | None = None) -> bytes:
    """``data`` as the bytes of a request's body, checked against a node's ``limit``."""
    if data is None:
        return b""
    return protocol.check_body(data.encode() if isinstance(data, str) else bytes(data), limit)


def request_frames(request_id: int, app: str, event: str, data: Body, urgent: bool,
                   timeout: float | None, deadline: float | None,
                   retry: bool = True, limit: int | None = None,
                   signer: Signer | None = None) -> list[bytes]:
    """The frames of a request: its header (with its policy, signed by ``signer`` if
    given) and its body."""
    policy: dict[str, Any] = {"urgent": urgent, "timeout": timeout, "deadline": deadline}
    if not retry:  # only when off: the policy of every other request stays as it was
        policy["retry"] = False
    body = request_body(data, limit)
    if signer is not None:
        policy["auth"] = signer.sign(event, body)
    return [protocol.pack(Code.REQUEST, request_id, app, event, policy), body]


def sent_deadline(deadline: float | None, wait: float | None) -> float | None:
    """The deadline to send: the caller's, else ``wait``. A client stops waiting when no part
    of the answer came for ``wait`` seconds, the first part included, and no first part
    comes before the job starts: a job that starts later has nobody left to answer."""
    if deadline is not None or wait is None:
        return deadline
    return wait if 0 < wait < 10**9 else None  # what a node takes


def decode_answer(frames: list[bytes]) -> tuple[Any, int, bytes | None, Any]:
    """An answer's request id, code, data frame (None if none) and header fields."""
    fields = protocol.unpack(frames[0])
    if len(fields) < 2:
        raise ProtocolError("reply header too short")
    return fields[1], fields[0], (frames[1] if len(frames) > 1 else None), fields
