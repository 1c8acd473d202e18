"""The servers that scenarios share, started once per bench run, and one way to drive them.

A *system* is anything the throughput and latency scenarios measure: cocaine (its node as a
process, ``cocaine run``), the baseline broker, the process pools, Celery. Each has
``run(payload, inflight, seconds, warmup) -> LoadResult`` and ``cpu_pids()`` (the processes
whose CPU time is charged to it: the node or broker first, then slaves or workers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.baselines.broker import BrokerBaseline
from bench.loadgen import LoadResult, NativeLoad
from bench.nodes import ECHO_APP, CocaineRun, free_port, write_app
from bench.session import Bench

#: The engine of the throughput and latency app: 2 warm slaves, as the issue sets.
ECHO_ENGINE = {"pool-limit": 2, "pool-min": 2, "queue-limit": 1000}


class NativeSystem:
    """A system reached through the native protocol: a cocaine node or the broker."""

    def __init__(self, label: str, server: Any, back_pids: Callable[[], list[int]]) -> None:
        self.label = label
        self.server = server
        self.endpoint: str = server.endpoint
        self._back_pids = back_pids
        self._load: NativeLoad | None = None

    def run(self, payload: bytes, inflight: int, seconds: float, warmup: float) -> LoadResult:
        """One measurement by the native load generator (its connection is kept)."""
        if self._load is None:
            self._load = NativeLoad(self.endpoint)
        return self._load.run(payload, inflight, seconds, warmup)

    def cpu_pids(self) -> list[int]:
        """The node or broker, then its slaves or workers."""
        return [self.server.pid, *self._back_pids()]

    def stop(self) -> None:
        """Close the connection and stop the server."""
        if self._load is not None:
            self._load.close()
        self.server.stop()


def cocaine(bench: Bench, concurrency: int = 1) -> NativeSystem:
    """cocaine's native path: client → node (``cocaine run``) → 2 slaves."""
    key = f"cocaine-c{concurrency}"

    def start() -> NativeSystem:
        bench.say(f"  starting cocaine (concurrency {concurrency})")
        engine = {**ECHO_ENGINE, "concurrency": concurrency}
        manifest = write_app(bench.subfolder(key), ECHO_APP,
                             {"echo": {"type": "native-server"}}, engine)
        node = CocaineRun(bench.group, manifest).start()

        def slaves() -> list[int]:
            return [s["pid"] for s in node.info("bench")["slaves"] if s.get("pid")]

        return NativeSystem(f"cocaine c{concurrency}" if concurrency > 1 else "cocaine",
                            node, slaves)

    return bench.service(key, start)


def broker(bench: Bench, credit: int = 1) -> NativeSystem:
    """The plain-pyzmq broker with 2 workers taking ``credit`` jobs each at a time."""
    key = f"broker-{credit}"

    def start() -> NativeSystem:
        bench.say(f"  starting the broker ({credit} job(s) per worker)")
        server = BrokerBaseline(bench.group, bench.folder, f"tcp://127.0.0.1:{free_port()}",
                                credit=credit, python=bench.python).start()
        return NativeSystem(f"broker {credit}/worker", server,
                            lambda: [p.pid for p in server.processes[1:]])

    return bench.service(key, start)
