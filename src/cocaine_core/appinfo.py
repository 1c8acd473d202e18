"""What hooks, drivers and backends know of an app and of its slave processes."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from cocaine_core.events import EventBus
from cocaine_core.ports import PortAllocator

if TYPE_CHECKING:
    from cocaine_core.manifest_model import Manifest


#: The range of ``cocaine node --max-slaves``.
MAX_SLAVES_RANGE = (1, 100_000)


def default_max_slaves() -> int:
    """The node-wide cap on slaves when none is given, from this machine: one slave per
    16 MiB of memory and per 8 pids the kernel can number, at most half the user's process
    limit, within 16..4096."""
    candidates = [4096]
    with contextlib.suppress(OSError, ValueError):
        candidates.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**24)
    with contextlib.suppress(OSError, ValueError), open("/proc/sys/kernel/pid_max") as f:
        candidates.append(int(f.read()) // 8)
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NPROC)[0]
        if soft != resource.RLIM_INFINITY:
            candidates.append(soft // 2)
    except (ImportError, OSError, ValueError):
        pass
    return max(16, min(candidates))


class SlaveBudget:
    """The node's slaves across all its apps, against its cap (``cocaine node
    --max-slaves``): a backend takes a unit before it forks a slave and gives it back once
    that slave is gone. One object per node, shared by every app's ``AppInfo``."""

    def __init__(self, limit: int | None = None) -> None:
        limit = default_max_slaves() if limit is None else limit
        low, high = MAX_SLAVES_RANGE
        if not isinstance(limit, int) or isinstance(limit, bool) or not low <= limit <= high:
            raise ValueError(f"max-slaves must be an integer from {low} to {high}, "
                             f"got {limit!r}")
        self.limit = limit
        self.used = 0
        #: Spawns refused because the node was at its cap.
        self.refused = 0

    def take(self) -> bool:
        """Count one more slave; False (and nothing counted) if the node is at its cap."""
        if self.used >= self.limit:
            self.refused += 1
            return False
        self.used += 1
        return True

    def give(self) -> None:
        """A slave counted by ``take`` is gone (or was never made)."""
        self.used = max(0, self.used - 1)

    def refusal(self) -> str:
        """Why a spawn was refused, for ``events.spawn_failed``."""
        return (f"the node runs its maximum of {self.limit} slaves (cocaine node "
                f"--max-slaves)")

    def info(self) -> dict[str, int]:
        """Slaves counted, the cap, and spawns refused at the cap."""
        return {"slaves": self.used, "max-slaves": self.limit, "refused": self.refused}


@attrs.frozen
class AppUser:
    """The unprivileged user an isolated app runs as (``cocaine node --app-uids``), and the
    folders it must not see even where its uid could (storage, the node user's keys)."""

    uid: int
    gid: int
    hide: tuple[str, ...] = ()


@attrs.define(eq=False)
class AppInfo:
    """An app as hooks see it: its name, checked manifest, node and private run folder."""

    name: str
    manifest: Manifest
    run_dir: Path
    node: str = "node"
    #: Unique to this run of the app: two versions of an app run side by side during a
    #: redeploy, each with its own instance (name per-instance resources after it).
    instance: str = attrs.field(factory=lambda: uuid.uuid4().hex[:12])
    #: Where the app's code lives on this node (``args.source`` resolved).
    root: Path | None = None
    #: Free-form state plugins may keep per app (the cgroups plugin keeps its group here).
    extra: dict[str, Any] = attrs.field(factory=dict)
    #: The node's port range, for drivers that bind a port when no endpoint is given.
    ports: PortAllocator = attrs.field(factory=PortAllocator)
    #: The node's cap on slaves, shared by all its apps (a fresh one for a lone app).
    slaves: SlaveBudget = attrs.field(factory=SlaveBudget)
    #: The user the app's template and slaves run as; None: the node's own (not isolated).
    user: AppUser | None = None
    #: Where the app's lifecycle events go (the node's bus, shared by all its apps).
    events: EventBus = attrs.field(factory=EventBus)


@attrs.define(eq=False)
class SlaveInfo:
    """A slave process as hooks see it. ``template`` marks a process that forks slaves."""

    id: str
    pid: int
    template: bool = False
