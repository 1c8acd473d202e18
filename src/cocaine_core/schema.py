"""Declared keys: how the core, drivers and plugins describe and check the keys they own.

A ``Key`` names a key, how to check and convert its value, and its default. ``check_keys``
applies a tuple of them to a JSON object and returns the converted values and every problem,
each with its key path, so a manifest's problems are all reported at once.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from cocaine_core.errors import Problem


class Invalid(ValueError):
    """A value a ``Kind`` refuses; its message says what would be accepted."""


#: A check: takes the raw JSON value, returns the converted value or raises ``Invalid``.
Kind = Callable[[Any], Any]

REQUIRED: Any = object()


def show(value: Any) -> str:
    """Render a JSON value for an error message, shortened if long."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


#: Integers beyond 64 bits are no setting anyone means (and do not fit a C long or a float).
MAX_INT = 2**63 - 1


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= MAX_INT
    return isinstance(value, float) and math.isfinite(value)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) or (_is_number(value) and float(value).is_integer())


def positive_int(value: Any) -> int:
    """An integer above zero (``3``; ``3.0`` is accepted too)."""
    if _is_number(value) and _is_whole(value) and value > 0:
        return int(value)
    raise Invalid(f"must be a positive integer, got {show(value)}")


def non_negative_int(value: Any) -> int:
    """An integer of zero or more."""
    if _is_number(value) and _is_whole(value) and value >= 0:
        return int(value)
    raise Invalid(f"must be an integer of 0 or more, got {show(value)}")


def positive_number(value: Any) -> float:
    """A number of seconds (or units) above zero."""
    if _is_number(value) and value > 0:
        return float(value)
    raise Invalid(f"must be a number above 0, got {show(value)}")


def non_negative_number(value: Any) -> float:
    """A number of zero or more."""
    if _is_number(value) and value >= 0:
        return float(value)
    raise Invalid(f"must be a number of 0 or more, got {show(value)}")


def optional_positive_number(value: Any) -> float | None:
    """A number above zero, or null for none."""
    if value is None:
        return None
    if _is_number(value) and value > 0:
        return float(value)
    raise Invalid(f"must be a number of seconds above 0, or null for none, got {show(value)}")


_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
#: The sizes ``optional_size`` accepts: a process needs at least a MiB; no machine has 64 TiB
#: for one process.
SIZE_MIN, SIZE_MAX = 2**20, 64 * 2**40


def optional_size(value: Any) -> int | None:
    """A size in bytes: a whole number, or a string with a unit (``"512M"``, ``"2G"``; K, M,
    G and T are powers of 1024); null for none. From 1 MiB (smaller is no process) to 64 TiB."""
    if value is None:
        return None
    size: float | None = None
    if _is_number(value) and _is_whole(value):
        size = float(value)
    elif isinstance(value, str):
        text = value.strip().upper().removesuffix("IB").removesuffix("B")
        unit = text[-1:] if text[-1:] in _SIZE_UNITS else ""
        number = text[:-1] if unit else text
        try:
            size = float(number) * _SIZE_UNITS[unit]
        except ValueError:
            size = None
    if size is not None and math.isfinite(size) and SIZE_MIN <= size <= SIZE_MAX:
        return int(size)
    raise Invalid(f"must be a size from 1 MiB to 64 TiB, in bytes or with a unit such as "
                  f"\"512M\" or \"2G\", or null for none, got {show(value)}")


# -- bounded numbers: every number a manifest gives has a range ----------------------------------


