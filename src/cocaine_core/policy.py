"""A native request's policy: how the client wants its job run (docs/protocol.md)."""

from __future__ import annotations

from typing import Any

import attrs

from cocaine_core.errors import ServiceError
from cocaine_core.protocol import Status


@attrs.define(slots=True)
class Policy:
    """How a request wants to be run: ``urgent`` jumps the queue; ``timeout`` (seconds the
    job may run) and ``deadline`` (seconds from now by which it must start) may be None."""

    urgent: bool = False
    timeout: float | None = None
    deadline: float | None = None
    #: False: never run the job twice (not even when its slave dies before it answered).
    retry: bool = True
    #: A control request's signature (``trust.signatures`` checks it); None: unsigned.
    auth: Any = None
    #: The body streams: pieces follow the request (docs/protocol.md, streamed requests).
    stream: bool = False

    @classmethod
    def parse(cls, policy: Any) -> Policy:
        """Check a request's policy map; ``ServiceError`` 400 naming the bad key."""
        if policy is None:
            return cls()
        if not isinstance(policy, dict):
            raise _bad("policy must be a map with urgent, timeout and deadline")
        urgent = policy.get("urgent", False)
        if not isinstance(urgent, bool):
            raise _bad("policy.urgent must be true or false")
        retry, stream = policy.get("retry"), policy.get("stream", False)
        if retry is not None and not isinstance(retry, bool):
            raise _bad("policy.retry must be true or false (false: never run the job twice)")
        if not isinstance(stream, bool):
            raise _bad("policy.stream must be true or false (true: the body follows in pieces)")
        times = []
        for key in ("timeout", "deadline"):
            value = policy.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(
                    value, int | float) or not 0 < value < 10**9):
                raise _bad(f"policy.{key} must be a number of seconds above 0 and below "
                           f"1e9, or nil; got {value!r:.40}")
            times.append(value)
        return cls(urgent, times[0], times[1], retry is not False, policy.get("auth"), stream)


def _bad(message: str) -> ServiceError:
    return ServiceError(Status.BAD_REQUEST, message)
