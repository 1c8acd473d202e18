"""Scenario 4a, recurring-timer: a tick every 100 ms, how late each handler starts, and drift.

The app's ``tick`` handler writes, for every tick, the tick number, its scheduled time (the
driver's meta: the fixed grid ``origin + n * interval``), when the driver fired it, and when the
handler started (``time.time()``) to a file. From those:

- **jitter**: handler start - scheduled time, per tick (p50, p99): the timer's own lateness
  plus the dispatch to a slave;
- **total drift**: how much later the handlers start at the end of the run than at its
  start, on a grid drawn from the first handler's start (the median of the last tenth of the
  ticks minus that of the first tenth, so one late tick is jitter, not drift). It uses the
  handlers' clocks only, so a timer that slips a little each tick shows here even if its
  meta says otherwise.

The first tick is dropped (it can meet the app's start-up). Skipped, with the reason, when no
installed plugin registers ``recurring-timer`` (``cocaine plugins --json``).
"""

from __future__ import annotations

import statistics
import time

from bench.nodes import CocaineRun, installed_drivers, write_app
from bench.results import ScenarioResult, percentile, skipped
from bench.session import Bench

NAME = "timer"
TITLE = "recurring-timer: jitter and drift"

APP = """\
import time

LOG = {log!r}


def tick(request):
    started = time.time()
    meta = request.meta
    with open(LOG, "a") as f:
        f.write(f"{{meta.get('tick')}} {{meta.get('scheduled')!r}} {{meta.get('fired')!r}} "
                f"{{started!r}}\\n")
"""


def run(bench: Bench) -> ScenarioResult:
    """Run the timer for ``settings.timer_ticks`` ticks and measure."""
    if "recurring-timer" not in installed_drivers():
        return skipped(NAME, TITLE, "skipped: recurring-timer not installed")
    settings = bench.settings
    result = ScenarioResult(NAME, TITLE)
    interval = settings.timer_interval_ms / 1000
    folder = bench.subfolder("timer")
    log = folder / "ticks.log"
    log.write_text("")
    manifest = write_app(folder / "app", APP.format(log=str(log)),
                         {"tick": {"type": "recurring-timer",
                                   "interval": settings.timer_interval_ms}},
                         {"pool-limit": 2, "pool-min": 1})
    node = CocaineRun(bench.group, manifest, name="timer")
    wanted = settings.timer_ticks + 1
    bench.say(f"  {wanted} ticks at {settings.timer_interval_ms} ms "
              f"({wanted * interval:.0f} s)")
    node.start(event=None)
    try:
        deadline = time.monotonic() + wanted * interval + 30
        while _count(log) < wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {_count(log)} of {wanted} ticks reached the handler")
            time.sleep(min(1.0, interval))
        info = node.info("timer")
    finally:
        node.stop()
    rows = sorted(_rows(log))[1:wanted]
    late = [(started - scheduled) * 1000 for _, scheduled, _, started in rows]
    fired = [(fired - scheduled) * 1000 for _, scheduled, fired, _ in rows]
    # Drift: how much later the last ticks run than the first, against a grid drawn from the
    # first handler's own start; medians of a tenth of the ticks at each end, so that one
    # late tick (jitter) is not taken for drift.
    origin_tick, origin = rows[0][0], rows[0][3]
    lag = [(started - origin - (tick - origin_tick) * interval) * 1000
           for tick, _, _, started in rows]
    window = max(3, min(30, len(lag) // 10))
    drift = statistics.median(lag[-window:]) - statistics.median(lag[:window])
    p50, p99 = result.figure("jitter p50 (handler start - scheduled)", "ms"), \
        result.figure("jitter p99 (handler start - scheduled)", "ms")
    p50.add(percentile(late, 50))
    p99.add(percentile(late, 99))
    result.figure("driver fired - scheduled, p99", "ms").add(percentile(fired, 99))
    result.figure("total drift over the run", "ms").add(drift)
    ticks = [row[0] for row in rows]
    result.details.update({
        "ticks": len(rows), "interval_ms": settings.timer_interval_ms,
        "missing_ticks": (ticks[-1] - ticks[0] + 1) - len(set(ticks)),
        "max_late_ms": round(max(late), 3), "task_info": info.get("tasks", {}).get("tick"),
    })
    result.samples["recurring-timer: handler start - scheduled"] = [v / 1000 for v in late]
    result.target("timer jitter p99", p99.median, "< 5", "ms")
    result.target("timer total drift, absolute", abs(drift), "< 5", "ms")
    return result


def _count(log: object) -> int:
    with open(str(log), "rb") as f:
        return f.read().count(b"\n")


def _rows(log: object) -> list[tuple[int, float, float, float]]:
    rows = []
    with open(str(log)) as f:
        for line in f:
            tick, scheduled, fired, started = line.split()
            rows.append((int(tick), float(scheduled), float(fired), float(started)))
    return rows
