"""The checked manifest as the engine, drivers and plugins see it: every key with its default.

A leaf module (it imports no plugin machinery), so that hooks, drivers and backends can name
these types without importing the manifest's checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from cocaine_core import schema
from cocaine_core.schema import Key

#: The ranges of the engine's numbers, in one place (docs/manifest.md has the table). Each is
#: what a real app could want and no more: a pool is processes, a queue is memory.
MAX_POOL = 1000
#: Most tasks an app may have (each is a timer, a socket or a watch of its own).
MAX_TASKS = 256
MAX_QUEUE = 1_000_000
MAX_GROW_THRESHOLD = 10_000
MAX_CONCURRENCY = 1000
MAX_REQUESTS = 1_000_000_000
HOUR, DAY = 3600.0, 86400.0
#: Longest a job may be given to run (engine.job-timeout, a task's timeout).
MAX_JOB_SECONDS = 7 * DAY
JOB_SECONDS = schema.seconds(0.001, MAX_JOB_SECONDS, optional=True)

#: The engine keys the core owns, with the original engine's defaults.
ENGINE_KEYS: tuple[Key, ...] = (
    Key("pool-limit", schema.int_range(1, MAX_POOL), 10, "most slaves"),
    Key("pool-min", schema.int_range(0, MAX_POOL), 0, "slaves kept warm even when idle"),
    Key("queue-limit", schema.int_range(0, MAX_QUEUE), 100,
        "jobs waiting; beyond it a job is refused at once with 503"),
    Key("grow-threshold", schema.int_range(1, MAX_GROW_THRESHOLD), 1,
        "queued jobs per slave before the pool grows by one"),
    Key("concurrency", schema.int_range(1, MAX_CONCURRENCY), 1, "jobs in flight per slave"),
    Key("heartbeat-timeout", schema.seconds(0.1, DAY), 30.0,
        "seconds a slave may stay silent before it is killed"),
    Key("startup-timeout", schema.seconds(0.1, HOUR), 10.0,
        "seconds a new slave has to become ready"),
    Key("idle-timeout", schema.seconds(0.1, 7 * DAY), 600.0,
        "seconds an idle slave above pool-min lives", aliases=("suicide-timeout",)),
    Key("termination-timeout", schema.seconds(0, 600), 5.0,
        "grace in seconds between terminate and SIGKILL"),
    Key("job-timeout", JOB_SECONDS, None,
        "default run-time limit in seconds of every job; null for none"),
    Key("max-requests", schema.int_range(0, MAX_REQUESTS), 0,
        "jobs a slave serves before it is replaced, gracefully; 0: never"),
    Key("max-rss", schema.optional_size, None,
        "resident memory (\"512M\") past which a slave is replaced once its jobs end; "
        "null: never"),
    Key("backend", schema.string, "process", "the slave backend"),
)

#: Keys every task has, whatever its driver.
TASK_KEYS: tuple[Key, ...] = (
    Key("type", schema.string, help="the driver"),
    Key("emit", schema.string, None, "the event (handler) name, if not the task's name"),
    Key("timeout", JOB_SECONDS, None, "run-time limit in seconds of this task's jobs"),
    Key("retry", schema.boolean, True, "whether a job whose slave died before it answered "
        "anything runs again, once, on another slave (false: never run a job twice)"),
)

TOP_KEYS = ("type", "args", "engine", "tasks", "drivers")


@attrs.frozen
class EngineConfig:
    """The ``engine`` section: how the app's pool and queue behave."""

    pool_limit: int = 10
    pool_min: int = 0
    queue_limit: int = 100
    grow_threshold: int = 1
    concurrency: int = 1
    heartbeat_timeout: float = 30.0
    startup_timeout: float = 10.0
    idle_timeout: float = 600.0
    termination_timeout: float = 5.0
    job_timeout: float | None = None
    max_requests: int = 0
    max_rss: int | None = None
    backend: str = "process"
    #: Keys owned by plugins (``resource-limits``), by their manifest name.
    extra: dict[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The section as manifest JSON, every default filled in."""
        out = {k.name: getattr(self, k.name.replace("-", "_")) for k in ENGINE_KEYS}
        out.update(self.extra)
        return out


@attrs.frozen
class TaskConfig:
    """One task: its driver, the event its jobs carry, and the driver's own keys."""

    name: str
    type: str
    event: str
    timeout: float | None = None
    options: dict[str, Any] = attrs.field(factory=dict)
    #: Whether a job whose slave died before it answered runs again (the task's ``retry``).
    retry: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The task as manifest JSON, every default filled in."""
        out: dict[str, Any] = {"type": self.type}
        if self.event != self.name:
            out["emit"] = self.event
        out["timeout"] = self.timeout
        if not self.retry:
            out["retry"] = False
        out.update(self.options)
        return out


@attrs.frozen
class Manifest:
    """A checked app manifest, every default filled in."""

    type: str
    args: dict[str, Any]
    engine: EngineConfig
    tasks: dict[str, TaskConfig]
    #: The folder relative paths are resolved from (the manifest's own folder).
    root: Path
    #: The file it was read from, if any.
    path: Path | None = None

    @property
    def events(self) -> list[str]:
        """Every event some task emits, sorted, without repeats."""
        return sorted({task.event for task in self.tasks.values()})

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON, every default filled in (what ``manifest check`` prints)."""
        return {
            "type": self.type,
            "args": self.args,
            "engine": self.engine.to_dict(),
            "tasks": {name: task.to_dict() for name, task in self.tasks.items()},
        }
