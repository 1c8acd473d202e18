"""Python's own process pools as baselines: ``ProcessPoolExecutor.submit`` and
``multiprocessing.Pool.apply_async``, two workers each, N jobs in flight, the same echo.

The loop is closed like the native load generator's: each finished job's callback hands the
job back to the bench thread, which records its latency and submits the next at once.
Workers are started with ``spawn`` (the bench process runs ZeroMQ threads, and forking a
threaded process is unsafe); they are started before the measurement and reused.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from array import array
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from bench.loadgen import LoadResult


def echo(data: bytes) -> bytes:
    """The work: the same as the cocaine benchmark app's handler."""
    return data


def _closed_loop(submit: Any, payload: bytes, inflight: int, seconds: float,
                 warmup: float) -> LoadResult:
    """Drive ``submit(payload, on_done)`` with ``inflight`` jobs out at all times."""
    finished: queue.SimpleQueue[tuple[float, Any]] = queue.SimpleQueue()
    clock = time.perf_counter
    latencies: array[float] = array("d")
    done = wrong = outstanding = answered = 0
    start = clock()
    window_start = start + warmup
    end = window_start + seconds
    now = start

    def send() -> None:
        nonlocal outstanding
        outstanding += 1
        submit(payload, clock(), finished.put)

    for _ in range(inflight):
        send()
    while outstanding:
        t0, result = finished.get(timeout=60)
        outstanding -= 1
        answered += 1
        now = clock()
        if window_start <= now <= end:
            if isinstance(result, bytes) and len(result) == len(payload):
                done += 1
                latencies.append(now - t0)
            else:
                wrong += 1
        if now < end:
            send()
    return LoadResult(done=done, seconds=seconds, latencies=latencies, wrong=wrong,
                      answered=answered)


class ExecutorBaseline:
    """``ProcessPoolExecutor(2).submit(echo, body)``."""

    label = "ProcessPoolExecutor.submit"

    def __init__(self, workers: int = 2) -> None:
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def start(self) -> ExecutorBaseline:
        """Start the workers (the first jobs do) and wait until both answered."""
        list(self.pool.map(echo, [b"warm"] * 8))
        return self

    def run(self, payload: bytes, inflight: int, seconds: float, warmup: float) -> LoadResult:
        """One measurement."""
        pool = self.pool

        def submit(body: bytes, t0: float, put: Any) -> None:
            future = pool.submit(echo, body)

            def finished(f: Future[bytes]) -> None:
                try:
                    put((t0, f.result()))
                except Exception as exc:
                    put((t0, exc))

            future.add_done_callback(finished)

        return _closed_loop(submit, payload, inflight, seconds, warmup)

    def cpu_pids(self) -> list[int]:
        """The workers' pids (the pool's own threads run in the bench process)."""
        return list(getattr(self.pool, "_processes", {}) or {})

    def stop(self) -> None:
        """Shut the pool down (its workers exit)."""
        self.pool.shutdown(wait=True, cancel_futures=True)


class MultiprocessingBaseline:
    """``multiprocessing.Pool(2).apply_async(echo, (body,))``."""

    label = "multiprocessing.Pool.apply_async"

    def __init__(self, workers: int = 2) -> None:
        self.pool = multiprocessing.get_context("spawn").Pool(workers)

    def start(self) -> MultiprocessingBaseline:
        """Wait until the workers answer."""
        self.pool.map(echo, [b"warm"] * 8)
        return self

    def run(self, payload: bytes, inflight: int, seconds: float, warmup: float) -> LoadResult:
        """One measurement."""
        pool = self.pool

        def submit(body: bytes, t0: float, put: Any) -> None:
            pool.apply_async(echo, (body,), callback=lambda r: put((t0, r)),
                             error_callback=lambda e: put((t0, e)))

        return _closed_loop(submit, payload, inflight, seconds, warmup)

    def cpu_pids(self) -> list[int]:
        """The workers' pids (the pool's own threads run in the bench process)."""
        return [p.pid for p in getattr(self.pool, "_pool", []) if p.pid]

    def stop(self) -> None:
        """Terminate the pool and join its workers."""
        self.pool.terminate()
        self.pool.join()
