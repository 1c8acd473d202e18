"""What ``cocaine top`` shows: two successive ``info`` snapshots of a node turned into rows of
rates, latencies, queues and slaves, and the rows laid out in lines that fit the terminal.

Pure functions, no I/O: ``top_cmd`` polls the nodes and draws what these return. A rate is a
counter's change between two snapshots over the time between them; with no earlier snapshot
(the first frame, a node that came back) or a counter that went back (the app or the node
restarted), it is ``-``. Every line fits ``width`` columns: the app's name is cut (with an
ellipsis) to make room, and wider terminals get more columns.
"""

from __future__ import annotations

import fnmatch
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from rich.console import Group
from rich.text import Text

#: The job counters whose sum makes the errors per second.
ERROR_COUNTERS = ("failed", "timed-out", "refused", "expired")
#: The narrowest the app's name gets before extra columns are dropped (80 columns: 17).
APP_MIN = 12
#: Extra columns are added while the app's name keeps at least this many columns.
APP_ROOM = 20
#: Lines a frame has at least (a node's line, the columns' heads, one row, "+N more").
MIN_HEIGHT = 4


@attrs.frozen
class Snapshots:
    """What a poller knows of one node: its last ``info`` and the one before (None if the
    node was just reached), seconds between them as the client saw it, or why it cannot be
    reached (``error``)."""

    endpoint: str
    current: dict[str, Any] | None = None
    previous: dict[str, Any] | None = None
    elapsed: float | None = None
    error: str | None = None
    #: How the cluster sees the node ("up", "silent", "leaving"), in ``--cluster``.
    seen: str | None = None
    #: The node's name as its cluster knows it (before its info says it), in ``--cluster``.
    name: str | None = None


@attrs.frozen
class AppRow:
    """One app's line: its figures now and its rates since the previous snapshot."""

    name: str
    state: str
    reason: str | None
    rate: float | None
    errors: float | None
    p50: float | None
    p99: float | None
    queue: int
    queue_limit: int
    busy: int
    idle: int
    starting: int
    limit: int
    memory: int
    uptime: float | None
    done: int
    restarts: int


# -- numbers for people ---------------------------------------------------------------------

def per_second(value: float | None) -> str:
    """``12/s``, ``3.4/s``, ``1.2k/s``; ``-`` when unknown."""
    if value is None:
        return "-"
    if value == 0:
        return "0/s"
    if value < 0.1:
        return "<0.1/s"
    return f"{count(value, 1)}/s"


def count(value: float, decimals: int = 0) -> str:
    """``950``, ``12k``, ``1.2M``: a count in at most 5 characters (one decimal below 10
    with ``decimals``)."""
    for unit, scale in (("", 1.0), ("k", 1e3), ("M", 1e6), ("G", 1e9)):
        scaled = value / scale
        if not unit:
            text = f"{scaled:.1f}" if decimals and scaled < 9.95 and scaled != int(scaled) \
                else f"{scaled:.0f}"
        else:
            text = f"{scaled:.1f}{unit}" if scaled < 9.95 else f"{scaled:.0f}{unit}"
        if abs(float(text.removesuffix(unit))) < 1000 or unit == "G":
            return text
    return f"{value:.0f}"  # pragma: no cover - the loop always returns


def millis(value: float | None) -> str:
    """A latency given in milliseconds: ``0.42 ms``, ``3.4 ms``, ``120 ms``, ``1.25 s``."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value:.2f} ms"
    if value < 10:
        return f"{value:.1f} ms"
    if value < 999.5:
        return f"{value:.0f} ms"
    if value < 9995:
        return f"{value / 1000:.2f} s"
    if value < 99950:
        return f"{value / 1000:.1f} s"
    return f"{value / 60000:.0f} min"


def size(value: float | None) -> str:
    """Bytes: ``512 B``, ``3.4 KiB``, ``120 MiB``, ``1.2 GiB``; ``-`` when unknown."""
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1023.5 or unit == "TiB":
            return f"{value:.1f} {unit}" if value < 9.95 and unit != "B" else \
                f"{value:.0f} {unit}"
        value /= 1024
    return "-"  # pragma: no cover


def duration(seconds: float | None) -> str:
    """``45s``, ``12m05s``, ``3h04m``, ``2d03h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def short_reason(reason: Any, width: int = 200) -> str | None:
    """A broken app's reason on one line, at most ``width`` characters."""
    if not reason:
        return None
    text = " ".join(str(reason).split())
    return text if len(text) <= width else text[:width - 1] + "…"


# -- rows from snapshots ----------------------------------------------------------------------

def elapsed_between(current: dict[str, Any], previous: dict[str, Any] | None,
                    seen: float | None) -> float | None:
    """Seconds between two snapshots of a node: by its own uptime (what the client measured,
    ``seen``, if the node gives none); None if there is no earlier one or the node restarted
    in between (its pid changed, its uptime went back)."""
    if previous is None:
        return None
    if current.get("pid") != previous.get("pid"):
        return None
    now, before = current.get("uptime"), previous.get("uptime")
    if isinstance(now, (int, float)) and isinstance(before, (int, float)):
        return now - before if now > before else None
    return seen if seen and seen > 0 else None


