"""Error texts made safe to send and log: always valid UTF-8, always bounded.

A handler's error message and traceback come from the app (any language, any size): the slave
runtime and the engine both pass them through ``cut`` so that no error can carry megabytes to a
client or into the node's log, and through ``escape`` so that no lone surrogate can make
msgpack or a log file fail. ``printable`` is for the log alone: whatever an app sends that the
node logs goes through it, so that no character of it (a newline, ``\r``, a terminal escape)
can make it pass for a line of the node's own.
"""

from __future__ import annotations

#: Most UTF-8 bytes of an error message a client receives (and the node logs).
MESSAGE_LIMIT = 4096
#: Most UTF-8 bytes of a traceback the node logs.
TRACEBACK_LIMIT = 16384


def escape(text: str) -> str:
    """``text`` with anything that is not valid UTF-8 (lone surrogates) as ``\\udc80``
    escapes."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def printable(text: str) -> str:
    """``text`` with every character that is not printable (control characters, ``\r``,
    ``\n``, NUL, terminal escapes, Unicode line and paragraph separators, lone surrogates)
    written as a Python escape such as ``\x1b``, tabs kept: one line of the log, whatever
    ``text`` holds."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == "\t" else
                   ch.encode("unicode_escape").decode("ascii") for ch in text)


def _utf8_len(text: str) -> int:
    """The UTF-8 size of ``text`` once escaped, counted a slice at a time (no big copy)."""
    if text.isascii():
        return len(text)
    step = 65536
    return sum(len(text[i:i + step].encode("utf-8", "backslashreplace"))
               for i in range(0, len(text), step))


def _head(text: str, size: int) -> str:
    """The longest start of ``text`` of at most ``size`` UTF-8 bytes."""
    part = text[:size]
    if part.isascii():
        return part
    return part.encode("utf-8", "backslashreplace")[:size].decode("utf-8", "ignore")


def _tail(text: str, size: int) -> str:
    """The longest end of ``text`` of at most ``size`` UTF-8 bytes."""
    part = text[-size:] if size else ""
    if part.isascii():
        return part
    return part.encode("utf-8", "backslashreplace")[-size:].decode("utf-8", "ignore")


def cut(text: str, limit: int, keep_end: bool = False) -> str:
    """``text`` escaped and, if longer than ``limit`` UTF-8 bytes, cut to at most ``limit``
    bytes with a note ``… [N bytes cut]`` saying how much went.

    By default the start is kept (a message); with ``keep_end`` a quarter of the start and
    the rest from the end (a traceback, whose innermost frames and exception come last).
    """
    total = _utf8_len(text)
    if total <= limit:
        return escape(text)
    note_room = len(f" … [{total} bytes cut] ".encode())
    room = max(0, limit - note_room)
    if keep_end:
        head = _head(text, room // 4)
        tail = _tail(text, room - _utf8_len(head))
        gone = total - _utf8_len(head) - _utf8_len(tail)
        return f"{head} … [{gone} bytes cut] {tail}"
    head = _head(text, room)
    return f"{head} … [{total - _utf8_len(head)} bytes cut]"
