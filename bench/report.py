"""The table on stdout, the JSON file, and the plot of latency distributions (if matplotlib)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.results import Figure, ScenarioResult, Target


def number(value: float | None) -> str:
    """A figure with as many digits as it deserves."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _spread(figure: Figure) -> str:
    if len(figure.rounds) < 2:
        return ""
    spread = figure.spread
    rel = f" (±{spread * 50:.0f}%)" if spread is not None else ""
    return f"{number(figure.low)}..{number(figure.high)}{rel}"


def _rows(figures: Sequence[Figure]) -> list[list[str]]:
    return [[f"  {f.name}", number(f.median), _spread(f), f.unit] for f in figures]


def _table(rows: list[list[str]], header: list[str] | None = None,
           right: set[int] | None = None) -> list[str]:
    data = ([header] if header else []) + rows
    if not data:
        return []
    widths = [max(len(row[i]) for row in data) for i in range(len(data[0]))]
    right = {1} if right is None else right  # the median column

    def line(row: list[str]) -> str:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                 for i, cell in enumerate(row)]
        return "  ".join(cells).rstrip()

    out = [line(row) for row in data]
    if header:
        out.insert(1, "  ".join("-" * w for w in widths))
    return out


def render(results: list[ScenarioResult], rounds: int) -> str:
    """The whole report: each scenario's figures and ratios, then every target."""
    lines: list[str] = []
    for result in results:
        lines.append("")
        lines.append(f"== {result.name}: {result.title}  [{result.seconds:.1f} s]")
        if result.status == "failed":
            first = result.reason.strip().splitlines()[-1] if result.reason.strip() else ""
            lines.append(f"   FAILED: {first} (traceback in the JSON)")
            continue
        if result.status != "ok":
            lines.append(f"   {result.reason}")
            continue
        rows = _rows(result.figures)
        if result.ratios:
            rows.append(["  ratios (per round, then median)", "", "", ""])
            rows.extend([[f"    {f.name}", number(f.median), _spread(f), f.unit]
                         for f in result.ratios])
        lines.extend(_table(rows, ["  measure", "median",
                                   f"min..max over rounds (up to {rounds})", "unit"]))
        for title, header, table_rows in result.tables:
            lines.append(f"  {title}")
            lines.extend("  " + line for line in _table(
                [[f"  {row[0]}", *row[1:]] for row in table_rows],
                [f"  {header[0]}", *header[1:]], right=set(range(1, len(header)))))
        for part, reason in result.skipped_parts.items():
            lines.append(f"  {part}: {reason}")
    lines.append("")
    lines.append("== targets (checked against the medians; never asserted)")
    rows = []
    for result in results:
        for target in result.targets:
            rows.append([f"  {target.what}", _value(target), target.goal + " " + target.unit,
                         _verdict(target, result)])
        if not result.targets and result.status != "ok":
            rows.append([f"  {result.name}", "-", "", result.status])
    lines.extend(_table(rows, ["  target", "figure", "goal", "result"]))
    return "\n".join(lines)


def _value(target: Target) -> str:
    return "-" if target.value is None else f"{number(target.value)} {target.unit}".strip()


def _verdict(target: Target, result: ScenarioResult) -> str:
    if target.passed is None:
        return "n/a (" + (result.status if result.status != "ok" else "not measured") + ")"
    return "pass" if target.passed else "MISS"


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write the results (figures with every round, ratios, targets, details)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def plot(results: list[ScenarioResult], path: Path) -> str:
    """Plot each scenario's latency distributions (CDFs) to ``path``; return what was done."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        return "skipped: matplotlib is not installed"
    panels: list[tuple[str, dict[str, list[float]]]] = []
    for result in results:
        if not result.samples:
            continue
        if result.name == "throughput":
            for size in ("100 B", "64 KiB"):
                series = {k: v for k, v in result.samples.items() if k.endswith(size)}
                if series:
                    panels.append((f"throughput, {size}: latency at 100 in flight (last round)",
                                   series))
        else:
            panels.append((result.title, result.samples))
    if not panels:
        return "skipped: no latency samples"
    columns = 2
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(12, 3.6 * rows), squeeze=False)
    for axis, (title, series) in zip(axes.flat, panels, strict=False):
        for name, values in series.items():
            if not values:
                continue
            ordered = sorted(v * 1000 for v in values)
            fraction = [(i + 1) / len(ordered) for i in range(len(ordered))]
            axis.plot(ordered, fraction, label=name, linewidth=1.2)
        everything = [v for values in series.values() for v in values if v > 0]
        if everything and max(everything) > 10 * min(everything):
            axis.set_xscale("log")
            axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.xaxis.set_minor_formatter(ticker.NullFormatter())
            axis.set_xlabel("ms (log scale)")
        else:
            axis.set_xlabel("ms")
        axis.set_title(title, fontsize=9)
        axis.set_ylabel("fraction of requests")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
