"""The ``zeromq-subscriber`` driver: each message from PUB peers is a job.

A message of two or more frames has its topic in the first frame (what PUB sockets, and a
sink's ``publish``, send): ``meta["topic"]`` is that frame and the body is the rest. A message of
one frame is the body as is, and ``meta["topic"]`` is None.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import zmq

from cocaine_core.errors import Problem
from cocaine_core.schema import Key
from cocaine_zmq.driver import COMMON_KEYS
from cocaine_zmq.endpoints import connect, endpoints, prefixes
from cocaine_zmq.frames import pack_frames
from cocaine_zmq.intake import PUBLISH_KEY, MessageIntake

if TYPE_CHECKING:
    from cocaine_core.drivers import EngineHandle
    from cocaine_core.manifest import TaskConfig


def topic_text(frame: bytes) -> str | bytes:
    """A topic frame as text, or as bytes if it is not UTF-8."""
    try:
        return frame.decode("utf-8")
    except UnicodeDecodeError:
        return frame


class ZeroMQSubscriber(MessageIntake):
    """Subscribes to PUB peers at ``endpoint`` (one or a list) with ``subscribe`` prefixes."""

    keys: ClassVar[tuple[Key, ...]] = (
        Key("endpoint", endpoints, help="the PUB endpoint(s) to connect to"),
        Key("subscribe", prefixes, ("",),
            "topic prefix, or list of prefixes, of the messages wanted; \"\" is all"),
        PUBLISH_KEY,
        *COMMON_KEYS,
    )

    @classmethod
    def validate(cls, options: dict[str, Any], root: Path) -> list[Problem]:
        """Refuse publishing to an endpoint the task subscribes to (a loop)."""
        if options.get("publish") is not None and options["publish"] in options["endpoint"]:
            return [Problem("publish", "is an endpoint this task subscribes to: its results "
                                       "would come back to it as new messages")]
        return []

    def __init__(self, task: TaskConfig, engine: EngineHandle) -> None:
        super().__init__(task, engine)
        self.endpoints: list[str] = list(self.options["endpoint"])
        self.prefixes: list[str] = list(self.options["subscribe"])

    def open_inbound(self) -> zmq.Socket:
        """Connect the SUB socket (ZeroMQ retries unreachable publishers in the background)."""
        sock = self.open_socket(zmq.SUB, inbound=True)
        for prefix in self.prefixes:
            sock.setsockopt(zmq.SUBSCRIBE, prefix.encode("utf-8"))
        for address in self.endpoints:
            connect(sock, address, self.owner)
        shown = ", ".join(repr(p) for p in self.prefixes)
        self.log.info("listening", f"subscribed to {shown} at {', '.join(self.endpoints)}"
                      + (f", publishing on {self.publish_endpoint}"
                         if self.publish_endpoint else ""))
        return sock

    def job_input(self, frames: list[bytes]) -> tuple[bytes, dict[str, Any]]:
        """Topic frame to ``meta["topic"]``, the other frames to the body."""
        if len(frames) < 2:
            body, meta = pack_frames(frames)
            meta["topic"] = None
            return body, meta
        body, meta = pack_frames(frames[1:])
        meta["topic"] = topic_text(frames[0])
        return body, meta

    def info(self) -> dict[str, Any]:
        """Endpoints, prefixes and counters."""
        return {"type": self.task.type, "event": self.task.event, "endpoint": self.endpoints,
                "subscribe": self.prefixes, **super().info()}
