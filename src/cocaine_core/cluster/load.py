"""An app's load as the cluster sees it: free slots, queued jobs, state.

A *slot* is room for one job: ``pool-limit`` times ``concurrency`` per app (fewer while slaves
keep crashing), whether or not its slave has been spawned yet. Free slots are the slots not
taken by a running or a queued job; an app that is not running (starting, broken, stopping)
has none. A request runs on its node while the app there has a free slot, and goes to a peer
only when it has none (``docs/cluster.md``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cocaine_core.engine import Engine

#: The most apps one announce carries (a node hosting more announces the first ones, by name).
MAX_ANNOUNCED_APPS = 1024
#: The most an announced count may be (a figure past it is not one a node could have).
MAX_COUNT = 10**9

#: One-letter states in announces.
STATES = {"starting": "s", "running": "r", "broken": "b", "stopping": "x", "stopped": "x"}
STATE_NAMES = {"s": "starting", "r": "running", "b": "broken", "x": "stopping"}


#: Crashes of an app's slaves within the engine's crash period (10 s) past which a node
#: offers the app no free slot: its requests go to peers where it does not crash.
CRASHING = 2


def free_slots(engine: Engine) -> int:
    """Jobs ``engine`` could take now without one of them waiting for another to end: none
    while the app is not running or its slaves keep crashing; counting the slaves it may
    still spawn only while it can spawn them."""
    if not engine.running():
        return 0
    pool = engine.pool
    now = time.monotonic()
    if pool.crashes.recent(now) >= CRASHING:
        return 0
    busy = 0
    for slave in pool.slaves.values():
        busy += len(slave.jobs)
    slots = pool.limit() if pool.can_spawn(now) else pool.active()
    return slots * engine.config.concurrency - busy - len(engine.queue)


def app_loads(apps: dict[str, Engine]) -> dict[str, list[Any]]:
    """What an announce says of each app: ``[free slots, queued, state letter]``."""
    loads: dict[str, list[Any]] = {}
    for name in sorted(apps)[:MAX_ANNOUNCED_APPS]:
        engine = apps[name]
        loads[name] = [max(0, free_slots(engine)), len(engine.queue),
                       STATES.get(engine.state.value, "x")]
    return loads


def check_loads(loads: Any) -> dict[str, tuple[int, int, str]] | None:
    """The loads of an announce, checked; None if they are not what a node sends."""
    if not isinstance(loads, dict) or len(loads) > MAX_ANNOUNCED_APPS:
        return None
    checked: dict[str, tuple[int, int, str]] = {}
    for name, load in loads.items():
        if not isinstance(name, str) or not 0 < len(name) <= 255 or not isinstance(
                load, list) or len(load) != 3:
            return None
        free, queued, state = load
        if not (_count(free) and _count(queued) and state in STATE_NAMES):
            return None
        checked[name] = (free, queued, state)
    return checked


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT
