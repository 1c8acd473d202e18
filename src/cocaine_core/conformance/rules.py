"""The conformance rules, in order, and the runner that checks a worker against each.

Every rule runs even when an earlier one failed, if it still can. What it needs:

- ``handshake`` fails: every later rule fails as *not reached* (nothing can be checked of a
  worker that never introduced itself); the optional ones (``flow``, ``streamed body``,
  ``headers``, ``batch``) are skipped instead.
- ``configure`` fails: the job rules fail as not reached; ``terminate and exit`` still runs.
- The worker exits during a rule: that rule fails, and every later one is not reached.

A message the protocol does not allow fails the rule being checked, naming the message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cocaine_core.conformance import batch_rules, job_rules, stream_rules
from cocaine_core.conformance.harness import MAX_MESSAGE, Harness, WorkerExited, describe_status
from cocaine_core.conformance.job_rules import Fail, Skip
from cocaine_core.conformance.messages import APP, MAIN, SLAVE_ID, ProtocolViolation, short
from cocaine_core.protocol import Code

#: Seconds between heartbeats the kit's CONFIGURE asks for.
HEARTBEAT_INTERVAL = 0.2
#: What the kit's CONFIGURE says (to a worker whose handshake says ``batch``, ``batch: true``
#: too: its concurrency is above 1).
SETTINGS: dict[str, object] = {
    "app": APP, "concurrency": job_rules.PARALLEL_JOBS, "heartbeat_interval": HEARTBEAT_INTERVAL,
    "credit": job_rules.WINDOW, "max_message": MAX_MESSAGE}
#: How long the ``heartbeats`` rule listens while the worker is idle.
IDLE = 1.2
#: How long a worker has to exit after TERMINATE.
EXIT_WITHIN = 5.0


@dataclass(frozen=True)
class Result:
    """One rule's verdict: ``ok``, ``fail`` or ``skip``, and what the kit saw."""

    rule: str
    status: str
    detail: str


def handshake(kit: Harness) -> str:
    """The first message on the main socket, within the timeout, is
    [1, "conformance-1", pid, features?]."""
    started = time.monotonic()
    deadline = started + kit.timeout
    try:
        while True:
            message = kit.receive(deadline)
            if message is None:
                raise Fail(f"no HANDSHAKE within {kit.timeout:g} s of the start; the first "
                           f"message on the main socket (identity {SLAVE_ID!r}, the "
                           f"COCAINE_SLAVE_ID) must be [1, slave_id, pid, features]")
            if message.identity == MAIN:
                break
    except WorkerExited as exc:
        raise Fail(f"the worker exited with {describe_status(exc.status)} "
                   f"{time.monotonic() - started:.2f} s after its start, before its "
                   f"HANDSHAKE") from None
    if message.code != Code.HANDSHAKE:
        raise Fail(f"the first message on the main socket was {short(message.fields)}, not a "
                   f"HANDSHAKE [1, slave_id, pid, features]")
    _, slave_id, pid, *rest = message.fields
    if slave_id != SLAVE_ID:
        raise Fail(f"the HANDSHAKE says slave id {slave_id!r}; the kit gave COCAINE_SLAVE_ID "
                   f"{SLAVE_ID!r}")
    if pid <= 0:
        raise Fail(f"the HANDSHAKE says pid {pid}; a pid is an integer above 0")
    kit.handshake = message
    kit.features = rest[0] if rest else {}
    kit.flow = kit.features.get("flow") is True
    kit.stream = kit.features.get("stream") is True
    kit.batch = kit.features.get("batch") is True
    features = f"features {short(kit.features, 80)}" if rest else "no features"
    return (f"after {message.at - started:.2f} s: pid {pid} ({_whose(pid, kit.pid)}), "
            f"{features}")


def _whose(pid: int, started: int) -> str:
    if pid == started:
        return "the process started"
    parent, steps = pid, 0
    while parent > 1 and steps < 64:
        try:
            stat = Path(f"/proc/{parent}/stat").read_text()
            parent, steps = int(stat.rsplit(")", 1)[1].split()[1]), steps + 1
        except (OSError, ValueError, IndexError):
            break
        if parent == started:
            return f"a descendant of the process started, {started}: launched through a shell?"
    return f"not the process started ({started}) nor one of its children here"


def configure(kit: Harness) -> str:
    """After CONFIGURE, the first HEARTBEAT (ready) comes within the timeout; an ERROR with a
    nil job id fails."""
    kit.interval = HEARTBEAT_INTERVAL
    kit.settings = {**SETTINGS, "batch": True} if kit.batch else dict(SETTINGS)
    kit.send(Code.CONFIGURE, kit.settings)
    sent = time.monotonic()
    deadline = sent + kit.timeout
    while not kit.beats:
        message = kit.receive(deadline)
        if message is None:
            raise Fail(f"no HEARTBEAT within {kit.timeout:g} s of CONFIGURE; the first "
                       f"HEARTBEAT [3, slave_id] after it says the worker is ready")
        if message.code == Code.ERROR and message.fields[1] is None:
            # The protocol says it exits then: wait a little, so it is not blamed on TERMINATE.
            exited = time.monotonic() + 2.0
            while kit.status() is None and time.monotonic() < exited:
                kit.receive(exited, exits_ok=True)
            status = kit.status()
            after = (f"; it then exited with {describe_status(status)}" if status is not None
                     else "; it has not exited (a slave that cannot start exits)")
            raise Fail(f"the worker could not start: ERROR {message.fields[2]}: "
                       f"{short(message.fields[3], 300)}{after}")
    return (f"ready (first HEARTBEAT) {kit.beats[0] - sent:.2f} s after CONFIGURE (concurrency "
            f"{SETTINGS['concurrency']}, heartbeat_interval {kit.interval:g} s, credit "
            f"{SETTINGS['credit']}{', batch' if kit.batch else ''})")


