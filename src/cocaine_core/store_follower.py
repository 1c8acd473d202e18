"""Following a storage that other nodes write too (``etcd``): a node whose storage reports
its changes starts, upgrades and stops its apps as any node of the cluster deploys or
removes them, and drops its cached keys as they are authorized or revoked.

Changes come from the storage's own thread and are handed to the node's loop. They are
coalesced: while the node catches up, further changes only mark it to look once more, so a
burst of deploys costs a few reads of storage, not one per change. While the storage is
unreachable, the node keeps what runs (nothing is read as "no app"); the storage reports
``None`` when its watch resumes, and the node catches up then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from cocaine_core.errors import StorageUnavailable
from cocaine_core.storages import Change, WatchedStorage

if TYPE_CHECKING:
    from cocaine_core.node import Node

log = logging.getLogger("cocaine.node")

#: The namespaces a node follows: app records, and the keys that may control it.
FOLLOWED = ("apps", "keys")


class StoreFollower:
    """Keeps ``node``'s apps (and its key cache) in step with a ``WatchedStorage``."""

    def __init__(self, node: Node, storage: WatchedStorage) -> None:
        self.node = node
        self.storage = storage
        self._stop_watch: Any = None
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        #: When the apps last matched the storage (time.time()), and the outage being
        #: reported (its first message), if any.
        self.synced_at: float | None = None
        self._outage: str | None = None

    def start(self) -> None:
        """Begin following (on the node's loop)."""
        loop = asyncio.get_running_loop()

        def changed(change: Change) -> None:  # the storage's thread
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._changed, change)

        self._stop_watch = self.storage.watch(FOLLOWED, changed)

    def _changed(self, change: Change) -> None:
        if change is None:
            self.node.keys.forget()
        elif change[0] == "keys":
            self.node.keys.forget(change[1])
        if change is None or change[0] == "apps":
            self._dirty = True
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._catch_up())

    async def _catch_up(self) -> None:
        while self._dirty and not self.node.stopping:
            self._dirty = False
            try:
                await self.node.load_from_storage()
            except StorageUnavailable as exc:
                if self._outage is None:
                    self._outage = str(exc)
                    log.error("%s; the apps running keep serving, deploys and removals get "
                              "503 until it is back", exc)
                return  # the watch says None when it resumes: then again
            except Exception as exc:
                log.exception("following the storage failed: %s", exc)
                return
            if self._outage is not None:
                log.info("the app store %s is back; this node caught up with it",
                         getattr(self.storage, "uri", ""))
                self._outage = None
            self.synced_at = time.time()

    def info(self) -> dict[str, Any]:
        """What ``cocaine info`` shows of the store."""
        return {"followed": True, "available": self.storage.available(),
                "synced-at": self.synced_at, "outage": self._outage}

    async def stop(self) -> None:
        """Stop following; wait (bounded) for a catch-up under way."""
        if self._stop_watch is not None:
            await asyncio.to_thread(self._stop_watch)
            self._stop_watch = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=30)
