"""Answers a slave holds for a CHOKE_BATCH (docs/protocol.md, Batches) with real processes:
a finished job's answer must not wait on a job that turned out slow after it (DESIGN.md:
batching changes no timeout, retry or answer)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cocaine_core.testing import call_or_error as call_in_thread
from cocaine_core.testing import wait_until

APP = '''
import os
import time


def gate(request):
    """Hold the slave (sync: one job at a time) until the test's flag file exists."""
    deadline = time.monotonic() + 20
    while not os.path.exists(request.data.decode()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return b"gate"


def work(request):
    """Quick, unless asked to sleep: its duration depends on the request, not the event."""
    time.sleep(float(request.data))
    return request.data
'''

#: The same, async: a handler that blocks the event loop (a sync sleep in an async handler)
#: holds up every job of its slave, and must not hold up answers already made.
ASYNC_APP = APP.replace("def gate(", "async def gate(").replace("def work(", "async def work(")

TASKS = {"gate": {"type": "native-server"}, "work": {"type": "native-server"}}


@pytest.mark.parametrize("code", [APP, ASYNC_APP], ids=["sync", "async"])
def test_a_quick_answer_does_not_wait_for_a_slow_job_of_the_same_event(cocaine_node, make_app,
                                                                       tmp_path: Path,
                                                                       code: str):
    manifest = make_app(code, TASKS, engine={"concurrency": 4, "pool-limit": 1, "pool-min": 1})
    cocaine_node.add_app("holds", manifest)
    flag = tmp_path / "open"

    def on_slave() -> int:
        return sum(s["jobs"] for s in cocaine_node.info("holds")["slaves"])

    assert call_in_thread(cocaine_node.endpoint, "holds", "work", b"0") == b"0"  # now "quick"
    with ThreadPoolExecutor(3) as pool:
        gated = pool.submit(call_in_thread, cocaine_node.endpoint, "holds", "gate",
                            str(flag).encode())
        wait_until(lambda: on_slave() == 1, message="the slave held by the gate")
        quick = pool.submit(call_in_thread, cocaine_node.endpoint, "holds", "work", b"0")
        wait_until(lambda: on_slave() == 2, message="the quick job at the slave")
        slow = pool.submit(call_in_thread, cocaine_node.endpoint, "holds", "work", b"3")
        wait_until(lambda: on_slave() == 3, message="the slow job at the slave")
        # The slave now has, in order: the gate running, a quick job, a slow job.
        flag.touch()
        opened = time.monotonic()
        assert gated.result(timeout=30) == b"gate"
        assert quick.result(timeout=30) == b"0"
        waited = time.monotonic() - opened
        # Held behind the slow job, they go within the heartbeat thread's busy tick (10 ms).
        assert waited < 1.0, f"the quick answers came {waited:.2f} s after the gate opened"
        assert not slow.done(), (f"the gate's and the quick job's answers came {waited:.2f} s "
                                 f"after the gate opened, with the slow job's: they were held "
                                 f"while it ran")
        assert slow.result(timeout=30) == b"3"
    os.unlink(flag)
