"""Abandoned requests (issue 12): a job nobody waits for any more never runs.

A client that gives up (its ``wait`` passed) or leaves (closed, interrupted) is no longer
served: its queued jobs are dropped, counted as ``abandoned`` (or ``expired``, when the
deadline the client sent passed first). The first test drives a real node; the others check
the engine's pieces (job, queue, stats) on the fake backend.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from cocaine_core.client import AsyncClient, Client
from cocaine_core.engine.job import Job
from cocaine_core.engine.queue import JobQueue
from cocaine_core.engine.stats import JobStats
from cocaine_core.errors import ServiceError
from cocaine_core.testing import call_or_error, wait_until
from tests import distributions
from tests.engine.fake_backend import Answer, FakeBackend, backend, hold, run, submit, until

APP = '''
import os
import time

RUNS = RUNS_PATH


def _record(what):
    with open(RUNS, "ab") as f:
        f.write(what + b"\\n")


def slow(request):
    """Hold the app's only slave until the test releases it."""
    _record(b"slow")
    end = time.monotonic() + 30
    while not os.path.exists(RUNS + ".release") and time.monotonic() < end:
        time.sleep(0.02)
    return b"released"


def record(request):
    _record(request.data)
    return request.data
'''

TASKS = {"slow": {"type": "native-server"}, "record": {"type": "native-server"}}


def test_jobs_of_clients_that_gave_up_or_left_never_run(cocaine_node, make_app, tmp_path):
    runs = tmp_path / "runs"
    manifest = make_app(APP.replace("RUNS_PATH", repr(str(runs))), tasks=TASKS,
                        engine={"pool-limit": 1})
    cocaine_node.add_app("a", manifest)
    endpoint = cocaine_node.endpoint

    def received() -> int:
        return int(cocaine_node.info("a")["tasks"]["record"]["requests"])

    answers: list[object] = []
    holder = threading.Thread(target=lambda: answers.append(
        call_or_error(endpoint, "a", "slow")))
    holder.start()
    wait_until(lambda: runs.exists() and runs.read_bytes() == b"slow\n",
               message="the slow job to hold the only slave")

    # A client that waits half a second for each answer gives up on three, one by one (or,
    # at the edge, hears first that the deadline it sent, its wait, has passed).
    with Client(endpoint, wait=0.5) as impatient:
        for i in range(3):
            with pytest.raises(ServiceError) as error:
                impatient.call("a", "record", f"gave-up-{i}")
            assert error.value.code in (500, 520)
            assert error.value.message.startswith(("no answer from the node",
                                                   "the job's deadline passed"))

    # An asyncio client with five requests in flight leaves before any answer.
    async def leave() -> None:
        client = AsyncClient(endpoint)
        calls = [asyncio.ensure_future(client.call("a", "record", f"left-{i}"))
                 for i in range(5)]
        while received() < 8:
            await asyncio.sleep(0.02)
        client.close()
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)

    asyncio.run(leave())

    # `cocaine call` interrupted by Ctrl-C while its request waits.
    process = subprocess.Popen(
        [str(distributions.COCAINE), "call", "a", "record", "ctrl-c", "--node", endpoint],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=distributions.clean_environment(extra={"COCAINE_LOAD_PLUGINS": "python"}))
    try:
        wait_until(lambda: received() == 9, message="the interrupted call's request")
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    # Release the slave; a patient request queued last runs once every earlier one has been
    # run or dropped (one slave, oldest first).
    Path(str(runs) + ".release").touch()
    assert call_or_error(endpoint, "a", "record", "patient") == b"patient"
    holder.join(30)
    assert answers == [b"released"]
    assert runs.read_bytes().split() == [b"slow", b"patient"]
    jobs = cocaine_node.info("a")["jobs"]
    print("JOBS", jobs)
    assert jobs["done"] == 2
    assert jobs.get("abandoned", 0) + jobs["expired"] == 9
    assert jobs.get("abandoned", 0) >= 6  # the five that left and the interrupted one
    assert len(cocaine_node.node.endpoint.in_flight) == 0
