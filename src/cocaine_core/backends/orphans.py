"""Every process an app starts stops with the app: the template's subreaping, the node's sweep.

A handler may start processes of its own (``subprocess.Popen``, ``os.fork``, a daemon that
double-forks and calls ``setsid``). Left alone, they are re-parented to PID 1 when their parent
exits and outlive the app and the node. Two mechanisms stop them:

- The template is a *child subreaper* (``PR_SET_CHILD_SUBREAPER``): every process orphaned
  below it becomes its child, which it reaps. Whenever it exits (told to, SIGTERM, or the
  node's death, which it hears as SIGTERM through ``PR_SET_PDEATHSIG``), it kills its children
  and reaps them, again and again until none has appeared for a moment
  (``kill_descendants``): killing a child re-parents the grandchildren to it, so the whole tree
  goes, however deep.
- A template that is itself SIGKILLed cannot do that, so the node starts each template with a
  marker in its environment (``TREE_VARIABLE``, a value unique to that template), which every
  process below it inherits: a forked copy shares the environment block the kernel shows in
  ``/proc/PID/environ``, and an exec'd one gets it from ``os.environ``. Once the template has
  gone, the node kills every process of its user that carries exactly that value
  (``kill_marked``); nothing else can carry it, so the node never kills what it did not start.

What escapes: a process that clears its environment *and* whose template was SIGKILLed, or
one that runs as another user. Confining an app for real is the cgroups plugin's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cocaine_core.engine import Engine

log = logging.getLogger("cocaine.node")

#: The environment variable that marks every process below one template.
TREE_VARIABLE = "COCAINE_APP_TREE"
PR_SET_CHILD_SUBREAPER = 36
#: How long killing a tree may take, at most (seconds), and how long no new process must
#: have appeared before it is taken as gone.
KILL_TIMEOUT = 5.0
QUIET = 0.05


def become_subreaper() -> bool:
    """Make this process the reaper of every process orphaned below it; False if the kernel
    cannot (not Linux, or older than 3.4)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def children() -> list[int]:
    """Pids of this process's children (zombies included)."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            return [int(pid) for pid in f.read().split()]
    except OSError:
        pass  # a kernel without CONFIG_PROC_CHILDREN: scan
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    if int(f.read().rsplit(b")", 1)[1].split()[1]) == me:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def reap_any() -> list[tuple[int, int]]:
    """Reap every child that has ended: (pid, exit code or minus the signal) each."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        reaped.append((pid, code))


def kill_descendants(timeout: float = KILL_TIMEOUT) -> int:
    """SIGKILL every child, reap, and repeat until none has been left for ``QUIET`` seconds
    (or ``timeout`` passes); return how many processes were killed. For a subreaper, this
    ends its whole tree."""
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    killed = 0
    while time.monotonic() < deadline:
        found = children()
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        reaped = reap_any()
        now = time.monotonic()
        if found or reaped:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= QUIET:
            break
        time.sleep(0.005)
    return killed


def marked(value: str) -> list[int]:
    """Pids of live processes of this user whose environment holds ``TREE_VARIABLE=value``."""
    needle = f"{TREE_VARIABLE}={value}".encode()
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue  # gone, or another user's
        if needle in environ.split(b"\0"):
            found.append(int(entry))
    return found


def of_user(uid: int) -> list[int]:
    """Pids of live processes (zombies left out) running as ``uid`` (real, effective, saved
    or file-system): an isolated app's, whatever they did to their environment."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as f:
                fields = dict(line.split(b":", 1) for line in f.read().splitlines()
                              if b":" in line)
        except OSError:
            continue
        if fields.get(b"State", b"").strip().startswith(b"Z"):
            continue
        if str(uid).encode() in fields.get(b"Uid", b"").split():
            found.append(int(entry))
    return found


def kill_user(uid: int, timeout: float = KILL_TIMEOUT) -> int:
    """SIGKILL every process of ``uid`` (an isolated app's, once no version of it runs),
    until none is left (or ``timeout`` passes); return how many were killed."""
    return _kill_until_none(lambda: of_user(uid), timeout)


def kill_marked(value: str, timeout: float = KILL_TIMEOUT) -> int:
    """SIGKILL every process carrying the marker ``value``, until none is left for a moment
    (or ``timeout`` passes); return how many were killed. Zombies (already dead, awaiting a
    parent) no longer show an environment and are left to their parent."""
    return _kill_until_none(lambda: marked(value), timeout)


def _kill_until_none(find: Callable[[], list[int]], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    killed = 0
    while time.monotonic() < deadline:
        found = find()
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.01)
    return killed


async def sweep_user(engine: Engine, running: Mapping[str, Engine]) -> None:
    """Once no version of an isolated app runs (``running``: the node's apps), end every
    process of its uid: one that left its template's tree (and its marker) is stopped with
    the app all the same."""
    user = engine.app.user
    if user is None or engine.name in running:
        return
    killed = await asyncio.to_thread(kill_user, user.uid)
    if killed:
        log.warning("app %s: killed %d process(es) of its uid %d left running after it "
                    "stopped", engine.name, killed, user.uid)
