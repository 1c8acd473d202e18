"""Checks of what a client is given: how long to wait, and where to connect.

Both the blocking and the asyncio client take them, so that a careless value is a clear 400
(``ServiceError``) at once, never a wait without end or a ZeroMQ traceback.
"""

from __future__ import annotations

import math
from typing import Any

import zmq

from cocaine_core.errors import ServiceError
from cocaine_core.protocol import Status

#: The longest wait a client accepts, in seconds (a day): longer is no wait anyone means.
MAX_WAIT = 86400.0


def check_wait(wait: float | None) -> float | None:
    """``wait`` if it is None or a number of seconds above 0 and at most ``MAX_WAIT``."""
    if wait is None:
        return None
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not (
            math.isfinite(wait) and 0 < wait <= MAX_WAIT):
        raise ServiceError(Status.BAD_REQUEST, f"wait must be a number of seconds above 0 and "
                                               f"at most {MAX_WAIT:g}, or none; got {wait!r}")
    return float(wait)


def connect(socket: Any, endpoint: str) -> None:
    """Connect ``socket`` to ``endpoint``; a 400 naming it if it is no ZeroMQ endpoint."""
    try:
        socket.connect(endpoint)
    except (zmq.ZMQError, TypeError, ValueError) as exc:
        socket.close()
        raise ServiceError(Status.BAD_REQUEST, f"cannot connect to {endpoint!r}: "
                                               f"{getattr(exc, 'strerror', None) or exc}; a "
                                               f"node's endpoint looks like "
                                               f"tcp://127.0.0.1:10053") from None
