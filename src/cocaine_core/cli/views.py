"""What ``cocaine info`` and ``cocaine app list`` print: plain lines that fit the terminal.

Nothing is ever cut: names, states and numbers are printed whole, and a line too long for the
terminal (a broken app's reason, a task's figures) is wrapped under its label. Without a
terminal (piped) the width is ``COLUMNS``, else 80.
"""

from __future__ import annotations

import shutil
import textwrap
from typing import Any

#: Keys of an app's info that the core fills; any other key is a plugin's (or a newer node's)
#: section, printed as ``key=value`` pairs.
CORE_APP_KEYS = {"state", "pool", "queue", "jobs", "slaves", "spawns", "uptime", "tasks",
                 "broken", "deployed", "crashes", "restarts"}

_LABEL = 8  # width of the labels of an app's block ("pool", "jobs", "tasks", …)


def width() -> int:
    """Columns to fill: the terminal's (or ``COLUMNS``), else 80; never below 40."""
    return max(40, shutil.get_terminal_size((80, 24)).columns)


#: Joins a number to its unit so that a line never breaks between them.
_GLUE = "\xa0"


def wrap(text: str, columns: int, first: str = "", indent: int = 0) -> list[str]:
    """``first`` then ``text``, in lines of at most ``columns`` (a word longer than that, such
    as a path, is kept whole), continued ``indent`` spaces in."""
    lines = textwrap.wrap(text, columns, initial_indent=first, subsequent_indent=" " * indent,
                          break_long_words=False, break_on_hyphens=False) or [first.rstrip()]
    return [line.replace(_GLUE, " ") for line in lines]


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}{_GLUE}ms"


def _mib(value: float) -> str:
    return f"{value / 2**20:.1f}{_GLUE}MiB"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _pairs(section: dict[str, Any], prefix: str = "") -> list[str]:
    """``key=value`` for a section, one level of nesting flattened, empty values left out."""
    out: list[str] = []
    for key, value in section.items():
        if isinstance(value, dict) and not prefix:
            out.extend(_pairs(value, f"{key}."))
        elif value is not None:
            out.append(f"{prefix}{key}={value}")
    return out


def node_lines(data: dict[str, Any], columns: int) -> list[str]:
    """``cocaine info``: the node in one line, then a block per app."""
    lines = wrap(f"node {data['node']} at {data['endpoint']} · pid {data['pid']} · "
                 f"up {data['uptime']:.0f}{_GLUE}s · {data['requests']} requests · "
                 f"rss {_mib(data.get('rss-bytes') or 0)}", columns, indent=2)
    if data.get("curve-key"):
        listed = data.get("client-keys")
        lines.append(f"CurveZMQ: clients pass --server-key {data['curve-key']}"
                     + ("" if listed is None else f" · {_plural(listed, 'client key')}"))
    lines.extend(_cluster_lines(data, columns))
    if not data["apps"]:
        lines.append("no apps")
    for name, app in data["apps"].items():
        lines.append("")
        lines.extend(app_lines(name, app, columns))
    return lines


def _cluster_lines(data: dict[str, Any], columns: int) -> list[str]:
    """The store other nodes share (reachable or not) and the peers a discovery sees."""
    lines: list[str] = []
    store = data.get("store") or {}
    if store.get("followed"):
        state = "reachable" if store.get("available") else "UNREACHABLE: apps keep running"
        lines.extend(wrap(f"store {store.get('uri')} · {state}", columns, indent=2))
    discovery = data.get("discovery")
    if discovery:
        peers = discovery.get("peers") or {}
        names = ", ".join(f"{p.get('name')} ({p.get('endpoint')})" for p in peers.values()) \
            if isinstance(peers, dict) else ""
        count = len(peers) if isinstance(peers, dict) else int(peers)
        lines.extend(wrap(f"discovery {discovery.get('discovery') or discovery.get('name')} · "
                          f"{discovery.get('state', '')} · {_plural(count, 'peer')}"
                          + (f": {names}" if names else ""), columns, indent=2))
    cluster = data.get("cluster")
    if cluster:
        lines.extend(wrap(
            f"cluster {cluster['name']} · link {cluster['link']} · "
            f"{_plural(cluster['peers'], 'peer')} up · forwarded {cluster['forwarded']} "
            f"(retried {cluster['retried']}, handed back {cluster['handed-back']}, cut "
            f"{cluster['cut']}) · refused {cluster['refused']} · cocaine cluster nodes shows "
            f"them", columns, indent=2))
    return lines


