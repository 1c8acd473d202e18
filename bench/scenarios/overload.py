"""Scenario 6, overload: 10x queue-limit offered for 10 s (1 s with ``--quick``), twice.

The app has 2 warm slaves whose handler takes 10 ms (so they serve about 200 requests a
second) and queue-limit 100. Two phases, each for the whole duration:

1. **closed loop, 1,000 in flight** (10x queue-limit): every answer sends the next request at
   once. 100 requests wait in the queue, 2 run, and the rest are refused with 503 "queue is
   full", each refusal bringing a new request at once. So the node is flooded: a request
   waits behind hundreds of others in the node's socket before the node reads it, and the
   time to its 503 is the node's cost per refusal times the requests ahead of it.
2. **paced, 2,000 requests a second** (10x what the slaves serve), sent on a clock whatever
   the answers, at most 1,000 out: the time to a 503 when the node is overloaded but not
   flooded, i.e. the refusal path itself.

Measured in each: the time from sending a request to its 503 (p50, p99), the rate of 503s,
and the node's RSS before, at its peak (sampled every 50 ms) and after.
"""

from __future__ import annotations

import time
from typing import Any

from bench.loadgen import LoadResult, NativeLoad
from bench.nodes import CocaineRun, write_app
from bench.processes import RssSampler, rss_bytes
from bench.results import ScenarioResult, percentile
from bench.session import Bench

NAME = "overload"
TITLE = "Overload: 10x queue-limit offered"
QUEUE_LIMIT = 100
JOB_SECONDS = 0.01
SLAVES = 2
MB = 1024 * 1024

APP = f"""\
import time


def echo(request):
    time.sleep({JOB_SECONDS})
    return request.data
"""


def run(bench: Bench) -> ScenarioResult:
    """Offer 10x queue-limit, closed loop then paced, for ``settings.overload_seconds`` each."""
    result = ScenarioResult(NAME, TITLE)
    seconds = bench.settings.overload_seconds
    manifest = write_app(bench.subfolder("overload"), APP, {"echo": {"type": "native-server"}},
                         {"pool-limit": SLAVES, "pool-min": SLAVES, "queue-limit": QUEUE_LIMIT})
    node = CocaineRun(bench.group, manifest, name="overload").start()
    inflight = 10 * QUEUE_LIMIT
    rate = 10 * SLAVES / JOB_SECONDS
    phases: dict[str, Any] = {}
    try:
        before = rss_bytes(node.pid)
        with NativeLoad(node.endpoint, app="overload") as load:
            with RssSampler(node.pid) as sampler:
                closed = load.run(b"x" * 100, inflight, seconds, warmup=0.0)
            phases["closed"] = (closed, sampler.peak)
            time.sleep(0.5)
            with RssSampler(node.pid) as sampler:
                paced = load.run_paced(b"x" * 100, rate, seconds, inflight)
            phases["paced"] = (paced, sampler.peak)
        time.sleep(0.5)
        after = rss_bytes(node.pid)
        jobs = node.info("overload")["jobs"]
    finally:
        node.stop()
    labels = {"closed": f"{inflight:,} in flight", "paced": f"paced {rate:,.0f}/s"}
    p99s: dict[str, float | None] = {}
    for phase, (measured, peak) in phases.items():
        p99s[phase] = _phase(result, labels[phase], measured, peak)
        result.details[phase] = {
            "refused": measured.errors.get(503, 0), "served": measured.done,
            "other_errors": {c: n for c, n in measured.errors.items() if c != 503},
            "held_back": measured.held_back}
    result.figure("node RSS before", "MB").add(_mb(before))
    result.figure("node RSS after", "MB").add(_mb(after))
    result.details.update({"inflight": inflight, "paced_rate": rate, "seconds": seconds,
                           "queue_limit": QUEUE_LIMIT, "engine_jobs": jobs})
    result.target(f"503 p99, {labels['closed']} (closed loop)", p99s["closed"], "< 5", "ms")
    result.target(f"503 p99, {labels['paced']} (open loop)", p99s["paced"], "< 5", "ms")
    return result


def _phase(result: ScenarioResult, label: str, measured: LoadResult,
           peak: int | None) -> float | None:
    refused = list(measured.error_latencies)
    if not measured.errors.get(503):
        raise RuntimeError(f"{label}: no 503 under overload: errors {dict(measured.errors)}")
    p99 = _ms(percentile(refused, 99))
    result.figure(f"{label}: time to 503, p50", "ms").add(_ms(percentile(refused, 50)))
    result.figure(f"{label}: time to 503, p99", "ms").add(p99)
    result.figure(f"{label}: 503s per second", "req/s").add(measured.errors[503] /
                                                            measured.seconds)
    result.figure(f"{label}: served per second", "req/s").add(measured.rate)
    result.figure(f"{label}: node RSS peak", "MB").add(_mb(peak))
    result.samples[f"time to 503, {label}"] = refused
    return p99


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def _mb(value: float | None) -> float | None:
    return None if value is None else round(value / MB, 2)
