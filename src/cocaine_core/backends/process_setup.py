"""What a process of an app does first, before it runs any of the app's code: standard
library only, so that the ``exec`` launcher (``exec_launch.py``) can load it by path in an
interpreter that imports nothing else.

Both run in every slave a template forks, on the path of a pool's growth, so they are cheap
there: ``prctl`` is looked up once (by the template, whose children inherit it) and the
``/proc`` file is written with plain ``os`` calls (each saves about 0.25 ms a slave).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

PR_SET_PDEATHSIG = 1
#: ``signal.SIGKILL`` on Linux (``signal`` is not imported: it costs the launcher 10 ms).
SIGKILL = 9
#: libc's ``prctl`` once looked up (None: not yet; False: not to be had).
_prctl: Any = None


def _libc_prctl() -> Any:
    global _prctl
    if _prctl is None:
        try:
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            _prctl = False  # not Linux: the heartbeat thread's parent check still covers it
    return _prctl


def die_with_parent(parent_pid: int, signum: int = SIGKILL) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent dies; exit if it
    already has."""
    prctl = _libc_prctl()
    if prctl:
        prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(70)


def reset_oom_score_adj(value: int | None) -> None:
    """Set this process's ``oom_score_adj`` to ``value`` (None: leave it). A slave does so
    first thing, so that it does not keep the template's protection from the OOM killer;
    raising it needs no privilege."""
    if value is None:
        return
    try:
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except OSError:
        pass  # not Linux, or no /proc: there was no protection to shed either
