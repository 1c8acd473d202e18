"""Scenario soak: sustained load against one node for a while, watching its memory and fds.

``cocaine run`` serves an app with 2 slaves (pool-limit 2, pool-min 2) to two closed-loop
native load generators at once: a 100-byte echo with 8 requests in flight, and a streaming
event (10 chunks of 1 KiB per answer) with 2 in flight. For 60 s (``--soak-seconds N``; 3 s
with ``--quick``), every second (a twelfth of a shorter run), the node's RSS and open fds, the
template's RSS and each slave's RSS and fds are read from ``/proc``.

Reported: requests served and errors by code; the node's RSS at the start and the end and its
slope (least squares over the samples after the first tenth of the run, in MiB per minute);
the same for the slaves' mean RSS; open fds at the start and end. A node that leaks a few
hundred bytes per request grows by megabytes a minute here.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any

from bench.loadgen import LoadResult, NativeLoad
from bench.nodes import CocaineRun, write_app
from bench.processes import rss_bytes
from bench.results import ScenarioResult
from bench.session import Bench
from cocaine_core.backends.process import node_processes

NAME = "soak"
TITLE = "Soak: memory and fds under sustained load"
MB = 1024 * 1024
#: Seconds of load, without ``--quick`` (``--soak-seconds`` sets it).
DEFAULT_SECONDS = 60.0
QUICK_SECONDS = 3.0
SECONDS_VARIABLE = "COCAINE_SOAK_SECONDS"
ECHO_INFLIGHT = 8
STREAM_INFLIGHT = 2

APP = """\
def echo(request):
    return request.data


def stream(request):
    chunk = b"s" * 1024
    for _ in range(10):
        yield chunk
"""


def seconds(bench: Bench) -> float:
    """How long the load lasts: ``--soak-seconds``, else 60 s (3 s with ``--quick``)."""
    given = os.environ.get(SECONDS_VARIABLE)
    if given:
        return float(given)
    return QUICK_SECONDS if bench.settings.quick else DEFAULT_SECONDS


def run(bench: Bench) -> ScenarioResult:
    """Load the node for the run's seconds, sampling memory and fds every second."""
    result = ScenarioResult(NAME, TITLE)
    duration = seconds(bench)
    folder = bench.subfolder("soak")
    manifest = write_app(folder, APP, {"echo": {"type": "native-server"},
                                       "stream": {"type": "native-server"}},
                         {"pool-limit": 2, "pool-min": 2, "queue-limit": 1000})
    node = CocaineRun(bench.group, manifest, name="soak").start()
    try:
        bench.say(f"  {duration:g} s of echo ({ECHO_INFLIGHT} in flight) and stream "
                  f"({STREAM_INFLIGHT} in flight)")
        sampler = Sampler(node.pid, interval=min(1.0, duration / 12))
        loads: dict[str, LoadResult] = {}
        threads = [threading.Thread(target=_load, args=(node.endpoint, event, inflight,
                                                        duration, loads), daemon=True)
                   for event, inflight in (("echo", ECHO_INFLIGHT), ("stream", STREAM_INFLIGHT))]
        with sampler:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(duration + 120)
        missing = [event for event in ("echo", "stream") if event not in loads]
        if missing:
            raise RuntimeError(f"the {', '.join(missing)} load did not finish: "
                               f"{loads.get('failure', '')}")
        pool = node.info("soak")["pool"]
    finally:
        node.stop()
    _report(result, duration, loads, sampler, pool)
    return result


def _load(endpoint: str, event: str, inflight: int, duration: float,
          out: dict[str, Any]) -> None:
    try:
        with NativeLoad(endpoint, app="soak", event=event) as load:
            out[event] = load.run(b"x" * 100, inflight, duration, check_echo=event == "echo",
                                  answer_timeout=60)
    except Exception as exc:  # said by run(): the load is missing
        out["failure"] = f"{event}: {type(exc).__name__}: {exc}"


