"""The slave pool of one app: spawning, configuring, killing, spares, replacing the dead.

The pool hears from its slaves through the engine's channel (``SlaveListener``) and from the
backend (``BackendEvents``); jobs and the app's life stay the engine's, and the supervisor's
periodic steps are in ``supervisor.py``.
"""

from __future__ import annotations

import itertools
import logging
import signal
import time
from typing import TYPE_CHECKING

from cocaine_core.engine import body, credit, exits, growth
from cocaine_core.engine.app_log import AppLog
from cocaine_core.engine.restarts import CrashBackoff, StartBackoff
from cocaine_core.engine.slave_handle import SlaveHandle, SlaveState
from cocaine_core.errortext import MESSAGE_LIMIT, cut, printable

if TYPE_CHECKING:
    from cocaine_core.engine.engine import Engine
    from cocaine_core.engine.job import Job

log = logging.getLogger("cocaine.engine")

_STARTING = (SlaveState.SPAWNING, SlaveState.CONFIGURING)
_ACTIVE = (*_STARTING, SlaveState.READY)


class SlavePool:
    """The slaves of one engine, and the rules that start, replace and stop them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.config = engine.config
        self.slaves: dict[str, SlaveHandle] = {}
        #: What the slaves send to the node's log (printed lines, tracebacks), bounded.
        self.output = AppLog(engine.name)
        #: Slaves spawned into the pool so far (spares count once they join).
        self.spawns = 0
        self.crashes = CrashBackoff()
        #: Slaves ended and replaced, by kind of reason (``exits.RESTARTS``).
        self.restarts: dict[str, int] = {}
        self.starts = StartBackoff()
        self._next_spawn_at = 0.0
        self.next_rss_check = 0.0
        #: Numbers for the ids of the slaves it spawns.
        self.ids = itertools.count(1)
        #: How much the pool grew lately, for the spares it keeps (``growth.py``).
        self.growth = growth.GrowthMemory()
        self._heartbeat_interval = max(0.05, min(5.0, self.config.heartbeat_timeout / 5))

    # -- looking --------------------------------------------------------------------------------

    def free_slave(self) -> SlaveHandle | None:
        """The ready slave with the fewest jobs, below ``concurrency``; None if none has room."""
        concurrency = self.config.concurrency
        best: SlaveHandle | None = None
        for slave in self.slaves.values():
            if slave.state is SlaveState.READY and len(slave.jobs) < concurrency and (
                    best is None or len(slave.jobs) < len(best.jobs)):
                best = slave
                if not slave.jobs:
                    break
        return best

    def active(self) -> int:
        """Slaves in the pool that serve or will serve: starting or ready, spares excluded."""
        return sum(1 for s in self.slaves.values() if not s.spare and s.state in _ACTIVE)

    def spares(self) -> list[SlaveHandle]:
        """Slaves forked ahead of need, not yet in the pool."""
        return [s for s in self.slaves.values()
                if s.spare and s.state in (SlaveState.SPAWNING, SlaveState.SPARE)]

    def can_spawn(self, now: float | None = None) -> bool:
        """Whether the app runs, has a backend, and no back-off holds spawning."""
        now = time.monotonic() if now is None else now
        return (self.engine.accepting() and self.engine.backend is not None
                and not self.engine.reloading and now >= self._next_spawn_at
                and self.crashes.allows(now))

    def limit(self) -> int:
        """The most slaves for now: ``pool-limit``, or fewer while slaves keep crashing."""
        return self.crashes.limit(self.config.pool_limit, time.monotonic())

    def hold_spawns(self, seconds: float) -> None:
        """Spawn nothing for ``seconds`` (after a failed start)."""
        self._next_spawn_at = time.monotonic() + seconds

    def reset_holds(self) -> None:
        """Forget start back-offs (a restart of the app)."""
        self._next_spawn_at = 0.0

    # -- starting slaves ------------------------------------------------------------------------

    def spawn(self, spare: bool = False) -> bool:
        """Ask the backend for a slave (a spare waits unconfigured until the pool grows);
        False if the backend cannot spawn now (spawning then waits a moment)."""
        return growth.spawn(self, 1, spare=spare) == 1

    def ensure_minimum(self) -> None:
        """Spawn the slaves missing to ``pool-min`` (serving or starting), in one request."""
        missing = self.config.pool_min - self.active()
        if missing > 0 and self.can_spawn():
            growth.spawn(self, missing)

    def maybe_grow(self) -> None:
        """Grow by every slave the waiting jobs need beyond ``grow-threshold``, at once:
        spares first, the rest forked together (``growth.grow``)."""
        growth.grow(self)

    def keep_spare(self) -> None:
        """Keep spares forked, connected and waiting while the pool is in use and may still
        grow, as many as it grew by lately (``growth.keep_spares``), so growing is a
        configure message, not a fork and a handshake. From the supervisor's tick only."""
        growth.keep_spares(self)

    def configure_when_able(self, slave: SlaveHandle) -> None:
        """Configure a slave once it has both shaken hands and passed the spawn hooks; a
        spare waits instead, until the pool grows."""
        if not (slave.handshaken and slave.hooked) or slave.state is not SlaveState.SPAWNING:
            return
        if slave.spare:
            slave.state = SlaveState.SPARE
            return
        slave.state = SlaveState.CONFIGURING
        self.engine.channel.configure(slave.id, {
            "app": self.engine.name, "concurrency": self.config.concurrency,
            "heartbeat_interval": self._heartbeat_interval, "credit": credit.WINDOW,
            "max_message": self.engine.channel.max_message, "batch": slave.batch})

    # -- ending slaves --------------------------------------------------------------------------

    def terminate(self, slave: SlaveHandle, reason: str, *, kind: str = "") -> None:
        """Ask a slave to exit; SIGKILL follows after ``termination-timeout``. ``kind``
        classes the reason for counts (``exits.RESTARTS``); empty: the one already set."""
        slave.state = SlaveState.RETIRING
        slave.reason = reason
        slave.kind = kind or slave.kind
        slave.kill_at = time.monotonic() + self.config.termination_timeout
        self.engine.channel.terminate(slave.id, reason)

    def retire(self, slave: SlaveHandle, reason: str, *, kind: str = "") -> None:
        """Take a slave out of service gracefully: it finishes its jobs, then terminates."""
        if slave.busy:
            slave.state = SlaveState.RETIRING
            slave.reason = reason
            slave.kind = kind or slave.kind
        else:
            self.terminate(slave, reason, kind=kind)

    def kill(self, slave: SlaveHandle, reason: str, signum: int = signal.SIGKILL, *,
             kind: str = "") -> None:
        """Signal a slave (SIGKILL unless told); SIGKILL follows (again) in time, and a slave
        never made (its template stalled) is forgotten then."""
        slave.state = SlaveState.KILLED
        slave.reason = reason
        slave.kind = kind or slave.kind
        slave.kill_at = time.monotonic() + self.config.termination_timeout + (
            0 if signum == signal.SIGTERM else 1)
        if self.engine.backend is not None:
            self.engine.backend.signal(slave.id, signum)

    def failed_to_start(self, slave: SlaveHandle, reason: str) -> None:
        """Kill a slave that could not start, and back off."""
        self.kill(slave, reason, kind="failed-start")
        self.start_failed(reason)

    def start_failed(self, reason: str) -> None:
        """A slave could not be started (the moment's fault: a limit, a stall, a killer):
        spawning waits, longer at each failure in a row. Without a slave ready or starting
        (whose start-up-timeout bounds the wait), queued jobs are refused with the reason
        rather than left waiting on it."""
        wait = self.starts.failed(reason)
        self.hold_spawns(wait)
        if self.starts.failures & (self.starts.failures - 1) == 0:  # 1st, 2nd, 4th…
            log.error("app %s: %s (%d in a row); the next slave in %g s", self.engine.name,
                      reason, self.starts.failures, wait)
        if not any(s.state is SlaveState.READY or (not s.spare and s.state in _STARTING)
                   for s in self.slaves.values()):
            self.engine.refuse_queued(f"app '{self.engine.name}' has no slave ready and "
                                      f"could not start one: {reason}; retrying")

    # -- jobs on slaves -------------------------------------------------------------------------

    def invoke(self, slave: SlaveHandle, job: Job) -> None:
        """Start ``job`` on ``slave``."""
        job.started = time.monotonic()
        job.attempts += 1
        slave.jobs[job.id] = job
        if job.stream is None:
            self.engine.channel.invoke(slave.id, job, slave.batch)
        else:
            body.invoke(self, slave, job)

    def stop_job(self, job: Job, why: str) -> bool:
        """Nobody waits for running ``job`` any more (``why``): tell its slave to stop it
        (``credit.stop``); False if no slave here runs it."""
        return credit.stop(self, job, why)

    def job_left(self, slave: SlaveHandle, count: int = 1) -> None:
        """After a job (``count`` jobs) left ``slave``: retire it if it is worn out or
        retiring, else go on."""
        slave.served += count
        max_requests = self.config.max_requests
        if max_requests and slave.served >= max_requests and slave.state is SlaveState.READY:
            log.info("app %s: slave %s served %d jobs (engine.max-requests): replacing it",
                     self.engine.name, slave.label(), slave.served)
            slave.state = SlaveState.RETIRING
            slave.reason = f"served {slave.served} jobs (engine.max-requests)"
            slave.kind = "max-requests"
        if not slave.jobs:
            slave.idle_since = time.monotonic()
            if self.engine.stopping() or slave.state is SlaveState.RETIRING:
                self.terminate(slave, slave.reason or "retired")
                self.maybe_grow()
                return
        self.engine.dispatch()

    # -- messages from slaves (SlaveListener) ---------------------------------------------------

    def _heard(self, slave_id: str) -> SlaveHandle | None:
        slave = self.slaves.get(slave_id)
        if slave is not None:
            slave.last_seen = time.monotonic()
            slave.cpu_mark = None
        return slave

    def slave_handshake(self, slave_id: str, pid: int | None, flow: bool = False,
                        streams: bool = False, batch: bool = False) -> None:
        """A slave introduced itself: configure it once the spawn hooks passed. Batches go
        only to a slave that runs several jobs at once (``concurrency`` above 1)."""
        slave = self._heard(slave_id)
        if slave is None:
            return
        slave.handshaken, slave.flow, slave.streams = True, flow, streams
        slave.batch = batch and self.config.concurrency > 1
        if slave.pid is None:
            slave.pid = pid
        if slave.state is SlaveState.RETIRING:
            # Told to terminate before it had connected (a spare still starting when the
            # app stopped): that message was dropped; it hears it now.
            self.engine.channel.terminate(slave.id, slave.reason or "app stopping")
            return
        self.configure_when_able(slave)

    def slave_heartbeat(self, slave_id: str) -> None:
        """A heartbeat; the first one after configure means the slave is ready."""
        slave = self._heard(slave_id)
        if slave is None or slave.state is not SlaveState.CONFIGURING:
            return
        slave.state = SlaveState.READY
        slave.idle_since = time.monotonic()
        slave.startup = slave.idle_since - slave.spawned_at
        self.starts.succeeded()
        if self.engine.stopping():
            self.terminate(slave, "app stopping", kind="stopping")
            return
        self.engine.dispatch()

    def slave_log(self, slave_id: str, stream: str, text: str, dropped: int = 0) -> None:
        """A line the app printed (and lines its slave dropped): into the node's log, tagged
        ``[app/pid]``, escaped, within the app's budget (``app_log.py``)."""
        slave = self._heard(slave_id)
        if slave is not None:
            self.output.line(slave.label(), stream, text, dropped)

    def job_chunk(self, slave_id: str, job_id: int, data: bytes) -> None:
        """Pass a chunk of a job's answer on, within the job's credit (``credit.py``)."""
        slave = self._heard(slave_id)
        job = slave.jobs.get(job_id) if slave is not None else None
        if job is not None and not job.finished:  # a cancelled job's chunks go nowhere
            credit.forward(self, slave, job, data)  # type: ignore[arg-type]

    def job_done(self, slave_id: str, job_id: int, last: bytes | None) -> None:
        """A job's answer is complete."""
        slave = self._heard(slave_id)
        job = slave.jobs.pop(job_id, None) if slave is not None else None
        if slave is None or job is None:
            return
        if slave.credits:
            slave.credits.pop(job_id, None)
        self.engine.stats.succeed(job, last)
        self.job_left(slave)

    def jobs_done(self, slave_id: str, ended: list[tuple[int, bytes | None]]) -> None:
        """Several jobs' answers are complete (a CHOKE_BATCH): each as ``job_done``, and the
        slave's room is filled once, after them."""
        slave = self._heard(slave_id)
        if slave is None:
            return
        jobs, succeed, count = slave.jobs, self.engine.stats.succeed, 0
        for job_id, last in ended:
            job = jobs.pop(job_id, None)
            if job is not None:
                if slave.credits:
                    slave.credits.pop(job_id, None)
                succeed(job, last)
                count += 1
        if count:
            self.job_left(slave, count)

    def job_error(self, slave_id: str, job_id: int, code: int, message: str,
                  traceback: str) -> None:
        """A job failed in its handler."""
        slave = self._heard(slave_id)
        job = slave.jobs.pop(job_id, None) if slave is not None else None
        if slave is None or job is None:
            return
        if slave.credits:
            slave.credits.pop(job_id, None)
        self.engine.handler_failed(job, slave.label(), code, message, traceback)
        self.job_left(slave)

    #: CREDIT or HEADERS for a job of a slave.
    job_flow = body.job_flow

    def slave_failed(self, slave_id: str, message: str) -> None:
        """A slave could not start (its runtime said why)."""
        slave = self._heard(slave_id)
        if slave is not None:
            message = printable(cut(message, MESSAGE_LIMIT))  # the app's text, on one line
            log.error("app %s: slave %s could not start: %s", self.engine.name, slave.label(),
                      message)
            self.failed_to_start(slave, message)

    # -- the backend's reports (BackendEvents) -------------------------------------------------

    def slave_spawned(self, slave_id: str, pid: int) -> None:
        """A slave process exists: confine it (the spawn hooks), then configure it."""
        exits.slave_spawned(self, slave_id, pid)

    def spawn_failed(self, slave_id: str, reason: str) -> None:
        """The backend could not start a slave (not the code's fault: a limit, a resource)."""
        if self.slaves.pop(slave_id, None) is not None:
            self.start_failed(reason)

    def slave_exited(self, slave_id: str, status: int) -> None:
        """A slave process ended: account for it, retry or fail its jobs, replace it."""
        exits.slave_exited(self, slave_id, status)

    def backend_lost(self, status: int) -> None:
        """The template died: the engine loads the code again."""
        self.engine.backend_lost(status)
