"""The listener's pages: ``/metrics``, the console (``/``, its script and style) and its JSON
(``/api/state``), all read from one snapshot of the node's info.

Freshness: a page is rendered (in a thread of the listener's own, off the node's loop) from a
reading of the node's info (on its loop), and then served to every request for
``max(max_age, COST_FACTOR * cost)`` seconds from the end of that render, where ``cost`` is
what the reading and the render took; one render per page at a time, shared by every request
that arrives meanwhile. A reading is reused for as long. So however many clients scrape, the
listener spends at most about 1/``COST_FACTOR`` of the time on readings and renders (and the
GIL they hold), and a cheap page is at most ``max_age`` old.
"""

from __future__ import annotations

import asyncio
import json
import math
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
#: How long a cheap page (and the reading of the node's info it came from) is served (seconds).
MAX_AGE = 0.25
#: A page costlier than MAX_AGE / COST_FACTOR is served COST_FACTOR times as long as it took.
COST_FACTOR = 10.0


class Site:
    """The pages of one node's listener."""

    def __init__(self, info: Callable[[], dict[str, Any]], events: RecentEvents,
                 max_age: float = MAX_AGE) -> None:
        self._info = info
        self.events = events
        self.max_age = max_age
        self._files = {path: Page(200, kind, _read(name))
                       for path, (name, kind) in STATIC.items()}
        # (fresh until (monotonic), taken at (unix), what it took (s), the info)
        self._snapshot: tuple[float, float, float, dict[str, Any]] | None = None
        # path -> (fresh until (monotonic; inf while it renders), the render)
        self._renders: dict[str, tuple[float, asyncio.Future[tuple[Page, float]]]] = {}
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
                return (await asyncio.shield(render))[0]
            except asyncio.CancelledError:
                if not render.cancelled():
                    raise  # this request's own task was cancelled
                return text_page(503, "503 Service Unavailable: the node is stopping")
        return text_page(404, f"404 Not Found: {path[:100]!r} is not a page here; try "
                              f"/metrics, / (the console) or /api/state")

    def close(self) -> None:
        """Let the render thread go (a render under way finishes unheard)."""
        self._worker.shutdown(wait=False, cancel_futures=True)

    def _fresh(self, path: str) -> asyncio.Future[tuple[Page, float]]:
        """``path``'s page: the last one while it is fresh (see the module's docstring), else
        a new render, which every request meanwhile shares."""
        now = time.monotonic()
        fresh_until, render = self._renders.get(path, (0.0, None))
        if render is not None and now < fresh_until:
            return render
        if self._snapshot is None or now >= self._snapshot[0]:
            began = time.monotonic()
            info = self._info()  # on the loop: info() is the node's to read
            took = time.monotonic() - began
            self.snapshots += 1
            self._snapshot = (began + max(self.max_age, COST_FACTOR * took), time.time(),
                              took, info)
        _, wall, took, info = self._snapshot
        render = asyncio.get_running_loop().run_in_executor(self._worker, self._timed, path,
                                                            info, wall)
        self._renders[path] = (math.inf, render)

        def rendered(done: asyncio.Future[tuple[Page, float]]) -> None:
            if self._renders.get(path, (0.0, None))[1] is not done:
                return
            if done.cancelled() or done.exception() is not None:
                self._renders.pop(path)  # the next request tries again
                return
            cost = took + done.result()[1]
            self._renders[path] = (time.monotonic() + max(self.max_age, COST_FACTOR * cost),
                                   done)

        render.add_done_callback(rendered)
        return render

    def _timed(self, path: str, info: dict[str, Any], now: float) -> tuple[Page, float]:
        began = time.monotonic()
        page = self._render(path, info, now)
        return page, time.monotonic() - began

    def _render(self, path: str, info: dict[str, Any], now: float) -> Page:
        if path == "/metrics":
            return Page(200, CONTENT_TYPE, render_metrics(info, now))
        state = console_state(info, now, self.events.newest_first())
        return Page(200, "application/json",
                    json.dumps(state, separators=(",", ":"), allow_nan=False).encode())


def _read(name: str) -> bytes:
    return (resources.files("cocaine_prometheus") / "console" / name).read_bytes()
