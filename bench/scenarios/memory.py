"""Scenario 5, memory: the node's RSS with 1 app and with many; an idle slave's unique memory.

A production node (``cocaine node``, its own storage) gets one echo app deployed (pool-min 1),
answers a few requests, and its RSS is read from ``/proc/PID/status``. The idle slave's
unique memory (USS: ``Private_Clean + Private_Dirty`` of ``/proc/PID/smaps_rollup``) is what
that slave costs on top of the pages it shares with its template. Then more apps are
deployed (50; 10 with ``--quick``), each called once so it has a slave, and the node's RSS is
read again. The templates' and slaves' memory is reported too, for scale.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from bench.nodes import ECHO_APP, CocaineNode, write_app
from bench.processes import rss_bytes, uss_bytes, wait_for
from bench.results import ScenarioResult
from bench.session import Bench

NAME = "memory"
TITLE = "Memory: node RSS, idle slave USS"
MB = 1024 * 1024


def run(bench: Bench) -> ScenarioResult:
    """Deploy 1 app, then many; read the memory figures."""
    result = ScenarioResult(NAME, TITLE)
    many = bench.settings.many_apps
    folder = bench.subfolder("memory")
    first = write_app(folder / "apps" / "first", ECHO_APP, {"echo": {"type": "native-server"}},
                      {"pool-limit": 1, "pool-min": 1})
    other = write_app(folder / "apps" / "other", ECHO_APP, {"echo": {"type": "native-server"}},
                      {"pool-limit": 1, "pool-min": 0})
    node = CocaineNode(bench.group, folder / "node").start()
    try:
        node.deploy(first, "app0")
        from cocaine_core.client import Client

        with Client(node.endpoint, wait=60) as client:
            for _ in range(20):
                client.call("app0", "echo", b"x" * 100)
        time.sleep(0.5)  # idle
        app = wait_for(lambda: _ready(node.info("app0")), 30, "app0's slave")
        slave_pid = app["slaves"][0]["pid"]
        one = rss_bytes(node.pid)
        slave_uss = uss_bytes(slave_pid)
        slave_rss = rss_bytes(slave_pid)
        bench.say(f"  deploying {many - 1} more apps")
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: node.deploy(other, f"app{i}"), range(1, many)))
        deploy_seconds = time.monotonic() - started
        with Client(node.endpoint, wait=60) as client:
            for i in range(many):
                client.call(f"app{i}", "echo", b"x" * 100)
        time.sleep(0.5)
        info = node.info()
        all_rss = rss_bytes(node.pid)
        templates = _process_memory(info, template=True)
        slaves = _process_memory(info, template=False)
    finally:
        node.stop()
    result.figure("node RSS, 1 app", "MB").add(_mb(one))
    result.figure(f"node RSS, {many} apps", "MB").add(_mb(all_rss))
    result.figure(f"node RSS per extra app ({many} apps)", "MB").add(
        _mb((all_rss - one) / (many - 1)) if one and all_rss and many > 1 else None)
    result.figure("idle slave USS (Private_Clean + Private_Dirty)", "MB").add(_mb(slave_uss))
    result.figure("idle slave RSS (shares its template's pages)", "MB").add(_mb(slave_rss))
    result.details.update({
        "apps": many, "deploy_seconds": round(deploy_seconds, 3),
        "slaves": len(slaves), "slaves_uss_total_mb": _mb(sum(u for u in slaves if u)),
        "templates_uss_total_mb": _mb(sum(u for u in templates if u)),
        "template_uss_median_mb": _mb(sorted(templates)[len(templates) // 2])
        if templates else None,
    })
    result.target("node RSS with one app", _mb(one), "< 60", "MB")
    result.target("idle slave unique memory", _mb(slave_uss), "< 15", "MB")
    return result


def _ready(app: dict) -> dict | None:
    slaves = app.get("slaves") or []
    return app if slaves and slaves[0].get("pid") and slaves[0]["state"] == "ready" else None


def _process_memory(info: dict, template: bool) -> list[int]:
    """USS of every slave (or, with ``template``, of every app's template process)."""
    found = []
    for app in info["apps"].values():
        if template:
            # The template is the slaves' parent: read it from a slave's /proc entry.
            for slave in app.get("slaves", []):
                parent = _parent(slave.get("pid"))
                if parent:
                    found.append(uss_bytes(parent) or 0)
                    break
        else:
            found.extend(uss_bytes(s["pid"]) or 0 for s in app.get("slaves", []) if s.get("pid"))
    return found


def _parent(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _mb(value: float | None) -> float | None:
    return None if value is None else round(value / MB, 2)
