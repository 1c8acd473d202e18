"""The ``zeromq-sink`` driver: each message on a PULL socket is a job.

Results are dropped, or published with ``publish`` (see ``cocaine_zmq.intake``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import zmq

from cocaine_core.errors import Problem
from cocaine_core.schema import Key
from cocaine_zmq.driver import COMMON_KEYS
from cocaine_zmq.endpoints import bind, bind_free_port, optional_endpoint
from cocaine_zmq.intake import PUBLISH_KEY, MessageIntake

if TYPE_CHECKING:
    from cocaine_core.drivers import EngineHandle
    from cocaine_core.manifest import TaskConfig


class ZeroMQSink(MessageIntake):
    """Takes work from PUSH peers on a PULL socket bound at ``endpoint``."""

    keys: ClassVar[tuple[Key, ...]] = (
        Key("endpoint", optional_endpoint, None,
            "where to bind the PULL socket; omitted: a free port from the node's range"),
        PUBLISH_KEY,
        *COMMON_KEYS,
    )

    @classmethod
    def validate(cls, options: dict[str, Any], root: Path) -> list[Problem]:
        """Refuse publishing on the endpoint the sink reads from."""
        if options.get("publish") is not None and options.get("publish") == \
                options.get("endpoint"):
            return [Problem("publish", "must differ from endpoint: one address cannot be "
                                       "both the PULL and the PUB socket")]
        return []

    def __init__(self, task: TaskConfig, engine: EngineHandle) -> None:
        super().__init__(task, engine)
        self.endpoint: str | None = self.options.get("endpoint")

    def open_inbound(self) -> zmq.Socket:
        """Bind the PULL socket."""
        sock = self.open_socket(zmq.PULL, inbound=True)
        if self.endpoint is None:
            self.endpoint, port = bind_free_port(sock, self.engine.app.ports, self.owner)
            self.keep_port(port)
        else:
            self.endpoint = bind(sock, self.endpoint, self.owner)
        self.log.info("listening", f"taking work on {self.endpoint}"
                      + (f", publishing on {self.publish_endpoint}"
                         if self.publish_endpoint else ""))
        return sock

    def info(self) -> dict[str, Any]:
        """Endpoint and counters."""
        return {"type": self.task.type, "event": self.task.event, "endpoint": self.endpoint,
                **super().info()}
