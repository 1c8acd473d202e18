"""The engine of one app: a queue of jobs and a self-managing pool of slaves.

It is driven from the node's asyncio loop: messages from slaves arrive through a ROUTER
socket, jobs through ``submit``, process exits through the backend, and a supervisor tick runs
the small steps that keep the pool healthy (see ``_supervise``): murder the unresponsive and
the overtime, expire queued jobs past their deadline, retire idle slaves, keep ``pool-min``
warm, grow when jobs wait.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import zmq

from cocaine_core import protocol
from cocaine_core.appinfo import AppInfo, SlaveInfo
from cocaine_core.engine.job import Job
from cocaine_core.engine.queue import JobQueue
from cocaine_core.engine.slave_handle import SlaveHandle, SlaveState
from cocaine_core.engine.stats import JobStats
from cocaine_core.errors import AppLoadError, CocaineError, ProtocolError
from cocaine_core.plugins import get_host
from cocaine_core.protocol import Code, Status
from cocaine_core.zmqloop import SocketReader

log = logging.getLogger("cocaine.engine")
app_log = logging.getLogger("cocaine.app")


class AppState(enum.Enum):
    """Where an app is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    BROKEN = "broken"
    STOPPING = "stopping"
    STOPPED = "stopped"


#: How many times in a row the app's code may fail to start before the app is broken.
START_ATTEMPTS = 3
#: Slaves kept forked and waiting, while the pool is in use and below pool-limit, so that it
#: grows by a message instead of a fork (uWSGI's "spare" idea, per app).
SPARES = 1
#: Wait after a slave could not be forked (a resource limit) before trying again.
SPAWN_RETRY = 1.0
#: Back-off before the n-th retry of a failed start: BACKOFF * 2 ** (n - 1) seconds.
BACKOFF = 0.5


