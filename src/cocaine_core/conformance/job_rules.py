"""The rules about jobs: echo, chunks in order, errors with codes, heartbeats during a long job,
concurrency and flow. Each takes the ``Harness`` (configured, ready) and returns its detail
line, or raises ``Fail`` (or ``Skip``) with what it saw and what the protocol says.
"""

from __future__ import annotations

import time

from cocaine_core.conformance.harness import Harness
from cocaine_core.conformance.messages import Answer, short
from cocaine_core.protocol import Code

#: Bodies the ``echo`` rule sends: empty; 100 bytes with 0x00 and bytes that are not UTF-8;
#: 1 MiB holding every byte value.
ECHO_BODIES = (b"", bytes([0]) + bytes(range(255, 156, -1)), bytes(range(256)) * 4096)
#: How long the kit listens after the echoes for a second CHOKE of one of them.
AFTERWARDS = 0.2
LONG_JOB_MS = 1500
PARALLEL_JOBS = 4
PARALLEL_MS = 800
#: The longest 4 overlapping sleeps of 0.8 s may take (one at a time: 3.2 s).
PARALLEL_LIMIT = 2.4
WINDOW = 8


class Fail(Exception):
    """The rule is broken: the message says what the kit saw and what the protocol says."""


class Skip(Exception):
    """An optional rule does not apply to this worker: the message says why."""


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 and n % 2**20 == 0 else f"{n} B"


def _finish(kit: Harness, answers: list[Answer], what: str, extra: float = 0.0) -> None:
    """Wait for every answer (bounded by the kit's timeout, plus ``extra``); Fail if not."""
    deadline = time.monotonic() + kit.timeout + extra
    if not kit.wait(lambda: all(a.done for a in answers), deadline):
        late = [a for a in answers if not a.done]
        raise Fail(f"{what}: no end (CHOKE or ERROR) within {kit.timeout + extra:g} s for "
                   f"job(s) {', '.join(str(a.job_id) for a in late)} "
                   f"({late[0].describe()})")


def _expect_choke(answer: Answer, what: str) -> None:
    if answer.end != "choke":
        raise Fail(f"{what} ended with {answer.describe()}, expected its answer and a CHOKE")


def echo(kit: Harness) -> str:
    """Bodies of 0 B, 100 B (binary) and 1 MiB come back unchanged, each ended by one CHOKE."""
    seen = []
    for body in ECHO_BODIES:
        answer = kit.invoke("echo", body)
        what = f"`echo` of {_size(len(body))}"
        _finish(kit, [answer], what)
        _expect_choke(answer, what)
        got = answer.body()
        if got != body:
            where = next((i for i, (a, b) in enumerate(zip(got, body, strict=False)) if a != b),
                         min(len(got), len(body)))
            raise Fail(f"{what} came back as {_size(len(got))} in {len(answer.chunks)} "
                       f"chunk(s), differing from byte {where} (got {short(got[where:][:16])}, "
                       f"sent {short(body[where:][:16])}); an answer's bytes must come back "
                       f"unchanged")
        took = (answer.ended_at or answer.sent_at) - answer.sent_at
        seen.append(f"{_size(len(body))} in {len(answer.chunks)} chunk(s), {took:.3f} s")
    kit.wait(lambda: False, time.monotonic() + AFTERWARDS)  # a second CHOKE would show here
    return "unchanged, one CHOKE each: " + "; ".join(seen)


def _check_stream(answer: Answer, n: int) -> None:
    what = f"`stream {n}`"
    _expect_choke(answer, what)
    expected = [str(i).encode() for i in range(n)]
    for i, (got, want) in enumerate(zip(answer.chunks, expected, strict=False)):
        if got != want:
            raise Fail(f"{what}: chunk {i} was {short(got)}, expected {short(want)} (chunks "
                       f"must arrive in the order they were sent)")
    if len(answer.chunks) != n:
        raise Fail(f"{what}: {len(answer.chunks)} chunk(s) then CHOKE, expected exactly {n} "
                   f"(\"0\" to \"{n - 1}\")" if n else
                   f"{what}: {len(answer.chunks)} chunk(s) then CHOKE, expected only a CHOKE")


def chunks_in_order(kit: Harness) -> str:
    """``stream 100``: chunks "0".."99" in order then CHOKE; ``stream 0``: just a CHOKE."""
    hundred = kit.invoke("stream", b"100")
    _finish(kit, [hundred], "`stream 100`")
    _check_stream(hundred, 100)
    none = kit.invoke("stream", b"0")
    _finish(kit, [none], "`stream 0`")
    _check_stream(none, 0)
    return "`stream 100`: 100 chunks \"0\"..\"99\" in order, then CHOKE; `stream 0`: a CHOKE"


def errors_with_codes(kit: Harness) -> str:
    """``fail boom`` → ERROR 502 whose message holds "boom"; an unknown event → ERROR 404."""
    failed = kit.invoke("fail", b"boom")
    unknown = kit.invoke("no-such-event", b"")
    _finish(kit, [failed, unknown], "`fail` and `no-such-event`")
    problems = []
    if failed.end != "error" or failed.code != 502 or "boom" not in failed.message:
        problems.append(f"`fail boom` ended with {failed.describe()}; expected ERROR 502 (the "
                        f"handler raised) with a message containing 'boom'")
    if unknown.end != "error" or unknown.code != 404:
        problems.append(f"the event `no-such-event` ended with {unknown.describe()}; "
                        f"expected ERROR 404 (no such event)")
    if problems:
        raise Fail("; ".join(problems))
    return (f"`fail boom` → ERROR 502 {short(failed.message, 60)}; `no-such-event` → "
            f"ERROR 404 {short(unknown.message, 60)}")


