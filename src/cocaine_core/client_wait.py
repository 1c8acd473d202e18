"""``wait_for_node``: block until a node answers (scripts and tests; ``cocaine_core.client``
gives it too)."""

from __future__ import annotations

import time

from cocaine_core.errors import ServiceError
from cocaine_core.protocol import Status


def wait_for_node(endpoint: str, timeout: float = 10.0) -> None:
    """Block until the node at ``endpoint`` answers ``list`` (handy in scripts and tests); a
    refusal of this client's key (401) is an answer too."""
    from cocaine_core.client import Client

    deadline = time.monotonic() + timeout
    while True:
        with Client(endpoint, wait=0.5) as client:
            try:
                client.control("list")
                return
            except ServiceError as exc:
                if exc.code == Status.UNAUTHORIZED:
                    return
                if time.monotonic() > deadline:
                    raise
        time.sleep(0.05)  # a refusal is reported at once: do not spin