def heartbeats(kit: Harness) -> str:
    """While idle for 1.2 s, heartbeats keep coming with no gap over max(3 * interval, 0.5 s)."""
    start = time.monotonic()
    kit.wait(lambda: False, start + IDLE)
    end = time.monotonic()
    gap, began = kit.longest_gap(start, end)
    limit = kit.gap_limit()
    count = sum(1 for t in kit.beats if start < t <= end)
    if gap > limit:
        raise Fail(f"while idle for {end - start:.1f} s: no HEARTBEAT for {gap:.2f} s (from "
                   f"{began:.2f} s), {count} in all; CONFIGURE said one every "
                   f"{kit.interval:g} s (the kit allows a gap of {limit:.2f} s)")
    return f"{count} in {end - start:.1f} s idle, longest gap {gap:.2f} s (limit {limit:.2f} s)"


def terminate_and_exit(kit: Harness) -> str:
    """TERMINATE → the process exits within 5 s with status 0."""
    kit.send(Code.TERMINATE, "conformance finished")
    sent = time.monotonic()
    deadline = sent + EXIT_WITHIN
    while kit.status() is None and time.monotonic() < deadline:
        kit.receive(deadline, exits_ok=True)
    status = kit.status()
    if status is None:
        raise Fail(f"still running {EXIT_WITHIN:g} s after TERMINATE [8, reason]: a worker "
                   f"finishes up and exits when told (the kit killed it)")
    took = time.monotonic() - sent
    if status != 0:
        raise Fail(f"exited with {describe_status(status)} within {took:.2f} s of "
                   f"TERMINATE; a worker told to terminate exits with status 0")
    return f"exited with status 0 within {took:.2f} s of TERMINATE"


#: The rules in the order they run: name, check, the rule it needs to have passed, and
#: whether it is optional (skipped rather than failed when it cannot run).
RULES: list[tuple[str, Callable[[Harness], str], str | None, bool]] = [
    ("handshake", handshake, None, False),
    ("configure", configure, "handshake", False),
    ("heartbeats", heartbeats, "configure", False),
    ("echo", job_rules.echo, "configure", False),
    ("chunks in order", job_rules.chunks_in_order, "configure", False),
    ("errors with codes", job_rules.errors_with_codes, "configure", False),
    ("heartbeats during a long job", job_rules.heartbeats_during_a_long_job, "configure",
     False),
    ("concurrency", job_rules.concurrency, "configure", False),
    ("flow", job_rules.flow, "configure", True),
    ("streamed body", stream_rules.streamed_body, "configure", True),
    ("headers", stream_rules.headers, "configure", True),
    ("batch", batch_rules.batch, "configure", True),
    ("terminate and exit", terminate_and_exit, "handshake", False),
]


def run_rules(kit: Harness, report: Callable[[Result], None] = lambda result: None
              ) -> list[Result]:
    """Check the started worker against every rule, in order; ``report`` is called with
    each result as it is known."""
    results: list[Result] = []
    passed: set[str] = set()
    gone: str | None = None  # why nothing more can be checked
    for name, rule, needs, optional in RULES:
        blocked = gone or (f"{needs} failed" if needs is not None and needs not in passed
                           else None)
        if kit.handshake is not None and not _claimed(kit, name):
            blocked = None  # the skip says why, whatever else failed
        if blocked is not None:
            result = Result(name, "skip" if optional else "fail", f"not reached ({blocked})")
        else:
            result = _run(kit, name, rule)
            if result.status == "ok":
                passed.add(name)
            status = kit.status()
            if status is not None and name != "terminate and exit":
                gone = f"the worker exited with {describe_status(status)} during '{name}'"
        results.append(result)
        report(result)
    return results


def _claimed(kit: Harness, name: str) -> bool:
    """Whether the handshake claims the feature an optional rule checks (True for others)."""
    if name == "flow":
        return kit.flow
    if name in ("streamed body", "headers"):
        return kit.stream
    if name == "batch":
        return kit.batch
    return True


def _run(kit: Harness, name: str, rule: Callable[[Harness], str]) -> Result:
    try:
        return Result(name, "ok", rule(kit))
    except Skip as exc:
        return Result(name, "skip", str(exc))
    except (Fail, ProtocolViolation) as exc:
        return Result(name, "fail", str(exc))
    except WorkerExited as exc:
        return Result(name, "fail", f"{exc} while this rule ran")
    finally:
        kit.abandon()