def number_text(value: float) -> str:
    """A bound or a value as a person writes it: ``1000``, ``0.01``, ``1e-09``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _span(seconds: float) -> str:
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f" ({count} {unit}{'s' if count != 1 else ''})"
    return ""


def _shown(value: Any) -> str:
    if _is_number(value) and not isinstance(value, bool):
        return number_text(value)
    return show(value)


@attrs.frozen
class IntRange:
    """A kind: a whole number from ``low`` to ``high`` (``3.0`` counts as 3)."""

    low: int
    high: int

    def __call__(self, value: Any) -> int:
        if _is_number(value) and _is_whole(value) and self.low <= value <= self.high:
            return int(value)
        raise Invalid(f"must be an integer from {self.low} to {self.high}, got {_shown(value)}")

    @property
    def range_text(self) -> str:
        """The range as the docs write it: ``1 to 1000``."""
        return f"{self.low} to {self.high}"


@attrs.frozen
class NumberRange:
    """A kind: a number from ``low`` to ``high`` in ``unit`` (null too, if ``optional``)."""

    low: float
    high: float
    unit: str = ""
    optional: bool = False

    def __call__(self, value: Any) -> float | None:
        if value is None and self.optional:
            return None
        if _is_number(value) and self.low <= value <= self.high:
            return float(value)
        none = ", or null for none" if self.optional else ""
        raise Invalid(f"must be a number{self._of} from {self.range_text}{none}, "
                      f"got {_shown(value)}")

    @property
    def _of(self) -> str:
        return f" of {self.unit}" if self.unit else ""

    @property
    def range_text(self) -> str:
        """The range as the docs write it: ``0.1 to 86400 (1 day)``."""
        per_second = {"seconds": 1, "milliseconds": 1000}.get(self.unit)
        span = _span(self.high / per_second) if per_second else ""
        return f"{number_text(float(self.low))} to {number_text(float(self.high))}{span}"


def int_range(low: int, high: int) -> IntRange:
    """A kind accepting integers from ``low`` to ``high``, the range said when refused."""
    return IntRange(low, high)


def seconds(low: float, high: float, *, optional: bool = False) -> NumberRange:
    """A kind accepting a time in seconds from ``low`` to ``high`` (or null if ``optional``).

    NaN and the infinities are refused: a time that never ends is no time (null says none)."""
    return NumberRange(low, high, "seconds", optional)


def milliseconds(low: float, high: float) -> NumberRange:
    """A kind accepting a time in milliseconds from ``low`` to ``high``."""
    return NumberRange(low, high, "milliseconds")


def is_bounded(kind: Kind) -> bool:
    """Whether ``kind`` takes numbers only within a stated range (the sweep in the tests)."""
    return isinstance(kind, IntRange | NumberRange)


def string(value: Any) -> str:
    """A non-empty string."""
    if isinstance(value, str) and value:
        return value
    raise Invalid(f"must be a non-empty string, got {show(value)}")


def boolean(value: Any) -> bool:
    """true or false."""
    if isinstance(value, bool):
        return value
    raise Invalid(f"must be true or false, got {show(value)}")


def mapping(value: Any) -> dict[str, Any]:
    """A JSON object."""
    if isinstance(value, dict):
        return dict(value)
    raise Invalid(f"must be an object ({{...}}), got {show(value)}")


def strings(value: Any) -> list[str]:
    """A string or a list of strings; always returned as a list."""
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise Invalid(f"must be a string or a list of strings, got {show(value)}")


def one_of(*choices: str) -> Kind:
    """A kind accepting exactly one of ``choices``."""

    def check(value: Any) -> str:
        if isinstance(value, str) and value in choices:
            return value
        raise Invalid(f"must be one of {', '.join(map(show, choices))}, got {show(value)}")

    check.__doc__ = f"one of {', '.join(choices)}"
    return check


@attrs.frozen
class Key:
    """One key of a JSON object: its name, its check, its default and what it means."""

    name: str
    kind: Kind
    default: Any = REQUIRED
    help: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        """Whether a manifest must give this key."""
        return self.default is REQUIRED


def join_path(path: str, key: str) -> str:
    """Join a key path and a key: ``engine`` + ``pool-limit`` → ``engine.pool-limit``."""
    if not key:
        return path
    return f"{path}.{key}" if path else key


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """A ``did you mean 'x'?`` suffix when a known name is close to ``name``, else ''."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def check_keys(
    data: Mapping[str, Any],
    keys: Iterable[Key],
    path: str,
    *,
    ignore: Iterable[str] = (),
) -> tuple[dict[str, Any], list[Problem]]:
    """Check ``data`` against ``keys``; return converted values (defaults filled) and problems.

    Unknown keys are problems with a "did you mean" where a known key is close; keys named in
    ``ignore`` are left for someone else to check.
    """
    keys = tuple(keys)
    by_name: dict[str, Key] = {}
    for spec in keys:
        by_name[spec.name] = spec
        for alias in spec.aliases:
            by_name[alias] = spec
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    ignored = set(ignore)
    for name, raw in data.items():
        key: Key | None = by_name.get(name)
        if key is None:
            if name not in ignored:
                known = sorted(k.name for k in keys)
                hint = did_you_mean(name, [*known, *ignored]) or (
                    f"; accepted keys: {', '.join(known)}" if known else ""
                )
                problems.append(Problem(join_path(path, name), f"unknown key{hint}"))
            continue
        if key.name in values:
            first = next(n for n in data if by_name.get(n) is key)
            problems.append(
                Problem(join_path(path, name), f"is the same setting as '{first}'; give only one")
            )
            continue
        if raw is key.default or (raw == key.default and type(raw) is type(key.default)):
            values[key.name] = raw  # a default always passes (a resolved manifest re-checks)
            continue
        try:
            values[key.name] = key.kind(raw)
        except Invalid as exc:
            problems.append(Problem(join_path(path, name), str(exc)))
        except Exception as exc:  # a kind's bug: still a problem with this key, not a crash
            problems.append(Problem(join_path(path, name), f"could not be checked "
                                    f"({type(exc).__name__}: {exc}), got {show(raw)}"))
    for spec in keys:
        if spec.name in values or any(p.path == join_path(path, spec.name) for p in problems):
            continue
        if spec.required:
            what = f" ({spec.help})" if spec.help else ""
            problems.append(Problem(join_path(path, spec.name), f"is required{what}"))
        else:
            values[spec.name] = spec.default
    return values, problems
