"""A job's HEADERS as a slave sends them (docs/protocol.md): checked before they go."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: The most headers a HEADERS message carries, and their names and values together at most.
MAX_HEADERS = 64
MAX_HEADER_BYTES = 64 * 1024
#: Headers as an app gives them: a dict, or (name, value) pairs.
Headers = Mapping[str, str] | Iterable[Sequence[str]]
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP field name (RFC 9110 token)


def check_headers(status: Any, headers: Any) -> list[list[str]]:
    """``headers`` (a dict, or pairs of name and value) as HEADERS carries them, if they and
    ``status`` are valid: status an int 100..599, at most ``MAX_HEADERS`` headers, names HTTP
    tokens, values str without CR, LF or NUL, all of them at most ``MAX_HEADER_BYTES``;
    else TypeError or ValueError saying what is wrong."""
    if not isinstance(status, int) or isinstance(status, bool):
        raise TypeError(f"status must be an int (an HTTP status, 100..599), not "
                        f"{type(status).__name__}")
    if not 100 <= status <= 599:
        raise ValueError(f"status {status} is not an HTTP status: give one in 100..599")
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        items = list(headers.items())
    elif isinstance(headers, str | bytes) or not isinstance(headers, Iterable):
        raise TypeError(f"headers must be a dict or a list of (name, value) pairs, not "
                        f"{type(headers).__name__}")
    else:
        items = list(itertools.islice(headers, MAX_HEADERS + 1))
    if len(items) > MAX_HEADERS:
        raise ValueError(f"more than {MAX_HEADERS} headers: an answer carries at most "
                         f"{MAX_HEADERS} (join the values of a repeated header with commas)")
    pairs, size = [], 0
    for item in items:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise TypeError(f"header {item!r:.80} is not a (name, value) pair")
        name, value = item
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"header {name!r:.80}: its name and value must be str, not "
                            f"{type(name).__name__} and {type(value).__name__}")
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {name!r:.80} is not valid: letters, digits and "
                             f"!#$%&'*+-.^_`|~ only (no spaces, colons or line breaks)")
        if "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"header {name!r}: its value {value!r:.80} holds a line break or "
                             f"NUL")
        size += len(name) + len(value)
        pairs.append([name, value])
    if size > MAX_HEADER_BYTES:
        raise ValueError(f"the headers hold {size} characters: at most {MAX_HEADER_BYTES}")
    return pairs
