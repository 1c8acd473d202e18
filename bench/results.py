"""What a scenario hands back: figures (one value per round), ratios, targets, details.

Every figure keeps its per-round values; the table shows their median and spread (the
smallest and largest round). A ratio is computed *per round* (cocaine and its baseline ran
back to back in that round, under the same load from the rest of the machine) and then
summarised the same way, which is why ratios are steadier than the figures they come from.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values``, by linear interpolation; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Figure:
    """One measured quantity over the rounds."""

    name: str
    unit: str
    rounds: list[float] = field(default_factory=list)
    note: str = ""

    def add(self, value: float | None) -> None:
        """Record one round's value (None: that round produced nothing)."""
        if value is not None:
            self.rounds.append(float(value))

    @property
    def median(self) -> float | None:
        """The median over rounds."""
        return statistics.median(self.rounds) if self.rounds else None

    @property
    def low(self) -> float | None:
        """The smallest round."""
        return min(self.rounds) if self.rounds else None

    @property
    def high(self) -> float | None:
        """The largest round."""
        return max(self.rounds) if self.rounds else None

    @property
    def spread(self) -> float | None:
        """(largest - smallest) / median, as a fraction: how much the rounds disagree."""
        median = self.median
        if not self.rounds or not median:
            return None
        return (max(self.rounds) - min(self.rounds)) / abs(median)

    def as_dict(self) -> dict[str, Any]:
        """For the JSON."""
        return {**asdict(self), "median": self.median, "min": self.low, "max": self.high,
                "spread": self.spread}


def ratio(name: str, numerator: Figure, denominator: Figure, note: str = "") -> Figure:
    """Round-by-round ``numerator / denominator``, as a figure of its own."""
    out = Figure(name, "x", note=note)
    for top, bottom in zip(numerator.rounds, denominator.rounds, strict=False):
        if bottom:
            out.add(top / bottom)
    return out


@dataclass
class Target:
    """A goal from the issue, checked against a figure's median; never asserted."""

    what: str
    value: float | None
    goal: str  # e.g. ">= 0.8"
    unit: str = ""

    @property
    def passed(self) -> bool | None:
        """True (pass), False (miss), or None (no figure: skipped or failed)."""
        if self.value is None:
            return None
        op, bound = self.goal.split()
        limit = float(bound)
        return {">=": self.value >= limit, "<=": self.value <= limit,
                "<": self.value < limit, ">": self.value > limit}[op]

    def as_dict(self) -> dict[str, Any]:
        """For the JSON."""
        return {**asdict(self), "passed": self.passed}


@dataclass
class ScenarioResult:
    """A scenario's outcome: ``ok``, ``skipped`` (with the reason) or ``failed``."""

    name: str
    title: str
    status: str = "ok"
    reason: str = ""
    figures: list[Figure] = field(default_factory=list)
    ratios: list[Figure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    #: Sub-parts skipped while the rest ran (e.g. Celery without --peers).
    skipped_parts: dict[str, str] = field(default_factory=dict)
    #: Latency samples (seconds) by series name, for the plot; not written to the JSON.
    samples: dict[str, list[float]] = field(default_factory=dict)
    #: Extra tables printed after the figures: (title, header, rows of cells).
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)

    def figure(self, name: str, unit: str, note: str = "") -> Figure:
        """A new figure, added to this result."""
        figure = Figure(name, unit, note=note)
        self.figures.append(figure)
        return figure

    def add_ratio(self, name: str, numerator: Figure, denominator: Figure) -> Figure:
        """A round-by-round ratio, added to this result."""
        figure = ratio(name, numerator, denominator)
        self.ratios.append(figure)
        return figure

    def target(self, what: str, value: float | None, goal: str, unit: str = "") -> Target:
        """A target, added to this result."""
        target = Target(what, value, goal, unit)
        self.targets.append(target)
        return target

    def as_dict(self) -> dict[str, Any]:
        """For the JSON."""
        return {"name": self.name, "title": self.title, "status": self.status,
                "reason": self.reason, "seconds": round(self.seconds, 3),
                "figures": [f.as_dict() for f in self.figures],
                "ratios": [f.as_dict() for f in self.ratios],
                "targets": [t.as_dict() for t in self.targets],
                "skipped_parts": self.skipped_parts, "details": self.details,
                "tables": [{"title": t, "header": h, "rows": r} for t, h, r in self.tables]}


def skipped(name: str, title: str, reason: str) -> ScenarioResult:
    """A result for a scenario that could not run here (not a failure)."""
    return ScenarioResult(name, title, status="skipped", reason=reason)


def interleave(names: Iterable[str], round_index: int) -> list[str]:
    """``names`` rotated by the round number, so no system always runs first (or last)."""
    order = list(names)
    if not order:
        return order
    shift = round_index % len(order)
    return order[shift:] + order[:shift]


class Stopwatch:
    """Seconds since it was made."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def seconds(self) -> float:
        """Seconds elapsed."""
        return time.monotonic() - self.start
