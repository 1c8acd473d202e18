"""Refusing a native request at once, without making a job, when its app's engine would
refuse it anyway (503: the queue is full, or the app is stopping or broken).

Under a flood (issue 20) most requests are refused, and a refusal went the whole way: a
sink, a policy, a job, the engine's ``submit``, ``JobStats.refuse``, the job's ``fail``, a
header packed field by field. ``Refuser.refuse`` looks at the header the endpoint has
already decoded, asks the engine whether it would refuse (``Engine.refusal``: the same test
``submit`` makes, and the same message), counts the refusal as ``submit`` would
(``Engine.refused``: the app's ``refused`` and its event's 503s; the driver's requests), and
sends a 503 whose header is the request id packed in front of bytes packed once per message.

Only a plain request takes this way: one body frame, a native-server event, a policy that is
nil or a valid map without ``stream`` or ``deadline`` (a streamed body's pieces, and a
deadline that may already have passed, keep the whole way), on an endpoint that would not
forward it to a peer. Anything else, and any request the engine might take, goes the whole
way: what a client sees is the same either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from cocaine_core.clients import Outbox
from cocaine_core.drivers.native import NativeServer
from cocaine_core.errors import ServiceError
from cocaine_core.errortext import MESSAGE_LIMIT, cut
from cocaine_core.policy import Policy
from cocaine_core.protocol import Code, Status

if TYPE_CHECKING:
    from cocaine_core.engine import Engine

#: An ERROR header's start: a msgpack array of 4 (code, request id, status, message), ERROR.
_HEAD = msgpack.packb([Code.ERROR, None, 0, ""])[:2]
#: Refusal messages whose packed form is kept (a few per app: full, stopping, broken).
TAILS_LIMIT = 256


class Refuser:
    """Answers requests with 503 before a job is made, when the engine would refuse them."""

    def __init__(self, apps: dict[str, Engine], outbox: Outbox,
                 may_forward: Callable[[], bool]) -> None:
        self.apps = apps
        self.outbox = outbox
        self.may_forward = may_forward
        #: Requests refused this way.
        self.refused = 0
        self._tails: dict[str, bytes] = {}

    def refuse(self, frames: list[bytes], fields: list[Any], request_id: Any) -> bool:
        """Refuse the request ``frames`` (``fields``: its decoded header, a REQUEST with an
        acceptable ``request_id``) with 503 if its app's engine would; return whether it
        did. False: the endpoint handles it the whole way."""
        if len(frames) > 3 or len(fields) < 4:
            return False
        app, event = fields[2], fields[3]
        if not isinstance(app, str) or not isinstance(event, str):
            return False
        engine = self.apps.get(app)
        if engine is None:
            return False
        message = engine.refusal()
        if message is None or not _plain(fields[4] if len(fields) > 4 else None):
            return False
        driver = _native_driver(engine, event)
        if driver is None or type(driver) is not NativeServer or self.may_forward():
            return False
        driver.requests += 1
        engine.refused(event)
        self.refused += 1
        self.outbox.send([frames[0], self.frame(request_id, message)])
        return True

    def frame(self, request_id: Any, message: str) -> bytes:
        """The header of ERROR 503 ``message`` for ``request_id``: what
        ``protocol.pack(Code.ERROR, request_id, 503, message)`` makes."""
        tail = self._tails.get(message)
        if tail is None:
            if len(self._tails) >= TAILS_LIMIT:
                self._tails.clear()
            tail = self._tails[message] = msgpack.packb(
                [int(Status.UNAVAILABLE), cut(message, MESSAGE_LIMIT)], use_bin_type=True)[1:]
        return _HEAD + msgpack.packb(request_id, use_bin_type=True) + tail


def _plain(policy: Any) -> bool:
    """Whether a request of this policy is refused as ``submit`` would refuse it: no body
    to stream, no deadline (which might have passed: 520, not 503), nothing invalid (400)."""
    if policy is None:
        return True
    if not isinstance(policy, dict):
        return False
    try:
        parsed = Policy.parse(policy)
    except ServiceError:
        return False
    return not parsed.stream and parsed.deadline is None


def _native_driver(engine: Engine, event: str) -> NativeServer | None:
    for driver in engine.drivers:
        if isinstance(driver, NativeServer) and driver.task.event == event:
            return driver
    return None
