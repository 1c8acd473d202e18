"""Abandoned requests (issue 12): a job nobody waits for any more never runs.

A client that gives up (its ``wait`` passed) or leaves (closed, interrupted) is no longer
served: its queued jobs are dropped, counted as ``abandoned`` (or ``expired``, when the
deadline the client sent passed first). The first tests drive a real node; then the clients'
side against a bare ROUTER; then the engine's pieces (job, queue, stats) on the fake backend.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from cocaine_core import protocol
from cocaine_core.client import AsyncClient, Client
from cocaine_core.engine.job import Job
from cocaine_core.engine.queue import JobQueue
from cocaine_core.engine.stats import JobStats
from cocaine_core.errors import ServiceError
from cocaine_core.protocol import Code
from cocaine_core.testing import call_or_error, wait_until
from tests import distributions
from tests.engine.fake_backend import Answer, FakeBackend, backend, hold, run, until

APP = '''
import os
import time

RUNS = RUNS_PATH


def _record(what):
    with open(RUNS, "ab") as f:
        f.write(what + b"\\n")


def _held(release=".release"):
    end = time.monotonic() + 30
    while not os.path.exists(RUNS + release) and time.monotonic() < end:
        time.sleep(0.02)


def slow(request):
    """Hold the app's only slave until the test releases it."""
    _record(b"slow")
    _held()
    return b"released"


def record(request):
    _record(request.data)
    return request.data


def stream(request):
    """A first chunk at once, the rest once released."""
    _record(b"stream")
    yield b"first"
    _held(".release-stream")
    yield b"second"