def app_lines(name: str, app: dict[str, Any], columns: int) -> list[str]:
    """One app's block: its name and state, then a labelled line per part."""
    pool, queue, jobs = app["pool"], app["queue"], app["jobs"]
    memory = sum(s.get("rss-bytes") or 0 for s in app.get("slaves", []))
    latency = jobs.get("latency-ms") or {}
    counts = [f"{jobs['done']} done", f"{jobs['failed']} failed",
              f"{jobs['timed-out']} timed out", f"{jobs['refused']} refused"]
    counts += [f"{jobs[k]} {k}" for k in ("expired", "retried", "abandoned") if jobs.get(k)]
    spare = f"; {pool['spare']} spare" if pool.get("spare") else ""
    parts = [("broken", str(app["broken"]))] if app.get("broken") else []
    parts += [
        ("pool", f"{_plural(pool['total'], 'slave')}: {pool['busy']} busy, {pool['idle']} "
                 f"idle, {pool.get('starting', 0)} starting (max {pool['limit']}, min "
                 f"{pool.get('min', 0)}){spare}"),
        ("queue", f"{queue['depth']} waiting of {queue['limit']}"),
        ("jobs", ", ".join(counts)),
        ("latency", f"p50 {_ms(latency.get('p50'))}, p99 {_ms(latency.get('p99'))}"),
        ("memory", f"{_mib(memory)} resident in slaves"),
    ]
    crashes = app.get("crashes") or {}
    if crashes.get("total"):
        held = (f"; new slaves wait {crashes['backoff-s']:g}{_GLUE}s"
                if crashes.get("backoff-s") else "")
        parts.append(("crashes", f"{crashes.get('recent', 0)} recent, {crashes['total']} in "
                                 f"all{held}; last: {crashes.get('last-exit') or '-'}"))
    restarts = app.get("restarts") or {}
    if restarts:
        parts.append(("restarts", ", ".join(f"{n} {kind}" for kind, n in
                                            sorted(restarts.items()))))
    for n, (task_name, task) in enumerate(app.get("tasks", {}).items()):
        figures = [f"{k}={_figure(v)}" for k, v in task.items() if k not in ("type", "event")]
        event = "" if task.get("event") in (None, task_name) else f" → {task['event']}"
        parts.append(("" if n else "tasks", f"{task_name}{event} ({task['type']})"
                      + (f": {', '.join(figures)}" if figures else "")))
    for key, section in app.items():
        if key in CORE_APP_KEYS:
            continue
        text = ", ".join(_pairs(section)) if isinstance(section, dict) else str(section)
        parts.append((key, text or "-"))
    up = f" · up {app['uptime']:.0f}{_GLUE}s" if app.get("uptime") is not None else ""
    lines = wrap(f"{name} · {app['state']}{up}", columns, indent=4)
    for label, text in parts:
        lines.extend(wrap(text, columns, f"  {label:<{_LABEL}} ", indent=_LABEL + 3))
    return lines


def _figure(value: Any) -> str:
    """A driver's figure for a person: a map as ``key:value`` pairs (``-`` if empty)."""
    if isinstance(value, dict):
        return " ".join(f"{k}:{v}" for k, v in value.items()) or "-"
    return str(value)


def app_list_lines(apps: dict[str, Any], columns: int) -> list[str]:
    """``cocaine app list``: a line per app (wrapped, never cut), and a broken app's reason."""
    if not apps:
        return ["no apps"]
    name_width = max(len(name) for name in apps)
    indent = name_width + 2 if name_width + 2 <= columns // 2 else 4
    lines: list[str] = []
    for name, app in apps.items():
        text = (f"{app['state']} · {_plural(app['pool']['total'], 'slave')} · "
                f"{app['queue']['depth']} queued · {app['jobs']['done']} done · "
                f"{app['jobs']['failed']} failed · tasks: "
                f"{', '.join(app.get('tasks', {})) or '-'}")
        lines.extend(wrap(text, columns, f"{name:<{name_width}}  ", indent=indent))
        if app.get("broken"):
            lines.extend(wrap(f"broken: {app['broken']}", columns, " " * indent, indent))
    return lines
