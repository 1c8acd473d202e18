"""Reading JSON the way users paste it: trailing commas allowed, errors with line and column."""

from __future__ import annotations

import json
from typing import Any

from cocaine_core.errors import ManifestError, Problem


def strip_trailing_commas(text: str) -> str:
    """Remove commas that stand right before a closing ``}`` or ``]`` (outside strings)."""
    out: list[str] = []
    in_string = False
    escaped = False
    pending_comma: int | None = None  # index in ``out`` of a comma not yet known to be trailing
    previous = "["  # the last character outside white space
    for char in text:
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char in "}]" and pending_comma is not None:
            out[pending_comma] = " "  # keep columns where they were, for error messages
            pending_comma = None
        elif not char.isspace():
            pending_comma = None
        if char == '"':
            in_string = True
        elif char == "," and previous not in "[{,":
            pending_comma = len(out)  # a comma after a value: maybe trailing
        out.append(char)
        if not char.isspace():
            previous = char
    return "".join(out)


def loads_lenient(text: str, source: str | None = None) -> Any:
    """Parse JSON that may have trailing commas; a syntax error names the line and column."""
    try:
        return json.loads(strip_trailing_commas(text), parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            [Problem("", f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")],
            source=source,
        ) from None
    except RecursionError:
        raise ManifestError([Problem("", "JSON nested too deeply")], source=source) from None
    except ValueError as exc:  # an integer literal too long to convert, NaN, Infinity
        message = str(exc)
        if "integer string conversion" in message:
            message = "a number is too long (over 4300 digits)"
        raise ManifestError([Problem("", f"not valid JSON: {message}")], source=source) \
            from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; write a number or null")
