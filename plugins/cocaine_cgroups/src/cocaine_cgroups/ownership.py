"""Which groups belong to a live node, and which are leftovers of a node that died.

A node holds an exclusive ``flock`` on each of its groups' folders, in every hierarchy, from
the moment it makes the folder until it removes it. The kernel drops the lock when the
process dies, however it dies. So a ``<node>:…`` folder that no live process holds is a
leftover of a node of that name, and one that a live process holds is not, whoever holds it
(this node's other apps, or a live twin of the same name).

The lock lives on the very thing it guards, in the cgroup tree: there is no lock file, so
nothing depends on the node's run folder, and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from cocaine_cgroups.placement import safe_name


def hold(path: Path) -> int | None:
    """Lock the group folder ``path`` for this process; return the descriptor that holds it
    (close it to let go), or None if a live process holds it already or it is gone.

    Only a folder that still stands at ``path`` once locked counts: one a sweeper removed in
    between (it held it, removed it and let go) is let go of and reported as gone.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not os.path.samestat(os.fstat(fd), os.stat(path)):
            raise FileNotFoundError(errno.ENOENT, "replaced", str(path))
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def let_go(fd: int | None) -> None:
    """Drop a lock taken by ``hold``."""
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def is_ours(name: str, node: str) -> bool:
    """Whether group folder ``name`` is named after node ``node``: ``<node>:<app>`` (or
    ``<node>:<app>:<n>``), or ``<node>+<pid>:<app>`` from an earlier version of this plugin
    whose process ``pid`` is gone (it named its groups so when another held the name, and
    held no lock on them)."""
    base = safe_name(node)
    head, colon, _app = name.partition(":")
    if not colon:
        return False
    if head == base:
        return True
    node_part, plus, pid = head.partition("+")
    return node_part == base and bool(plus) and pid.isdigit() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
