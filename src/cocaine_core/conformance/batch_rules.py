"""The rule about batches (docs/protocol.md, "Batches"), only for a worker whose handshake says
``batch``: ``batch``.

Such a worker's CONFIGURE says ``batch: true`` (the kit's concurrency, 4, is above 1), as the
engine's would, so it may answer any rule's jobs with CHOKE_BATCH: the harness takes one as
the CHOKEs it stands for, after checking it whole (1 to 64 entries ``[job_id: int, with_last:
bool]``, one payload frame per entry whose ``with_last`` is true), each entry then checked as
that CHOKE would be (a job the kit sent, not ended yet). The other rules send plain INVOKEs,
so they check that such a worker still answers those; this rule sends several jobs in one
INVOKE_BATCH.
"""

from __future__ import annotations

import time

from cocaine_core.conformance.harness import Harness
from cocaine_core.conformance.job_rules import AFTERWARDS, Fail, Skip
from cocaine_core.conformance.messages import Answer, ProtocolViolation, short

#: The bodies of the ``echo`` jobs of the kit's INVOKE_BATCH, one per job: all different, so
#: that an answer given to the wrong job shows; the empty one's answer is a CHOKE alone (or
#: with an empty last chunk); the last is 48 KiB.
BODIES = (b"batch job 1", b"", bytes(range(256)), b"batch job 4 " * 4096)


def _ids(answers: list[Answer]) -> str:
    return ", ".join(str(answer.job_id) for answer in answers)


def batch(kit: Harness) -> str:
    """Only for a worker that claims ``batch``: an INVOKE_BATCH of 4 ``echo`` jobs; each is
    answered exactly once (a CHOKE, an entry of a CHOKE_BATCH, or chunks and a CHOKE), with
    its own body, within the timeout, and nothing comes for a job the kit did not send."""
    if not kit.batch:
        raise Skip("the worker does not claim batch (features.batch)")
    answers = kit.invoke_batch([("echo", body) for body in BODIES])
    what = (f"an INVOKE_BATCH of {len(BODIES)} `echo` jobs ({_ids(answers)}; bodies of "
            f"{', '.join(str(len(body)) for body in BODIES)} B)")
    try:
        if not kit.wait(lambda: all(a.done for a in answers), time.monotonic() + kit.timeout):
            late = [a for a in answers if not a.done]
            raise Fail(f"{what}: no end (CHOKE, CHOKE_BATCH entry or ERROR) within "
                       f"{kit.timeout:g} s for job(s) {_ids(late)} ({len(late)} of "
                       f"{len(answers)}): each job of a batch is answered, as if it had come "
                       f"in an INVOKE of its own")
        kit.wait(lambda: False, time.monotonic() + AFTERWARDS)  # a second end would show here
    except ProtocolViolation as exc:
        raise Fail(f"{what}: {exc}") from None
    for index, (answer, body) in enumerate(zip(answers, BODIES, strict=True)):
        job = f"job {answer.job_id} (entry {index} of the INVOKE_BATCH, {len(body)} B)"
        if answer.end != "choke":
            raise Fail(f"{what}: {job} ended with {answer.describe()}, expected its body back "
                       f"and a CHOKE")
        got = answer.body()
        if got != body:
            owner = next((a.job_id for a, b in zip(answers, BODIES, strict=True) if b == got),
                         None)
            whose = (f"the body of job {owner}" if owner is not None else
                     f"{len(got)} B ({short(got, 40)})")
            raise Fail(f"{what}: {job} was answered with {whose}, not its own: each job of "
                       f"a batch gets its own answer, under its own job id")
    batched = sum(answer.batched for answer in answers)
    took = max(answer.ended_at or 0.0 for answer in answers) - answers[0].sent_at
    return (f"{what}: each answered once, with its own body, within {took:.3f} s: "
            f"{batched} as entries of a CHOKE_BATCH, {len(answers) - batched} by CHOKE")
