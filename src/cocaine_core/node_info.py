"""What ``cocaine info`` shows of a node: its endpoint, clients, control, store, discovery,
slaves and every app's engine."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from cocaine_core import __version__

if TYPE_CHECKING:
    from cocaine_core.node import Node


def node_info(node: Node) -> dict[str, Any]:
    """The node's state: its apps' pools, queues, jobs and tasks (``cocaine info``)."""
    return {
        "node": node.name,
        "version": __version__,
        "endpoint": node.listen,
        "pid": os.getpid(),
        "uptime": round(time.time() - node.started_at, 3),
        "requests": node.endpoint.requests,
        "clients": node.endpoint.info(),
        "control": node.guard.info(),
        **(node.endpoint.curve.info() if node.endpoint.curve else {"curve-key": None}),
        "rss-bytes": _own_rss(),
        "cpu-seconds": round(sum(os.times()[:2]), 3),
        "events": node.event_stream.info() if node.event_stream else None,
        "slaves": node.slaves.info(),
        "busy": dict(node.busy),
        "loading": node.loading,
        "store": _store_info(node),
        "discovery": node.discovery.info() if node.discovery else None,
        "cluster": node.cluster.info() if node.cluster else None,
        "apps": {name: engine.info() for name, engine in sorted(node.apps.items())},
    }


def _store_info(node: Node) -> dict[str, Any] | None:
    """The storage's URI and, for one other nodes share, whether it is reachable."""
    if node.storage is None:
        return None
    return {"uri": node.storage.uri, **(node.follower.info() if node.follower else {})}


def _own_rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
