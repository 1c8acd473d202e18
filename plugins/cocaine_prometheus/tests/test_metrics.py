"""``/metrics`` of a real node with a real app, parsed by ``prometheus_client``'s parser."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from cocaine_core import __version__
from cocaine_core.errors import ServiceError
from cocaine_core.testing import process_gone, wait_until


def _calls(served, echo: int = 0, fail: int = 0) -> None:
    with served.node.client() as client:
        for i in range(echo):
            assert client.call("shop", "echo", f"hi {i}".encode()) == f"hi {i}".encode()
        for _ in range(fail):
            with pytest.raises(ServiceError) as caught:
                client.call("shop", "fail", b"")
            assert caught.value.code == 502  # the handler raised


def test_requests_are_counted_by_app_event_and_code(metrics_node, app_folder: Path) -> None:
    metrics_node.deploy("shop", app_folder)
    _calls(metrics_node, echo=3, fail=2)
    families = metrics_node.scrape()
    requests = {(s.labels["app"], s.labels["event"], s.labels["code"]): s.value
                for s in families["cocaine_app_requests"] if s.name.endswith("_total")}
    assert requests[("shop", "echo", "200")] == 3
    assert requests[("shop", "fail", "502")] == 2
    assert ("shop", "echo", "502") not in requests
    # More calls move the counters on: each scrape reads the node anew (pages share one
    # reading of the node for at most 0.25 s).
    _calls(metrics_node, echo=1)
    wait_until(lambda: metrics_node.value("cocaine_app_requests", "cocaine_app_requests_total",
                                          app="shop", event="echo", code="200") == 4,
               timeout=2, message="the fourth call in /metrics")


def test_latency_histograms_are_cumulative_and_match_their_count(metrics_node,
                                                                 app_folder: Path) -> None:
    metrics_node.deploy("shop", app_folder)
    _calls(metrics_node, echo=5, fail=1)
    with metrics_node.node.client() as client:
        assert client.call("shop", "slow", b"0.3") == b"slept"
    samples = metrics_node.scrape()["cocaine_app_request_duration_seconds"]
    for event, ran in (("echo", 5), ("fail", 1), ("slow", 1)):
        mine = [s for s in samples if s.labels.get("event") == event
                and s.labels.get("app") == "shop"]
        buckets = [(float(s.labels["le"]), s.value) for s in mine
                   if s.name.endswith("_bucket")]
        count = next(s.value for s in mine if s.name.endswith("_count"))
        total = next(s.value for s in mine if s.name.endswith("_sum"))
        bounds = [b for b, _ in buckets]
        assert bounds == sorted(bounds) and bounds[-1] == float("inf"), bounds
        values = [v for _, v in buckets]
        assert values == sorted(values), f"{event}: buckets not cumulative: {buckets}"
        assert values[-1] == count == ran
        assert total > 0
    slow = {float(s.labels["le"]): s.value for s in samples
            if s.labels.get("event") == "slow" and s.name.endswith("_bucket")}
    assert slow[0.25] == 0 and slow[0.5] == 1  # the 0.3 s job lands where it belongs


def test_queue_slaves_state_and_node_gauges(metrics_node, app_folder: Path) -> None:
    metrics_node.deploy("shop", app_folder, engine={"pool-limit": 3, "queue-limit": 50})
    _calls(metrics_node, echo=1)
    families = metrics_node.scrape()

    def one(family: str, **labels: str) -> float:
        found = [s.value for s in families[family]
                 if all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) == 1, f"{family} {labels}: {found}"
        return found[0]

    assert one("cocaine_app_queue_depth", app="shop") == 0
    assert one("cocaine_app_queue_limit", app="shop") == 50
    assert one("cocaine_app_slaves_limit", app="shop") == 3
    slaves = {s.labels["state"]: s.value for s in families["cocaine_app_slaves"]
              if s.labels["app"] == "shop"}
    assert set(slaves) == {"busy", "idle", "starting", "spare"}
    assert slaves["idle"] + slaves["busy"] >= 1  # it just served a call
    states = {s.labels["state"]: s.value for s in families["cocaine_app_state"]
              if s.labels["app"] == "shop"}
    assert states["running"] == 1 and sum(states.values()) == 1
    assert one("cocaine_build_info", version=__version__) == 1
    assert one("cocaine_node_resident_memory_bytes") > 10 * 1024 * 1024
    assert one("cocaine_node_cpu_seconds") > 0
    assert one("cocaine_node_uptime_seconds") > 0
    assert abs(one("cocaine_node_start_time_seconds") - time.time()) < 600
    assert one("cocaine_node_slaves") >= 1
    assert one("cocaine_node_slaves_limit") >= 1
    assert one("cocaine_app_slave_spawns", app="shop") >= 1


def test_a_slave_killed_is_counted_as_a_crash_restart(metrics_node, app_folder: Path) -> None:
    metrics_node.deploy("shop", app_folder)
    _calls(metrics_node, echo=1)
    assert not [s for s in metrics_node.scrape().get("cocaine_app_slave_restarts", [])
                if s.labels.get("app") == "shop" and s.value > 0]
    pid = next(s["pid"] for s in metrics_node.info()["apps"]["shop"]["slaves"] if s["pid"])
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: process_gone(pid), timeout=10, message="the slave to die")
    wait_until(lambda: metrics_node.value("cocaine_app_slave_restarts",
                                          "cocaine_app_slave_restarts_total",
                                          app="shop", reason="crashed") == 1,
               timeout=20, message="the crash counted in cocaine_app_slave_restarts_total")
    _calls(metrics_node, echo=1)  # and the app serves on


def test_apps_are_labelled_apart_and_removed_apps_disappear(metrics_node,
                                                           app_folder: Path) -> None:
    metrics_node.deploy("shop", app_folder)
    metrics_node.deploy("cart", app_folder)
    with metrics_node.node.client() as client:
        client.call("cart", "echo", b"x")
    assert metrics_node.value("cocaine_app_requests", "cocaine_app_requests_total",
                              app="cart", event="echo", code="200") == 1
    assert metrics_node.value("cocaine_app_requests", "cocaine_app_requests_total",
                              app="shop", event="echo", code="200") is None
    metrics_node.node.cli("app", "remove", "cart")
    wait_until(lambda: metrics_node.value("cocaine_app_state", app="cart") is None,
               timeout=20, message="the removed app to leave /metrics")
