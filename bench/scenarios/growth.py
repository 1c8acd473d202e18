"""Scenario 3, pool growth: a job at an empty pool (cold start), then further slaves.

The app (pool-min 0, pool-limit 4, a short idle-timeout so the pool empties between rounds)
answers ``work`` with its pid and the time its handler started, after sleeping as many
seconds as the body says. Each round:

1. waits until the pool is empty (every slave retired for idleness, every spare ended);
2. **cold start**: one ``work`` (no sleep) at the empty pool, timed end to end;
3. **further slaves**: a burst of pool-limit + 1 jobs that each sleep 0.15 s, sent at once at
   the pool of one idle slave. The engine grows the pool one slave per waiting job beyond the
   pool (grow-threshold 1), so pool-limit - 1 new slaves start together; for each, the time
   from the burst to its handler starting its first job is the end-to-end figure;
4. reads ``info``: every slave's ``startup-ms`` (spawn request → ready, as the engine saw it);
5. **one more slave**, the pool in use: one busy slave and a spare, two jobs more;
6. **a burst at a pool in use**: one busy slave, and the spares the engine keeps after the
   burst of step 3 (as many as the pool grew by lately: pool-limit - 1), then pool-limit jobs
   at once; for each new slave, the time from the burst to its first job started.

The wall clock (``time.time()``) is shared by the bench and the slaves on one machine.
"""

from __future__ import annotations

import itertools
import time

import msgpack
import zmq

from bench.nodes import CocaineRun, write_app
from bench.processes import wait_for
from bench.results import ScenarioResult
from bench.session import Bench

NAME = "growth"
TITLE = "Pool growth: cold start and further slaves"
POOL_LIMIT = 4
HOLD = 0.15
_ids = itertools.count(1)

APP = """\
import os
import time


def work(request):
    started = time.time()
    delay = float(request.data or b"0")
    if delay:
        time.sleep(delay)
    return f"{os.getpid()} {started!r}"
"""


def run(bench: Bench) -> ScenarioResult:
    """Cold start and further slaves, ``settings.rounds`` times."""
    result = ScenarioResult(NAME, TITLE)
    engine = {"pool-limit": POOL_LIMIT, "pool-min": 0, "idle-timeout": 0.3, "queue-limit": 100}
    manifest = write_app(bench.subfolder("growth"), APP, {"work": {"type": "native-server"}},
                         engine)
    node = CocaineRun(bench.group, manifest, name="growth")
    node.start(event=None)
    cold = result.figure("cold start: job at an empty pool → answer", "ms")
    cold_startup = result.figure("cold start: that slave's startup-ms (info)", "ms")
    further = result.figure("further slave: job waiting → its first job started", "ms",
                            note="median of the slaves started by each round's burst")
    further_startup = result.figure("further slave: startup-ms (info)", "ms",
                                    note="median of the slaves started by each round's burst")
    spare = result.figure("one more slave, the pool in use (a spare ready): job → started",
                          "ms", note="a pool of one busy slave, 0.5 s after it came into use")
    in_use = result.figure("a burst at a pool in use (spares kept): job → started", "ms",
                           note="median of the slaves the burst added; spares kept after "
                                "the round's first burst")
    every_further: list[float] = []
    every_startup: list[float] = []
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(node.endpoint)
    try:
        for round_index in range(bench.settings.rounds):
            bench.say(f"  round {round_index + 1}/{bench.settings.rounds}")
            wait_for(lambda: _empty(node), 30, "the pool to empty (its spares too)")
            sent = time.time()
            [(first_pid, _)] = _call(sock, [b"0"])
            cold.add((time.time() - sent) * 1000)
            burst_at = time.time()
            answers = _call(sock, [str(HOLD).encode()] * (POOL_LIMIT + 1))
            firsts: dict[int, float] = {}
            for pid, started in answers:
                if pid != first_pid:
                    firsts[pid] = min(firsts.get(pid, started), started)
            delays = sorted((started - burst_at) * 1000 for started in firsts.values())
            every_further.extend(delays)
            further.add(_median(delays))
            slaves = {s["pid"]: s.get("startup-ms") for s in node.info("growth")["slaves"]}
            if slaves.get(first_pid) is not None:
                cold_startup.add(slaves[first_pid])
            startups = [slaves[p] for p in firsts if slaves.get(p) is not None]
            every_startup.extend(startups)
            further_startup.add(_median(startups))
            result.details.setdefault("further_slaves_per_round", []).append(len(firsts))
            spare.add(_one_more(sock, node))
            in_use.add(_burst_in_use(sock, node))
    finally:
        sock.close(linger=0)
        node.stop()
    result.details["further_each_ms"] = [round(v, 3) for v in every_further]
    result.details["further_startup_each_ms"] = every_startup
    result.samples["further slave: job waiting → first job started"] = [
        v / 1000 for v in every_further]
    result.target("further slave serves its first job (end to end)", further.median, "<= 5",
                  "ms")
    result.target("one more slave, a spare ready (end to end)", spare.median, "<= 5", "ms")
    result.target("a burst at a pool in use, spares kept (end to end)", in_use.median, "<= 5",
                  "ms")
    result.target("cold start (end to end)", cold.median, "<= 100", "ms")
    return result


