"""The ``native-server`` driver: the app's event is served on the node's own endpoint.

The node's ROUTER receives requests for every app (see ``cocaine_core.node``); this driver
only declares which events of an app clients may call, and counts them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from cocaine_core.drivers import Driver

if TYPE_CHECKING:
    from cocaine_core.engine.job import Job
    from cocaine_core.native_sink import NativeSink


class NativeServer(Driver):
    """Lets clients call this task's event through the node endpoint."""

    #: Its requests may stream their body (policy ``stream``: docs/protocol.md).
    accepts_streams: ClassVar[bool] = True
    #: In a cluster, its requests may run on a peer when this node has no free slot.
    forwardable: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests = 0

    def submitted(self, job: Job, sink: NativeSink) -> None:
        """``job``, made for a client's request answered through ``sink``, was given to the
        engine (which may have refused it at once: ``job.finished``). A native server does
        nothing more: the job's own answer goes to the client. (``native-sink`` acknowledges
        the request here instead.)"""

    def info(self) -> dict[str, Any]:
        """Type, event and requests received."""
        return {**super().info(), "requests": self.requests}
