"""The cocaine-prometheus plugin module: ``--metrics HOST:PORT`` on ``cocaine node`` and
``cocaine run``, and the hooks that start and stop its listener with the node.

- ``cocaine_register_node_options``: adds the ``metrics`` option (checked here, at the CLI);
- ``cocaine_node_started``: listens on it (an address in use fails the node's start);
- ``cocaine_node_stopping``: closes it;
- ``cocaine_event``: keeps the node's last lifecycle events for the console.

Importing this module is cheap: the server, the collector and ``prometheus_client`` load only
when a node starts with ``--metrics``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from cocaine_core import hookimpl
from cocaine_prometheus.address import parse_metrics_address

if TYPE_CHECKING:
    from cocaine_prometheus.exporter import Exporter

#: The option's name: ``--metrics`` on the command line, ``metrics`` in a node's config.
OPTION = "metrics"

#: The exporters running in this process, by node name.
_running: dict[str, Exporter] = {}


@hookimpl
def cocaine_register_node_options(registry: Any) -> None:
    """Add ``--metrics HOST:PORT``."""
    from cocaine_core.plugin_options import PluginOption

    registry.add(OPTION, PluginOption(
        help="Serve Prometheus metrics (/metrics) and a read-only web console (/) on "
             "HOST:PORT (port 0: any free one, logged). No authentication: keep it on "
             "127.0.0.1, or put a proxy that authenticates in front.",
        metavar="HOST:PORT", parse=parse_metrics_address))


@hookimpl
def cocaine_node_started(node: Any) -> Awaitable[None] | None:
    """Start the listener if the node was given ``--metrics``."""
    address = node.options.get(OPTION)
    if not address:
        return None
    return _start(node, str(address))


async def _start(node: Any, address: str) -> None:
    from cocaine_prometheus.exporter import Exporter

    exporter = Exporter(address, node.info)
    await exporter.start()
    previous = _running.pop(node.name, None)
    if previous is not None:
        await previous.close()
    _running[node.name] = exporter


@hookimpl
def cocaine_node_stopping(node: Any) -> Awaitable[None] | None:
    """Close the node's listener, if it has one."""
    exporter = _running.pop(node.name, None)
    return exporter.close() if exporter is not None else None


@hookimpl
def cocaine_event(event: Any) -> None:
    """Keep the event for the console of its node (if it runs one here)."""
    exporter = _running.get(event.node)
    if exporter is not None:
        exporter.events.add(event.app, event.topic, event.time, event.data)


def running(node_name: str) -> Exporter | None:
    """The exporter of node ``node_name`` in this process, if one runs (for tests)."""
    return _running.get(node_name)
