"""The node's metrics in the Prometheus text format, built from one ``cocaine info`` dict.

Nothing is counted here: every number is read from the info the node computes (its counters
only grow while an app runs; a redeployed or restarted app starts them anew, which Prometheus
takes as a counter reset). A scrape costs one ``info()`` and one pass over it.

Names follow Prometheus' conventions: ``cocaine_`` prefix, base units (seconds, bytes),
``_total`` on counters, snake_case; labels from apps (``app``, ``event``) are passed as they
are (``prometheus_client`` escapes them).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

#: The states an app may be in (``cocaine_app_state`` has a series for each, 1 for the current).
APP_STATES = ("starting", "running", "broken", "stopping", "stopped")
#: The slave states ``cocaine_app_slaves`` counts, from info's ``pool``.
SLAVE_STATES = ("busy", "idle", "starting", "spare")
#: The content type of the text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render_metrics(info: Mapping[str, Any], now: float) -> bytes:
    """The text format of every metric in ``info`` (``now``: the unix time it was taken)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(InfoCollector(info, now))
    return generate_latest(registry)


class InfoCollector:
    """A ``prometheus_client`` collector of one info dict (``collect`` is all it has)."""

    def __init__(self, info: Mapping[str, Any], now: float) -> None:
        self.info = info
        self.now = now

    def collect(self) -> Iterator[Metric]:
        """Every metric family: the node's, then the apps'."""
        yield from node_metrics(self.info, self.now)
        yield from app_metrics(_mapping(self.info.get("apps")), self.now)


def node_metrics(info: Mapping[str, Any], now: float) -> Iterator[Metric]:
    """The node's own: build, uptime, memory, CPU, slaves."""
    build = GaugeMetricFamily("cocaine_build_info", "The cocaine version the node runs "
                              "(always 1).", labels=["version"])
    build.add_metric([str(info.get("version", ""))], 1)
    yield build
    node = GaugeMetricFamily("cocaine_node_info", "The node's name (always 1).",
                             labels=["node"])
    node.add_metric([str(info.get("node", ""))], 1)
    yield node
    uptime = _number(info.get("uptime"))
    if uptime is not None:
        yield GaugeMetricFamily("cocaine_node_start_time_seconds", "When the node started, "
                                "in seconds since the Unix epoch.", value=round(now - uptime, 3))
        yield GaugeMetricFamily("cocaine_node_uptime_seconds", "How long the node has run.",
                                value=uptime)
    rss = _number(info.get("rss-bytes"))
    if rss is not None:
        yield GaugeMetricFamily("cocaine_node_resident_memory_bytes", "The node process's "
                                "resident memory (its slaves not included).", value=rss)
    cpu = _number(info.get("cpu-seconds"))
    if cpu is not None:
        yield CounterMetricFamily("cocaine_node_cpu_seconds", "CPU time (user and system) "
                                  "the node process has used (its slaves not included).",
                                  value=cpu)
    requests = _number(info.get("requests"))
    if requests is not None:
        yield CounterMetricFamily("cocaine_node_requests", "Requests the node has received "
                                  "from clients, of every app.", value=requests)
    slaves = _mapping(info.get("slaves"))
    for key, name, text in (("slaves", "cocaine_node_slaves", "Slave processes of every app "
                                                                "the node runs now."),
                            ("max-slaves", "cocaine_node_slaves_limit",
                             "The most slaves the node runs at once (--max-slaves).")):
        value = _number(slaves.get(key))
        if value is not None:
            yield GaugeMetricFamily(name, text, value=value)
    refused = _number(slaves.get("refused"))
    if refused is not None:
        yield CounterMetricFamily("cocaine_node_slave_spawns_refused", "Slaves not started "
                                  "because the node ran its most (--max-slaves).", value=refused)


def app_metrics(apps: Mapping[str, Any], now: float) -> Iterator[Metric]:
    """Every app's jobs, queue, pool, restarts, state and (if known) cgroup usage."""
    families = _AppFamilies()
    for name, raw in apps.items():
        app = _mapping(raw)
        families.add(str(name), app, now)
    yield from families.all()


