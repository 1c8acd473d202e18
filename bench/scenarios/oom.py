"""Scenario oom: an OOM storm, a memory limit below pool-limit x what a job needs.

Not in the default run (it needs root and the memory controller): ``bench/run.py --only oom``.

An app whose handler takes 60 MB (touched) for 100 ms runs under a memory limit of 256 MB,
with 16 requests in flight for 20 s (4 s with ``--quick``), twice a round:

1. **overcommitted**, pool-limit 8: 8 such slaves would need about 560 MB. Each slave the
   kernel kills used to be replaced at once by another that did not fit either (an OOM
   storm: 104 kills, 10 answers and 49 errors in 7 s, before the engine's restart
   intensity). The engine now caps the pool at the slaves alive when they keep dying, and
   probes back up by one slave per quiet 10 s; the template is the last process of the group
   the kernel would take (see docs/resource-limits.md).
2. **fits**, pool-limit 3: the pool that fits the limit, never killed: what the overcommitted
   app should come close to.

Measured in each: answers per second, errors, the kernel's OOM kills in the app's group
(``cocaine info``), whether the template process is still the one the app started with, and
whether the app was ever anything but running (sampled every 200 ms).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from bench.loadgen import NativeLoad, probe
from bench.nodes import CocaineRun, write_app
from bench.results import ScenarioResult, skipped
from bench.session import Bench
from cocaine_core.backends.process import node_processes

NAME = "oom"
TITLE = "OOM storm: memory limit below pool-limit x a job's memory"
LIMIT = "256M"
INFLIGHT = 16
#: Rounds at most: each takes two runs of ``seconds``.
MAX_ROUNDS = 3
SYSTEMS = {"overcommitted": 8, "fits": 3}

APP = """\
import time


def eat(request):
    block = b"\\x01" * (60 << 20)
    time.sleep(0.1)
    return str(len(block) >> 20)
"""


def unavailable() -> str | None:
    """Why the scenario cannot run here, or None."""
    if os.geteuid() != 0:
        return "skipped: needs root to make a memory cgroup"
    try:
        from cocaine_cgroups.hierarchy import detect
    except ImportError:
        return "skipped: cocaine-cgroups is not installed"
    layout = detect()
    if layout.hierarchy_of("memory") is None:
        return f"skipped: no memory controller: {layout.missing_reason('memory')}"
    return None


def run(bench: Bench) -> ScenarioResult:
    """Each round: the overcommitted app, then the one that fits, under the same load."""
    reason = unavailable()
    if reason:
        return skipped(NAME, TITLE, reason)
    result = ScenarioResult(NAME, TITLE)
    seconds = 4.0 if bench.settings.quick else 20.0
    served = {name: result.figure(f"{name} (pool-limit {limit}): answers per second", "req/s")
              for name, limit in SYSTEMS.items()}
    errors = {name: result.figure(f"{name}: errors, % of answers", "%") for name in SYSTEMS}
    kills = {name: result.figure(f"{name}: OOM kills per minute", "/min") for name in SYSTEMS}
    lost = result.figure("overcommitted: templates lost", "")
    broken = result.figure("overcommitted: samples not running", "")
    rounds: list[dict[str, Any]] = []
    for index in range(min(bench.settings.rounds, MAX_ROUNDS)):
        round_details: dict[str, Any] = {}
        for name, limit in SYSTEMS.items():
            bench.say(f"  round {index + 1}: {name}, pool-limit {limit}, {seconds:g} s")
            seen = _measure(bench, name, limit, seconds)
            round_details[name] = seen
            answered = seen["served"] + sum(seen["errors"].values())
            served[name].add(seen["served"] / seen["seconds"])
            errors[name].add(100 * sum(seen["errors"].values()) / max(1, answered))
            kills[name].add(60 * seen["oom_kills"] / seen["seconds"])
            if name == "overcommitted":
                lost.add(0 if seen["template_kept"] else 1)
                broken.add(sum(n for state, n in seen["states"].items() if state != "running"))
        rounds.append(round_details)
    ratio = result.add_ratio("overcommitted / fits, answers per second",
                             served["overcommitted"], served["fits"])
    result.details.update({"limit": LIMIT, "inflight": INFLIGHT, "seconds": seconds,
                           "rounds": rounds})
    result.target("overcommitted / fits, answers per second", ratio.median, ">= 0.8", "x")
    result.target("overcommitted: errors, % of answers", errors["overcommitted"].median,
                  "<= 2", "%")
    result.target("overcommitted: templates lost", lost.high, "<= 0")
    return result


def _measure(bench: Bench, name: str, limit: int, seconds: float) -> dict[str, Any]:
    folder: Path = bench.subfolder(f"oom-{name}")
    memory = {"memory.limit_in_bytes": LIMIT}
    if _has_memsw():
        memory["memory.memsw.limit_in_bytes"] = LIMIT  # or swap would save the slaves
    manifest = write_app(folder, APP, {"eat": {"type": "native-server"}}, {
        "pool-limit": limit, "queue-limit": 100, "resource-limits": {"memory": memory}})
    node = CocaineRun(bench.group, manifest, name="oom").start(event=None)
    try:
        probe(node.endpoint, "oom", "eat", timeout=60)
        template = _template_of(node.pid)
        before = node.info("oom")["cgroups"]["usage"].get("oom-kills") or 0
        sampler = _StateSampler(node)
        with sampler, NativeLoad(node.endpoint, app="oom", event="eat") as load:
            measured = load.run(b"", INFLIGHT, seconds, check_echo=False, answer_timeout=60)
        info = node.info("oom")
        return {"served": measured.done, "seconds": measured.seconds,
                "errors": {str(code): n for code, n in measured.errors.items()},
                "oom_kills": (info["cgroups"]["usage"].get("oom-kills") or 0) - before,
                "template_kept": template is not None and _template_of(node.pid) == template,
                "states": dict(sampler.states), "pool_caps": sorted(
                    sampler.caps, key=lambda cap: (cap is None, cap or 0)),
                "crashes": info["crashes"]}
    finally:
        node.stop()


def _has_memsw() -> bool:
    from cocaine_cgroups.hierarchy import detect

    hierarchy = detect().hierarchy_of("memory")
    return hierarchy is not None and (hierarchy.own / "memory.memsw.limit_in_bytes").exists()


def _template_of(node_pid: int) -> int | None:
    """The pid of the template process the node ``node_pid`` started (its child)."""
    return next((pid for pid, parent in node_processes(node_pid).items()
                 if parent == node_pid), None)


class _StateSampler:
    """The app's state and pool cap, read from ``info`` every 200 ms in a thread."""

    def __init__(self, node: CocaineRun) -> None:
        self.node = node
        self.states: dict[str, int] = {}
        self.caps: set[int | None] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="oom-sampler", daemon=True)

    def __enter__(self) -> _StateSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                app = self.node.info("oom")
            except Exception:
                app = {"state": "unanswered", "crashes": {}}
            self.states[app["state"]] = self.states.get(app["state"], 0) + 1
            self.caps.add(app["crashes"].get("pool-cap"))
