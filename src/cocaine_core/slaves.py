"""What the engine and the hooks know of apps and slave processes, and what a backend does."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from cocaine_core.ports import PortAllocator

if TYPE_CHECKING:
    from cocaine_core.manifest import Manifest


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


@attrs.define(eq=False)
class SlaveInfo:
    """A slave process as hooks see it. ``template`` marks a process that forks slaves."""

    id: str
    pid: int
    template: bool = False


#: Called by a backend when a slave process exists: ``(slave_id, pid)``.
OnSpawned = Callable[[str, int], None]
#: Called by a backend when a slave process has ended: ``(slave_id, status)``; status is the
#: exit code, or minus the signal number.
OnExited = Callable[[str, int], None]


class SlaveBackend(Protocol):
    """Starts and stops an app's slave processes (``engine.backend``).

    A backend is made per app with ``backend_class(app, endpoint, language_runtime,
    on_spawned, on_exited)`` and driven from the node's asyncio loop.
    """

    async def start(self) -> None:
        """Get ready to spawn (e.g. start and load a template); raise AppLoadError on failure."""
        ...

    def spawn(self, slave_id: str) -> None:
        """Start a slave that will connect to the engine's endpoint as ``slave_id``."""
        ...

    def signal(self, slave_id: str, signum: int) -> None:
        """Send ``signum`` to a slave, if it still exists."""
        ...

    async def stop(self) -> None:
        """Kill whatever is left and release every resource."""
        ...
