"""The engine of one app: its life, its queue of jobs, and dispatch to its slave pool.

It is driven from the node's asyncio loop: jobs arrive through ``submit`` (from drivers),
messages from slaves through the engine's channel (``EngineChannel``, decoded into calls on
the pool), process events from the backend, and a supervisor tick runs the pool's small steps
(``supervisor.py``) and expires queued jobs past their deadline.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from cocaine_core.appinfo import AppInfo
from cocaine_core.engine import body, handover, introspect
from cocaine_core.engine.channel import EngineChannel
from cocaine_core.engine.job import Job
from cocaine_core.engine.loader import START_ATTEMPTS, CodeLoader
from cocaine_core.engine.pool import SlavePool
from cocaine_core.engine.queue import JobQueue
from cocaine_core.engine.slave_handle import SlaveHandle, SlaveState
from cocaine_core.engine.stats import JobStats
from cocaine_core.engine.supervisor import supervise
from cocaine_core.errortext import MESSAGE_LIMIT, cut
from cocaine_core.plugins import get_host
from cocaine_core.protocol import Status

if TYPE_CHECKING:
    from cocaine_core.appstore import AppRecord
    from cocaine_core.backends import SlaveBackend
    from cocaine_core.drivers import Driver, EngineHandle

log = logging.getLogger("cocaine.engine")


class AppState(enum.Enum):
    """Where an app is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    BROKEN = "broken"
    STOPPING = "stopping"
    STOPPED = "stopped"




