"""Credit: how far a slave may run ahead of the client that reads its job's answer.

As a TCP window does, a job may have at most ``WINDOW`` chunks that its slave has sent and
that have not yet left for the client's socket (a client that does not read has them waiting
in the node). The engine grants the slave more (``[12, job_id, n]``, CREDIT) as chunks leave,
``GRANT`` at a time; a slave that said in its handshake that it follows credit waits for it
before sending more (cocaine-python does, in ``SlaveChannel.chunk``). A slave that sends past
the window anyway (an older runtime that never waits) has that job failed with 500 and is
replaced: the node never holds more than the window for it.

A job's first chunk makes its ``Credit``; a job that answers in one message (most) never
needs one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from cocaine_core.engine.slave_handle import SlaveState
from cocaine_core.protocol import Status

if TYPE_CHECKING:
    from cocaine_core.engine.channel import EngineChannel
    from cocaine_core.engine.job import Job
    from cocaine_core.engine.pool import SlavePool
    from cocaine_core.engine.slave_handle import SlaveHandle

log = logging.getLogger("cocaine.engine")

#: Chunks a job may have on its way to its client, sent by its slave and not yet handed to
#: the client's socket (sent to slaves in CONFIGURE as ``credit``).
WINDOW = 8
#: Credit is granted in steps of this many chunks (one CREDIT message per step).
GRANT = WINDOW // 2


class Credit:
    """The flow accounting of one job: chunks on their way, credit owed to its slave."""

    __slots__ = ("channel", "direct", "job", "owed", "slave", "unsent")

    def __init__(self, channel: EngineChannel, slave: SlaveHandle, job: Job) -> None:
        self.channel = channel
        self.slave = slave
        self.job = job
        #: Chunks received from the slave that have not yet left for the client.
        self.unsent = 0
        #: Chunks that left and are not yet granted back to the slave.
        self.owed = 0
        #: The job's sink takes each chunk at once (not a client's socket).
        self.direct = False

    def took(self) -> bool:
        """A chunk came from the slave; False if that is past the window."""
        self.unsent += 1
        return self.unsent <= WINDOW

    def handed(self) -> None:
        """A chunk left for the client's socket: grant credit back, ``GRANT`` at a time."""
        self.unsent -= 1
        if not self.slave.flow:
            return
        self.owed += 1
        if self.owed >= GRANT and self.slave.jobs.get(self.job.id) is self.job:
            self.channel.credit(self.slave.id, self.job.id, self.owed)
            self.owed = 0


def forward(pool: SlavePool, slave: SlaveHandle, job: Job, data: bytes) -> None:
    """Pass a chunk from ``slave`` to ``job``'s sink, counting it against the window."""
    flow = slave.credits.get(job.id)
    if flow is None:
        flow = slave.credits[job.id] = Credit(pool.engine.channel, slave, job)
        watch = getattr(job.sink, "watch_handoff", None)
        if watch is not None:
            watch(flow.handed)
        else:
            flow.direct = True  # the sink takes chunks at once: nothing waits in the node
    if not flow.took():
        _overran(pool, slave, job)
        return
    job.chunk(data)
    if flow.direct:
        flow.handed()


def _overran(pool: SlavePool, slave: SlaveHandle, job: Job) -> None:
    reason = (f"its client reads slower than the handler answers, and slave {slave.label()} "
              f"sent more than {WINDOW} chunks ahead without waiting for credit (its runtime "
              f"predates CREDIT: docs/protocol.md)")
    log.warning("app %s: a job failed: %s; replacing the slave", pool.engine.name, reason)
    del slave.jobs[job.id]
    pool.engine.stats.fail(job, Status.SERVER_ERROR, f"the job was stopped: {reason}")
    pool.kill(slave, reason, kind="misbehaved")


def stop(pool: SlavePool, job: Job, why: str) -> bool:
    """Tell the slave running ``job`` to stop it (CANCEL, if the slave follows it), and
    replace the slave if the job has not ended within ``termination-timeout``; False if no
    slave of ``pool`` runs it."""
    slave = next((s for s in pool.slaves.values() if s.jobs.get(job.id) is job), None)
    if slave is None:
        return False
    if slave.flow:
        pool.engine.channel.cancel(slave.id, job.id)
    grace = pool.config.termination_timeout
    asyncio.get_running_loop().call_later(grace, _stopped_or_kill, pool, slave, job, why)
    return True


def _stopped_or_kill(pool: SlavePool, slave: SlaveHandle, job: Job, why: str) -> None:
    if slave.jobs.get(job.id) is not job or pool.slaves.get(slave.id) is not slave or \
            slave.state is SlaveState.KILLED:
        return
    reason = (f"a job nobody waits for ({why}) did not stop within "
              f"{pool.config.termination_timeout:g} s (engine.termination-timeout)")
    log.warning("app %s: slave %s replaced: %s", pool.engine.name, slave.label(), reason)
    del slave.jobs[job.id]
    slave.credits.pop(job.id, None)
    pool.kill(slave, reason, kind="misbehaved")
