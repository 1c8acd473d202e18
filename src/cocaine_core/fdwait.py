"""Waiting on file descriptors with ``poll``: ``select`` refuses a descriptor numbered 1024 or
more, which a node holding many connections hands its processes (a template's pipe, the log's
pipe), and that made every app fail to start."""

from __future__ import annotations

import select
from collections.abc import Iterable

_READ = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR
_WRITE = select.POLLOUT | select.POLLERR | select.POLLHUP


def wait(read: Iterable[int], write: Iterable[int], timeout: float) -> tuple[set[int], set[int]]:
    """Wait up to ``timeout`` seconds until one of ``read`` can be read (or is at its end, or
    broken) or one of ``write`` written; return the descriptors ready for each. An interrupted
    wait returns nothing ready (``InterruptedError`` is not raised)."""
    reading, writing = set(read), set(write)
    poller = select.poll()
    for fd in reading | writing:
        poller.register(fd, (_READ if fd in reading else 0) | (_WRITE if fd in writing else 0))
    try:
        events = poller.poll(max(0.0, timeout) * 1000)
    except InterruptedError:
        return set(), set()
    ready_read = {fd for fd, mask in events if fd in reading and mask & _READ}
    ready_write = {fd for fd, mask in events if fd in writing and mask & _WRITE}
    return ready_read, ready_write
