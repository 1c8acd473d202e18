"""Which processes a node started: its templates and their slaves, found in ``/proc``."""

from __future__ import annotations

import os

#: The module a template process runs (``python -m``): it names our processes in ``ps``.
TEMPLATE_MODULE = "cocaine_core.backends.template_entry"


def node_processes(node_pid: int) -> dict[int, int]:
    """Live templates and slaves that the node in process ``node_pid`` started (found by the
    command line a template is started with, which its forked slaves share), each with its
    parent's pid; zombies left out. For tests, benchmarks and operators' checks."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if (TEMPLATE_MODULE.encode() in args and args[-2:-1] == [str(node_pid).encode()]
                and fields[0] != b"Z"):
            found[int(entry)] = int(fields[1])
    return found