def heartbeats_during_a_long_job(kit: Harness) -> str:
    """``sleep 1500``: heartbeats keep coming while it runs, and it answers "slept"."""
    answer = kit.invoke("sleep", str(LONG_JOB_MS).encode())
    what = f"`sleep {LONG_JOB_MS}`"
    _finish(kit, [answer], what, LONG_JOB_MS / 1000)
    assert answer.ended_at is not None
    gap, began = kit.longest_gap(answer.sent_at, answer.ended_at)
    limit = kit.gap_limit()
    if gap > limit:
        when = (f"{began:.2f} s into the job" if began >= 0 else
                f"{-began:.2f} s before the job started")
        raise Fail(f"no HEARTBEAT for {gap:.2f} s while {what} ran (from {when}): "
                   f"heartbeats must go on during jobs, every {kit.interval:g} s "
                   f"from a timer or thread (the kit allows a gap of {limit:.2f} s)")
    _expect_choke(answer, what)
    if answer.body() != b"slept":
        raise Fail(f"{what} answered {short(answer.body())}, expected 'slept'")
    beats = sum(1 for t in kit.beats if answer.sent_at < t <= answer.ended_at)
    return (f"{beats} heartbeats during the {answer.ended_at - answer.sent_at:.2f} s job, "
            f"longest gap {gap:.2f} s (limit {limit:.2f} s); answered 'slept'")


def concurrency(kit: Harness) -> str:
    """4 ``sleep 800`` at once: 4 answers, within 2.4 s (one at a time would take 3.2 s)."""
    answers = [kit.invoke("sleep", str(PARALLEL_MS).encode()) for _ in range(PARALLEL_JOBS)]
    serial = PARALLEL_JOBS * PARALLEL_MS / 1000
    what = f"{PARALLEL_JOBS} jobs `sleep {PARALLEL_MS}` sent at once"
    _finish(kit, answers, what, serial)
    for answer in answers:
        _expect_choke(answer, f"`sleep {PARALLEL_MS}` (job {answer.job_id})")
        if answer.body() != b"slept":
            raise Fail(f"`sleep {PARALLEL_MS}` (job {answer.job_id}) answered "
                       f"{short(answer.body())}, expected 'slept'")
    took = max(a.ended_at or 0.0 for a in answers) - min(a.sent_at for a in answers)
    if took > PARALLEL_LIMIT:
        how = ("the jobs ran one at a time" if took >= serial * 0.9 else
               "the jobs did not all run at once")
        raise Fail(f"{what} took {took:.2f} s (at most {PARALLEL_LIMIT} s when they overlap, "
                   f"{serial:g} s one at a time): {how}, but CONFIGURE said concurrency "
                   f"{PARALLEL_JOBS}")
    return f"{what}: 4 answers in {took:.2f} s (limit {PARALLEL_LIMIT} s, serial {serial:g} s)"


def flow(kit: Harness) -> str:
    """Only for a worker whose handshake says ``flow``: it waits for CREDIT past the window
    of 8 chunks, and ends a job on CANCEL."""
    if not kit.flow:
        raise Skip("the worker does not claim flow (features.flow)")
    held = kit.invoke("stream", b"50", auto_credit=False)
    kit.wait(lambda: held.done, held.sent_at + 1.0)
    early = len(held.chunks)
    if early > WINDOW:
        raise Fail(f"`stream 50` sent {early} chunks within 1 s without any CREDIT: it does "
                   f"not wait for credit (the window, CONFIGURE's credit, is {WINDOW})")
    if held.done:
        raise Fail(f"`stream 50` ended without CREDIT, after {early} chunk(s): "
                   f"{held.describe()}")
    kit.send(Code.CREDIT, held.job_id, 100)
    _finish(kit, [held], "`stream 50` after CREDIT [12, id, 100]")
    _check_stream(held, 50)
    endless = kit.invoke("stream", b"100000", auto_credit=False)
    if not kit.wait(lambda: bool(endless.chunks) or endless.done,
                    time.monotonic() + kit.timeout):
        raise Fail(f"`stream 100000`: no chunk within {kit.timeout:g} s")
    kit.send(Code.CANCEL, endless.job_id)
    cancelled = time.monotonic()
    if not kit.wait(lambda: endless.done, cancelled + 2.0):
        raise Fail(f"`stream 100000` did not end (CHOKE or ERROR) within 2 s of its CANCEL "
                   f"[11, id] ({len(endless.chunks)} chunks so far): a cancelled job stops")
    assert endless.end is not None and endless.ended_at is not None
    return (f"`stream 50`: {early} chunks before CREDIT (window {WINDOW}), the rest in order "
            f"after it; `stream 100000` ended with {endless.end.upper()} "
            f"{endless.ended_at - cancelled:.2f} s after CANCEL, after "
            f"{len(endless.chunks)} chunks")