def _one_more(sock: zmq.Socket, node: CocaineRun) -> float:
    """At a pool whose one slave has been busy for a while (so the engine holds a spare), two
    more jobs make the pool grow by one. Milliseconds from sending them to the first one's
    handler starting on the new slave."""
    wait_for(lambda: _empty(node), 30, "the pool to empty (its spares too)")
    busy_id = next(_ids)
    sock.send_multipart([msgpack.packb([10, busy_id, "growth", "work", None]), b"1.5"])
    wait_for(lambda: node.info("growth")["pool"].get("spare", 0) >= 1
             and node.info("growth")["pool"]["busy"] == 1, 10, "a busy slave and a spare")
    sent = time.time()
    # Two waiting jobs at a pool of one (grow-threshold 1): the pool grows by one slave.
    started = min(at for _, at in _call(sock, [b"0", b"0"]))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sock.poll(100):  # the busy job's answer
        if msgpack.unpackb(sock.recv_multipart()[0])[1] == busy_id:
            break
    return (started - sent) * 1000


def _burst_in_use(sock: zmq.Socket, node: CocaineRun) -> float | None:
    """At a pool of one busy slave that keeps pool-limit - 1 spares (it grew by that many a
    moment ago), pool-limit jobs at once: the median, over the slaves they add, of the
    milliseconds from sending them to that slave's first job starting."""
    wait_for(lambda: _empty(node), 30, "the pool to empty (its spares too)")
    busy_id = next(_ids)
    sock.send_multipart([msgpack.packb([10, busy_id, "growth", "work", None]), b"1.5"])
    busy_pid: list[int] = []

    def ready() -> bool:
        info = node.info("growth")
        busy_pid[:] = [s["pid"] for s in info["slaves"] if s["jobs"]]
        return info["pool"]["busy"] == 1 and info["pool"].get("spare", 0) >= POOL_LIMIT - 1

    wait_for(ready, 10, "a busy slave and its spares")
    sent = time.time()
    firsts: dict[int, float] = {}
    for pid, started in _call(sock, [str(HOLD).encode()] * POOL_LIMIT):
        if pid not in busy_pid:
            firsts[pid] = min(firsts.get(pid, started), started)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sock.poll(100):  # the busy job's answer
        if msgpack.unpackb(sock.recv_multipart()[0])[1] == busy_id:
            break
    return _median([(started - sent) * 1000 for started in firsts.values()])


def _empty(node: CocaineRun) -> bool:
    """No slave serves or starts, and no spare is left (one ending would share the CPU with
    the next measure)."""
    return not node.info("growth")["slaves"]


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _call(sock: zmq.Socket, bodies: list[bytes], timeout: float = 30.0) -> list[tuple[int, float]]:
    """Send every body at once to ``growth/work``; return each answer's (pid, started)."""
    pending = set()
    for body in bodies:
        request_id = next(_ids)
        pending.add(request_id)
        sock.send_multipart([msgpack.packb([10, request_id, "growth", "work", None]), body])
    answers: list[tuple[int, float]] = []
    deadline = time.monotonic() + timeout
    while pending:
        if not sock.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            raise TimeoutError(f"{len(pending)} growth jobs unanswered after {timeout:g} s")
        frames = sock.recv_multipart()
        header = msgpack.unpackb(frames[0])
        if header[1] not in pending:
            continue
        if header[0] in (5, 6) and len(frames) > 1:  # a chunk, or a choke carrying it
            pid, started = frames[1].split()
            answers.append((int(pid), float(started)))
        if header[0] == 6:
            pending.discard(header[1])
        elif header[0] == 7:
            raise RuntimeError(f"growth job failed: {header[2]} {header[3]}")
    return answers
