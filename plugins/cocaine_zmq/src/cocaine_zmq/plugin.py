"""The cocaine-zmq plugin module: registers the drivers and closes their sockets at app end."""

from __future__ import annotations

from typing import Any

from cocaine_core import hookimpl


@hookimpl
def cocaine_register_drivers(registry: Any) -> None:
    """Register ``zeromq-server``, ``zeromq-sink`` and ``zeromq-subscriber``."""
    from cocaine_zmq.server import ZeroMQServer
    from cocaine_zmq.sink import ZeroMQSink
    from cocaine_zmq.subscriber import ZeroMQSubscriber

    registry.add("zeromq-server", ZeroMQServer)
    registry.add("zeromq-sink", ZeroMQSink)
    registry.add("zeromq-subscriber", ZeroMQSubscriber)


@hookimpl
def cocaine_app_stopped(app: Any) -> None:
    """Close the sockets of the app's ZeroMQ drivers that are still open.

    Normally each driver has closed itself once its last job ended; this catches the rest,
    such as the drivers already started when a later task of the app failed to start.
    """
    drivers = app.extra.get("cocaine-zmq")
    for driver in list(drivers or ()):
        driver.close_now()  # a hook is not awaited: the driver's own synchronous close
