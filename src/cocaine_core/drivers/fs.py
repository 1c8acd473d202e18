"""The ``filesystem-monitor`` driver: one job per batch of changes under a file or folder.

Watching is done by watchfiles' Rust notifier (inotify on Linux, FSEvents, ReadDirectoryChanges
or stat polling elsewhere) in a thread of the task's own, never on the node's loop; batches
reach the loop through ``call_soon_threadsafe``.

The thread has two modes, and re-decides after every batch:

- the path is a folder: watch it (``recursive`` or not) and report every change;
- anything else (a file, or nothing yet): watch the nearest folder above it that exists, not
  recursively, and report the changes to the path itself. When the path appears as a folder,
  the thread switches to watching it and reports what it already holds as ``added``, so
  nothing created in the meantime is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watchfiles._rust_notify import RustNotify

from cocaine_core import schema
from cocaine_core.drivers import Driver
from cocaine_core.errors import Problem
from cocaine_core.protocol import Status
from cocaine_core.schema import Key

if TYPE_CHECKING:
    from cocaine_core.engine import Engine
    from cocaine_core.manifest_model import TaskConfig

log = logging.getLogger("cocaine.fs")

#: watchfiles' change codes, by the names jobs carry.
CHANGE_NAMES = {1: "added", 2: "modified", 3: "deleted"}
#: How long (ms) a batch stays open without a new change before it is sent.
STEP_MS = 10
#: Seconds ``start`` waits for the first watch to be in place before it goes on regardless.
READY_TIMEOUT = 10.0
#: Longest back-off (seconds) between attempts after the watcher itself failed.
MAX_BACKOFF = 5.0

Change = tuple[str, str]


def resolve(path: str, root: Path) -> Path:
    """``path`` made absolute from ``root`` and normalised (``..`` removed, links kept)."""
    return Path(os.path.normpath(Path(root) / os.path.expanduser(path)))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _nearest_folder(path: Path) -> Path:
    for parent in path.parents:
        if parent.is_dir():
            return parent
    return Path(path.anchor or "/")


def _walk(folder: str) -> list[str]:
    """Every folder and file below ``folder`` (not ``folder`` itself)."""
    found: list[str] = []
    for parent, dirs, files in os.walk(folder):
        found.extend(os.path.join(parent, name) for name in (*dirs, *files))
    return found


def _force_polling() -> bool:
    value = os.environ.get("WATCHFILES_FORCE_POLLING", "")
    return bool(value) and value.lower() not in {"false", "disable", "disabled"}


class _Sink:
    """Tells the monitor how one batch's job ended."""

    __slots__ = ("monitor",)

    def __init__(self, monitor: FilesystemMonitor) -> None:
        self.monitor = monitor

    def chunk(self, data: bytes) -> None:
        """Answers are not used."""

    def choke(self) -> None:
        """The job is done."""
        self.monitor._ended(None, "")

    def error(self, code: int, message: str) -> None:
        """The job failed or was refused."""
        self.monitor._ended(code, message)


