"""What hooks, drivers and backends know of an app and of its slave processes."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from cocaine_core.ports import PortAllocator

if TYPE_CHECKING:
    from cocaine_core.manifest_model import Manifest


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
