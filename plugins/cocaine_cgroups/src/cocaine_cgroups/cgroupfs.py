"""The cgroup filesystem: its files read and written, its folders made, emptied and removed.

Every failure becomes a ``CgroupError`` that says what to fix: a read-only mount, a missing
permission or delegation, a value the kernel refused.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from pathlib import Path

from cocaine_cgroups.errors import CgroupError

log = logging.getLogger("cocaine.cgroups")

#: How long removing a group waits for its processes to die.
REMOVE_TIMEOUT = 5.0

#: Where error messages send the reader for how to grant the node its cgroups.
DOCS = "see docs/resource-limits.md"


def _permission_hint(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return ("the cgroup filesystem is mounted read-only (as in most containers); give "
                "the node a writable, delegated cgroup: run the container with a private "
                f"cgroup namespace and a writable /sys/fs/cgroup, {DOCS}")
    return (f"permission denied to uid {os.geteuid()}; managing cgroups needs root, or a "
            f"cgroup v2 subtree delegated to the node's user (systemd-run --user -p "
            f"Delegate=yes cocaine node, or chown the node's cgroup folder to its user), "
            f"{DOCS}")


def cgroup_error(action: str, path: Path, exc: OSError, value: str | None = None
                 ) -> CgroupError:
    """The error for ``exc``, met trying to ``action`` ``path`` (writing ``value``), saying
    what to fix."""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CgroupError(f"cannot {action} {path}: {_permission_hint(exc)}")
    if exc.errno == errno.ENOENT and value is not None:
        return CgroupError(f"cannot write {path}: the kernel offers no {path.name} there")
    if exc.errno == errno.EINVAL and value is not None:
        return CgroupError(f"the kernel refused {value!r} for {path} (invalid argument: out "
                           f"of range, or beyond what the node's own group allows)")
    return CgroupError(f"cannot {action} {path}: {exc.strerror or exc}")


def write(path: Path, value: str) -> None:
    """Write ``value`` to a cgroup file, or raise ``CgroupError`` saying what to fix."""
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise cgroup_error("write", path, exc, value) from None


def read(path: Path) -> str | None:
    """A cgroup file's text, stripped, or None if it cannot be read."""
    try:
        return path.read_text().strip()
    except OSError:
        return None


def read_pids(path: Path) -> list[int]:
    """The processes listed in a ``cgroup.procs`` file."""
    return [int(line) for line in (read(path) or "").split() if line.isdigit()]


def read_keyed(path: Path) -> dict[str, int]:
    """A file of ``key value`` lines (``memory.events``, ``cpu.stat``) as a dict."""
    out: dict[str, int] = {}
    for line in (read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def make_dir(path: Path) -> bool:
    """Make a group folder; True if it was made now, False if it was there already."""
    try:
        path.mkdir()
    except FileExistsError:
        return False
    except OSError as exc:
        raise cgroup_error("create the cgroup", path, exc) from None
    return True


def empty_group(path: Path, timeout: float = REMOVE_TIMEOUT) -> bool:
    """SIGKILL every process in the group at ``path`` until none is left; False on timeout."""
    deadline = time.monotonic() + timeout
    kill_file = path / "cgroup.kill"
    while True:
        pids = read_pids(path / "cgroup.procs")
        if not pids:
            return True
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        else:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def remove_dir(path: Path, timeout: float = REMOVE_TIMEOUT) -> bool:
    """Kill what is left in the group at ``path`` and remove it; False if it stays."""
    if not path.is_dir():
        return True
    if not empty_group(path, timeout):
        log.warning("cgroup %s still has processes %s after %g s of SIGKILL; left in place",
                    path, read_pids(path / "cgroup.procs"), timeout)
        return False
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                log.warning("cannot remove cgroup %s: %s", path, exc.strerror or exc)
                return False
        time.sleep(0.01)
