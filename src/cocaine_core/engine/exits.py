"""What the backend reports of a slave process, handled for the pool: it exists (confined by
the spawn hooks, then configured), or it ended. An end is accounted for: one nobody asked for
is said and counted against the app's crashes (``restarts.py``); every end is counted by kind
of reason and published as a ``slave-ended`` event. Moved out of ``pool.py`` to keep it
small."""

from __future__ import annotations

import logging
import signal
import time
from typing import TYPE_CHECKING

from cocaine_core.appinfo import SlaveInfo
from cocaine_core.engine.slave_handle import SlaveHandle, SlaveState
from cocaine_core.errors import CocaineError
from cocaine_core.plugins import get_host

if TYPE_CHECKING:
    from cocaine_core.engine.pool import SlavePool

log = logging.getLogger("cocaine.engine")

_STARTING = (SlaveState.SPAWNING, SlaveState.CONFIGURING)

#: The kinds of reason a slave ends for that count as a restart (it was replaced), and what
#: each means (``cocaine info``'s ``restarts``, and the Prometheus exporter's label).
RESTARTS: dict[str, str] = {
    "crashed": "it exited or was killed when nobody asked it to",
    "failed-start": "it died, or was killed, before it was ready",
    "hung": "it sent no heartbeat for engine.heartbeat-timeout",
    "timeout": "a job on it ran past its timeout",
    "memory": "its memory passed engine.max-rss, or the kernel killed it for memory",
    "max-requests": "it served engine.max-requests jobs",
    "reload": "the app's code was reloaded",
    "template-died": "the template process it was forked from died",
    "misbehaved": "it broke the protocol (credit, or not reading its messages)",
}
#: The other kinds, which are not restarts: the pool shrank, or the app stopped.
NOT_RESTARTS = ("idle", "spare", "stopping")


def ended(pool: SlavePool, slave: SlaveHandle, status: int, explanations: list[str]) -> None:
    """Account for ``slave``, which has ended with ``status``: say it if nobody asked it to,
    count it by kind, and publish ``slave-ended``."""
    if slave.state not in (SlaveState.KILLED, SlaveState.RETIRING):
        slave.kind = "failed-start" if slave.state in _STARTING else "crashed"
        unexpected_exit(pool, slave, status, explanations)
    if any(text.startswith("out of memory") for text in explanations):
        slave.kind = "memory"
    kind = slave.kind or "crashed"
    if kind in RESTARTS and not slave.spare and not pool.engine.stopping():  # spares: spawns
        pool.restarts[kind] = pool.restarts.get(kind, 0) + 1
    pool.engine.app.events.emit(pool.engine.name, "slave-ended", slave=slave.id,
                                pid=slave.pid, status=status, reason=kind,
                                why=slave.reason or None)


def unexpected_exit(pool: SlavePool, slave: SlaveHandle, status: int,
                    explanations: list[str]) -> None:
    """Say why ``slave`` ended (its status and the plugins' ``explanations``); a slave not yet
    ready is a failed start, a serving one a crash that may hold new slaves back."""
    how = f"was killed by signal {-status}" if status < 0 else f"exited with {status}"
    if explanations:
        how += f" ({'; '.join(explanations)})"
    slave.reason = f"slave {slave.label()} {how}"
    log.warning("app %s: slave %s %s", pool.engine.name, slave.label(), how)
    if slave.state in _STARTING:
        pool.start_failed(f"a new slave {how} before it was ready")
        return
    alive = sum(1 for s in pool.slaves.values() if s.state is SlaveState.READY)
    hold = pool.crashes.crashed(time.monotonic(), slave.reason, alive, worked=slave.served > 0)
    if hold:
        log.error("app %s: %d slaves crashed within %g s; new slaves wait %g s (the "
                  "slaves alive keep serving)", pool.engine.name,
                  pool.crashes.recent(), pool.crashes.period, hold)


def slave_spawned(pool: SlavePool, slave_id: str, pid: int) -> None:
    """A slave process exists: confine it (the spawn hooks), then configure it."""
    slave = pool.slaves.get(slave_id)
    if slave is None or slave.state is SlaveState.KILLED:
        # Given up on while it was being made (a stalled template): now it can be killed.
        if slave is not None:
            slave.pid = pid
        if pool.engine.backend is not None:
            pool.engine.backend.signal(slave_id, signal.SIGKILL)
        return
    slave.pid = pid
    try:
        get_host().call_each("cocaine_slave_spawned", raise_errors=True,
                             app=pool.engine.app, slave=SlaveInfo(id=slave_id, pid=pid))
    except CocaineError as exc:
        log.error("app %s: slave %s refused by a plugin: %s", pool.engine.name, pid, exc)
        pool.failed_to_start(slave, str(exc))
        return
    slave.hooked = True
    pool.engine.app.events.emit(pool.engine.name, "slave-spawned", slave=slave_id, pid=pid,
                                spare=slave.spare)
    pool.configure_when_able(slave)


def slave_exited(pool: SlavePool, slave_id: str, status: int) -> None:
    """A slave process ended: account for it, retry or fail its jobs, replace it."""
    slave = pool.slaves.pop(slave_id, None)
    if slave is None:
        return
    explanations = [str(result) for _record, result in get_host().call_each(
        "cocaine_slave_exited", app=pool.engine.app,
        slave=SlaveInfo(id=slave_id, pid=slave.pid or 0), status=status)
        if isinstance(result, str) and result]
    ended(pool, slave, status, explanations)
    for job in slave.jobs.values():
        pool.engine.retry_or_fail(job, slave.reason or "its slave exited")
    slave.jobs.clear()
    if not pool.slaves:
        pool.output.say_dropped()
    if pool.engine.accepting():
        pool.ensure_minimum()
        pool.maybe_grow()
        pool.engine.dispatch()
