"""The ``native-server`` driver: the app's event is served on the node's own endpoint.

The node's ROUTER receives requests for every app (see ``cocaine_core.node``); this driver
only declares which events of an app clients may call, and counts them.
"""

from __future__ import annotations

from typing import Any

from cocaine_core.drivers import Driver


class NativeServer(Driver):
    """Lets clients call this task's event through the node endpoint."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests = 0

    def info(self) -> dict[str, Any]:
        """Type, event and requests received."""
        return {**super().info(), "requests": self.requests}
