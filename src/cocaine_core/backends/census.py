"""Which processes a node started: its templates and their slaves, and its ``exec`` slaves,
found in ``/proc``."""

from __future__ import annotations

import os

#: The module a template process runs (``python -m``): it names our processes in ``ps``.
TEMPLATE_MODULE = "cocaine_core.backends.template_entry"
#: The environment variable that marks an app's processes (``orphans.TREE_VARIABLE``).
_TREE = b"COCAINE_APP_TREE="


def node_processes(node_pid: int) -> dict[int, int]:
    """Live templates and slaves that the node in process ``node_pid`` started, each with its
    parent's pid; zombies left out. A template, and the slaves it forks, are known by the
    command line a template is started with; an ``exec`` slave (a program of its own) by
    being the node's child with the node's tree marker (``<node pid>.``) in its environment.
    For tests, benchmarks and operators' checks."""
    found: dict[int, int] = {}
    marker = _TREE + str(node_pid).encode() + b"."
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
        if fields[0] == b"Z":
            continue
        if TEMPLATE_MODULE.encode() in args and args[-2:-1] == [str(node_pid).encode()]:
            found[int(entry)] = int(fields[1])
        elif int(fields[1]) == node_pid and _marked(entry, marker):
            found[int(entry)] = node_pid
    return found


def _marked(pid: str, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return any(item.startswith(marker) for item in f.read().split(b"\0"))
    except OSError:
        return False
