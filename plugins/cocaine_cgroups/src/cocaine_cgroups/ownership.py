"""Which groups belong to this node, and which are leftovers of a node that died.

A node names its groups after itself. To tell a crashed node's groups from those of a live node
that happens to share the name (two nodes on one machine, or two test runs), a node holds an
exclusive ``flock`` on a file named after it for as long as its process lives; the kernel
drops the lock when the process dies, however it dies.

- Holding the lock, the node is the only live one of its name: its groups are
  ``<node>:<app>``, and every other ``<node>:…`` group is a leftover.
- When another live process holds it, this node names its groups ``<node>+<pid>:<app>`` and
  leaves the other's alone; such a group is a leftover once its pid is gone. (``+`` never
  appears in a node's own part of a name, so the two forms cannot be confused.)
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import threading
from pathlib import Path

from cocaine_cgroups.placement import safe_name

log = logging.getLogger("cocaine.cgroups")

_lock = threading.Lock()
#: Open lock files by node name, held for the life of the process (None: another holds it).
_held: dict[str, int | None] = {}


def lock_folder() -> Path:
    """Where node locks live: ``/run/cocaine`` for root, else a private temporary folder."""
    for folder in (Path("/run/cocaine"), Path(tempfile.gettempdir()) / f"cocaine-{os.getuid()}"):
        with contextlib.suppress(OSError):
            folder.mkdir(mode=0o755 if folder.parts[1] == "run" else 0o700, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
    return Path(tempfile.gettempdir())


def lock_path(node: str) -> Path:
    """The lock file of node ``node``."""
    return lock_folder() / f"cgroups-{safe_name(node)}.lock"


def owns_name(node: str) -> bool:
    """Whether this process is the only live node named ``node`` (taking the lock if free)."""
    with _lock:
        if node not in _held:
            _held[node] = _try_lock(lock_path(node))
            if _held[node] is None:
                log.warning("another live process runs a node named %s; this node's cgroups "
                            "are named %s:<app>; give each node on a machine its own name",
                            node, prefix(node, owner=False))
        return _held[node] is not None


def _try_lock(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        log.warning("cannot open the node lock %s (%s); treating this node as the only one "
                    "of its name", path, exc.strerror)
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def prefix(node: str, *, owner: bool) -> str:
    """The node part of this node's group names: ``<node>``, or ``<node>+<pid>``."""
    return safe_name(node) if owner else f"{safe_name(node)}+{os.getpid()}"


def release(node: str, *, remove: bool = False) -> None:
    """Drop this process's lock on ``node`` (tests); with ``remove`` delete the file too."""
    with _lock:
        fd = _held.pop(node, None)
    if remove:
        with contextlib.suppress(OSError):
            lock_path(node).unlink()
    if fd is not None and fd >= 0:
        os.close(fd)


def is_leftover(name: str, node: str, *, owner: bool) -> bool:
    """Whether group folder ``name`` is a dead node's: ``<node>:…`` when this process owns
    the name, ``<node>+<pid>:…`` when ``pid`` is gone."""
    base = safe_name(node)
    head, colon, _app = name.partition(":")
    if not colon:
        return False
    if head == base:
        return owner
    node_part, plus, pid = head.partition("+")
    if node_part != base or not plus or not pid.isdigit():
        return False
    return not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
