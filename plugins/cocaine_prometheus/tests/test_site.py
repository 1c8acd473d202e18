"""The listener's pages under load, in this process: a flood of scrapes reads the node's info
a bounded number of times, and a big render does not hold the loop that serves the rest."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import httpx
from cocaine_prometheus.exporter import Exporter
from cocaine_prometheus.site import Site
from cocaine_prometheus.state import RecentEvents


def _info(apps: int = 1, events: int = 1) -> dict[str, Any]:
    histogram = {"buckets": [0.001, 0.01, 0.1, 1.0, 10.0], "counts": [1, 2, 3, 4, 5],
                 "sum": 12.5, "count": 5}
    return {"node": "n1", "version": "9.9", "uptime": 5.0,
            "apps": {f"app{a}": {"state": "running", "queue": {"depth": 0, "limit": 10},
                                 "jobs": {"events": {f"event{e}": {
                                     "codes": {"200": 5, "502": 1}, "seconds": histogram}
                                     for e in range(events)}}}
                     for a in range(apps)}}


def test_a_flood_of_scrapes_reads_the_node_info_a_bounded_number_of_times() -> None:
    calls = []

    def info() -> dict[str, Any]:
        calls.append(1)
        return _info()

    async def flood() -> None:
        site = Site(info, RecentEvents(), max_age=60)
        try:
            pages = await asyncio.gather(*(site.route(path) for _ in range(200)
                                           for path in ("/metrics", "/api/state")))
            assert all(page.status == 200 for page in pages)
            assert (await site.route("/nope")).status == 404
        finally:
            site.close()

    asyncio.run(flood())
    assert len(calls) == 1


def test_a_big_render_does_not_hold_the_loop() -> None:
    big = _info(apps=16, events=256)  # ~4000 histograms: a render of most of a second

    async def scenario() -> tuple[list[float], tuple[float, float]]:
        exporter = Exporter("127.0.0.1:0", lambda: big)
        renders: list[tuple[float, float]] = []
        render = exporter.site._render

        def timed(*args: Any) -> Any:  # when the render ran, to compare with the ticks
            began = time.monotonic()
            try:
                return render(*args)
            finally:
                renders.append((began, time.monotonic()))

        exporter.site._render = timed  # type: ignore[method-assign]
        await exporter.start()
        host, port = exporter.listener.sockname
        try:
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=60,
                                         trust_env=False) as http:
                scrape = asyncio.ensure_future(http.get("/metrics"))
                ticks = []
                while not scrape.done():  # the loop keeps turning meanwhile
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.005)
                response = await scrape
                assert response.status_code == 200 and len(response.content) > 1_000_000
                assert (await http.get("/console.css")).status_code == 200
                return ticks, renders[0]
        finally:
            await exporter.close()

    ticks, (began, ended) = asyncio.run(scenario())
    # The longest the loop stood still while the page rendered: a render on the loop holds it
    # for the whole render; in its thread, the loop gets the interpreter every few ms (a busy
    # machine stretches that, never to half a render).
    around = [t for t in ticks if began - 0.05 <= t <= ended + 0.05]
    gaps = [later - earlier for earlier, later in itertools.pairwise(around)]
    assert gaps and max(gaps) < (ended - began) / 2, (
        f"the loop stood still {max(gaps, default=0):.3f} s while /metrics rendered for "
        f"{ended - began:.3f} s")


def test_a_listener_beyond_loopback_is_warned_about(caplog) -> None:
    async def bind(address: str) -> None:
        exporter = Exporter(address, lambda: _info())
        await exporter.start()  # for an instant: nothing is sent, nothing waits for clients
        await exporter.close()

    with caplog.at_level(logging.INFO, logger="cocaine.prometheus"):
        asyncio.run(bind("127.0.0.1:0"))
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert "(port 0: took " in caplog.text
        asyncio.run(bind("0.0.0.0:0"))
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "no authentication" in warning and "127.0.0.1" in warning
    assert "reverse proxy" in warning
