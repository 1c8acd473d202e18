"""Scenario, http: cocaine's ``http-server`` against uvicorn and gunicorn, an HTTP echo
(issue 18).

Three servers on 127.0.0.1, each with 2 worker processes: *uvicorn* (``--workers 2``, the
httptools parser, an ASGI echo), *gunicorn* (``-w 2``, sync workers, a WSGI echo) and
*cocaine* (``cocaine run`` of a Python app whose ``echo`` is an ``http-server`` task; pool-limit
2, pool-min 2, concurrency 1). The same load generator drives each in turn: ``wrk``, one thread,
50 connections, POSTs of 100 bytes and of 64 KiB, 5 s per server, payload and round (1 s with
``--quick``), the servers in an order rotated every round. Every echo is checked once per
server and payload before the rounds. It reports requests per second, p50 and p99 latency
(wrk's), the ratios cocaine / gunicorn (target >= 1.5) and cocaine / uvicorn (target >= 0.5)
per round, and the CPU time per request of each server's main process, its workers and wrk.

In a full run (not ``--quick``) the cocaine node is then profiled through one more 100-byte run
with py-spy (if installed), not counted in the figures: where the node's time goes.

Skipped when wrk is missing; a baseline whose packages are missing, or cocaine without the
``http-server`` driver (the cocaine-http plugin), is skipped saying why, and the rest runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench.http_load import WrkResult, run_wrk, start_profile, summarize_profile, wrk_missing
from bench.http_servers import HttpServer, check_echo, missing_packages
from bench.nodes import installed_drivers
from bench.processes import cpu_seconds
from bench.report import number
from bench.results import Figure, ScenarioResult, interleave, skipped
from bench.session import Bench

NAME = "http"
TITLE = ("HTTP: echo through http-server against uvicorn and gunicorn (sync), 2 worker "
         "processes each, wrk with 50 connections")
PAYLOADS = {"100 B": 100, "64 KiB": 65536}
KINDS = ("cocaine", "uvicorn", "gunicorn")
CONNECTIONS = 50
#: Seconds of load per server, payload and round (full, quick); the warm-up before round 1.
SECONDS = {False: 5, True: 1}
WARMUP = {False: 2, True: 1}
PROFILE_SECONDS = 5
#: Lines of each profile printed (the JSON has 15).
PROFILE_ROWS = 12
TARGETS = {"gunicorn": 1.5, "uvicorn": 0.5}
COCAINE_MISSING = ("skipped: no installed plugin registers http-server (the cocaine-http "
                   "plugin: .venv/bin/pip install -e plugins/cocaine_http)")


def available(bench: Bench, result: ScenarioResult) -> list[str]:
    """The servers that can run here; the others go to ``skipped_parts`` with the reason."""
    kinds = []
    for kind in KINDS:
        if kind == "cocaine":
            why = None if "http-server" in installed_drivers() else COCAINE_MISSING
        else:
            why = missing_packages(kind)
        if why is None:
            kinds.append(kind)
        else:
            result.skipped_parts[kind] = why
            bench.say(f"  {kind}: {why}")
    return kinds


def run(bench: Bench) -> ScenarioResult:
    """Start the servers, check their echoes, measure them interleaved, profile the node."""
    why = wrk_missing()
    if why is not None:
        return skipped(NAME, TITLE, why)
    result = ScenarioResult(NAME, TITLE)
    quick = bench.settings.quick
    result.details.update(connections=CONNECTIONS, wrk_threads=1, seconds=SECONDS[quick],
                          payloads=PAYLOADS)
    servers: dict[str, HttpServer] = {}
    try:
        for kind in available(bench, result):
            servers[kind] = HttpServer(bench, kind).start()
        result.details["servers"] = {k: s.description for k, s in servers.items()}
        problems = [f"{kind}: {why}" for kind, server in servers.items()
                    for size in PAYLOADS.values()
                    if (why := check_echo(server.port, size)) is not None]
        if problems:
            raise RuntimeError("a server did not echo: " + "; ".join(problems))
        for kind, server in servers.items():
            bench.say(f"  warming up {kind}")
            run_wrk(f"http://127.0.0.1:{server.port}/", 100, CONNECTIONS, WARMUP[quick])
        _measure(bench, result, servers)
        if "cocaine" in servers and not quick:
            _profile(bench, result, servers["cocaine"])
    finally:
        for server in reversed(list(servers.values())):
            server.stop()
        # Every process of every server's tree, for the JSON (tests check none outlives it).
        result.details["processes"] = sorted(p for s in servers.values() for p in s.seen)
    return result


def _measure(bench: Bench, result: ScenarioResult, servers: dict[str, HttpServer]) -> None:
    rounds, seconds = bench.settings.rounds, SECONDS[bench.settings.quick]
    rates = {(kind, size): result.figure(f"{kind}, {size}", "req/s")
             for size in PAYLOADS for kind in servers}
    latency = {(kind, size, q): Figure(f"{kind}, {size}: {q}", "ms")
               for size in PAYLOADS for kind in servers for q in ("p50", "p99")}
    parts = ("main process", "workers", "wrk")
    cpu = {(kind, size): {part: Figure(f"{kind}, {size}: {part}", "us") for part in parts}
           for size in PAYLOADS for kind in servers}
    problems: list[str] = []
    for round_index in range(rounds):
        bench.say(f"  round {round_index + 1}/{rounds}")
        for size, length in PAYLOADS.items():
            for kind in interleave(servers, round_index):
                server = servers[kind]
                tree = server.pids()
                before = (cpu_seconds(tree[:1]), cpu_seconds(tree[1:]))
                measured = run_wrk(f"http://127.0.0.1:{server.port}/", length, CONNECTIONS,
                                   seconds)
                tree = server.pids()
                after = (cpu_seconds(tree[:1]), cpu_seconds(tree[1:]))
                rates[kind, size].add(measured.rate)
                for q in ("p50", "p99"):
                    latency[kind, size, q].add(measured.latency_us[q] / 1000)
                if measured.requests:
                    spent = (after[0] - before[0], after[1] - before[1], measured.cpu_seconds)
                    for part, used in zip(parts, spent, strict=True):
                        cpu[kind, size][part].add(used / measured.requests * 1e6)
                if measured.errors:
                    problems.append(f"{kind} {size} round {round_index + 1}: errors "
                                    f"{measured.errors} in {measured.requests} requests")
    for size in PAYLOADS:
        for other, goal in TARGETS.items():
            value: float | None = None
            if "cocaine" in servers and other in servers:
                ratio = result.add_ratio(f"cocaine / {other}, {size}", rates["cocaine", size],
                                         rates[other, size])
                value = ratio.median
            result.target(f"http-server >= {goal}x {other}, {size} (issue 18)", value,
                          f">= {goal}", "x")
    result.tables.append((
        "Latency under load, ms (wrk; median of rounds)",
        ["server", *(f"{size} {q}" for size in PAYLOADS for q in ("p50", "p99"))],
        [[kind, *(number(latency[kind, size, q].median) for size in PAYLOADS
                  for q in ("p50", "p99"))] for kind in servers]))
    rows = []
    for (kind, size), figures in cpu.items():
        medians = [figures[p].median for p in parts]
        total = sum(m for m in medians if m is not None)
        rows.append([f"{kind}, {size}", *(number(m) for m in medians), number(total),
                     number(2e6 / total if total else None)])
    result.tables.append(("CPU time per request, us (median of rounds): where the time goes",
                          ["server", *parts, "total", "2 cores' worth, req/s"], rows))
    result.details["latency_ms"] = {f.name: f.as_dict() for f in latency.values()}
    result.details["cpu_us_per_request"] = {
        f"{kind}, {size}": {part: f.as_dict() for part, f in figures.items()}
        for (kind, size), figures in cpu.items()}
    if problems:
        result.details["problems"] = problems


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds used so far by each thread of ``pid``, by thread name (summed)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_bytes().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        used[name] = used.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return used


def _profile(bench: Bench, result: ScenarioResult, server: HttpServer) -> None:
    """One more 100-byte run with py-spy sampling the node and one slave: their top
    functions; and the CPU share of each of the node's threads."""
    assert server.node is not None
    folder = bench.subfolder("http-profile")
    slaves = [s["pid"] for s in server.node.info("bench")["slaves"] if s.get("pid")]
    targets = {"node": server.pid, **({"slave": slaves[0]} if slaves else {})}
    samplers = {}
    for what, pid in targets.items():
        sampler = start_profile(pid, PROFILE_SECONDS, folder / f"{what}.collapsed")
        if sampler is None:
            result.skipped_parts["profile"] = "skipped: py-spy not installed (pip install py-spy)"
            return
        samplers[what] = sampler
    bench.say(f"  profiling the cocaine node and a slave (py-spy, {PROFILE_SECONDS} s)")
    time.sleep(0.5)  # py-spy attaches
    threads_before, started = _thread_cpu(server.pid), time.monotonic()
    measured: WrkResult = run_wrk(f"http://127.0.0.1:{server.port}/", 100, CONNECTIONS,
                                  PROFILE_SECONDS - 1)
    threads_after, elapsed = _thread_cpu(server.pid), time.monotonic() - started
    result.details["node_threads_core_share"] = {
        name: round((threads_after[name] - threads_before.get(name, 0.0)) / elapsed, 3)
        for name in threads_after}
    for what, sampler in samplers.items():
        try:
            _, errors = sampler.communicate(timeout=PROFILE_SECONDS + 30)
        except Exception:
            sampler.kill()
            sampler.wait(5)
            raise
        output = folder / f"{what}.collapsed"
        if sampler.returncode != 0 or not output.exists():
            result.skipped_parts[f"profile of the {what}"] = (
                f"py-spy failed (exit {sampler.returncode}): "
                f"{errors.decode(errors='replace')[-500:]}")
            continue
        summary: dict[str, Any] = summarize_profile(output)
        summary["rate_while_profiled"] = round(measured.rate)
        result.details[f"{what}_profile"] = summary
        result.tables.append((
            f"Where the cocaine {what}'s Python time goes, 100 B (py-spy --gil, "
            f"{summary['samples']} samples; {number(measured.rate)} req/s while sampled): "
            f"innermost functions, and functions on the stack (the trunk left out), % of "
            f"samples",
            ["function", "self %", "function", "total %"],
            [[str(a[0]), number(float(str(a[1]))), str(b[0]), number(float(str(b[1])))]
             for a, b in zip(summary["self"][:PROFILE_ROWS], summary["total"][:PROFILE_ROWS],
                             strict=False)]))
    shares = result.details["node_threads_core_share"]
    result.tables.append(("The node's threads while profiled: share of one core",
                          ["thread", "share"],
                          [[name, number(share)] for name, share in shares.items()]))
