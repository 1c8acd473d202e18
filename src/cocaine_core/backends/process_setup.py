"""What a process of an app does first, before it runs any of the app's code: standard
library only, so that the ``exec`` launcher (``exec_launch.py``) can load it by path in an
interpreter that imports nothing else.
"""

from __future__ import annotations

import ctypes
import os

PR_SET_PDEATHSIG = 1
#: ``signal.SIGKILL`` on Linux (``signal`` is not imported: it costs the launcher 10 ms).
SIGKILL = 9


def die_with_parent(parent_pid: int, signum: int = SIGKILL) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent dies; exit if it
    already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the heartbeat thread's parent check still covers it
    if os.getppid() != parent_pid:
        os._exit(70)


def reset_oom_score_adj(value: int | None) -> None:
    """Set this process's ``oom_score_adj`` to ``value`` (None: leave it). A slave does so
    first thing, so that it does not keep the template's protection from the OOM killer;
    raising it needs no privilege."""
    if value is None:
        return
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError:
        pass  # not Linux, or no /proc: there was no protection to shed either