class _AppFamilies:
    """The app-labelled families, filled app by app."""

    def __init__(self) -> None:
        self.requests = CounterMetricFamily(
            "cocaine_app_requests", "Requests (jobs) that ended, by app, event and code: 200 "
            "done, the handler's error code when it failed, 504 timed out, 503 refused, "
            "520 expired before it could start, 499 abandoned (the client left).",
            labels=["app", "event", "code"])
        self.latency = HistogramMetricFamily(
            "cocaine_app_request_duration_seconds", "How long jobs that ran took, from their "
            "arrival to their end, by app and event.", labels=["app", "event"])
        self.retried = CounterMetricFamily(
            "cocaine_app_requests_retried", "Jobs run again after their slave died before "
            "answering.", labels=["app"])
        self.queue = GaugeMetricFamily("cocaine_app_queue_depth", "Jobs waiting for a slave.",
                                       labels=["app"])
        self.queue_limit = GaugeMetricFamily("cocaine_app_queue_limit", "The most jobs that may "
                                             "wait (engine.queue-limit).", labels=["app"])
        self.slaves = GaugeMetricFamily("cocaine_app_slaves", "The app's slaves by state: "
                                        "busy, idle, starting, spare.", labels=["app", "state"])
        self.slaves_limit = GaugeMetricFamily("cocaine_app_slaves_limit", "The most slaves the "
                                              "app runs (engine.pool-limit).", labels=["app"])
        self.spawns = CounterMetricFamily("cocaine_app_slave_spawns", "Slaves started.",
                                          labels=["app"])
        self.restarts = CounterMetricFamily(
            "cocaine_app_slave_restarts", "Slaves that ended and were replaced, by reason: "
            "crashed, failed-start, hung, timeout, memory, max-requests, reload, template-died, "
            "misbehaved.", labels=["app", "reason"])
        self.state = GaugeMetricFamily("cocaine_app_state", "1 for the app's current state, 0 "
                                       "for the others.", labels=["app", "state"])
        self.start_time = GaugeMetricFamily("cocaine_app_start_time_seconds", "When this "
                                            "version of the app started, in seconds since the "
                                            "Unix epoch.", labels=["app"])
        self.cgroup = _CgroupFamilies()

    def add(self, name: str, app: Mapping[str, Any], now: float) -> None:
        """Add one app's series."""
        jobs = _mapping(app.get("jobs"))
        for event, raw in _mapping(jobs.get("events")).items():
            counts = _mapping(raw)
            for code, n in _mapping(counts.get("codes")).items():
                if (value := _number(n)) is not None:
                    self.requests.add_metric([name, str(event), str(code)], value)
            self._histogram(name, str(event), _mapping(counts.get("seconds")))
        _add(self.retried, [name], jobs.get("retried"))
        queue = _mapping(app.get("queue"))
        _add(self.queue, [name], queue.get("depth"))
        _add(self.queue_limit, [name], queue.get("limit"))
        pool = _mapping(app.get("pool"))
        for state in SLAVE_STATES:
            _add(self.slaves, [name, state], pool.get(state))
        _add(self.slaves_limit, [name], pool.get("limit"))
        _add(self.spawns, [name], app.get("spawns"))
        for reason, n in _mapping(app.get("restarts")).items():
            _add(self.restarts, [name, str(reason)], n)
        current = str(app.get("state", ""))
        for state in (*APP_STATES, *([current] if current not in APP_STATES else [])):
            self.state.add_metric([name, state], 1 if state == current else 0)
        uptime = _number(app.get("uptime"))
        if uptime is not None:
            self.start_time.add_metric([name], round(now - uptime, 3))
        self.cgroup.add(name, _mapping(app.get("cgroups")))

    def _histogram(self, app: str, event: str, seconds: Mapping[str, Any]) -> None:
        bounds, counts = seconds.get("buckets"), seconds.get("counts")
        count, total = _number(seconds.get("count")), _number(seconds.get("sum"))
        if (not isinstance(bounds, list) or not isinstance(counts, list)
                or len(bounds) != len(counts) or count is None or total is None):
            return
        buckets = [(_bound(b), float(c)) for b, c in zip(bounds, counts, strict=True)
                   if _number(b) is not None and _number(c) is not None]
        self.latency.add_metric([app, event], [*buckets, ("+Inf", count)], total)

    def all(self) -> Iterator[Metric]:
        """The families, the empty ones too (a scrape always names every metric)."""
        yield from (self.requests, self.latency, self.retried, self.queue, self.queue_limit,
                    self.slaves, self.slaves_limit, self.spawns, self.restarts, self.state,
                    self.start_time)
        yield from self.cgroup.all()


