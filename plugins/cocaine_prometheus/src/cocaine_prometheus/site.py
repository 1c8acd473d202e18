"""The listener's pages: ``/metrics``, the console (``/``, its script and style) and its JSON
(``/api/state``), all read from one snapshot of the node's info.

The snapshot is taken at most every ``max_age`` seconds, however many clients ask: what a
flood of scrapes costs the node's loop is bounded by that, not by the number of requests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from cocaine_prometheus.collector import CONTENT_TYPE, render_metrics
from cocaine_prometheus.listener import Page, text_page
from cocaine_prometheus.state import RecentEvents, console_state

#: The console's files, served as they are (no build step, nothing from elsewhere).
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),
}
#: The oldest snapshot of the node's info a page is made from (seconds).
MAX_AGE = 0.25


class Site:
    """The pages of one node's listener."""

    def __init__(self, info: Callable[[], dict[str, Any]], events: RecentEvents,
                 max_age: float = MAX_AGE) -> None:
        self._info = info
        self.events = events
        self.max_age = max_age
        self._files = {path: Page(200, kind, _read(name))
                       for path, (name, kind) in STATIC.items()}
        self._taken = -1e9
        self._now = 0.0
        self._snapshot: dict[str, Any] = {}
        self._pages: dict[str, Page] = {}
        #: How many times the node's info was read (a test bounds it).
        self.snapshots = 0

    def route(self, path: str) -> Page:
        """The answer to GET ``path``."""
        if path in self._files:
            return self._files[path]
        if path in ("/metrics", "/api/state"):
            return self._fresh(path)
        return text_page(404, f"404 Not Found: {path[:100]!r} is not a page here; try "
                              f"/metrics, / (the console) or /api/state")

    def _fresh(self, path: str) -> Page:
        """``path``'s page from a snapshot at most ``max_age`` old."""
        if time.monotonic() - self._taken > self.max_age:
            self._pages.clear()
            self._now, self._snapshot = time.time(), self._info()
            self._taken = time.monotonic()
            self.snapshots += 1
        page = self._pages.get(path)
        if page is None:
            page = self._pages[path] = self._render(path)
        return page

    def _render(self, path: str) -> Page:
        if path == "/metrics":
            return Page(200, CONTENT_TYPE, render_metrics(self._snapshot, self._now))
        state = console_state(self._snapshot, self._now, self.events.newest_first())
        return Page(200, "application/json",
                    json.dumps(state, separators=(",", ":"), allow_nan=False).encode())


def _read(name: str) -> bytes:
    return (resources.files("cocaine_prometheus") / "console" / name).read_bytes()
