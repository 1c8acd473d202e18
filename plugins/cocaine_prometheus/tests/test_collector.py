"""The collector and the console's JSON from info dicts shaped as ``cocaine info`` makes them
(the sections other plugins add, odd names)."""

from __future__ import annotations

import json
from typing import Any

from cocaine_prometheus.collector import render_metrics
from cocaine_prometheus.state import RecentEvents, console_state
from prometheus_client.parser import text_string_to_metric_families

ODD = 'we"b\\app\nx'


def _info(**app: Any) -> dict[str, Any]:
    return {"node": "n1", "version": "9.9", "uptime": 5.0, "rss-bytes": 1 << 20,
            "cpu-seconds": 0.5, "slaves": {"slaves": 1, "max-slaves": 8, "refused": 0},
            "store": {"uri": "files:///secret/store"}, "busy": {"x": "deploy"},
            "apps": {ODD: {"state": "broken", "broken": "boom " * 200, "pool": {"busy": 0},
                           "queue": {"depth": 2, "limit": 10},
                           "jobs": {"latency-ms": {"p50": 1.5, "p99": None}, "events": {
                               'ev"1': {"codes": {"200": 2, "503": 1, "499": 4},
                                        "seconds": {"buckets": [0.1, 1], "counts": [1, 2],
                                                    "sum": 0.3, "count": 2}}}},
                           "slaves": [{"pid": 4242}], **app}}}


def _families(info: dict[str, Any]) -> dict[str, Any]:
    text = render_metrics(info, 1000.0).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_labels_from_apps_come_back_as_they_were() -> None:
    families = _families(_info())
    (broken,) = [s for s in families["cocaine_app_state"].samples if s.value == 1]
    assert broken.labels == {"app": ODD, "state": "broken"}
    codes = {s.labels["code"]: s.value for s in families["cocaine_app_requests"].samples}
    assert codes == {"200": 2, "503": 1, "499": 4}
    assert {s.labels["event"] for s in families["cocaine_app_requests"].samples} == {'ev"1'}
    assert families["cocaine_node_start_time_seconds"].samples[0].value == 995.0


def test_cgroup_usage_and_limit_where_the_cgroups_plugin_gives_them() -> None:
    assert "cocaine_app_cgroup_memory_bytes" not in _families(_info())
    section = {"usage": {"memory-bytes": 5000, "memory-peak-bytes": 9000, "oom-kills": 1,
                         "pids": 3, "cpu-seconds": 1.25, "cpu-throttled-periods": 7},
               "limits": {"memory": {"memory.max": "64M"}}}
    families = _families(_info(cgroups=section))
    values = {name: families[name].samples[0].value for name in families
              if name.startswith("cocaine_app_cgroup_")}
    assert values == {"cocaine_app_cgroup_memory_bytes": 5000,
                      "cocaine_app_cgroup_memory_peak_bytes": 9000,
                      "cocaine_app_cgroup_memory_limit_bytes": 64 * 1024 * 1024,
                      "cocaine_app_cgroup_cpu_seconds": 1.25, "cocaine_app_cgroup_pids": 3,
                      "cocaine_app_cgroup_oom_kills": 1,
                      "cocaine_app_cgroup_cpu_throttled_periods": 7}
    assert families["cocaine_app_cgroup_cpu_seconds"].type == "counter"


def test_the_console_json_keeps_to_its_subset() -> None:
    events = RecentEvents(limit=3)
    for i in range(5):
        events.add("shop", "slave-ended", float(i), {"pid": 99, "why": "a secret text",
                                                     "reason": "crashed", "slave": "s1"})
    state = console_state(_info(), 1000.0, events.newest_first())
    (row,) = state["apps"]
    assert row["requests"] == 7 and row["errors"] == 1  # 503 is an error, 499 is not
    assert len(row["broken"]) <= 300
    assert [e["time"] for e in state["events"]] == [4.0, 3.0, 2.0]
    assert state["events"][0] == {"app": "shop", "topic": "slave-ended", "time": 4.0,
                                  "reason": "crashed"}
    text = json.dumps(state)
    for secret in ("/secret/store", "deploy", "4242", "a secret text", '"pid"'):
        assert secret not in text, secret