class Engine:
    """One app's queue and pool of slaves."""

    TICK = 0.1

    def __init__(self, app: AppInfo) -> None:
        self.app = app
        self.config = app.manifest.engine
        self.name = app.name
        host = get_host()
        self.language = host.registry("languages").get(app.manifest.type)
        self.backend_class = host.registry("slave_backends").get(self.config.backend)
        self.queue = JobQueue()
        self.slaves: dict[str, SlaveHandle] = {}
        self.stats = JobStats()
        self.state = AppState.STARTING
        self.broken_reason: str | None = None
        self.started_at = time.time()
        #: Template (code load) start attempts so far, and slave spawns so far.
        self.load_attempts = 0
        self.spawns = 0
        self._start_failures = 0
        self._next_spawn_at = 0.0
        self._ids = itertools.count(1)
        self._socket: zmq.Socket | None = None
        self._reader: SocketReader | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._restarting: asyncio.Task[None] | None = None
        self.backend: Any = None
        drivers = host.registry("drivers")
        #: One driver per task, made now (so requests can find their event while the app
        #: starts) and started once the app's code has loaded.
        self.drivers: list[Any] = [drivers.get(task.type)(task, self)
                                   for task in app.manifest.tasks.values()]
        self._started_drivers: list[Any] = []
        self.endpoint = f"ipc://{Path(app.run_dir) / f'{self.name}.{uuid.uuid4().hex[:8]}'}"
        self._heartbeat_interval = max(0.05, min(5.0, self.config.heartbeat_timeout / 5))

    # -- life of the app ------------------------------------------------------------------------

    async def start(self, drivers: bool = True) -> None:
        """Bind the slave endpoint, load the app's code, start the drivers.

        A problem with the app's code does not raise: the app is then ``broken`` and says
        why. Problems of the node (an endpoint in use, a plugin refusing) raise. With
        ``drivers`` false the drivers wait for ``start_drivers`` (a redeploy starts the new
        version's drivers only once the old version's have stopped).
        """
        self._socket = zmq.Context.instance().socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, 0)
        self._socket.setsockopt(zmq.RCVHWM, 0)
        self._socket.bind(self.endpoint)
        self._reader = SocketReader(self._socket, self._on_message)
        try:
            get_host().call_each("cocaine_app_starting", raise_errors=True, app=self.app)
            await self._load()
            self._ticker = asyncio.get_running_loop().create_task(self._supervise())
            if drivers:
                await self.start_drivers()
        except BaseException:
            await self._teardown()
            raise
        if self.state is AppState.STARTING:
            self.state = AppState.RUNNING
        self._ensure_minimum()

    async def _load(self) -> None:
        """Start the backend (template) with retries and back-off; broken after the last."""
        while True:
            self.load_attempts += 1
            self.backend = self.backend_class(
                self.app, self.endpoint, self.language.runtime, self,
                startup_timeout=self.config.startup_timeout)
            try:
                await self.backend.start()
                return
            except AppLoadError as exc:
                reason = str(exc)
                log.warning("app %s: could not load its code (attempt %d of %d): %s",
                            self.name, self._start_failures + 1, START_ATTEMPTS, reason)
                if self._record_start_failure(reason):
                    return
                await asyncio.sleep(BACKOFF * 2 ** (self._start_failures - 1))

    def _record_start_failure(self, reason: str) -> bool:
        """Count a failed start; mark the app broken after too many. True if now broken."""
        self._start_failures += 1
        if self._start_failures >= START_ATTEMPTS:
            self._mark_broken(reason)
            return True
        self._next_spawn_at = time.monotonic() + BACKOFF * 2 ** (self._start_failures - 1)
        return False

    def _mark_broken(self, reason: str) -> None:
        self.state = AppState.BROKEN
        self.broken_reason = reason
        log.error("app %s is broken: %s (fix the code and redeploy or restart it)",
                  self.name, reason)
        for job in self.queue.drain():
            self.stats.refused += 1
            job.refuse(self._broken_message())

    def _broken_message(self) -> str:
        return (f"app '{self.name}' is broken: {self.broken_reason}; "
                f"fix its code, then redeploy or restart it")

    def backend_lost(self, status: int) -> None:
        if self.state in (AppState.STOPPING, AppState.STOPPED) or self._restarting:
            return
        self._restarting = asyncio.get_running_loop().create_task(self._reload_backend())

    async def _reload_backend(self) -> None:
        try:
            if self._record_start_failure("the template process died"):
                return
            await asyncio.sleep(BACKOFF)
            await self._load()
            self._ensure_minimum()
            self._maybe_grow()
        finally:
            self._restarting = None

    async def restart(self) -> None:
        """Replace every slave with fresh ones on freshly loaded code (``--reload``).

        Jobs in flight finish on the old slaves; new jobs wait for the new ones.
        """
        if self.state in (AppState.STOPPING, AppState.STOPPED):
            return
        old_backend, old_slaves = self.backend, list(self.slaves.values())
        self.backend = None
        for slave in old_slaves:
            if slave.state in (SlaveState.READY, SlaveState.SPARE) and not slave.busy:
                self._terminate(slave, "code reloaded")
            elif slave.state is not SlaveState.KILLED:
                slave.state = SlaveState.RETIRING
        self.state = AppState.STARTING
        self.broken_reason = None
        self._start_failures = 0
        self._next_spawn_at = 0.0
        await self._load()
        if self.state is AppState.STARTING:
            self.state = AppState.RUNNING
        self._ensure_minimum()
        self._maybe_grow()
        if old_backend is not None:
            asyncio.get_running_loop().create_task(self._retire_backend(old_backend, old_slaves))

    async def _retire_backend(self, backend: Any, slaves: list[SlaveHandle]) -> None:
        deadline = time.monotonic() + self.config.termination_timeout + 1
        while time.monotonic() < deadline and any(s.id in self.slaves for s in slaves):
            await asyncio.sleep(0.05)
        await backend.stop()

    async def start_drivers(self) -> None:
        """Start every task's driver (raises what a driver raises, e.g. an endpoint in use)."""
        for driver in self.drivers:
            await driver.start()
            self._started_drivers.append(driver)

    async def hand_over(self, successor: Engine) -> None:
        """Give way to a new version of this app without dropping a job.

        The drivers stop, queued jobs move to ``successor`` (in order), the successor's
        drivers start, and this engine drains: jobs in flight finish here, then it stops.
        """
        await self._stop_drivers()
        try:
            await successor.start_drivers()
        finally:
            for job in self.queue.drain():
                successor.submit(job)
        await self.stop()

    async def stop(self) -> None:
        """Drain: no new jobs, queued jobs 503, running jobs get ``termination-timeout`` to
        finish, slaves get ``terminate``, then SIGKILL; nothing is left behind."""
        if self.state in (AppState.STOPPING, AppState.STOPPED):
            return
        self.state = AppState.STOPPING
        await self._stop_drivers()
        for job in self.queue.drain():
            self.stats.refused += 1
            job.refuse(f"app '{self.name}' is stopping")
        for slave in list(self.slaves.values()):
            if not slave.busy and slave.state is not SlaveState.KILLED:
                self._terminate(slave, "app stopping")
        deadline = time.monotonic() + self.config.termination_timeout
        while self.slaves and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for slave in list(self.slaves.values()):
            for job in slave.jobs.values():
                job.fail(Status.SERVER_ERROR, f"app '{self.name}' stopped before the job "
                                              f"finished (engine.termination-timeout "
                                              f"{self.config.termination_timeout:g} s)")
            slave.jobs.clear()
            self._kill(slave, "app stopped", signal.SIGKILL)
        await self._teardown()
        self.state = AppState.STOPPED

    async def _stop_drivers(self) -> None:
        while self._started_drivers:
            driver = self._started_drivers.pop()
            try:
                await driver.stop()
            except Exception:
                log.exception("app %s: the driver of task '%s' failed to stop", self.name,
                              driver.task.name)

    async def _teardown(self) -> None:
        await self._stop_drivers()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._restarting is not None:
            self._restarting.cancel()
        if self.backend is not None:
            await self.backend.stop()
        self.slaves.clear()
        for driver in self.drivers:
            try:
                await driver.close()
            except Exception:
                log.exception("app %s: the driver of task '%s' failed to close", self.name,
                              driver.task.name)
        if self._reader is not None:
            self._reader.close()
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        endpoint_path = self.endpoint.removeprefix("ipc://")
        if os.path.exists(endpoint_path):
            os.unlink(endpoint_path)
        get_host().call_each("cocaine_app_stopped", app=self.app)

    # -- jobs -------------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Run ``job`` now on a free slave, or queue it, or refuse it (503) at once."""
        state = self.state
        if state is not AppState.RUNNING and state is not AppState.STARTING:
            self.stats.refused += 1
            if state is AppState.BROKEN:
                job.refuse(self._broken_message())
            else:
                job.refuse(f"app '{self.name}' is {state.value}")
            return
        if job.deadline is not None and job.expired(time.monotonic()):
            self.stats.expired += 1
            job.fail(Status.DEADLINE, "the job's deadline passed before it could start")
            return
        slave = self._free_slave()
        if slave is not None and not self.queue:
            self._invoke(slave, job)
            return
        if len(self.queue) >= self.config.queue_limit:
            self.stats.refused += 1
            job.refuse(f"queue is full: app '{self.name}' already has "
                       f"{self.config.queue_limit} jobs waiting (engine.queue-limit); "
                       f"retry later, or raise queue-limit or pool-limit")
            return
        self.queue.push(job)
        self._maybe_grow()
        self._dispatch()

    def has_room(self) -> bool:
        """Whether ``submit`` would take a job now rather than refuse it (for drivers that
        can hold back their input instead of refusing it)."""
        if self.state is not AppState.RUNNING and self.state is not AppState.STARTING:
            return False
        return len(self.queue) < self.config.queue_limit or self._free_slave() is not None

    def _free_slave(self) -> SlaveHandle | None:
        concurrency = self.config.concurrency
        best: SlaveHandle | None = None
        for slave in self.slaves.values():
            if slave.state is SlaveState.READY and len(slave.jobs) < concurrency and (
                    best is None or len(slave.jobs) < len(best.jobs)):
                best = slave
                if not slave.jobs:
                    break
        return best

    def _dispatch(self) -> None:
        while self.queue:
            slave = self._free_slave()
            if slave is None:
                return
            job = self.queue.pop()
            assert job is not None
            if job.expired(time.monotonic()):
                self.stats.expired += 1
                job.fail(Status.DEADLINE, "the job's deadline passed before it could start")
                continue
            self._invoke(slave, job)

    def _invoke(self, slave: SlaveHandle, job: Job) -> None:
        job.started = time.monotonic()
        job.attempts += 1
        slave.jobs[job.id] = job
        assert self._reader is not None
        self._reader.send([slave.id.encode(), protocol.pack(Code.INVOKE, job.id, job.event,
                                                            job.meta), job.body])

    def _finish(self, slave: SlaveHandle, job_id: int, code: int | None = None,
                message: str = "", last: bytes | None = None) -> None:
        job = slave.jobs.pop(job_id, None)
        if job is None:
            return
        slave.served += 1
        now = time.monotonic()
        if code is None:
            self.stats.done += 1
            self.stats.latencies.append(now - job.created)
            job.complete(last)
        else:
            self.stats.failed += 1
            job.fail(code, message)
        if not slave.jobs:
            slave.idle_since = now
            if self.state is AppState.STOPPING or slave.state is SlaveState.RETIRING:
                self._terminate(slave, "retired")
                return
        self._dispatch()

    # -- messages from slaves ---------------------------------------------------------------------

    def _on_message(self, frames: list[bytes]) -> None:
        try:
            fields = protocol.unpack(frames[1])
        except (ProtocolError, IndexError) as exc:
            log.warning("app %s: dropped a malformed slave message: %s", self.name, exc)
            return
        code = fields[0]
        if code == Code.HEARTBEAT or code == Code.LOG:
            slave = self.slaves.get(fields[1]) if len(fields) > 1 else None
            if slave is None:
                return
            slave.last_seen = time.monotonic()
            if code == Code.LOG:
                self._on_log(slave, fields)
            elif slave.state is SlaveState.CONFIGURING:
                self._on_ready(slave)
            return
        slave = self.slaves.get(frames[0].decode(errors="replace"))
        if slave is None:
            return
        slave.last_seen = time.monotonic()
        if code == Code.CHUNK:
            job = slave.jobs.get(fields[1])
            if job is not None and len(frames) > 2:
                job.chunk(frames[2])
        elif code == Code.CHOKE:
            self._finish(slave, fields[1], last=frames[2] if len(frames) > 2 else None)
        elif code == Code.ERROR:
            self._on_error(slave, fields)
        elif code == Code.HANDSHAKE:
            slave.handshaken = True
            if slave.pid is None and len(fields) > 2:
                slave.pid = fields[2]
            self._configure_when_able(slave)

    def _on_error(self, slave: SlaveHandle, fields: list[Any]) -> None:
        _, job_id, code, message, *rest = [*fields, "", ""][:5]
        if job_id is None:  # the slave could not start
            reason = str(message)
            log.error("app %s: slave %s could not start: %s", self.name, slave.label(), reason)
            self._kill(slave, reason, signal.SIGKILL)
            self._record_start_failure(reason)
            return
        traceback = rest[0] if rest else ""
        if traceback:
            app_log.error("[%s/%s] job %s failed with %s: %s\n%s", self.name, slave.label(),
                          job_id, code, message, traceback.rstrip())
        self._finish(slave, job_id, int(code) if isinstance(code, int) else 500, str(message))

    def _on_log(self, slave: SlaveHandle, fields: list[Any]) -> None:
        stream = fields[2] if len(fields) > 2 else "stdout"
        text = fields[3] if len(fields) > 3 else ""
        level = logging.WARNING if stream == "stderr" else logging.INFO
        app_log.log(level, "[%s/%s] %s", self.name, slave.label(), text)

    def _configure_when_able(self, slave: SlaveHandle) -> None:
        """Configure a slave once it has both shaken hands and passed the spawn hooks; a
        spare waits instead, until the pool grows."""
        if not (slave.handshaken and slave.hooked) or slave.state is not SlaveState.SPAWNING:
            return
        if slave.spare:
            slave.state = SlaveState.SPARE
        else:
            self._configure(slave)

    def _configure(self, slave: SlaveHandle) -> None:
        slave.state = SlaveState.CONFIGURING
        settings = {"app": self.name, "concurrency": self.config.concurrency,
                    "heartbeat_interval": self._heartbeat_interval}
        assert self._reader is not None
        self._reader.send([slave.id.encode(), protocol.pack(Code.CONFIGURE, settings)])

    def _on_ready(self, slave: SlaveHandle) -> None:
        slave.state = SlaveState.READY
        slave.idle_since = time.monotonic()
        slave.startup = slave.idle_since - slave.spawned_at
        self._start_failures = 0
        if self.state is AppState.STOPPING:
            self._terminate(slave, "app stopping")
            return
        self._dispatch()

    # -- processes --------------------------------------------------------------------------------

    def _spawn(self, spare: bool = False) -> None:
        slave = SlaveHandle(id=f"{self.name}.{next(self._ids)}.{uuid.uuid4().hex[:6]}",
                            spare=spare)
        self.slaves[slave.id] = slave
        if not spare:
            self.spawns += 1
        try:
            self.backend.spawn(slave.id)
        except CocaineError as exc:
            del self.slaves[slave.id]
            log.error("app %s: could not spawn a slave: %s", self.name, exc)

    def spawn_failed(self, slave_id: str, reason: str) -> None:
        """The backend could not start a slave (not the code's fault: a limit, a resource)."""
        if self.slaves.pop(slave_id, None) is None:
            return
        log.error("app %s: could not start a slave: %s; retrying in %g s", self.name, reason,
                  SPAWN_RETRY)
        self._next_spawn_at = time.monotonic() + SPAWN_RETRY
        if self._active():
            return  # the slaves there are serve the queue
        for job in self.queue.drain():
            self.stats.refused += 1
            job.refuse(f"app '{self.name}' has no slave and could not start one: {reason}")

    def slave_spawned(self, slave_id: str, pid: int) -> None:
        slave = self.slaves.get(slave_id)
        if slave is None:
            return
        slave.pid = pid
        try:
            get_host().call_each("cocaine_slave_spawned", raise_errors=True, app=self.app,
                                 slave=SlaveInfo(id=slave_id, pid=pid))
        except CocaineError as exc:
            log.error("app %s: slave %s refused by a plugin: %s", self.name, pid, exc)
            self._kill(slave, str(exc), signal.SIGKILL)
            self._record_start_failure(str(exc))
            return
        slave.hooked = True
        self._configure_when_able(slave)

    def slave_exited(self, slave_id: str, status: int) -> None:
        slave = self.slaves.pop(slave_id, None)
        if slave is None:
            return
        explanations = [str(result) for _record, result in get_host().call_each(
            "cocaine_slave_exited", app=self.app, slave=SlaveInfo(id=slave_id, pid=slave.pid or 0),
            status=status) if isinstance(result, str) and result]
        expected = slave.state in (SlaveState.KILLED, SlaveState.RETIRING)
        if not expected:
            how = f"was killed by signal {-status}" if status < 0 else f"exited with {status}"
            if explanations:
                how += f" ({'; '.join(explanations)})"
            log.warning("app %s: slave %s %s", self.name, slave.label(), how)
            if slave.state in (SlaveState.SPAWNING, SlaveState.CONFIGURING):
                self._record_start_failure(f"a new slave {how} before it was ready")
            slave.reason = f"slave {slave.label()} {how}"
        for job in slave.jobs.values():
            self._retry_or_fail(job, slave.reason or "its slave exited")
        slave.jobs.clear()
        if self.state in (AppState.RUNNING, AppState.STARTING):
            self._ensure_minimum()
            self._maybe_grow()
            self._dispatch()

    def _retry_or_fail(self, job: Job, reason: str) -> None:
        if (not job.sent_any and job.attempts < 2 and not job.finished
                and self.state in (AppState.RUNNING, AppState.STARTING)):
            self.stats.retried += 1
            self.queue.push_front(job)
            return
        self.stats.failed += 1
        job.fail(Status.SERVER_ERROR, f"{reason} while running the job"
                 + ("" if job.sent_any else " (already retried once)"))

    def _terminate(self, slave: SlaveHandle, reason: str) -> None:
        """Ask a slave to exit; SIGKILL follows after ``termination-timeout``."""
        slave.state = SlaveState.RETIRING
        slave.reason = reason
        slave.kill_at = time.monotonic() + self.config.termination_timeout
        if self._reader is not None:
            self._reader.send([slave.id.encode(), protocol.pack(Code.TERMINATE, reason)])

    def _kill(self, slave: SlaveHandle, reason: str, signum: int) -> None:
        slave.state = SlaveState.KILLED
        slave.reason = reason
        if signum == signal.SIGTERM:
            slave.kill_at = time.monotonic() + self.config.termination_timeout
        if self.backend is not None:
            self.backend.signal(slave.id, signum)

    # -- the supervisor ---------------------------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.TICK)
            try:
                now = time.monotonic()
                self._murder_unresponsive(now)
                self._murder_overtime(now)
                self._escalate_kills(now)
                self._expire_queued(now)
                self._retire_idle(now)
                self._ensure_minimum()
                self._maybe_grow()
                self._dispatch()
                self._keep_spare()
            except Exception:
                log.exception("app %s: supervisor step failed", self.name)

    def _murder_unresponsive(self, now: float) -> None:
        for slave in list(self.slaves.values()):
            if slave.state in (SlaveState.SPAWNING, SlaveState.CONFIGURING):
                if now - slave.spawned_at > self.config.startup_timeout:
                    reason = (f"a new slave was not ready within "
                              f"{self.config.startup_timeout:g} s (engine.startup-timeout)")
                    log.error("app %s: %s; killed it", self.name, reason)
                    self._kill(slave, reason, signal.SIGKILL)
                    self._record_start_failure(reason)
            elif slave.state is SlaveState.READY and \
                    now - slave.last_seen > self.config.heartbeat_timeout:
                reason = (f"slave {slave.label()} sent no heartbeat for "
                          f"{self.config.heartbeat_timeout:g} s and was killed")
                log.error("app %s: %s", self.name, reason)
                for job in slave.jobs.values():
                    self.stats.failed += 1
                    job.fail(Status.SERVER_ERROR, f"{reason}; the job was not retried, as it "
                                                  f"may be what hung the slave")
                slave.jobs.clear()
                self._kill(slave, reason, signal.SIGKILL)

    def _murder_overtime(self, now: float) -> None:
        for slave in list(self.slaves.values()):
            if slave.state is not SlaveState.READY:
                continue
            late = [job for job in slave.jobs.values() if job.overtime(now)]
            if not late:
                continue
            for job in late:
                del slave.jobs[job.id]
                self.stats.timed_out += 1
                job.fail(Status.TIMEOUT, f"the job ran past its timeout of {job.timeout:g} s "
                                         f"and its slave was stopped")
            log.warning("app %s: slave %s stopped: a job ran past its timeout", self.name,
                        slave.label())
            self._kill(slave, "another job on this slave timed out", signal.SIGTERM)

    def _escalate_kills(self, now: float) -> None:
        for slave in self.slaves.values():
            if slave.kill_at is not None and now >= slave.kill_at:
                slave.kill_at = None
                self._kill(slave, slave.reason, signal.SIGKILL)

    def _expire_queued(self, now: float) -> None:
        for job in self.queue.remove_expired(now):
            self.stats.expired += 1
            job.fail(Status.DEADLINE, "the job's deadline passed before it could start")

    def _retire_idle(self, now: float) -> None:
        ready = [s for s in self.slaves.values() if s.state is SlaveState.READY]
        surplus = len(ready) - self.config.pool_min
        for slave in sorted(ready, key=lambda s: s.idle_since):
            if surplus <= 0:
                return
            if not slave.busy and now - slave.idle_since > self.config.idle_timeout:
                self._terminate(slave, f"idle for {self.config.idle_timeout:g} s")
                surplus -= 1

    def _active(self) -> int:
        return sum(1 for s in self.slaves.values() if not s.spare and s.state in (
            SlaveState.SPAWNING, SlaveState.CONFIGURING, SlaveState.READY))

    def _spares(self) -> list[SlaveHandle]:
        return [s for s in self.slaves.values()
                if s.spare and s.state in (SlaveState.SPAWNING, SlaveState.SPARE)]

    def _keep_spare(self) -> None:
        """Keep up to ``SPARES`` slaves forked, connected and waiting while the pool is in use
        and may still grow, so growing is a configure message, not a fork and a handshake.

        Run from the supervisor's tick only: a spare is forked a moment after the pool comes
        into use, not in the middle of the first job's start."""
        spares = self._spares()
        active = self._active()
        wanted = 0
        if self.state is AppState.RUNNING and active > 0:
            wanted = max(0, min(SPARES, self.config.pool_limit - active))
        if len(spares) < wanted and self._can_spawn():
            self._spawn(spare=True)  # one per tick: the next tick adds another if wanted
        for spare in spares[wanted:]:
            if spare.state is SlaveState.SPARE:
                self._terminate(spare, "no spare needed")

    def _promote_spare(self) -> bool:
        """Let a spare join the pool (the readiest first); False if there is none."""
        spares = self._spares()
        if not spares:
            return False
        spare = max(spares, key=lambda s: s.state is SlaveState.SPARE)
        spare.spare = False
        spare.spawned_at = time.monotonic()  # its start-up counts from when it was needed
        self.spawns += 1
        if spare.state is SlaveState.SPARE:
            spare.state = SlaveState.SPAWNING
            self._configure_when_able(spare)
        return True

    def _can_spawn(self) -> bool:
        return (self.state in (AppState.RUNNING, AppState.STARTING) and self.backend is not None
                and self._restarting is None and time.monotonic() >= self._next_spawn_at)

    def _ensure_minimum(self) -> None:
        while self._can_spawn() and self._active() < self.config.pool_min:
            self._spawn()

    def _maybe_grow(self) -> None:
        if not self.queue or not self._can_spawn():
            return
        active = self._active()
        if active >= self.config.pool_limit:
            return
        grow = active == 0 or len(self.queue) > active * self.config.grow_threshold
        if grow and not self._promote_spare():
            self._spawn()

    # -- introspection ----------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The app's state for ``cocaine info``: pool, queue, jobs, latencies, slaves."""
        slaves = list(self.slaves.values())
        pool = [s for s in slaves if not s.spare]
        busy = sum(1 for s in pool if s.busy)
        ready = sum(1 for s in pool if s.state is SlaveState.READY)
        info: dict[str, Any] = {
            "state": self.state.value,
            "pool": {"total": len(pool), "busy": busy, "idle": ready - busy if ready > busy
                     else 0, "starting": sum(1 for s in pool if s.state in (
                         SlaveState.SPAWNING, SlaveState.CONFIGURING)),
                     "limit": self.config.pool_limit, "min": self.config.pool_min,
                     "spare": len(slaves) - len(pool)},
            "queue": {"depth": len(self.queue), "limit": self.config.queue_limit},
            "jobs": self.stats.as_dict(),
            "slaves": [_slave_info(s) for s in slaves],
            "spawns": self.spawns,
            "uptime": round(time.time() - self.started_at, 3),
            "tasks": {d.task.name: d.info() for d in self.drivers},
        }
        if self.broken_reason:
            info["broken"] = self.broken_reason
        for record, result in get_host().call_each("cocaine_app_info", app=self.app):
            if isinstance(result, dict):
                info[record.name] = result
        return info


def _slave_info(slave: SlaveHandle) -> dict[str, Any]:
    state = "spare" if slave.spare else slave.state.value
    return {"id": slave.id, "pid": slave.pid, "state": state,
            "jobs": len(slave.jobs), "served": slave.served,
            "rss-bytes": _rss(slave.pid) if slave.pid else None,
            "age": round(time.monotonic() - slave.spawned_at, 3),
            "startup-ms": None if slave.startup is None else round(slave.startup * 1000, 3)}


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
