"""A short chaos round with real processes, under load from a few threads: a busy slave and the
template killed, the template stopped while the pool must grow, a busy slave stopped past
heartbeat-timeout, with pool-min 0 and 2. After each, as docs/engine.md promises: the app was
never broken, requests succeed again, every process of the app is the template or a slave the
engine knows, and the node stops cleanly, with nothing left and no flood of log lines.

(``bench/run.py --only chaos`` injects the same faults and more, in every pool setting, and
measures how soon the app serves again.)"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cocaine_core.client import Client
from cocaine_core.errors import ServiceError
from cocaine_core.testing import RunningNode, free_port, leftover_slaves, wait_until

APP = '''
import os
import time


def pid(request):
    time.sleep(0.01)
    return str(os.getpid())
'''

HEARTBEAT_TIMEOUT = 1.0
#: Also the bound on the template's import: on a busy machine 1 s is not always enough.
STARTUP_TIMEOUT = 2.0
#: Generous bounds on what must happen (never timed: only how long we are willing to wait).
SERVING_AGAIN = 30.0
NO_LEAK = 10.0


class Load:
    """A few threads calling the app one request at a time each, every answer recorded with
    the moment it came (a client pausing 20 ms after an error, as one that retries would)."""

    def __init__(self, endpoint: str, app: str, threads: int = 3) -> None:
        self.endpoint = endpoint
        self.app = app
        self.answers: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(threads)]

    def _run(self) -> None:
        with Client(self.endpoint, wait=30) as client:
            while not self._stop.is_set():
                try:
                    client.call(self.app, "pid")
                    ok = True
                except ServiceError:
                    ok = False
                self.answers.append((time.monotonic(), ok))
                if not ok:
                    self._stop.wait(0.02)

    def successes_since(self, moment: float) -> int:
        """Requests answered with success at or after ``moment``."""
        return sum(1 for at, ok in list(self.answers) if ok and at >= moment)

    @contextmanager
    def running(self) -> Iterator[Load]:
        """Run the threads for the block."""
        for thread in self._threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(40)


class StateWatch:
    """Reads the app's state every 50 ms, from a thread: every state it was ever seen in."""

    def __init__(self, node: RunningNode, app: str) -> None:
        self.node = node
        self.app = app
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.seen.add(self.node.info(self.app)["state"])

    @contextmanager
    def running(self) -> Iterator[StateWatch]:
        """Watch for the block."""
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(10)


def parent_of(pid: int) -> int | None:
    """The parent of process ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


class Chaos:
    """The faults, injected into one app of a node in this process."""

    def __init__(self, node: RunningNode, app: str) -> None:
        self.node = node
        self.app = app

    def template(self) -> int:
        """The pid of the app's template (this process's child among the app's processes)."""
        return wait_until(lambda: next((p for p in leftover_slaves()
                                        if parent_of(p) == os.getpid()), None),
                          timeout=SERVING_AGAIN, message="the app's template")

    def busy_slave(self) -> int:
        """The pid of a ready slave with a job in flight."""
        return wait_until(lambda: next((s["pid"] for s in self.node.info(self.app)["slaves"]
                                        if s["state"] == "ready" and s["jobs"] and s["pid"]),
                                       None), message="a busy slave")

    def unknown_processes(self) -> list[int]:
        """The app's processes that are neither its template nor a slave ``info`` lists
        (found first, so one that ``info`` no longer lists has exited by then)."""
        processes = leftover_slaves()
        known = {s["pid"] for s in self.node.info(self.app)["slaves"]}
        templates = [p for p in processes if parent_of(p) == os.getpid()]
        return [p for p in processes if p not in known and p not in templates[:1]]

    def answers(self) -> bool:
        """Whether a request of its own succeeds now (waiting up to 5 s for it)."""
        with Client(self.node.endpoint, wait=5) as client:
            try:
                return bool(client.call(self.app, "pid"))
            except ServiceError:
                return False

    def kill_busy_slave(self) -> None:
        os.kill(self.busy_slave(), signal.SIGKILL)

    def kill_template(self) -> None:
        os.kill(self.template(), signal.SIGKILL)

    def stop_template(self) -> None:
        """SIGSTOP the template past startup-timeout while the pool must grow (a busy slave
        is killed meanwhile), then SIGCONT."""
        template = self.template()
        os.kill(template, signal.SIGSTOP)
        try:
            os.kill(self.busy_slave(), signal.SIGKILL)
            time.sleep(STARTUP_TIMEOUT + 0.5)
        finally:
            os.kill(template, signal.SIGCONT)

    def stop_slave(self) -> None:
        """SIGSTOP a busy slave past heartbeat-timeout (and the second its CPU time is then
        watched), then SIGCONT."""
        victim = self.busy_slave()
        os.kill(victim, signal.SIGSTOP)
        try:
            time.sleep(HEARTBEAT_TIMEOUT + 1.5)
        finally:
            with contextlib.suppress(ProcessLookupError):  # killed as hung meanwhile
                os.kill(victim, signal.SIGCONT)


@pytest.fixture
def node() -> Iterator[RunningNode]:
    """A node in this process; the test stops it (this only cleans up if the test failed)."""
    run_dir = Path("/tmp") / f"cocaine-chaos-{free_port()}"  # short: ipc paths have a limit
    running = RunningNode(run_dir=run_dir).start()
    try:
        yield running
        if running.loop.is_running():
            running.stop()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.parametrize("pool_min", [0, 2])
def test_killed_and_stopped_slaves_and_templates_under_load_leave_the_app_serving(
        node: RunningNode, make_app, caplog, pool_min: int) -> None:
    manifest = make_app(APP, {"pid": {"type": "native-server"}}, engine={
        "pool-min": pool_min, "pool-limit": 4, "heartbeat-timeout": HEARTBEAT_TIMEOUT,
        "startup-timeout": STARTUP_TIMEOUT, "termination-timeout": 1})
    caplog.set_level(logging.INFO, logger="cocaine")
    node.add_app("chaos", manifest)
    wait_until(lambda: node.info("chaos")["state"] == "running", timeout=60,
               message="the app to load")
    chaos = Chaos(node, "chaos")
    load = Load(node.endpoint, "chaos")
    watch = StateWatch(node, "chaos")
    with load.running(), watch.running():
        wait_until(lambda: load.successes_since(0) >= 20, timeout=SERVING_AGAIN,
                   message="the load to flow")
        for fault in (chaos.kill_busy_slave, chaos.kill_template, chaos.stop_template,
                      chaos.stop_slave):
            fault()
            ended = time.monotonic()
            wait_until(chaos.answers, timeout=SERVING_AGAIN,
                       message=f"a request to succeed after {fault.__name__}")
            wait_until(lambda ended=ended: load.successes_since(ended) >= 10,
                       timeout=SERVING_AGAIN, message=f"the load to flow after {fault.__name__}")
            wait_until(lambda: not chaos.unknown_processes(), timeout=NO_LEAK,
                       message=f"every process to be the template or a known slave after "
                               f"{fault.__name__}")
            assert "broken" not in watch.seen, f"the app was broken by {fault.__name__}"
    assert watch.seen <= {"running", "starting"}, watch.seen
    node.stop()  # drains the app: it returns, within its own bound, and leaves nothing
    wait_until(lambda: not leftover_slaves(), timeout=NO_LEAK, message="no process left")
    lines = [r for r in caplog.records if r.name.startswith("cocaine")]
    assert len(lines) < 200, "faults of the moment are said, not flooded"
