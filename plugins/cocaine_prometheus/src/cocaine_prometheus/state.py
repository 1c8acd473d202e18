"""What the web console shows: a curated subset of ``cocaine info`` and the node's recent
lifecycle events, as JSON (``/api/state``).

Curated, because the listener has no authentication: the node's name, version, uptime,
memory and CPU, and per app the numbers of its row. Never the store's URI, keys, endpoints,
what is busy, slave pids, or error texts (but an app's broken reason, clipped).
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Mapping
from typing import Any

from cocaine_prometheus.collector import SLAVE_STATES

#: Lifecycle events the console keeps (newest first on the page).
RECENT_EVENTS = 50
#: The longest text of an app's broken reason or an event's detail the console shows.
TEXT_LIMIT = 300
#: Event details the console may show (short words, never pids or texts from a slave).
EVENT_FIELDS = ("reason", "version", "status")


def console_state(info: Mapping[str, Any], now: float, events: list[dict[str, Any]]
                  ) -> dict[str, Any]:
    """The JSON of ``/api/state``: the node, its apps, and ``events`` (newest first)."""
    slaves = _mapping(info.get("slaves"))
    return {
        "time": round(now, 3),
        "node": {
            "name": str(info.get("node", "")),
            "version": str(info.get("version", "")),
            "uptime": _number(info.get("uptime")),
            "rss-bytes": _number(info.get("rss-bytes")),
            "cpu-seconds": _number(info.get("cpu-seconds")),
            "slaves": _number(slaves.get("slaves")),
            "max-slaves": _number(slaves.get("max-slaves")),
        },
        "apps": [app_row(str(name), _mapping(app))
                 for name, app in sorted(_mapping(info.get("apps")).items())],
        "events": events,
    }


def app_row(name: str, app: Mapping[str, Any]) -> dict[str, Any]:
    """One app's row: state, jobs (totals; the page makes rates of them), latency, queue,
    slaves by state, restarts."""
    jobs = _mapping(app.get("jobs"))
    requests = errors = 0
    for counts in _mapping(jobs.get("events")).values():
        for code, n in _mapping(_mapping(counts).get("codes")).items():
            number = int(_number(n) or 0)
            requests += number
            if code not in ("200", "499"):  # not done, and not a client that left
                errors += number
    latency = _mapping(jobs.get("latency-ms"))
    queue, pool = _mapping(app.get("queue")), _mapping(app.get("pool"))
    row: dict[str, Any] = {
        "name": name,
        "state": str(app.get("state", "")),
        "requests": requests,
        "errors": errors,
        "p50-ms": _number(latency.get("p50")),
        "p99-ms": _number(latency.get("p99")),
        "queue": {"depth": _number(queue.get("depth")), "limit": _number(queue.get("limit"))},
        "slaves": {state: _number(pool.get(state)) for state in SLAVE_STATES},
        "slaves-limit": _number(pool.get("limit")),
        "restarts": sum(int(_number(n) or 0) for n in _mapping(app.get("restarts")).values()),
        "uptime": _number(app.get("uptime")),
    }
    if isinstance(app.get("broken"), str):
        row["broken"] = _clip(app["broken"])
    return row


class RecentEvents:
    """The node's last ``RECENT_EVENTS`` lifecycle events, as the console shows them.

    Filled from the ``cocaine_event`` hook (any thread; it returns at once), read per poll.
    """

    def __init__(self, limit: int = RECENT_EVENTS) -> None:
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
        self._lock = threading.Lock()

    def add(self, app: str, topic: str, time: float, data: Mapping[str, Any]) -> None:
        """Keep one event: its app, topic, time and its short details (``EVENT_FIELDS``)."""
        shown: dict[str, Any] = {"app": _clip(app), "topic": _clip(topic), "time": round(time, 3)}
        for key in EVENT_FIELDS:
            value = data.get(key)
            if isinstance(value, str):
                shown[key] = _clip(value, 64)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                shown[key] = value
        if topic == "broken" and isinstance(data.get("reason"), str):
            shown["reason"] = _clip(data["reason"])
        with self._lock:
            self._events.append(shown)

    def newest_first(self) -> list[dict[str, Any]]:
        """The events kept, the newest first."""
        with self._lock:
            return list(reversed(self._events))


def _clip(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
