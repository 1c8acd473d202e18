"""How a pool grows: by as many slaves as its waiting jobs need, in one step, and how many
spares it keeps forked ahead of need.

**Growth.** The pool grows while ``pool < pool-limit`` and ``queued > pool * grow-threshold``
(DESIGN.md). Rather than one slave per look (a look per submitted job, and one per supervisor
tick), ``wanted`` counts every slave that rule asks for now, and ``grow`` adds them together:
spares first (a configure message each), the rest forked with one request to the backend
(``spawn_many``, where the backend has it: one message to the template for N forks).

**Spares in proportion to the load.** While the pool is in use and below ``pool-limit``, it
keeps as many spares as it grew by in the last ``GROWTH_MEMORY`` seconds (the first slave of
an empty pool is not counted: one job at a time is no burst), at least ``SPARES`` and at most
``MAX_SPARES``: a pool that just needed three more slaves at once keeps three ready for the
next burst, a pool that never grows beyond its first slave keeps one. Spares count against
``pool-limit`` (pool + spares never pass it) and against the node's ``--max-slaves``. They are
forked on the supervisor's tick, a moment after the pool comes into use, so that a cold
start does not share the CPU with them (forking them with the first slave of a pool that
emptied between bursts was tried: on 2 cores it made that cold start 1.3 to 2.5 times
slower), and an empty pool has none. A node at its ``--max-slaves`` forks no spare (a spare
refused would hold the pool's spawning back as a failed start does), nor one into its last
free slave, which stays for an app that has none (another app's first job would be refused).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from typing import TYPE_CHECKING

from cocaine_core.engine.slave_handle import SlaveHandle, SlaveState
from cocaine_core.errors import CocaineError

if TYPE_CHECKING:
    from cocaine_core.engine.pool import SlavePool

#: Spares kept while the pool is in use and may grow, however little it grew lately.
SPARES = 1
#: The most spares a pool keeps, however much it grew (each is a process, ~3 MB its own).
MAX_SPARES = 8
#: Seconds a growth of the pool is remembered when counting the spares it keeps.
GROWTH_MEMORY = 10.0


class GrowthMemory:
    """When the pool last added slaves for waiting jobs (at most ``MAX_SPARES`` remembered)."""

    def __init__(self) -> None:
        self._added: deque[float] = deque(maxlen=MAX_SPARES)

    def added(self, count: int, now: float) -> None:
        """The pool grew by ``count`` slaves at ``now``."""
        self._added.extend([now] * min(count, MAX_SPARES))

    def recent(self, now: float) -> int:
        """Slaves added within the last ``GROWTH_MEMORY`` seconds (at most ``MAX_SPARES``)."""
        return sum(1 for at in self._added if now - at < GROWTH_MEMORY)


def wanted(pool: SlavePool) -> int:
    """Slaves to add now for the waiting jobs: enough that ``queued ≤ pool * grow-threshold``
    (at least one for an empty pool with jobs waiting), never past the pool's limit; 0 while
    nothing waits or a back-off holds spawning; at the node's ``--max-slaves``, no more than
    the pool's spares if it has slaves."""
    queued = len(pool.engine.queue)
    if not queued:
        return 0
    active = pool.active()
    # A full pool (the common case under load: every submit asks) needs no look at back-offs
    # or the crash cap, which only ever lower pool-limit.
    if active >= pool.config.pool_limit or not pool.can_spawn():
        return 0
    room = pool.limit() - active
    budget = pool.engine.app.slaves
    if active and budget.used >= budget.limit:
        # At the node's --max-slaves, a pool that has slaves grows only into its spares
        # (counted already), and else waits for its slaves: asking for one more would only be
        # refused, and a refusal is a failed start (a back-off, and while none is ready yet,
        # the queued jobs refused). An empty pool still asks: its refusal says why the app
        # has no slave.
        room = min(room, len(pool.spares()))
    if room <= 0:
        return 0
    threshold = max(1, pool.config.grow_threshold)
    need = -(-queued // threshold) - active  # ceil(queued / threshold) - active
    return max(0, min(room, need))


def grow(pool: SlavePool) -> int:
    """Add the slaves ``wanted`` says, spares first, the rest in one spawn; how many."""
    count = wanted(pool)
    if not count:
        return 0
    empty = pool.active() == 0
    pool.growth.added(count - 1 if empty else count, time.monotonic())  # a first: no burst
    promoted = 0
    while promoted < count and promote_spare(pool):
        promoted += 1
    if promoted < count:
        spawn(pool, count - promoted)
    return count


def spare_target(pool: SlavePool, now: float) -> int:
    """How many spares the pool keeps now: none unless the app runs and its pool is in use;
    else as many as it grew by lately (``SPARES`` to ``MAX_SPARES``), within pool-limit."""
    active = pool.active()
    if not pool.engine.running() or active == 0:
        return 0
    recent = min(MAX_SPARES, max(SPARES, pool.growth.recent(now)))
    return max(0, min(recent, pool.limit() - active))


def keep_spares(pool: SlavePool) -> None:
    """Fork the spares ``spare_target`` asks for (in one spawn), or end the ones it no longer
    does. Run from the supervisor's tick only: spares are forked a moment after the pool
    comes into use, not in the middle of the first job's start."""
    spares = pool.spares()
    target = spare_target(pool, time.monotonic())
    budget = pool.engine.app.slaves
    # The node's last free slave is never a spare's: an app with no slave needs it (refused,
    # it would refuse its jobs with 503), and nothing would take it back from the spare.
    missing = min(target - len(spares), budget.limit - budget.used - 1)
    if missing > 0 and pool.can_spawn():
        spawn(pool, missing, spare=True)
    for spare in spares[target:]:
        if spare.state is SlaveState.SPARE:
            pool.terminate(spare, "no spare needed", kind="spare")


def promote_spare(pool: SlavePool) -> bool:
    """Move a spare into the pool (one that has shaken hands first); False if none waits."""
    spares = pool.spares()
    if not spares:
        return False
    spare = max(spares, key=lambda s: s.state is SlaveState.SPARE)
    spare.spare = False
    spare.spawned_at = time.monotonic()  # its start-up counts from when it was needed
    pool.spawns += 1
    if spare.state is SlaveState.SPARE:
        spare.state = SlaveState.SPAWNING
        pool.configure_when_able(spare)
    return True


def spawn(pool: SlavePool, count: int, *, spare: bool = False) -> int:
    """Ask the backend for ``count`` slaves at once (spares wait unconfigured until the pool
    grows), no more than the node's ``--max-slaves`` has room for (at least one, whose
    refusal says why); how many were asked for. 0 if the backend cannot spawn now, which
    holds spawning a moment (``start_failed``)."""
    budget = pool.engine.app.slaves
    count = max(1, min(count, budget.limit - budget.used))
    slaves = [SlaveHandle(id=f"{pool.engine.name}.{next(pool.ids)}.{uuid.uuid4().hex[:6]}",
                          spare=spare) for _ in range(count)]
    for slave in slaves:
        pool.slaves[slave.id] = slave
    serving = 0 if spare else count
    pool.spawns += serving
    backend = pool.engine.backend
    asked = 0
    try:
        if backend is None:
            raise CocaineError("the app's code is being loaded again")
        many = getattr(backend, "spawn_many", None)
        if many is not None and len(slaves) > 1:
            many([slave.id for slave in slaves])
            asked = len(slaves)
        else:
            for slave in slaves:
                backend.spawn(slave.id)
                asked += 1
    except CocaineError as exc:
        for slave in slaves[asked:]:
            pool.slaves.pop(slave.id, None)
        pool.spawns -= max(0, serving - asked)
        pool.start_failed(str(exc))
    return asked
