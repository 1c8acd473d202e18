"""Scenario 2, latency: one 100-byte echo in flight at a time, cocaine against the broker.

Each round measures cocaine (``cocaine run``, 2 warm slaves) and the one-job-per-worker broker
for the same number of seconds, back to back, alternating which goes first; every request is
timed from its send to its choke. p50 and p99 are taken per round, then the median over
rounds; the p50 ratio is taken round by round.
"""

from __future__ import annotations

from bench import systems
from bench.results import ScenarioResult, interleave, percentile
from bench.session import Bench

NAME = "latency"
TITLE = "Latency: one 100-byte echo in flight"


def run(bench: Bench) -> ScenarioResult:
    """Measure p50 and p99 of cocaine and the broker, interleaved."""
    result = ScenarioResult(NAME, TITLE)
    settings = bench.settings
    targets = {"cocaine": systems.cocaine(bench), "broker": systems.broker(bench, 1)}
    figures = {key: (result.figure(f"{system.label}, p50", "ms"),
                     result.figure(f"{system.label}, p99", "ms"))
               for key, system in targets.items()}
    samples: dict[str, list[float]] = {key: [] for key in targets}
    payload = b"x" * 100
    for round_index in range(settings.rounds):
        bench.say(f"  round {round_index + 1}/{settings.rounds}")
        for key in interleave(targets, round_index):
            measured = targets[key].run(payload, 1, settings.latency_seconds,
                                        min(0.2, settings.warmup_seconds))
            values = list(measured.latencies)
            if measured.errors or not values:
                raise RuntimeError(f"{key}: {measured.done} answers, errors "
                                   f"{dict(measured.errors)}")
            p50, p99 = percentile(values, 50), percentile(values, 99)
            figures[key][0].add(p50 * 1000 if p50 is not None else None)
            figures[key][1].add(p99 * 1000 if p99 is not None else None)
            samples[key].extend(values)
    for key, system in targets.items():
        result.samples[system.label] = samples[key]
        result.details[f"{key}_requests"] = len(samples[key])
    p50 = result.add_ratio("cocaine / broker, p50", figures["cocaine"][0], figures["broker"][0])
    result.add_ratio("cocaine / broker, p99", figures["cocaine"][1], figures["broker"][1])
    result.target("p50 cocaine / broker", p50.median, "<= 1.3", "x")
    result.target("p99 cocaine", figures["cocaine"][1].median, "<= 1.0", "ms")
    return result
