"""The steps of a deploy once its code has arrived: unpack, check, store, start, commit; and
the undoing of one whose record could not be stored. ``ControlService.deploy`` bounds and
cancels them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cocaine_core import archive
from cocaine_core.appstore import AppRecord, AppStore
from cocaine_core.errors import CocaineError, ServiceError, StorageError, StorageUnavailable
from cocaine_core.manifest import parse_manifest
from cocaine_core.protocol import Status
from cocaine_core.tasks import run_to_end

if TYPE_CHECKING:
    from cocaine_core.engine import Engine
    from cocaine_core.node import Node

log = logging.getLogger("cocaine.control")


async def install(node: Node, store: AppStore, name: str, manifest_data: dict[str, Any],
                  code: bytes, checksum: str) -> tuple[Engine, AppRecord]:
    """Check, unpack and start the code, then store it (the commit point). Cancelled
    while unpacking or loading, it removes what it unpacked; once the new version has
    started it finishes (a cancel then comes too late and is dropped)."""
    await asyncio.to_thread(archive.check_archive, code, store.limits)
    previous = await asyncio.to_thread(store.get, name)
    record = AppRecord(name=name, manifest=manifest_data, sha256=checksum,
                       version=(previous.version + 1) if previous else 1)
    running = node.apps.get(name)
    running_root = running.app.root if running else None
    stop = threading.Event()
    unpacking = asyncio.ensure_future(asyncio.to_thread(store.unpack, record, code,
                                                        stop.is_set))
    try:
        root: Path = await asyncio.shield(unpacking)
    except asyncio.CancelledError:
        stop.set()  # the thread removes its partial folder and stops
        await asyncio.wait({unpacking}, timeout=60)
        if unpacking.done() and not unpacking.exception() and \
                unpacking.result() != running_root:
            await asyncio.to_thread(_rmtree, unpacking.result())
        raise
    try:
        manifest = parse_manifest(manifest_data, root=root,
                                  source=f"the manifest of app '{name}'")
        await _stored(name, asyncio.to_thread(store.save_code, record, code))
        engine = await node.run_app(name, manifest, root, refuse_broken=True)
    except BaseException:
        await run_to_end(asyncio.to_thread(store.drop_unrecorded, record))
        if root != running_root:
            await run_to_end(asyncio.to_thread(_rmtree, root))
            with contextlib.suppress(OSError):  # the app's folder, if nothing else is
                root.parent.rmdir()
        raise
    engine.record = record
    try:
        await _stored(name, run_to_end(asyncio.to_thread(store.save_record, record, code)))
    except CocaineError:
        # The new version runs but is not stored: it would vanish at the next start.
        await run_to_end(undo(node, store, record, previous))
        raise
    store.forget_unpacked(name, keep=root)
    node.events.emit(name, "deployed", version=record.version, sha256=record.sha256)
    return engine, record


async def undo(node: Node, store: AppStore, record: AppRecord,
               previous: AppRecord | None) -> None:
    """Stop a version whose record could not be stored, and start the stored one again."""
    await node.remove_app(record.name)
    await asyncio.to_thread(store.drop_unrecorded, record)
    if previous is not None:
        try:
            await node.start_record(previous)
        except CocaineError as exc:
            log.error("app %s: the stored version %d did not start again: %s",
                      record.name, previous.version, exc)


async def _stored(name: str, saving: Awaitable[None]) -> None:
    """Await a write to storage; a failure (a full disk) is a 500 saying what to do."""
    try:
        await saving
    except StorageUnavailable:
        raise  # a 503 that says the store is away and nothing changed
    except (OSError, StorageError) as exc:
        log.error("app %s: storage refused its code or record: %s", name, exc)
        raise ServiceError(Status.SERVER_ERROR, f"the deploy of app '{name}' was not stored: "
                           f"{getattr(exc, 'strerror', None) or exc}; free space in (or repair) "
                           f"the node's storage and deploy again. Nothing was changed: the "
                           f"stored version, if any, keeps serving") from None


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