class _CgroupFamilies:
    """Usage of the app's cgroup, where the cgroups plugin's info section gives it."""

    def __init__(self) -> None:
        self.memory = GaugeMetricFamily("cocaine_app_cgroup_memory_bytes", "Memory the app's "
                                        "cgroup uses now (every slave and the template).",
                                        labels=["app"])
        self.peak = GaugeMetricFamily("cocaine_app_cgroup_memory_peak_bytes", "The most memory "
                                      "the app's cgroup has used.", labels=["app"])
        self.limit = GaugeMetricFamily("cocaine_app_cgroup_memory_limit_bytes", "The app's "
                                       "memory limit (engine.resource-limits), if it has one.",
                                       labels=["app"])
        self.cpu = CounterMetricFamily("cocaine_app_cgroup_cpu_seconds", "CPU time the app's "
                                       "cgroup has used.", labels=["app"])
        self.pids = GaugeMetricFamily("cocaine_app_cgroup_pids", "Processes in the app's "
                                      "cgroup.", labels=["app"])
        self.oom = CounterMetricFamily("cocaine_app_cgroup_oom_kills", "Processes the kernel "
                                       "killed at the app's memory limit.", labels=["app"])
        self.throttled = CounterMetricFamily("cocaine_app_cgroup_cpu_throttled_periods",
                                             "CPU periods in which the app's cgroup was held "
                                             "at its CPU limit.", labels=["app"])

    def add(self, app: str, section: Mapping[str, Any]) -> None:
        """Add one app's usage (nothing if it has no cgroup section)."""
        usage = _mapping(section.get("usage"))
        _add(self.memory, [app], usage.get("memory-bytes"))
        _add(self.peak, [app], usage.get("memory-peak-bytes"))
        _add(self.cpu, [app], usage.get("cpu-seconds"))
        _add(self.pids, [app], usage.get("pids"))
        _add(self.oom, [app], usage.get("oom-kills"))
        _add(self.throttled, [app], usage.get("cpu-throttled-periods"))
        _add(self.limit, [app], memory_limit(_mapping(section.get("limits"))))

    def all(self) -> Iterator[Metric]:
        """The families with at least one app (none without the cgroups plugin)."""
        yield from (f for f in (self.memory, self.peak, self.limit, self.cpu, self.pids,
                                self.oom, self.throttled) if f.samples)


def memory_limit(limits: Mapping[str, Any]) -> int | None:
    """The memory limit in bytes of an ``engine.resource-limits`` table, if it sets one."""
    memory = _mapping(limits.get("memory"))
    value = memory.get("memory.max", memory.get("memory.limit_in_bytes"))
    if value is None:
        return None
    try:  # the cgroups plugin owns the spelling ("64M", 67108864, "max")
        from cocaine_cgroups.value_kinds import memory_bytes
    except ImportError:
        return None
    try:
        return memory_bytes(value)
    except Exception:  # checked at deploy; a value this cannot read is simply not shown
        return None


def _add(family: GaugeMetricFamily | CounterMetricFamily, labels: list[str], value: Any) -> None:
    if (number := _number(value)) is not None:
        family.add_metric(labels, number)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _bound(value: Any) -> str:
    return floatToGoString(float(value))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
