"""A pids limit below what the pool wants: new slaves fail to start (fork or thread creation
refused), and the app keeps serving with the slaves it has instead of being called broken."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cocaine_cgroups.hierarchy import Layout

from cocaine_core.testing import RunningNode, call_or_error, wait_until

from .conftest import require

APP = '''
import time


def slow(request):
    time.sleep(float(request.data or 0.3))
    return b"done"
'''


def test_slaves_refused_by_a_pids_limit_never_break_the_app(
        cg_node: RunningNode, make_app: Callable[..., Path], layout: Layout,
        group_dir: Callable[[str, str], Path]) -> None:
    require(layout, "pids")
    manifest = make_app(APP, {"slow": {"type": "native-server"}}, engine={
        "pool-limit": 4, "pool-min": 2, "resource-limits": {"pids": {"pids.max": 1000}}})
    cg_node.add_app("tight", manifest)
    wait_until(lambda: cg_node.info("tight")["pool"]["idle"] == 2, message="two ready")
    limit = group_dir("pids", "tight") / "pids.max"
    current = int((limit.parent / "pids.current").read_text())
    limit.write_text(str(current + 1))  # room for a fork, not for a slave's threads
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: call_or_error(cg_node.endpoint, "tight", "slow",
                                                        b"0.5"), range(36)))
    info = cg_node.info("tight")
    assert info["state"] == "running", "a limit is not the code's fault"
    assert all(result == b"done" for result in results), results
    assert info["pool"]["idle"] + info["pool"]["busy"] >= 2, "the ready slaves kept serving"