'''

TASKS = {"slow": {"type": "native-server"}, "record": {"type": "native-server"},
         "stream": {"type": "native-server"}}


class HeldApp:
    """The app ``a`` on a node, its one slave held by a slow job until ``release()``."""

    def __init__(self, node: Any, runs: Path) -> None:
        self.node = node
        self.endpoint = node.endpoint
        self.runs = runs
        self.answers: list[object] = []
        self._holder = threading.Thread(target=lambda: self.answers.append(
            call_or_error(self.endpoint, "a", "slow")))

    def hold(self) -> HeldApp:
        self._holder.start()
        wait_until(lambda: self.ran() == [b"slow"], message="the slow job to hold the slave")
        return self

    def ran(self) -> list[bytes]:
        """What the app ran, in order."""
        return self.runs.read_bytes().split() if self.runs.exists() else []

    def received(self) -> int:
        """Requests for ``record`` the node has received."""
        return int(self.node.info("a")["tasks"]["record"]["requests"])

    def jobs(self) -> dict[str, Any]:
        return dict(self.node.info("a")["jobs"])

    def release(self) -> None:
        """Let the slow job end; a patient request queued last runs once every earlier one
        has been run or dropped (one slave, oldest first)."""
        Path(str(self.runs) + ".release").touch()
        assert call_or_error(self.endpoint, "a", "record", "patient") == b"patient"
        self._holder.join(30)
        assert self.answers == [b"released"]


@pytest.fixture
def held(cocaine_node: Any, make_app: Any, tmp_path: Path) -> Iterator[HeldApp]:
    runs = tmp_path / "runs"
    manifest = make_app(APP.replace("RUNS_PATH", repr(str(runs))), tasks=TASKS,
                        engine={"pool-limit": 1})
    cocaine_node.add_app("a", manifest)
    app = HeldApp(cocaine_node, runs)
    yield app.hold()
    for release in (".release", ".release-stream"):  # whatever a failed test left held
        Path(str(runs) + release).touch()


def cocaine_call(endpoint: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(distributions.COCAINE), "call", *args, "--node", endpoint],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=distributions.clean_environment(extra={"COCAINE_LOAD_PLUGINS": "python"}))


def test_jobs_of_clients_that_gave_up_or_left_never_run(held: HeldApp) -> None:
    endpoint = held.endpoint

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
        while held.received() < 8:
            await asyncio.sleep(0.02)
        client.close()
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)

    asyncio.run(leave())

    # `cocaine call` interrupted by Ctrl-C while its request waits.
    process = cocaine_call(endpoint, "a", "record", "ctrl-c")
    try:
        wait_until(lambda: held.received() == 9, message="the interrupted call's request")
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    held.release()
    assert held.ran() == [b"slow", b"patient"]
    jobs = held.jobs()
    assert jobs["done"] == 2
    assert jobs["abandoned"] + jobs["expired"] == 9
    assert jobs["abandoned"] >= 6  # the five that left and the interrupted one
    assert len(held.node.node.endpoint.in_flight) == 0


def test_a_client_killed_while_it_waits_is_not_served_past_its_wait(held: HeldApp) -> None:
    # SIGKILL: no CANCEL is ever sent; the node sees the connection drop and abandons the
    # job at once (before the deadline the client sent, its wait, would have expired it).
    process = cocaine_call(held.endpoint, "a", "record", "killed", "--wait", "30")
    try:
        wait_until(lambda: held.received() == 1, message="the call's request")
    finally:
        process.kill()
        process.wait()
    wait_until(lambda: held.jobs()["abandoned"] == 1, timeout=5,
               message="the killed client's job to be abandoned")
    held.release()
    assert held.ran() == [b"slow", b"patient"]
    assert held.jobs()["expired"] == 0


def test_a_running_job_whose_client_left_finishes_unheard(held: HeldApp) -> None:
    held.release()
    with Client(held.endpoint, wait=10) as client:
        chunks = client.stream("a", "stream")
        assert next(chunks) == b"first"
        chunks.close()  # the caller has seen enough: CANCEL
        wait_until(lambda: held.jobs()["abandoned"] == 1, message="the job to be abandoned")
        # The job goes on to its end on the slave; its answer is dropped, and the client's
        # next request (served once the slave is free) gets its own answer only.
        Path(str(held.runs) + ".release-stream").touch()
        assert client.call("a", "record", "next") == b"next"
    assert held.ran() == [b"slow", b"patient", b"stream", b"next"]
    jobs = held.jobs()
    assert (jobs["done"], jobs["abandoned"], jobs["failed"]) == (3, 1, 0)
    assert len(held.node.node.endpoint.in_flight) == 0


# -- the clients' side, against a bare ROUTER -----------------------------------------------------


@pytest.fixture
def router() -> Iterator[tuple[str, zmq.Socket[bytes]]]:
    """A bare ROUTER on a free port: a "node" the test answers by hand."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    try:
        yield f"tcp://127.0.0.1:{port}", sock
    finally:
        sock.close()


def receive(sock: zmq.Socket[bytes], timeout: float = 5.0) -> tuple[bytes, list[Any]]:
    """The next message's sender and header."""
    assert sock.poll(int(timeout * 1000)), "nothing came"
    frames = sock.recv_multipart()
    return frames[0], protocol.unpack(frames[1])


def nothing_more(sock: zmq.Socket[bytes], timeout: float = 0.3) -> bool:
    return not sock.poll(int(timeout * 1000))


def answer_next(sock: zmq.Socket[bytes], code: int = Code.CHOKE,
                data: bytes = b"ok") -> Callable[[], list[Any]]:
    """Answer the next request, from a thread, with one message; returns a function that
    waits for that and gives the request's header."""
    headers: list[list[Any]] = []

    def serve() -> None:
        identity, header = receive(sock)
        headers.append(header)
        sock.send_multipart([identity, protocol.pack(code, header[1]), data])

    thread = threading.Thread(target=serve)
    thread.start()

    def header() -> list[Any]:
        thread.join(10)
        return headers[0]

    return header


@pytest.mark.parametrize(("wait", "deadline", "sent"), [
    (2.0, None, 2.0), (2.0, 5.0, 5.0), (None, None, None), (None, 5.0, 5.0)],
    ids=["wait", "explicit", "no wait", "explicit, no wait"])
def test_a_client_sends_its_wait_as_the_deadline(router, wait, deadline, sent) -> None:
    endpoint, sock = router
    with Client(endpoint, wait=wait) as client:
        request = answer_next(sock)
        assert client.call("a", "e", deadline=deadline) == b"ok"
        assert request()[4]["deadline"] == sent


def test_a_client_that_gives_up_cancels_and_one_answered_does_not(router) -> None:
    endpoint, sock = router
    with Client(endpoint, wait=0.3) as client:
        with pytest.raises(ServiceError):
            client.call("a", "e")
        _, request = receive(sock)
        assert request[0] == Code.REQUEST and request[4]["deadline"] == 0.3
        _, cancel = receive(sock)
        assert cancel == [Code.CANCEL, request[1]]

        answered = answer_next(sock)
        assert client.call("a", "e") == b"ok"
        answered()
        assert nothing_more(sock), "an answered request is not cancelled"
    assert nothing_more(sock), "nor on close"


@pytest.mark.parametrize("closing", ["the stream", "the client"])
def test_closing_a_stream_or_the_client_cancels_what_is_still_coming(router, closing) -> None:
    endpoint, sock = router
    client = Client(endpoint, wait=5)
    chunks = client.stream("a", "e")
    request = answer_next(sock, Code.CHUNK, b"1")
    assert next(chunks) == b"1"
    (chunks if closing == "the stream" else client).close()
    _, cancel = receive(sock)
    assert cancel == [Code.CANCEL, request()[1]]
    chunks.close()
    client.close()
    assert nothing_more(sock), "one CANCEL per request"


def test_an_async_client_cancels_what_it_stops_waiting_for(router) -> None:
    endpoint, sock = router

    async def main() -> None:
        client = AsyncClient(endpoint, wait=0.3)
        with pytest.raises(ServiceError):
            await client.call("a", "gave-up")
        client.wait = None
        calls = [asyncio.ensure_future(client.call("a", "left")) for _ in range(3)]
        await asyncio.sleep(0.2)
        client.close()
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)

    asyncio.run(main())
    messages = [receive(sock)[1] for _ in range(8)]
    requests = {m[1]: m[4]["deadline"] for m in messages if m[0] == Code.REQUEST}
    cancels = sorted(m[1] for m in messages if m[0] == Code.CANCEL)
    assert requests == {1: 0.3, 2: None, 3: None, 4: None}
    assert cancels == [1, 2, 3, 4]
    assert nothing_more(sock)


# -- the engine's pieces ------------------------------------------------------------------------


def job(name: str = "x", **policy: Any) -> Job:
    return Job("echo", name.encode(), sink=Answer(), **policy)


def answer(job: Job) -> Answer:
    """What came back of ``job``."""
    assert isinstance(job.sink, Answer)
    return job.sink


def test_the_queue_takes_a_job_out_and_never_hands_out_an_ended_one() -> None:
    queue = JobQueue()
    first, second, third, urgent = job("1"), job("2"), job("3"), job("u", urgent=True)
    for each in (first, second, third, urgent):
        queue.push(each)
    assert queue.remove(second) and len(queue) == 3
    assert not queue.remove(second), "only once"
    assert list(queue) == [urgent, first, third]
    third.abandon()  # ended without being taken out: still never handed out
    assert [queue.pop(), queue.pop(), queue.pop()] == [urgent, first, None]
    assert len(queue) == 0 and not queue.remove(first), "a job handed out is not here"


def test_taking_many_jobs_out_keeps_the_queue_small() -> None:
    queue = JobQueue()
    jobs = [job(str(i)) for i in range(10_000)]
    for each in jobs:
        queue.push(each)
    for each in jobs[:-1]:
        assert queue.remove(each)
    assert len(queue) == 1 and list(queue) == [jobs[-1]]
    assert len(queue._jobs) <= JobQueue.SLACK + 1, "taken-out jobs are shed, not kept"
    assert queue.pop() is jobs[-1]


def test_an_abandoned_job_is_counted_once_and_its_sink_hears_nothing() -> None:
    stats, abandoned = JobStats(), job()
    stats.abandon(abandoned)
    stats.abandon(abandoned)
    stats.succeed(abandoned, b"late")  # it finished on its slave anyway
    stats.fail(abandoned, 500, "its slave died")
    stats.time_out(abandoned)
    assert (stats.abandoned, stats.done, stats.failed, stats.timed_out) == (1, 0, 0, 0)
    heard = answer(abandoned)
    assert heard.chunks == [] and heard.code is None and not heard.done.is_set()
    assert stats.as_dict()["abandoned"] == 1


def test_an_engine_never_starts_an_abandoned_job_and_lets_a_running_one_end(fake_engine):
    engine = fake_engine(pool_limit=1)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        await engine.start()
        running, queued, after = job("running"), job("queued"), job("after")
        engine.submit(running)
        slave = await until(lambda: next((s for s in backend(engine).live() if s.jobs), None))
        engine.submit(queued)
        engine.submit(after)
        engine.stats.abandon(running)
        queued.abandon()  # left in its queue: the queue skips it
        slave.answer_all()
        await until(lambda: slave.jobs, what="the next job")
        assert list(slave.jobs.values()) == [b"after"], "the abandoned job never started"
        slave.answer_all()
        await asyncio.wait_for(answer(after).done.wait(), 2)
        assert answer(after).chunks == [b"after"]
        assert not answer(running).done.is_set() and answer(running).chunks == []
        stats = engine.stats
        assert (stats.done, stats.abandoned) == (1, 1)
        assert len(engine.queue) == 0
        await engine.stop()

    run(scenario)


def test_dispatch_with_only_ended_jobs_waiting_does_nothing(fake_engine):
    engine = fake_engine(pool_limit=1)
    FakeBackend.behaviour = hold

    async def scenario() -> None:
        await engine.start()
        running, queued = job("running"), job("queued")
        engine.submit(running)
        slave = await until(lambda: next((s for s in backend(engine).live() if s.jobs), None))
        engine.submit(queued)
        queued.abandon()
        slave.answer_all()
        await asyncio.wait_for(answer(running).done.wait(), 2)
        await asyncio.sleep(0.15)  # a supervisor round dispatches too
        assert not slave.jobs and len(engine.queue) == 0
        await engine.stop()

    run(scenario)

