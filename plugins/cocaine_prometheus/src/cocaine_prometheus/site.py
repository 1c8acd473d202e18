"""The listener's pages: ``/metrics``, the console (``/``, its script and style) and its JSON
(``/api/state``), all read from one snapshot of the node's info.

The node's info is read (on its loop) at most every ``max_age`` seconds, however many clients
ask, and each page is rendered from it once, in a thread of the listener's own: what a flood
of scrapes costs the node's loop is bounded by that, not by the number of requests, and a big
render does not hold the loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
        self._snapshot: tuple[float, float, dict[str, Any]] | None = None
        self._renders: dict[str, tuple[float, asyncio.Future[Page]]] = {}
        # Rendering runs here, off the node's loop: a big /metrics (many apps and events)
        # takes prometheus_client tens of milliseconds, which the loop must not wait out.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cocaine-metrics")
        #: How many times the node's info was read (a test bounds it).
        self.snapshots = 0

    async def route(self, path: str) -> Page:
        """The answer to GET ``path``."""
        if path in self._files:
            return self._files[path]
        if path in ("/metrics", "/api/state"):
            render = self._fresh(path)
            try:
                return await asyncio.shield(render)
            except asyncio.CancelledError:
                if not render.cancelled():
                    raise  # this request's own task was cancelled
                return text_page(503, "503 Service Unavailable: the node is stopping")
        return text_page(404, f"404 Not Found: {path[:100]!r} is not a page here; try "
                              f"/metrics, / (the console) or /api/state")

    def close(self) -> None:
        """Let the render thread go (a render under way finishes unheard)."""
        self._worker.shutdown(wait=False, cancel_futures=True)

    def _fresh(self, path: str) -> asyncio.Future[Page]:
        """``path``'s page, rendered from a reading of the node at most ``max_age`` old; one
        render per path at a time, which every request meanwhile shares."""
        now = time.monotonic()
        taken, render = self._renders.get(path, (0.0, None))
        if render is not None and (not render.done() or now - taken <= self.max_age):
            return render
        if self._snapshot is None or now - self._snapshot[0] > self.max_age:
            self._snapshot = (now, time.time(), self._info())  # on the loop: info() is
            self.snapshots += 1                                 # the node's to read
        _, wall, info = self._snapshot
        render = asyncio.get_running_loop().run_in_executor(self._worker, self._render, path,
                                                            info, wall)
        self._renders[path] = (now, render)
        return render

    def _render(self, path: str, info: dict[str, Any], now: float) -> Page:
        if path == "/metrics":
            return Page(200, CONTENT_TYPE, render_metrics(info, now))
        state = console_state(info, now, self.events.newest_first())
        return Page(200, "application/json",
                    json.dumps(state, separators=(",", ":"), allow_nan=False).encode())


def _read(name: str) -> bytes:
    return (resources.files("cocaine_prometheus") / "console" / name).read_bytes()