def _rate(now: int, before: int | None, seconds: float | None) -> float | None:
    if before is None or seconds is None or now < before:
        return None
    return (now - before) / seconds


def _errors(jobs: dict[str, Any]) -> int:
    return sum(int(jobs.get(key) or 0) for key in ERROR_COUNTERS)


def app_row(name: str, app: dict[str, Any], before: dict[str, Any] | None,
            seconds: float | None) -> AppRow:
    """One app's row from its ``info`` now and (for rates) ``before``, ``seconds`` earlier."""
    pool, queue, jobs = app.get("pool") or {}, app.get("queue") or {}, app.get("jobs") or {}
    old_jobs = (before or {}).get("jobs") or {}
    restarted = before is not None and (app.get("uptime") or 0) < (before.get("uptime") or 0)
    if before is None or restarted:
        seconds = None
    latency = jobs.get("latency-ms") or {}
    restarts = app.get("restarts")
    return AppRow(
        name=name, state=str(app.get("state", "?")), reason=short_reason(app.get("broken")),
        rate=_rate(int(jobs.get("done") or 0), old_jobs.get("done"), seconds),
        errors=_rate(_errors(jobs), _errors(old_jobs) if old_jobs else None, seconds),
        p50=latency.get("p50"), p99=latency.get("p99"),
        queue=int(queue.get("depth") or 0), queue_limit=int(queue.get("limit") or 0),
        busy=int(pool.get("busy") or 0), idle=int(pool.get("idle") or 0),
        starting=int(pool.get("starting") or 0), limit=int(pool.get("limit") or 0),
        memory=sum(int(s.get("rss-bytes") or 0) for s in app.get("slaves") or []),
        uptime=app.get("uptime"), done=int(jobs.get("done") or 0),
        restarts=sum(restarts.values()) if isinstance(restarts, dict)
        else int((app.get("crashes") or {}).get("total") or 0))


def matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether ``name`` is one of the apps asked for (shell patterns; none asked: all)."""
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


def app_rows(snapshots: Snapshots, patterns: Sequence[str] = ()) -> list[AppRow]:
    """The node's apps (those ``patterns`` match): apps not running (broken, starting,
    stopping) first, so a short screen never hides them, then the busiest, then by name."""
    current = snapshots.current
    if current is None:
        return []
    seconds = elapsed_between(current, snapshots.previous, snapshots.elapsed)
    before = (snapshots.previous or {}).get("apps") or {}
    rows = [app_row(name, app, before.get(name), seconds)
            for name, app in (current.get("apps") or {}).items() if matches(name, patterns)]
    return sorted(rows, key=lambda r: (r.state == "running", -(r.rate or 0), r.name))


# -- lines that fit ---------------------------------------------------------------------------

@attrs.frozen
class Column:
    """A column: its head, width, and the cell of a row."""

    head: str
    width: int
    cell: Callable[[AppRow], str]


def _slaves(row: AppRow) -> str:
    return f"{row.busy}/{row.idle}/{row.starting} of {row.limit}"


#: The columns every width shows, after the app's name (80 columns: the name gets 17).
BASE = (
    Column("STATE", 8, lambda r: r.state),
    Column("RATE", 7, lambda r: per_second(r.rate)),
    Column("ERR/s", 6, lambda r: per_second(r.errors).removesuffix("/s")),
    Column("P50", 7, lambda r: millis(r.p50)),
    Column("P99", 7, lambda r: millis(r.p99)),
    Column("QUEUE", 9, lambda r: f"{count(r.queue)}/{count(r.queue_limit)}"),
    Column("SLAVES b/i/s", 12, _slaves),
)
#: Shown, in this order, when the terminal has room for them.
EXTRA = (
    Column("MEM", 8, lambda r: size(r.memory)),
    Column("UP", 7, lambda r: duration(r.uptime)),
    Column("RESTARTS", 8, lambda r: count(r.restarts)),
    Column("DONE", 6, lambda r: count(r.done)),
)


def columns(width: int) -> tuple[int, list[Column]]:
    """The app name's width and the other columns, for ``width`` terminal columns."""
    chosen = list(BASE)
    used = sum(c.width + 1 for c in chosen)
    for extra in EXTRA:
        if width - used - extra.width - 1 < APP_ROOM:
            break
        chosen.append(extra)
        used += extra.width + 1
    return max(APP_MIN, width - used), chosen


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(0, width - 1)] + "…"


def _line(text: str, width: int, style: str = "") -> Text:
    line = Text(text, style=style, no_wrap=True, overflow="ellipsis")
    line.truncate(width, overflow="ellipsis")
    return line


def _lines(text: str, width: int, style: str, whole: bool, indent: int = 4) -> list[Text]:
    """``text`` cut to one line, or (``whole``) wrapped in lines of ``width``."""
    if not whole:
        return [_line(text, width, style)]
    return [_line(part, width, style) for part in textwrap.wrap(
        text, width, subsequent_indent=" " * indent, break_on_hyphens=False)] or \
        [_line("", width, style)]


_STATE_STYLE = {"running": "green", "broken": "bold red", "stopped": "dim"}


