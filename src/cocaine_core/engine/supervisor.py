"""The supervisor: a loop of small named steps that keep one app's pool healthy.

Every ``TICK`` seconds (as gunicorn's arbiter does): expire queued jobs past their deadline,
murder slaves that are unresponsive or over time, escalate kills that were not obeyed, retire
idle and worn-out slaves, keep ``pool-min`` warm, grow when jobs wait, dispatch, keep a spare.
Each step is a function of the pool, readable in one screen.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import TYPE_CHECKING

from cocaine_core.engine.slave_handle import SlaveHandle, SlaveState, cpu_of, dead, rss_of
from cocaine_core.protocol import Status

if TYPE_CHECKING:
    from cocaine_core.engine.engine import Engine
    from cocaine_core.engine.pool import SlavePool

log = logging.getLogger("cocaine.engine")

#: Seconds between the supervisor's rounds.
TICK = 0.1
#: Seconds between looks at slaves' memory for ``engine.max-rss``.
RSS_CHECK = 1.0
#: A round this late means the node itself did not run (stopped, or starved of CPU).
PAUSED = 1.0
#: Seconds a silent slave is watched from outside before it is judged: busy if its CPU time
#: advances (a C call holding the GIL silences the heartbeat thread), hung if not.
CPU_GRACE = 1.0

_STARTING = (SlaveState.SPAWNING, SlaveState.CONFIGURING)


async def supervise(engine: Engine) -> None:
    """Run the supervisor's rounds for ``engine`` until cancelled."""
    last = time.monotonic()
    while True:
        await asyncio.sleep(TICK)
        now = time.monotonic()
        try:
            if now - last > PAUSED:
                forgive_pause(engine.pool, now - last)
            tick(engine, now)
        except Exception:
            log.exception("app %s: supervisor step failed", engine.name)
        last = now


def tick(engine: Engine, now: float) -> None:
    """One round of every step."""
    for job in engine.queue.remove_expired(now):
        engine.stats.expire(job)
    pool = engine.pool
    murder_unresponsive(pool, now)
    murder_overtime(pool, now)
    escalate_kills(pool, now)
    retire_idle(pool, now)
    retire_large(pool, now)
    pool.ensure_minimum()
    pool.maybe_grow()
    engine.dispatch()
    pool.keep_spare()


def forgive_pause(pool: SlavePool, gap: float) -> None:
    """The node did not run for ``gap`` seconds (Ctrl-Z, ``docker pause``, a starved
    machine): it cannot judge its slaves' silence over that time, so it does not."""
    log.warning("app %s: the node itself did not run for %.1f s (stopped or starved); "
                "its slaves' silence over that time is not held against them",
                pool.engine.name, gap)
    for slave in pool.slaves.values():
        slave.last_seen += gap
        slave.spawned_at += gap
        if slave.kill_at is not None:
            slave.kill_at += gap


def busy_though_silent(slave: SlaveHandle, now: float) -> bool:
    """Whether a silent slave is seen, from outside, to be working: its CPU time advanced
    over ``CPU_GRACE`` seconds of watching. True while it is still being watched."""
    cpu = cpu_of(slave.pid) if slave.pid else None
    if cpu is None:
        return False  # gone, stopped, or not a process we can see: silent is hung
    if slave.cpu_mark is None:
        slave.cpu_mark, slave.cpu_mark_at = cpu, now
        return True
    if now - slave.cpu_mark_at < CPU_GRACE:
        return True
    if cpu > slave.cpu_mark:  # working: watch it again from here
        slave.cpu_mark, slave.cpu_mark_at = cpu, now
        return True
    return False


