"""The node-level hooks' calls at a node's start and stop (they receive a ``NodeView``), and
its event stream's life.

The node-level hooks (``cocaine_node_started``, ``cocaine_node_stopping``) let a plugin run
beside the node on its loop, as ``cocaine-prometheus`` serves ``/metrics`` and the web console;
``cocaine_event`` hands them every lifecycle event (``events.py``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING

from cocaine_core.errors import NodeError, PluginError
from cocaine_core.event_stream import EventStream, default_endpoint
from cocaine_core.events import NODE
from cocaine_core.plugins import get_host

if TYPE_CHECKING:
    from cocaine_core.node import Node

log = logging.getLogger("cocaine.node")

#: Longest a plugin's ``cocaine_node_started`` may take, and its ``cocaine_node_stopping``.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


async def started(node: Node) -> None:
    """The node listens: bind its event stream, say so, and call ``cocaine_node_started``
    (a plugin that raises, or takes longer than ``START_TIMEOUT``, fails the start)."""
    stream = node.event_stream = EventStream(node.events_endpoint or
                                             default_endpoint(node.run_dir),
                                             node.endpoint.curve)
    stream.bind()
    node.events.add_sink(stream.publish)
    node.events.emit(NODE, "node-started", endpoint=node.listen, events=stream.endpoint)
    await _call(node, "cocaine_node_started", START_TIMEOUT, raise_errors=True)


async def stopped(node: Node) -> None:
    """The node's apps have drained: call ``cocaine_node_stopping`` (each bounded by
    ``STOP_TIMEOUT``; a failure is logged), then close the event stream."""
    try:
        await _call(node, "cocaine_node_stopping", STOP_TIMEOUT, raise_errors=False)
    finally:
        if node.event_stream is not None:
            node.events.remove_sink(node.event_stream.publish)
            node.event_stream.close()


async def _call(node: Node, hook: str, timeout: float, *, raise_errors: bool) -> None:
    view = node.view
    results = get_host().call_each(hook, raise_errors=raise_errors, node=view)
    for record, result in results:
        if not inspect.isawaitable(result):
            continue
        try:
            await asyncio.wait_for(result, timeout)
        except TimeoutError:
            message = f"{record.distribution} ({hook}) did not finish within {timeout:g} s"
            if raise_errors:
                raise NodeError(message) from None
            log.error("%s", message)
        except Exception as exc:
            if raise_errors:
                if isinstance(exc, NodeError | PluginError):
                    raise
                raise PluginError(f"{record.distribution} ({hook}): {exc}") from exc
            log.error("plugin '%s' (%s) raised in %s", record.name, record.distribution, hook,
                      exc_info=exc)