def row_line(row: AppRow, name_width: int, cols: list[Column], width: int) -> Text:
    """An app's row: its name (cut to ``name_width``) and a cell per column."""
    line = Text(f"{_cut(row.name, name_width):<{name_width}}", no_wrap=True)
    for col in cols:
        cell = _cut(col.cell(row), col.width)
        text = f" {cell:<{col.width}}" if col.head == "STATE" else f" {cell:>{col.width}}"
        style = _STATE_STYLE.get(row.state, "yellow") if col.head == "STATE" else \
            "red" if col.head == "ERR/s" and row.errors else ""
        line.append(text, style=style)
    line.truncate(width, overflow="ellipsis")
    return line


def head_line(name_width: int, cols: list[Column], width: int) -> Text:
    """The columns' heads."""
    text = f"{'APP':<{name_width}}" + "".join(
        f" {c.head:<{c.width}}" if c.head == "STATE" else f" {c.head:>{c.width}}"
        for c in cols)
    return _line(text, width, "bold reverse")


def node_summary(snapshots: Snapshots, endpoint: bool = False) -> str:
    """A node in one line: name (and ``endpoint``: where it was asked, as nodes of a
    cluster may share a name), version, uptime, memory and apps; or why it is not seen."""
    info = snapshots.current
    seen = f" ({snapshots.seen})" if snapshots.seen and snapshots.seen != "up" else ""
    if snapshots.error is not None or info is None:
        where = f"{snapshots.name} {snapshots.endpoint}" if snapshots.name \
            else snapshots.endpoint
        return f"{where}{seen} · {short_reason(snapshots.error or 'waiting for its answer')}"
    apps = len(info.get("apps") or {})
    where = f" {snapshots.endpoint}" if endpoint else ""
    return (f"{info.get('node', '?')}{where}{seen} · v{info.get('version', '?')} · "
            f"up {duration(info.get('uptime'))} · rss {size(info.get('rss-bytes'))} · "
            f"{apps} app{'' if apps == 1 else 's'}")


def frame_lines(nodes: Sequence[Snapshots], width: int, height: int | None = None, *,
                cluster: str | None = None, patterns: Sequence[str] = (),
                status: str = "") -> list[Text]:
    """The whole frame as lines of at most ``width`` columns and, with ``height``, at most
    that many lines (rows that do not fit are counted in a last "+N more" line).

    One node: its summary, then the columns' heads and its apps. ``cluster``: a line for the
    cluster, then each node's summary followed by its apps (a node that cannot be reached
    has its line, saying why, and no rows). ``status`` ends the first line if it fits."""
    width = max(width, 20)
    whole = height is None  # plain text: a node's line and a reason are wrapped, not cut
    name_width, cols = columns(width)
    first = (f"cluster {cluster} · {len(nodes)} node{'' if len(nodes) == 1 else 's'}"
             if cluster is not None else node_summary(nodes[0]) if nodes else "no node")
    if status and len(first) + len(status) + 3 <= width:
        first = f"{first}{' ' * (width - len(first) - len(status))}{status}"
    alarm = not cluster and bool(nodes) and nodes[0].error is not None
    top = [*_lines(first, width, "bold red" if alarm else "bold", whole or alarm),
           head_line(name_width, cols, width)]
    body: list[tuple[Text, bool]] = []  # (line, whether it is an app's row)
    for snapshots in nodes:
        if cluster is not None:
            style = "red" if snapshots.error is not None else "bold cyan"
            body.extend((line, False) for line in _lines(
                f"── {node_summary(snapshots, True)}", width, style, whole))
        for row in app_rows(snapshots, patterns):
            body.append((row_line(row, name_width, cols, width), True))
            if row.reason:
                body.extend((line, False) for line in _lines(
                    f"  ↳ {row.reason}", width, "red", whole))
    if not body or not any(is_row for _, is_row in body):
        shown = [n for n in nodes if n.current is not None]
        if shown and patterns:
            body.append((_line(f"no app matches {' '.join(patterns)}", width, "dim"), False))
        elif shown:
            body.append((_line("no apps", width, "dim"), False))
    if height is not None:
        room = max(MIN_HEIGHT, height) - len(top)
        if len(body) > room:
            hidden = sum(1 for _, is_row in body[room - 1:] if is_row)
            body = body[:room - 1]
            more = f"+{hidden} more" if hidden else "+ more"
            body.append((_line(f"{more} (a taller terminal, or name apps: "
                               f"cocaine top APP...)", width, "dim"), False))
    return top + [line for line, _ in body]


def render(nodes: Sequence[Snapshots], width: int, height: int | None = None, *,
           cluster: str | None = None, patterns: Sequence[str] = (),
           status: str = "") -> Group:
    """``frame_lines`` as one rich renderable."""
    return Group(*frame_lines(nodes, width, height, cluster=cluster, patterns=patterns,
                              status=status))


def plain(nodes: Sequence[Snapshots], width: int, **kw: Any) -> str:
    """The frame as plain text (``--once`` piped): every row, no colour."""
    return "\n".join(line.plain for line in frame_lines(nodes, width, None, **kw))