def murder_unresponsive(pool: SlavePool, now: float) -> None:
    """Kill slaves that did not start in time, and ready ones silent for too long."""
    late = [slave for slave in pool.slaves.values() if slave.state in _STARTING
            and now - slave.spawned_at > pool.config.startup_timeout]
    if late:
        # One failed start, however many slaves it made: slaves forked together (a burst, one
        # request to the template) time out together, and a template that stalled is one
        # fault, not a back-off doubled for each of its slaves.
        reason = (f"a new slave was not ready within {pool.config.startup_timeout:g} s "
                  f"(engine.startup-timeout)")
        log.error("app %s: %s; killed %s", pool.engine.name, reason,
                  "it" if len(late) == 1 else f"{len(late)} of them")
        for slave in late:
            pool.kill(slave, reason, kind="failed-start")
        pool.start_failed(reason)
    for slave in list(pool.slaves.values()):
        if slave.state is SlaveState.READY and \
                now - slave.last_seen > pool.config.heartbeat_timeout:
            if busy_though_silent(slave, now):
                continue
            if slave.pid and dead(slave.pid):  # died, unreported: its jobs may run again
                for job in slave.jobs.values():
                    pool.engine.retry_or_fail(job, f"slave {slave.label()} died")
                slave.jobs.clear()
                pool.kill(slave, f"slave {slave.label()} died", kind="crashed")
                continue
            reason = (f"slave {slave.label()} sent no heartbeat for "
                      f"{pool.config.heartbeat_timeout:g} s and was killed")
            log.error("app %s: %s", pool.engine.name, reason)
            for job in slave.jobs.values():
                pool.engine.stats.fail(job, Status.SERVER_ERROR,
                                       f"{reason}; the job was not retried, as it may be "
                                       f"what hung the slave")
            slave.jobs.clear()
            pool.kill(slave, reason, kind="hung")


def murder_overtime(pool: SlavePool, now: float) -> None:
    """Fail jobs past their timeout with 504, and stop the slaves running them."""
    for slave in list(pool.slaves.values()):
        if slave.state is not SlaveState.READY:
            continue
        late = [job for job in slave.jobs.values() if job.overtime(now)]
        for job in late:
            del slave.jobs[job.id]
            pool.engine.stats.time_out(job)
        if late:
            log.warning("app %s: slave %s stopped: a job ran past its timeout",
                        pool.engine.name, slave.label())
            jobs = "a job" if len(late) == 1 else f"{len(late)} jobs"
            pool.kill(slave, f"{jobs} on slave {slave.label()} ran past its timeout",
                      signal.SIGTERM, kind="timeout")


def escalate_kills(pool: SlavePool, now: float) -> None:
    """SIGKILL slaves that outlived their grace after terminate or a signal; forget one that
    was never made (no pid: its template never forked it; if it does, it is killed then)."""
    for slave in list(pool.slaves.values()):
        if slave.kill_at is not None and now >= slave.kill_at:
            if slave.pid is None and slave.state is SlaveState.KILLED:
                del pool.slaves[slave.id]
                continue
            slave.kill_at = None
            pool.kill(slave, slave.reason)
            slave.kill_at = None


def retire_idle(pool: SlavePool, now: float) -> None:
    """Terminate slaves idle past ``idle-timeout``, down to ``pool-min``."""
    ready = [s for s in pool.slaves.values() if s.state is SlaveState.READY]
    surplus = len(ready) - pool.config.pool_min
    for slave in sorted(ready, key=lambda s: s.idle_since):
        if surplus <= 0:
            return
        if not slave.busy and now - slave.idle_since > pool.config.idle_timeout:
            pool.terminate(slave, f"idle for {pool.config.idle_timeout:g} s", kind="idle")
            surplus -= 1


def retire_large(pool: SlavePool, now: float) -> None:
    """Retire slaves whose memory grew past ``max-rss`` (once their jobs end)."""
    limit = pool.config.max_rss
    if not limit or now < pool.next_rss_check:
        return
    pool.next_rss_check = now + RSS_CHECK
    for slave in list(pool.slaves.values()):
        if slave.state is SlaveState.READY and slave.pid:
            rss = rss_of(slave.pid)
            if rss is not None and rss > limit:
                log.info("app %s: slave %s uses %d MiB, over engine.max-rss (%d MiB): "
                         "replacing it", pool.engine.name, slave.label(), rss >> 20,
                         limit >> 20)
                pool.retire(slave, f"its memory ({rss >> 20} MiB) passed engine.max-rss",
                            kind="memory")
