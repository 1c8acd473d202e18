"""An OOM storm tamed (issue 12): a memory limit below pool-limit x what a job needs.

8 slaves of 60 MB jobs do not fit in 256 MB, and each slave the kernel kills was replaced at
once, by another that did not fit: 104 OOM kills, 10 answers and 49 errors in 7 s before the
engine's restart intensity. Now the pool serves with the slaves that fit (``CrashBackoff``
caps it at the slaves alive, then probes back up), and the template, whose loss would cost
every slave, is the last process of the group the kernel would take. The full scenario, for
longer and with figures, is ``bench/run.py --only oom``.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cocaine_cgroups.hierarchy import Layout

from cocaine_core.client import Client
from cocaine_core.errors import ServiceError
from cocaine_core.testing import RunningNode

from .conftest import require

#: Each job takes 60 MB (touched) for 100 ms; 8 such slaves need about 560 MB.
APP = """
import time


def eat(request):
    block = b"\\x01" * (60 << 20)
    time.sleep(0.1)
    return str(len(block) >> 20)
"""
LIMIT = "256M"
CALLERS = 16
SECONDS = 6.0


def storm(node: RunningNode, app: str, callers: int, seconds: float) -> dict[str, Any]:
    """``callers`` clients calling ``eat`` back to back for ``seconds``; what they got, and
    the app's states and pool caps seen meanwhile."""
    answers: collections.Counter[Any] = collections.Counter()
    states: collections.Counter[str] = collections.Counter()
    caps: set[Any] = set()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def caller() -> None:
        with Client(node.endpoint, wait=30) as client:
            while time.monotonic() < stop_at:
                try:
                    client.call(app, "eat", timeout=30)
                    outcome: Any = "ok"
                except ServiceError as exc:
                    outcome = exc.code
                with lock:
                    answers[outcome] += 1

    threads = [threading.Thread(target=caller, name=f"caller-{n}") for n in range(callers)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        info = node.info(app)
        states[info["state"]] += 1
        caps.add(info["crashes"]["pool-cap"])
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    return {"answers": answers, "states": states, "caps": caps}


def test_an_oom_storm_is_served_by_fewer_slaves_and_the_template_survives(
        cg_node: RunningNode, make_app: Callable[..., Path], layout: Layout,
        group_dir: Callable[[str, str], Path]) -> None:
    require(layout, "memory")
    memory = {"memory.limit_in_bytes": LIMIT}
    if (group_dir("memory", "x").parent.parent / "memory.memsw.limit_in_bytes").exists():
        memory["memory.memsw.limit_in_bytes"] = LIMIT  # or swap would save them
    cg_node.add_app("storm", make_app(APP, tasks={"eat": {"type": "native-server"}}, engine={
        "pool-limit": 8, "queue-limit": 100, "resource-limits": {"memory": memory}}))
    backend = cg_node.engine("storm").backend
    template = backend.template.pid
    with cg_node.client() as client:
        assert client.call("storm", "eat", timeout=30) == b"60"

    seen = storm(cg_node, "storm", CALLERS, SECONDS)

    answers = seen["answers"]
    total = sum(answers.values())
    info = cg_node.info("storm")
    kills = info["cgroups"]["usage"]["oom-kills"]
    figures = (f"{answers['ok']} of {total} answered, errors "
               f"{ {k: v for k, v in answers.items() if k != 'ok'} }, {kills} OOM kills, "
               f"states {dict(seen['states'])}, pool caps {seen['caps']}")
    # Measured on the 2-core development machine: 83-112 answered of 86-114 and 10 or 11
    # kills; with both cores kept busy by two other processes, 45-69 of 49-72 and 10 kills
    # (before the engine's restart intensity: 10 of 59, and 104 kills).
    assert answers["ok"] >= 0.75 * total and answers["ok"] >= 25, figures
    assert 0 < kills <= 40, figures
    assert set(seen["states"]) == {"running"}, figures
    assert backend.template is not None and backend.template.pid == template, figures
    assert any(cap is not None and cap < 8 for cap in seen["caps"]), figures
    assert info["crashes"]["total"] <= kills, figures
    with cg_node.client() as client:
        assert client.call("storm", "eat", timeout=30) == b"60"
