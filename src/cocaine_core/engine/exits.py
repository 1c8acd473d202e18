"""A slave that exited when nobody asked it to: said, and counted against the app's crashes
(``restarts.py``); moved out of ``pool.py`` to keep it small."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from cocaine_core.engine.slave_handle import SlaveHandle, SlaveState

if TYPE_CHECKING:
    from cocaine_core.engine.pool import SlavePool

log = logging.getLogger("cocaine.engine")

_STARTING = (SlaveState.SPAWNING, SlaveState.CONFIGURING)


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