class Sampler:
    """The node's RSS and fds, the template's RSS and the slaves' RSS and fds, every second
    from a thread; each sample is (seconds since start, values)."""

    def __init__(self, node_pid: int, interval: float = 1.0) -> None:
        self.node_pid = node_pid
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            sample = self.sample()
            if sample is not None:
                self.samples.append((time.monotonic() - self._started, sample))
            if self._stop.wait(self.interval):
                return

    def sample(self) -> dict[str, float] | None:
        """One reading (None if the node is gone)."""
        node_rss = rss_bytes(self.node_pid)
        if node_rss is None:
            return None
        processes = node_processes(self.node_pid)
        slaves = [pid for pid, parent in processes.items() if parent != self.node_pid]
        templates = [pid for pid, parent in processes.items() if parent == self.node_pid]
        slave_rss = [r for r in (rss_bytes(pid) for pid in slaves) if r is not None]
        return {"node_rss": node_rss, "node_fds": _fds(self.node_pid),
                "template_rss": sum(rss_bytes(pid) or 0 for pid in templates),
                "slaves": len(slave_rss),
                "slave_rss_mean": sum(slave_rss) / len(slave_rss) if slave_rss else 0.0,
                "slave_fds": sum(_fds(pid) for pid in slaves)}

    def series(self, key: str, skip: float = 0.1) -> list[tuple[float, float]]:
        """(seconds, value) of ``key``, without the first ``skip`` of the run (warm-up)
        when there are 10 samples or more."""
        if not self.samples:
            return []
        start = self.samples[-1][0] * skip if len(self.samples) >= 10 else 0.0
        return [(t, values[key]) for t, values in self.samples if t >= start]


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of ``points`` (seconds, value), per minute; None under 3."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def _report(result: ScenarioResult, duration: float, loads: dict[str, LoadResult],
            sampler: Sampler, pool: dict[str, Any]) -> None:
    errors: Counter[int] = Counter()
    for event in ("echo", "stream"):
        load = loads[event]
        result.figure(f"{event}: answers per second", "req/s").add(load.rate)
        errors.update(load.errors)
    served = sum(loads[event].done for event in ("echo", "stream"))
    answered = served + sum(errors.values()) + sum(loads[e].wrong for e in ("echo", "stream"))
    result.figure("requests served", "").add(served)
    error_share = result.figure("errors, % of answers", "%")
    error_share.add(100 * (answered - served) / max(1, answered))
    first = sampler.samples[0][1] if sampler.samples else {}
    last = sampler.samples[-1][1] if sampler.samples else {}
    for key, label in (("node_rss", "node RSS"), ("slave_rss_mean", "slave RSS (mean)"),
                       ("template_rss", "template RSS")):
        result.figure(f"{label}: start", "MB").add(first.get(key, 0) / MB or None)
        result.figure(f"{label}: end", "MB").add(last.get(key, 0) / MB or None)
        slope = slope_per_minute([(t, v / MB) for t, v in sampler.series(key)])
        figure = result.figure(f"{label}: growth per minute", "MB/min")
        figure.add(slope)
    for key, label in (("node_fds", "node open fds"), ("slave_fds", "slaves' open fds")):
        result.figure(f"{label}: start", "").add(first.get(key))
        result.figure(f"{label}: end", "").add(last.get(key))
    node_slope = slope_per_minute([(t, v / MB) for t, v in sampler.series("node_rss")])
    result.details.update({
        "seconds": duration, "echo_inflight": ECHO_INFLIGHT, "stream_inflight": STREAM_INFLIGHT,
        "errors": {str(code): n for code, n in errors.items()},
        "wrong": {e: loads[e].wrong for e in ("echo", "stream")},
        "pool_after": pool,
        "samples": [{"t": round(t, 2), **values} for t, values in sampler.samples]})
    if errors:
        result.tables.append(("soak: errors by code", ["code", "count"],
                              [[str(code), str(n)] for code, n in sorted(errors.items())]))
    if duration >= 30:  # a slope over a few seconds says nothing
        result.target("node RSS growth under sustained load", node_slope, "<= 1", "MB/min")
    result.target("soak: errors, % of answers", error_share.median, "<= 0", "%")

