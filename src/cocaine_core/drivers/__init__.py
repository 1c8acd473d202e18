"""Drivers: what turns something happening outside into jobs for an app.

A driver class is registered with ``registry.add(type_name, DriverClass)`` in
``cocaine_register_drivers``. The core checks a task's keys against the class's ``keys`` before
the driver ever sees them, then calls ``validate`` for checks that need more than a type.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from cocaine_core.engine.job import Job, JobSink, NullSink
from cocaine_core.errors import Problem
from cocaine_core.schema import Key

if TYPE_CHECKING:
    from cocaine_core.appinfo import AppInfo
    from cocaine_core.manifest_model import EngineConfig, TaskConfig


class EngineHandle(Protocol):
    """All a driver may use of its app's engine: the app, its settings, and the job intake.

    A driver holds no other reference into the engine; a static type checker holds every
    driver to this (``.ci/run`` runs mypy over the core and the plugins).
    """

    @property
    def name(self) -> str:
        """The app's name (for log lines and messages)."""
        ...

    @property
    def app(self) -> AppInfo:
        """The app: its manifest, run folder, port range and per-app ``extra`` state."""
        ...

    @property
    def config(self) -> EngineConfig:
        """The manifest's ``engine`` section, every default filled in."""
        ...

    def submit(self, job: Job) -> None:
        """Run ``job`` now, queue it, or refuse it at once (its sink hears which)."""
        ...

    def has_room(self) -> bool:
        """Whether ``submit`` would take a job now rather than refuse it: a driver that can
        hold its input back (stop reading a socket) asks this first."""
        ...

    def cancel(self, job: Job, why: str) -> None:
        """Nobody waits for ``job`` any more (its client left, ``why``): it never starts if
        it is queued, and its slave is told to stop it if it runs (and replaced if it has
        not within ``termination-timeout``). Its sink hears nothing more."""
        ...


class Driver:
    """Base of drivers: one instance per task of a running app."""

    #: The task keys this driver owns (beyond ``type``, ``emit``, ``timeout`` and ``retry``).
    keys: ClassVar[tuple[Key, ...]] = ()

    @classmethod
    def validate(cls, options: dict[str, Any], root: Path) -> list[Problem]:
        """Check the task's options beyond their types; paths are relative to the task."""
        return []

    def __init__(self, task: TaskConfig, engine: EngineHandle) -> None:
        self.task = task
        self.engine = engine
        self.options = task.options

    def make_job(self, body: bytes = b"", meta: dict[str, Any] | None = None,
                 sink: JobSink | None = None, **policy: Any) -> Job:
        """A job for this task's event with the task's timeout (or the engine's default).

        It is run again after a slave's death only if both the task (its ``retry`` key) and
        ``policy`` (``retry=False`` turns it off for one job) allow it. ``policy`` may also
        give ``urgent``, ``deadline``, and ``stream``: a ``BodyStream`` (``engine/body.py``)
        the rest of the body is fed to, piece by piece, after ``body``.
        """
        timeout = policy.pop("timeout", None) or self.task.timeout or \
            self.engine.config.job_timeout
        retry = policy.pop("retry", True) is not False and self.task.retry
        return Job(self.task.event, body, meta or {}, sink or NullSink(), timeout=timeout,
                   retry=retry, **policy)

    async def start(self) -> None:
        """Begin producing events (bind sockets, arm timers)."""

    async def stop(self) -> None:
        """Stop producing events (called first when the app stops; jobs may still run)."""

    async def close(self) -> None:
        """Release what is left once every job of the app has ended (e.g. a socket that had
        answers to send). Called once, when the app has stopped, even if ``start`` failed."""

    def info(self) -> dict[str, Any]:
        """This task's state for ``cocaine info``."""
        return {"type": self.task.type, "event": self.task.event}