class FilesystemMonitor(Driver):
    """Watches ``path`` and submits one job per batch of changes, with the changes as meta.

    A job's meta is ``{"path": watched path, "changes": [[kind, path], ...]}``, kind one of
    ``added``, ``modified``, ``deleted``; a rename is a ``deleted`` and an ``added``. A batch
    closes when no new change came for 10 ms (or ``debounce``, if shorter), or ``debounce``
    after its first change, whichever is sooner. A batch the queue refuses is counted, logged
    and dropped.
    """

    keys = (
        Key("path", schema.string, help="the file or folder to watch; relative paths start "
                                        "from the manifest's folder"),
        Key("recursive", schema.boolean, True, "watch the folder's sub-folders too"),
        Key("debounce", schema.seconds(0.001, 3600), 0.05,
            "most seconds changes are gathered into one batch"),
    )

    @classmethod
    def validate(cls, options: dict[str, Any], root: Path) -> list[Problem]:
        """The path may be missing, but its folder must exist (the path is waited for)."""
        path = resolve(options["path"], root)
        if path.exists() or path.parent.is_dir():
            return []
        if path.parent.exists():
            return [Problem("path", f"{path.parent} is not a folder, so {path} can never "
                                    f"exist; watch a path inside a folder")]
        return [Problem("path", f"neither {path} nor its folder {path.parent} exists; create "
                                f"{path.parent} (the monitor then waits for '{path.name}' "
                                f"to appear in it)")]

    def __init__(self, task: TaskConfig, engine: Engine) -> None:
        super().__init__(task, engine)
        self.target = resolve(self.options["path"], engine.app.manifest.root)
        self.recursive: bool = self.options["recursive"]
        self.debounce_ms = max(1, round(self.options["debounce"] * 1000))
        self.step_ms = min(STEP_MS, self.debounce_ms)
        self.batches = 0
        self.changes = 0
        self.done = 0
        self.failed = 0
        self.refused = 0
        self.running = 0
        self.last_error: str | None = None
        #: What the thread watches now: the path itself, or the folder it waits in.
        self.watching: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life (on the loop) ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the watching thread; return once its first watch is in place."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"cocaine-fs-{self.engine.name}-{self.task.name}")
        self._thread.start()
        ready = await self._loop.run_in_executor(None, self._ready.wait, READY_TIMEOUT)
        if not ready:
            log.warning("task '%s': still setting up the watch on %s after %g s; going on",
                        self.task.name, self.target, READY_TIMEOUT)

    async def stop(self) -> None:
        """Stop the thread (it notices within a step) and wait for it."""
        self._stop.set()
        if self._thread is not None and self._loop is not None:
            await self._loop.run_in_executor(None, self._thread.join, 5.0)
            self._thread = None

    # -- batches (on the loop) -------------------------------------------------------------------

    def _submit(self, changes: list[Change]) -> None:
        if self._stop.is_set():
            return
        self.batches += 1
        self.changes += len(changes)
        self.running += 1
        meta = {"path": str(self.target), "changes": [list(change) for change in changes]}
        self.engine.submit(self.make_job(b"", meta, _Sink(self)))

    def _ended(self, code: int | None, message: str) -> None:
        self.running -= 1
        if code is None:
            self.done += 1
            return
        self.last_error = f"{code}: {message}"
        if code == Status.UNAVAILABLE:
            self.refused += 1
            log.warning("task '%s': a batch of changes was refused and dropped (%d so far): "
                        "%s", self.task.name, self.refused, message)
        else:
            self.failed += 1
            log.warning("task '%s': job failed with %s: %s", self.task.name, code, message)

    def _set_error(self, message: str | None) -> None:
        self.last_error = message

    # -- the watching thread ---------------------------------------------------------------------

    def _emit(self, changes: list[Change]) -> None:
        """Hand a batch to the loop (called in the thread)."""
        if not changes or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us: we are stopping
            self._loop.call_soon_threadsafe(self._submit, sorted(set(changes),
                                                                 key=lambda c: (c[1], c[0])))

    def _report(self, message: str) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._set_error, message)

    def _run(self) -> None:
        first, failures, announced = True, 0, False
        while not self._stop.is_set():
            try:
                if self.target.is_dir():
                    # After the first round the folder is new: say so, unless the watcher
                    # of the folder above already did.
                    self._watch_folder(appeared=not first, announced=announced)
                    announced = False
                else:
                    announced = self._watch_from_outside()
                failures = 0
            except Exception as exc:
                failures += 1
                message = f"cannot watch {self.target}: {type(exc).__name__}: {exc}"
                log.error("task '%s': %s; trying again", self.task.name, message)
                self._report(message)
                self._ready.set()
                self._stop.wait(min(MAX_BACKOFF, 0.1 * 2 ** failures))
            first = False
        self.watching = None

    def _notifier(self, path: Path, recursive: bool) -> RustNotify:
        return RustNotify([str(path)], False, _force_polling(), 300, recursive, True)

    def _batches(self, notifier: RustNotify) -> Iterator[list[Change]]:
        """Batches from ``notifier`` until the stop event is set."""
        while True:
            result = notifier.watch(self.debounce_ms, self.step_ms, 0, self._stop)
            if result == "stop":
                return
            if isinstance(result, str):  # "signal" or "timeout": nothing to report
                continue
            yield [(CHANGE_NAMES.get(code, "modified"), path) for code, path in result]

    def _watch_folder(self, appeared: bool, announced: bool) -> None:
        """Watch the path, a folder, until it is removed or replaced, or the task stops.

        ``appeared``: the folder is new, so it and what it already holds are reported as
        added (``announced``: the folder itself already was).
        """
        identity = _identity(self.target)
        gone = [("deleted", str(self.target))]
        with self._notifier(self.target, self.recursive) as notifier:
            self.watching = str(self.target)
            self._ready.set()
            if appeared:
                added = [] if announced else [("added", str(self.target))]
                self._emit(added + [("added", path) for path in self._contents()])
            try:
                for batch in self._batches(notifier):
                    if _identity(self.target) != identity:
                        # Removed or replaced: its own removal may not be in the batch yet.
                        self._emit(batch + [change for change in gone if change not in batch])
                        return
                    self._emit(batch + self._inside_new_folders(batch))
            except Exception:
                if _identity(self.target) != identity:
                    self._emit(gone)  # the folder went away under the notifier
                    return
                raise

    def _watch_from_outside(self) -> bool:
        """Watch the nearest existing folder above the path until the path is a folder.

        Returns whether the path's appearance as a folder was reported from here.
        """
        folder = _nearest_folder(self.target)
        identity = _identity(folder)
        own = folder == self.target.parent
        name = str(self.target)
        with self._notifier(folder, False) as notifier:
            self.watching = str(folder)
            self._ready.set()
            if self.target.is_dir():
                return False  # appeared while the watch was being set up
            for batch in self._batches(notifier):
                mine = [change for change in batch if change[1] == name] if own else []
                self._emit(mine)
                if self.target.is_dir():
                    return ("added", name) in mine
                if _nearest_folder(self.target) != folder or _identity(folder) != identity:
                    return False
        return False

    def _inside_new_folders(self, batch: list[Change]) -> list[Change]:
        """What new sub-folders already hold: files made in one before the notifier added its
        watch on it (``mkdir -p a/b && cp f a/b``) would otherwise go unseen."""
        if not self.recursive:
            return []
        return [("added", path) for kind, folder in batch
                if kind == "added" and os.path.isdir(folder) for path in _walk(folder)]

    def _contents(self) -> list[str]:
        if not self.recursive:
            with contextlib.suppress(OSError):
                return [entry.path for entry in os.scandir(self.target)]
            return []
        return _walk(str(self.target))

    # -- reporting -----------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The path, what is watched now, batches and changes seen, how jobs ended."""
        return {**super().info(), "path": str(self.target), "watching": self.watching,
                "fires": self.batches, "changes": self.changes, "done": self.done,
                "failed": self.failed, "refused": self.refused, "running": self.running,
                "last-error": self.last_error}
