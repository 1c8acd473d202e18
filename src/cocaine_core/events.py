"""Lifecycle events: an app deployed, serving, broken or stopped, a slave spawned or ended and
why. Each goes to the plugins (the ``cocaine_event`` hook) and, on a node, out on its event
stream (``event_stream.py``), as Circus publishes its watchers' events.

Events are few (a handful per deploy or per slave), never one per job: emitting one costs a
hook call and a non-blocking send.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import attrs

log = logging.getLogger("cocaine.events")

#: The app name node-level events are published under.
NODE = "@node"

#: Every topic the core emits, and what its ``data`` holds.
TOPICS: dict[str, str] = {
    "deployed": "a version of the app was deployed and serves (version)",
    "removed": "the app was removed from the node",
    "started": "the app's code loaded and it serves",
    "broken": "the app's code fails again and again; jobs are refused (reason)",
    "stopped": "the app stopped: every process ended",
    "slave-spawned": "a slave process started (slave, pid)",
    "slave-ended": "a slave process ended (slave, pid, status, reason, why)",
    "node-started": "the node listens (endpoint)",
    "node-stopping": "the node drains its apps and stops",
}


@attrs.frozen
class Event:
    """One lifecycle event: of ``app`` (or ``NODE``), a ``topic`` of ``TOPICS``, when, on which
    node, and its details (JSON-able)."""

    app: str
    topic: str
    time: float
    node: str
    data: dict[str, Any] = attrs.field(factory=dict)

    @property
    def name(self) -> str:
        """``<app>.<topic>``: what subscribers filter on (a ZeroMQ topic prefix)."""
        return f"{self.app}.{self.topic}"

    def as_dict(self) -> dict[str, Any]:
        """The event as JSON-able data."""
        return {"app": self.app, "topic": self.topic, "time": round(self.time, 6),
                "node": self.node, **self.data}


class EventBus:
    """Where a node's events go: the plugins' ``cocaine_event`` hook, then each sink added
    (the event stream). One per node; an app hosted alone gets one that only calls hooks."""

    def __init__(self, node: str = "node") -> None:
        self.node = node
        self._sinks: list[Callable[[Event], None]] = []
        #: Events emitted so far.
        self.emitted = 0

    def add_sink(self, sink: Callable[[Event], None]) -> None:
        """Pass every later event to ``sink`` (it must return at once and not raise)."""
        self._sinks.append(sink)

    def remove_sink(self, sink: Callable[[Event], None]) -> None:
        """Stop passing events to ``sink``."""
        if sink in self._sinks:
            self._sinks.remove(sink)

    def emit(self, app: str, topic: str, **data: Any) -> Event:
        """Make the event ``topic`` of ``app`` and pass it on; a plugin or sink that fails is
        logged, never raised to the engine that emitted it."""
        from cocaine_core.plugins import get_host

        event = Event(app=app, topic=topic, time=time.time(), node=self.node, data=data)
        self.emitted += 1
        get_host().call_each("cocaine_event", event=event)  # a plugin that raises is logged
        for sink in list(self._sinks):
            try:
                sink(event)
            except Exception:
                log.exception("an event sink failed on event %s", event.name)
        return event
