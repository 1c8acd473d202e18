"""Message codes and framing of both protocols (see docs/protocol.md, frame by frame).

Every message is one ZeroMQ multipart message: a header frame, a msgpack array whose first
element is the message code, and, for messages that carry a payload, exactly one more frame
holding the payload's raw bytes.
"""

from __future__ import annotations

import threading
from enum import IntEnum
from typing import Any

import msgpack

from cocaine_core.errors import ProtocolError, ServiceError

#: Where ``cocaine run`` listens and every client and command looks by default.
DEFAULT_ENDPOINT = "tcp://127.0.0.1:10053"
#: The reserved app name of the node's control service.
CONTROL_APP = "@node"
#: The largest message a node takes from a client by default (``cocaine node --max-message``).
MAX_MESSAGE = 64 * 2**20


class Code(IntEnum):
    """Message codes, shared by the slave and the client protocol where they mean the same."""

    HANDSHAKE = 1  # slave → engine: [1, slave_id, pid]
    CONFIGURE = 2  # engine → slave: [2, {settings}]
    HEARTBEAT = 3  # slave → engine: [3, slave_id]
    INVOKE = 4  # engine → slave: [4, job_id, event, meta] + body
    CHUNK = 5  # slave → engine, node → client: [5, id] + data
    CHOKE = 6  # slave → engine, node → client: [6, id]
    ERROR = 7  # slave → engine: [7, id, code, message, traceback]; node → client: no traceback
    TERMINATE = 8  # engine → slave: [8, reason]
    LOG = 9  # slave → engine: [9, slave_id, stream, text]
    REQUEST = 10  # client → node: [10, request_id, app, event, policy] + body
    # client → node: [11, request_id]: the client no longer waits for that answer;
    # engine → slave: [11, job_id]: nobody waits for that job's answer: stop it
    CANCEL = 11
    # engine → slave: [12, job_id, n]: the job may send n more chunks of its answer;
    # slave → engine: [12, job_id, n]: the handler read n chunks of a streamed body;
    # node → client: [12, request_id, n]: the client may send n more chunks of its body
    CREDIT = 12
    # slave → engine: [13, job_id, {"status": int, "headers": [[name, value], ...]}]: how the
    # answer should be presented (http-server uses it); before the job's first CHUNK
    HEADERS = 13
    # engine → slave, to a slave whose handshake said "batch": [14, [[job_id, event, meta],
    # ...]] + one body frame per job: several INVOKEs in one message
    INVOKE_BATCH = 14
    # slave → engine, once CONFIGURE said "batch": [15, [[job_id, with_last], ...]] + one
    # frame per entry whose with_last is true: several CHOKEs (each maybe with its last
    # chunk) in one message
    CHOKE_BATCH = 15


class Status(IntEnum):
    """Error codes carried by ERROR messages (as the original's)."""

    BAD_REQUEST = 400  # the request could not be understood
    UNAUTHORIZED = 401  # a control request unsigned, or signed by a key the node refuses
    NOT_FOUND = 404  # no such app or event
    SERVER_ERROR = 500  # engine or slave failure
    APP_ERROR = 502  # the handler raised
    UNAVAILABLE = 503  # no capacity: queue full, app stopping or broken
    TIMEOUT = 504  # the job ran past its timeout
    DEADLINE = 520  # the deadline passed before the job started


#: One msgpack Packer per thread (a Packer is not shared between threads): ``msgpack.packb``
#: makes a Packer for every call, ten times the cost of packing a header with one kept.
_local = threading.local()


def _packer() -> msgpack.Packer:
    try:
        packer: msgpack.Packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer


def pack(*fields: Any) -> bytes:
    """Pack a header: ``pack(Code.CHOKE, job_id)``."""
    try:
        return _local.packer.pack(fields)
    except AttributeError:
        return _packer().pack(fields)


def unpack(frame: bytes, *, max_items: int | None = None) -> list[Any]:
    """Unpack a header frame into a list whose first element is a ``Code``; or ProtocolError.
    ``max_items`` bounds every array and map in it (a peer that is not trusted: a small
    frame of many items would otherwise become a list many times its size)."""
    limits = {} if max_items is None else {"max_array_len": max_items, "max_map_len": max_items}
    try:
        fields = msgpack.unpackb(frame, raw=False, strict_map_key=False, **limits)
    except Exception as exc:
        raise ProtocolError(f"header frame is not msgpack: {exc}") from None
    if not isinstance(fields, list) or not fields or not isinstance(fields[0], int):
        raise ProtocolError("header frame must be a msgpack array starting with a message code")
    return fields


def encode_value(value: Any) -> bytes | None:
    """Turn a handler's answer into chunk bytes: bytes as is, str as UTF-8, None as no chunk,
    anything else msgpack-packed."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return _packer().pack(value)


def check_body(body: bytes, limit: int | None) -> bytes:
    """``body``, if a request carrying it stays within a node's ``limit`` (its largest
    message; None: no check); else ``ServiceError`` 400 saying what to do."""
    if limit is not None and len(body) > limit - 4096:
        raise ServiceError(Status.BAD_REQUEST, f"the request's body is {len(body)} bytes: a "
                           f"node drops the connection of a message over its --max-message "
                           f"({limit} bytes here, header included); send less, or raise the "
                           f"limit on the node and in the client (Client.max_message)")
    return body
