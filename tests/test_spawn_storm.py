"""A spawn storm: an app that wants far more slaves than the node allows.

Before, a pool-min of a few hundred or more made the node send fork requests to its template
faster than the template answered; both ends of the pipe filled, the node and the template
each blocked sending to the other (at about 280 forks), and ``list``, ``info``, every app and
SIGTERM went unanswered. Now the node never blocks on the pipe, asks for a few forks at a
time, and counts every slave against ``cocaine node --max-slaves``: the app runs with what
the cap allows and the node keeps answering.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from cocaine_core.backends.process import node_processes
from cocaine_core.client import Client
from cocaine_core.testing import process_gone, wait_until, write_app

CAP = 24
APP = "def echo(request):\n    return request.data\n"


def _timed_info(endpoint: str, bound: float) -> tuple[float, dict | None]:
    started = time.monotonic()
    with Client(endpoint, wait=bound) as client:
        try:
            info = client.control("info")
        except Exception:
            info = None
    return time.monotonic() - started, info


def test_a_spawn_storm_stays_under_the_cap_and_the_node_answers(tmp_path: Path,
                                                                 node_process) -> None:
    node = node_process("--max-slaves", str(CAP))
    manifest = write_app(tmp_path / "storm", APP, {"echo": {"type": "native-server"}},
                         engine={"pool-limit": 1000, "pool-min": 1000})
    node.cli("app", "deploy", str(manifest), "--name", "storm")
    pid = node.process.pid
    slowest, most = 0.0, 0
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        took, info = _timed_info(node.endpoint, 5.0)
        assert info is not None, "info did not answer within 5 s during the storm"
        slowest = max(slowest, took)
        assert info["slaves"]["slaves"] <= CAP and info["slaves"]["max-slaves"] == CAP
        found = node_processes(pid)
        slaves = [p for p, parent in found.items() if parent != pid]
        most = max(most, len(slaves))
        assert len(slaves) <= CAP, f"{len(slaves)} slaves, over the cap of {CAP}"
        time.sleep(0.2)
    assert most == CAP, f"the app should reach the cap; it had at most {most} slaves"
    with Client(node.endpoint, wait=10) as client:
        assert client.call("storm", "echo", b"still here") == b"still here"
        assert "storm" in str(client.control("list"))
    print(f"\nslowest info during the storm: {slowest:.3f} s; slaves at most {most} "
          f"(cap {CAP})")
    started = time.monotonic()
    node.process.send_signal(signal.SIGTERM)
    assert node.process.wait(30) == 0
    print(f"stopped by SIGTERM in {time.monotonic() - started:.2f} s")
    wait_until(lambda: not node_processes(pid), timeout=15, message="no process left")


def test_a_spawn_past_the_cap_is_refused_with_the_option_named(tmp_path: Path,
                                                               node_process) -> None:
    node = node_process("--max-slaves", "2")
    for name in ("one", "two"):
        manifest = write_app(tmp_path / name, APP, {"echo": {"type": "native-server"}},
                             engine={"pool-limit": 4, "pool-min": 2})
        node.cli("app", "deploy", str(manifest), "--name", name)
    # Two apps, one budget: the first takes both slaves; the second is told why it has none.
    def refused() -> bool:
        with Client(node.endpoint, wait=5) as client:
            return client.control("info")["slaves"]["refused"] > 0
    wait_until(refused, timeout=20, message="a spawn refused at the cap")
    assert "the node runs its maximum of 2 slaves (cocaine node --max-slaves)" in \
        node.log.read_text()
    with Client(node.endpoint, wait=10) as client:
        total = client.control("info")["slaves"]["slaves"]
    assert total <= 2
    pid = node.process.pid
    assert node.stop() == 0
    wait_until(lambda: all(process_gone(p) for p in node_processes(pid)), timeout=15,
               message="no process left")
