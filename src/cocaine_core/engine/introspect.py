"""What ``cocaine info`` shows of one app's engine: its state, pool, queue, jobs (by event
too), slaves, restarts by kind, load and tasks, and the plugins' sections."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from cocaine_core.engine.slave_handle import SlaveState
from cocaine_core.plugins import get_host

if TYPE_CHECKING:
    from cocaine_core.engine.engine import Engine
    from cocaine_core.engine.pool import SlavePool


def engine_info(engine: Engine) -> dict[str, Any]:
    """The app's state for ``cocaine info``: pool, queue, jobs, latencies, slaves."""
    now = time.monotonic()
    info: dict[str, Any] = {
        "state": engine.state.value,
        "pool": _pool_info(engine.pool),
        "queue": {"depth": len(engine.queue), "limit": engine.config.queue_limit},
        "jobs": engine.stats.as_dict(),
        "slaves": [slave.info(now) for slave in engine.pool.slaves.values()],
        "spawns": engine.pool.spawns,
        "crashes": engine.pool.crashes.info(now),
        "restarts": dict(engine.pool.restarts),
        "load": engine.loader.info(now),
        "uptime": round(time.time() - engine.started_at, 3),
        "tasks": {d.task.name: d.info() for d in engine.drivers},
    }
    if engine.broken_reason:
        info["broken"] = engine.broken_reason
    if engine.app.user is not None:
        info["uid"] = engine.app.user.uid  # isolated: the user the app runs as
    for record, result in get_host().call_each("cocaine_app_info", app=engine.app):
        if isinstance(result, dict):
            info[record.name] = result
    return info


def _pool_info(pool: SlavePool) -> dict[str, Any]:
    slaves = list(pool.slaves.values())
    serving = [s for s in slaves if not s.spare]
    busy = sum(1 for s in serving if s.busy)
    ready = sum(1 for s in serving if s.state is SlaveState.READY)
    return {"total": len(serving), "busy": busy, "idle": max(0, ready - busy),
            "starting": sum(1 for s in serving if s.state in (SlaveState.SPAWNING,
                                                               SlaveState.CONFIGURING)),
            "limit": pool.config.pool_limit, "min": pool.config.pool_min,
            "now-limit": pool.limit(), "spare": len(slaves) - len(serving)}
