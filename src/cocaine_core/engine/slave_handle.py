"""The engine's handle on one slave process: its state, its jobs, when it was last heard."""

from __future__ import annotations

import enum
import os
import time
from typing import TYPE_CHECKING, Any

import attrs

from cocaine_core.engine.job import Job

if TYPE_CHECKING:
    from cocaine_core.engine.credit import Credit


class SlaveState(enum.Enum):
    """Where a slave is in its life."""

    SPAWNING = "spawning"  # asked for; no handshake yet
    SPARE = "spare"  # handshake done; waits, unconfigured, until the pool grows
    CONFIGURING = "configuring"  # handshake done, configure sent; not ready yet
    READY = "ready"  # takes jobs
    RETIRING = "retiring"  # takes no more jobs; told to terminate once its jobs end
    KILLED = "killed"  # signalled; waiting to be reaped


@attrs.define(eq=False)
class SlaveHandle:
    """One slave as the engine sees it."""

    id: str
    pid: int | None = None
    state: SlaveState = SlaveState.SPAWNING
    jobs: dict[int, Job] = attrs.field(factory=dict)
    spawned_at: float = attrs.field(factory=time.monotonic)
    last_seen: float = attrs.field(factory=time.monotonic)
    idle_since: float = attrs.field(factory=time.monotonic)
    handshaken: bool = False
    #: It said, in its handshake, that it waits for CREDIT and obeys CANCEL (docs/protocol.md).
    flow: bool = False
    #: It reads streamed request bodies (its handshake said ``stream``).
    streams: bool = False
    #: It takes several jobs in one message and answers several in one (its handshake said
    #: ``batch``, and it runs more than one job at once): docs/protocol.md, Batches.
    batch: bool = False
    #: The flow accounting of its jobs that have sent chunks, by job id.
    credits: dict[int, Credit] = attrs.field(factory=dict)
    #: Forked ahead of need: joins the pool (is configured) only when the pool grows.
    spare: bool = False
    #: The ``cocaine_slave_spawned`` hooks have passed (confinement is in force).
    hooked: bool = False
    #: Seconds from the spawn request to the slave's first heartbeat (ready), once known.
    startup: float | None = None
    #: When a SIGKILL follows, if the slave has not exited by then.
    kill_at: float | None = None
    #: Why the engine ended this slave (for logs and for its jobs' errors).
    reason: str = ""
    #: The kind of that reason, for counts (``exits.RESTARTS``): "idle", "hung", "memory"...
    kind: str = ""
    served: int = 0
    #: CPU seconds the process had used when it was found silent, and when (None: not silent).
    cpu_mark: float | None = None
    cpu_mark_at: float = 0.0

    @property
    def busy(self) -> bool:
        """Whether the slave has a job in flight."""
        return bool(self.jobs)

    def label(self) -> str:
        """A short name for logs: the pid, or the id before the pid is known."""
        return str(self.pid) if self.pid else self.id

    def info(self, now: float) -> dict[str, Any]:
        """This slave for ``cocaine info``."""
        return {"id": self.id, "pid": self.pid,
                "state": "spare" if self.spare else self.state.value,
                "jobs": len(self.jobs), "served": self.served,
                "rss-bytes": rss_of(self.pid) if self.pid else None,
                "age": round(now - self.spawned_at, 3),
                "startup-ms": None if self.startup is None else round(self.startup * 1000, 3)}


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_of(pid: int) -> float | None:
    """CPU seconds (user and system) process ``pid`` has used, or None if it is gone or
    stopped (a stopped process is not working, whatever it used before)."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("T", "t", "Z", "X"):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dead(pid: int) -> bool:
    """Whether process ``pid`` has ended and waits to be reaped (a zombie: its parent, a
    stopped template, may not report it for a while)."""
    fields = _stat(pid)
    return fields is not None and fields[0] in ("Z", "X")


def rss_of(pid: int) -> int | None:
    """Resident memory of process ``pid`` in bytes, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