class Engine:
    """One app's queue and pool of slaves."""

    def __init__(self, app: AppInfo) -> None:
        self.app = app
        self.config = app.manifest.engine
        self.name = app.name
        host = get_host()
        self.language = host.registry("languages").get(app.manifest.type)
        self.backend_class = host.registry("slave_backends").get(self.config.backend)
        self.backend: SlaveBackend | None = None
        self.queue = JobQueue()
        self.stats = JobStats()
        self.state = AppState.STARTING
        self.broken_reason: str | None = None
        self.started_at = time.time()
        #: The stored record this engine runs (None for an app hosted by ``cocaine run``).
        self.record: AppRecord | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.pool = SlavePool(self)
        self.loader = CodeLoader(self)
        endpoint = f"ipc://{Path(app.run_dir) / f'{self.name}.{uuid.uuid4().hex[:8]}'}"
        self.channel = EngineChannel(endpoint, self.pool, self.config.concurrency)
        #: One driver per task, made now (so requests can find their event while the app
        #: starts) and started once the app's code has loaded.
        self.drivers: list[Driver] = self._make_drivers()
        self._started_drivers: list[Driver] = []

    def _make_drivers(self) -> list[Driver]:
        drivers = get_host().registry("drivers")
        handle: EngineHandle = self  # all drivers see (the type checker holds Engine to it)
        return [drivers.get(task.type)(task, handle) for task in self.app.manifest.tasks.values()]

    async def restart_drivers(self) -> None:
        """Start the tasks anew, with drivers made anew (a stopped driver may not start
        twice): a new version that could not take over leaves this one serving."""
        for driver in self.drivers:
            try:
                await driver.close()
            except Exception:
                log.exception("app %s: task '%s' failed to close", self.name, driver.task.name)
        self.drivers = self._make_drivers()
        await self.start_drivers()

    @property
    def endpoint(self) -> str:
        """The ``ipc://`` endpoint the app's slaves connect to."""
        return self.channel.endpoint

    @property
    def spawns(self) -> int:
        """Slaves started into the pool so far."""
        return self.pool.spawns

    @property
    def reloading(self) -> bool:
        """Whether the code is being loaded in the background (no backend to spawn from)."""
        return self.loader.busy

    def accepting(self) -> bool:
        """Whether the app takes jobs (running, or still starting)."""
        return self.state is AppState.RUNNING or self.state is AppState.STARTING

    def running(self) -> bool:
        """Whether the app has started and serves."""
        return self.state is AppState.RUNNING

    def stopping(self) -> bool:
        """Whether the app is stopping or has stopped."""
        return self.state is AppState.STOPPING or self.state is AppState.STOPPED

    # -- life of the app ------------------------------------------------------------------------

    async def start(self, drivers: bool = True) -> None:
        """Bind the slave endpoint, load the app's code, start the drivers.

        A problem with the app's code does not raise: the app is then ``broken`` and says
        why, or, if the moment is at fault (a slow or killed load), it goes on loading in
        the background while jobs wait. Problems of the node (an endpoint in use, a plugin
        refusing) raise. With ``drivers`` false the drivers wait for ``start_drivers`` (a
        redeploy starts the new version's drivers only once the old version's have stopped).
        """
        self.channel.bind()
        try:
            get_host().call_each("cocaine_app_starting", raise_errors=True, app=self.app)
            loaded = await self.loader.load(tries=START_ATTEMPTS)
            self._ticker = asyncio.get_running_loop().create_task(supervise(self))
            if drivers:
                await self.start_drivers()
        except BaseException:
            await self._teardown()
            raise
        if loaded:
            self.code_loaded()
        elif self.state is AppState.STARTING:
            log.warning("app %s: its code did not load yet (%s); trying again in the "
                        "background while jobs wait", self.name, self.loader.last_failure)
            self.loader.keep_loading()

    @property
    def load_attempts(self) -> int:
        """Loads of the app's code tried so far."""
        return self.loader.attempts

    def code_loaded(self) -> None:
        """The code has loaded (at start, in the background, or healed): serve."""
        if self.stopping():
            return
        if self.state is AppState.BROKEN:
            log.info("app %s: its code loads again; it serves again", self.name)
        self.state = AppState.RUNNING
        self.broken_reason = None
        self.app.events.emit(self.name, "started")
        self.pool.ensure_minimum()
        self.pool.maybe_grow()
        self.dispatch()

    def mark_broken(self, reason: str) -> None:
        """The code itself failed again and again: refuse jobs with the reason, and try the
        code again now and then."""
        self.state = AppState.BROKEN
        self.broken_reason = reason
        self.app.events.emit(self.name, "broken", reason=reason)
        log.error("app %s is broken: %s (fix the code and redeploy or restart it; it is also "
                  "tried again now and then)", self.name, reason)
        self.refuse_queued(self._broken_message())
        self.loader.heal_later()

    def _broken_message(self) -> str:
        return (f"app '{self.name}' is broken: {self.broken_reason}; "
                f"fix its code, then redeploy or restart it")

    def backend_lost(self, status: int) -> None:
        """The backend's template died: load the code again, with back-off, while queued
        jobs wait (the moment's fault, never the code's)."""
        if self.stopping():
            return
        self.backend = None
        for slave in list(self.pool.slaves.values()):  # they died with it: no job goes to them
            if slave.state is not SlaveState.KILLED:
                self.pool.kill(slave, "its template process died", kind="template-died")
        self.loader.keep_loading()

    async def restart(self) -> None:
        """Replace every slave with fresh ones on freshly loaded code (``--reload``).

        Jobs in flight finish on the old slaves; new jobs wait for the new ones.
        """
        if self.stopping():
            return
        old_backend, old_slaves = self.backend, list(self.pool.slaves.values())
        self.backend = None
        for slave in old_slaves:
            if slave.state is not SlaveState.KILLED:
                self.pool.retire(slave, "code reloaded", kind="reload")
        self.state = AppState.STARTING
        self.broken_reason = None
        self.loader.reset()
        self.pool.reset_holds()
        if await self.loader.load(tries=START_ATTEMPTS):
            self.code_loaded()
        elif self.state is AppState.STARTING:
            self.loader.keep_loading()
        if old_backend is not None:
            asyncio.get_running_loop().create_task(self._retire_backend(old_backend, old_slaves))

    async def _retire_backend(self, backend: SlaveBackend, slaves: list[SlaveHandle]) -> None:
        deadline = time.monotonic() + self.config.termination_timeout + 1
        while time.monotonic() < deadline and any(s.id in self.pool.slaves for s in slaves):
            await asyncio.sleep(0.05)
        await backend.stop()

    async def start_drivers(self) -> None:
        """Start every task's driver (raises what a driver raises, e.g. an endpoint in use)."""
        for driver in self.drivers:
            await driver.start()
            self._started_drivers.append(driver)

    #: Give way to a new version of this app without dropping a job (``handover.py``).
    hand_over = handover.hand_over

    async def stop(self) -> None:
        """Drain: no new jobs, queued jobs 503, running jobs get ``termination-timeout`` to
        finish, slaves get ``terminate``, then SIGKILL; nothing is left behind."""
        if self.stopping():
            return
        self.state = AppState.STOPPING
        await self._stop_drivers()
        self.refuse_queued(f"app '{self.name}' is stopping")
        slaves = self.pool.slaves
        for slave in list(slaves.values()):
            if not slave.busy and slave.state is not SlaveState.KILLED:
                self.pool.terminate(slave, "app stopping", kind="stopping")
        deadline = time.monotonic() + self.config.termination_timeout
        while slaves and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for slave in list(slaves.values()):
            for job in slave.jobs.values():
                self.stats.fail(job, Status.SERVER_ERROR,
                                f"app '{self.name}' stopped before the job finished "
                                f"(engine.termination-timeout "
                                f"{self.config.termination_timeout:g} s)")
            slave.jobs.clear()
            self.pool.kill(slave, "app stopped", kind="stopping")
        await self._teardown()
        self.state = AppState.STOPPED
        self.app.events.emit(self.name, "stopped")

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
        self.loader.cancel()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self.backend is not None:
            await self.backend.stop()
        self.pool.slaves.clear()
        for driver in self.drivers:
            try:
                await driver.close()
            except Exception:
                log.exception("app %s: the driver of task '%s' failed to close", self.name,
                              driver.task.name)
        self.channel.close()
        get_host().call_each("cocaine_app_stopped", app=self.app)

    # -- jobs -------------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Run ``job`` now on a free slave, or queue it, or refuse it (503) at once."""
        if job.stream is not None:
            body.taken(self, job)
        if not self.accepting():
            self.stats.refuse(job, self._broken_message() if self.state is AppState.BROKEN
                        else f"app '{self.name}' is {self.state.value}")
            return
        if job.deadline is not None and job.expired(time.monotonic()):
            self.stats.expire(job)
            return
        slave = self.pool.free_slave()
        if slave is not None and not self.queue:
            self.pool.invoke(slave, job)
            return
        if len(self.queue) >= self.config.queue_limit:
            self.stats.refuse(job, f"queue is full: app '{self.name}' already has "
                             f"{self.config.queue_limit} jobs waiting (engine.queue-limit); "
                             f"retry later, or raise queue-limit or pool-limit")
            return
        self.queue.push(job)
        self.pool.maybe_grow()
        self.dispatch()

    #: Nobody waits for a job any more: never start it, or stop it (``body.cancel``).
    cancel = body.cancel

    def has_room(self) -> bool:
        """Whether ``submit`` would take a job now rather than refuse it (for drivers that
        can hold back their input instead of refusing it)."""
        return self.accepting() and (len(self.queue) < self.config.queue_limit or (
            not self.queue and self.pool.free_slave() is not None))

    def dispatch(self) -> None:
        """Start queued jobs on free slaves, oldest (urgent) first; expired ones are failed."""
        while self.queue:
            slave = self.pool.free_slave()
            if slave is None:
                return
            job = self.queue.pop()
            if job is None:  # only jobs that had ended (their clients left) were waiting
                return
            if job.expired(time.monotonic()):
                self.stats.expire(job)
                continue
            self.pool.invoke(slave, job)

    def refuse_queued(self, message: str) -> None:
        """Refuse every queued job with 503 and ``message``."""
        for job in self.queue.drain():
            self.stats.refuse(job, message)

    def handler_failed(self, job: Job, slave: str, code: int, message: str,
                       traceback: str) -> None:
        """A job's handler failed on slave ``slave``: log it once, bounded (the message
        ``MESSAGE_LIMIT`` and the traceback ``TRACEBACK_LIMIT`` bytes, whatever the slave
        sent), escaped and tagged line by line, and fail the job with ``code`` (the client's
        message keeps its newlines)."""
        message = cut(message, MESSAGE_LIMIT)
        if traceback:  # each line escaped and tagged [app/slave] (app_log.py)
            self.pool.output.failure(slave, job.id, code, message, traceback)
        self.stats.fail(job, code, message)

    def retry_or_fail(self, job: Job, reason: str) -> None:
        """A job's slave died: run it again once if it sent nothing yet and retry is on for it
        (its task's and its request's ``retry``), else fail it (500)."""
        if not job.retry and not job.sent_any and not job.finished:
            self.stats.fail(job, Status.SERVER_ERROR, f"{reason} while running the job; "
                            f"the job was not run again " + body.NO_RETRY_WHY[job.stream is None])
            return
        if (not job.sent_any and job.attempts < 2 and not job.finished and self.accepting()):
            self.stats.retried += 1
            self.queue.push_front(job)
            return
        self.stats.fail(job, Status.SERVER_ERROR, f"{reason} while running the job"
                        + ("" if job.sent_any else " (already retried once)"))

    # -- introspection ----------------------------------------------------------------------------

    #: The app's state for ``cocaine info`` (``introspect.py``).
    info = introspect.engine_info
