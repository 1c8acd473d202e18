"""The cocaine-http plugin module: registers the ``http-server`` driver."""

from __future__ import annotations

from typing import Any

from cocaine_core import hookimpl


@hookimpl
def cocaine_register_drivers(registry: Any) -> None:
    """Register ``http-server``."""
    from cocaine_http.driver import HttpServer

    registry.add("http-server", HttpServer)
