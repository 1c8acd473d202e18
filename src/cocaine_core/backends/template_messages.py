"""What a template process tells the node, checked: the template runs the app's code (its
import, at least), so every message from it is untrusted input.

A malformed message, or one naming a slave the node never asked for, is a broken template
(the node kills it and says so). A pid the node is about to signal must still be the app's:
a child of the template, or (an isolated app) a process of the app's own user, never the
node itself; so no message can make the node, which may be root, signal another process.
"""

from __future__ import annotations

import os
from typing import Any

from cocaine_core.errortext import MESSAGE_LIMIT, cut, printable


class BadMessage(Exception):
    """A template sent what the protocol does not allow (its text says what)."""


def check(message: Any) -> tuple[str, list[Any]]:
    """The kind and fields of a template's message, their types checked; ``BadMessage``
    otherwise. Texts come back cut to ``MESSAGE_LIMIT`` and printable."""
    if not isinstance(message, list | tuple) or not message or not isinstance(message[0], str):
        raise BadMessage(f"not a message: {_show(message)}")
    kind, fields = message[0], list(message[1:])
    if kind == "loaded":
        return kind, []
    if kind == "failed":
        if not fields or not isinstance(fields[0], str):
            raise BadMessage(f"a 'failed' without its reason: {_show(message)}")
        return kind, [_text(fields[0]), bool(fields[1]) if len(fields) > 1 else True]
    if kind == "forked":
        if len(fields) != 2 or not isinstance(fields[0], str) or not _pid(fields[1]):
            raise BadMessage(f"a 'forked' is [slave id, pid]: {_show(message)}")
        return kind, fields
    if kind == "fork-failed":
        if len(fields) != 2 or not isinstance(fields[0], str) or not isinstance(fields[1], str):
            raise BadMessage(f"a 'fork-failed' is [slave id, reason]: {_show(message)}")
        return kind, [fields[0], _text(fields[1])]
    if kind == "exited":
        if len(fields) != 2 or not _pid(fields[0]) or not _int(fields[1]):
            raise BadMessage(f"an 'exited' is [pid, status]: {_show(message)}")
        return kind, fields
    raise BadMessage(f"unknown message {_show(message)}")


def owned(pid: int, template_pid: int, uid: int | None) -> bool:
    """Whether process ``pid`` is still the app's: a child of its template, or, for an app
    running as ``uid``, a process of that user; never this process (the node)."""
    found = _parent_and_owner(pid)
    return found is not None and (found[0] == template_pid or
                                  (uid is not None and found[1] == uid))


def child_of(pid: int, template_pid: int, uid: int | None) -> bool | None:
    """Whether process ``pid`` is a child of the template (and, for an app running as
    ``uid``, runs as it): what a slave the template says it forked must be before the node
    hands it to the spawn hooks (which may move it into a cgroup, as root). None: it is gone
    already (a slave may die at once; its exit follows)."""
    if pid > 1 and pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
        return None
    found = _parent_and_owner(pid)
    return found is not None and found[0] == template_pid and (uid is None or found[1] == uid)


def _parent_and_owner(pid: int) -> tuple[int, int] | None:
    """Process ``pid``'s parent and owner; None if it is gone, unreadable, or the node."""
    if pid <= 1 or pid == os.getpid():
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            parent = int(f.read().rsplit(b")", 1)[1].split()[1])
        return parent, os.stat(f"/proc/{pid}").st_uid
    except (OSError, ValueError, IndexError):
        return None


def _pid(value: Any) -> bool:
    return _int(value) and 1 < value < 2**31


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**31


def _text(text: str) -> str:
    return printable(cut(text, MESSAGE_LIMIT))


def _show(message: Any) -> str:
    return printable(cut(repr(message), 200))
