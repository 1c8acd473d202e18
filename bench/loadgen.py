"""The load generator: one raw pyzmq DEALER speaking the native protocol, N requests in flight.

It is the same code, with the same request shape, against cocaine's node and against the
baseline broker (which speaks the same frames), so the two are compared fairly. It is a
closed loop: each answer (choke or error) sends the next request at once, so exactly
``inflight`` requests are outstanding for the whole run. Only answers completed inside the
measurement window count; the warm-up before it is thrown away and the requests still out
at its end are drained (so the next run starts on a quiet connection).

Per request the loop packs one header and sends two frames, and receives the answer (a
one-chunk answer is a single CHOKE carrying the data): less work than a broker or a node does
per request, so it is rarely the bottleneck (see README, "Reading the figures").
"""

from __future__ import annotations

import time
from array import array
from collections import Counter
from dataclasses import dataclass, field

import msgpack
import zmq

REQUEST, CHUNK, CHOKE, ERROR = 10, 5, 6, 7


@dataclass
class LoadResult:
    """What one run of the load generator saw inside its measurement window."""

    done: int
    seconds: float
    #: Latency (seconds, request sent → choke) of every answer completed in the window.
    latencies: array[float]
    #: Errors by code (all of the window), and their latencies (seconds, sent → error).
    errors: Counter[int] = field(default_factory=Counter)
    error_latencies: array[float] = field(default_factory=lambda: array("d"))
    #: Chokes whose chunks did not add up to the payload sent (an echo went wrong).
    wrong: int = 0
    #: Every answer of the run, warm-up and drain included (for CPU per request).
    answered: int = 0
    #: Paced runs: requests not sent because ``max_outstanding`` were already out.
    held_back: int = 0

    @property
    def rate(self) -> float:
        """Successful answers per second."""
        return self.done / self.seconds if self.seconds > 0 else 0.0


class NativeLoad:
    """A DEALER connected to ``endpoint`` that drives ``app``/``event`` with echo requests."""

    def __init__(self, endpoint: str, app: str = "bench", event: str = "echo",
                 context: zmq.Context | None = None) -> None:
        self.endpoint = endpoint
        self.app = app
        self.event = event
        self._context = context or zmq.Context.instance()
        self.socket = self._context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.setsockopt(zmq.RCVHWM, 0)
        self.socket.connect(endpoint)
        self._next_id = 1

    def close(self) -> None:
        """Close the socket."""
        self.socket.close(linger=0)

    def __enter__(self) -> NativeLoad:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, payload: bytes, inflight: int, seconds: float, warmup: float = 0.0,
            check_echo: bool = True, answer_timeout: float = 30.0) -> LoadResult:
        """Keep ``inflight`` requests of ``payload`` going for ``warmup + seconds``."""
        sock = self.socket
        send = sock.send_multipart
        recv = sock.recv_multipart
        packb, unpackb = msgpack.packb, msgpack.unpackb
        clock = time.perf_counter
        app, event = self.app, self.event
        copy = len(payload) < 16384
        expected = len(payload) if check_echo else -1
        sent_at: dict[int, float] = {}
        received: dict[int, int] = {}
        latencies: array[float] = array("d")
        errors: Counter[int] = Counter()
        error_latencies: array[float] = array("d")
        wrong = 0
        done = answered = 0
        next_id = self._next_id

        def send_one() -> None:
            nonlocal next_id
            rid = next_id
            next_id += 1
            sent_at[rid] = clock()
            send([packb([REQUEST, rid, app, event, None]), payload], copy=copy)

        start = clock()
        window_start = start + warmup
        end = window_start + seconds
        for _ in range(inflight):
            send_one()
        now = start
        while sent_at:
            if not sock.poll(int(answer_timeout * 1000)):
                raise TimeoutError(f"no answer from {self.endpoint} for {answer_timeout:g} s "
                                   f"with {len(sent_at)} requests out")
            while True:
                try:
                    frames = recv(zmq.NOBLOCK, copy=True)
                except zmq.Again:
                    break
                header = unpackb(frames[0])
                code, rid = header[0], header[1]
                if code == CHUNK:
                    received[rid] = received.get(rid, 0) + len(frames[1])
                    continue
                t0 = sent_at.pop(rid, None)
                if t0 is None:
                    continue  # an answer to a request of an earlier run
                answered += 1
                now = clock()
                counted = window_start <= now <= end
                if code == CHOKE:  # may carry the last (or only) chunk
                    got = received.pop(rid, 0) + (len(frames[1]) if len(frames) > 1 else 0)
                    if counted:
                        if expected >= 0 and got != expected:
                            wrong += 1
                        else:
                            done += 1
                            latencies.append(now - t0)
                else:
                    received.pop(rid, None)
                    if counted:
                        errors[header[2] if code == ERROR and len(header) > 2 else -1] += 1
                        error_latencies.append(now - t0)
                if now < end:
                    send_one()
        self._next_id = next_id
        return LoadResult(done=done, seconds=min(seconds, max(0.0, now - window_start)),
                          latencies=latencies, errors=errors, error_latencies=error_latencies,
                          wrong=wrong, answered=answered)

    def run_paced(self, payload: bytes, rate: float, seconds: float,
                  max_outstanding: int, answer_timeout: float = 30.0) -> LoadResult:
        """Open loop: send ``rate`` requests a second for ``seconds`` whatever the answers
        (in steps of about 1 ms), with at most ``max_outstanding`` out; then drain.

        Unlike ``NativeLoad.run``, a slow answer does not slow the offered load, and a refusal
        does not bring the next request forward: the time to an answer is not inflated by the
        load generator's own backlog of requests.
        """
        sock = self.socket
        clock = time.perf_counter
        packb, unpackb = msgpack.packb, msgpack.unpackb
        sent_at: dict[int, float] = {}
        received: dict[int, int] = {}
        latencies: array[float] = array("d")
        errors: Counter[int] = Counter()
        error_latencies: array[float] = array("d")
        done = answered = wrong = held_back = 0
        interval = 1.0 / rate
        start = clock()
        end = start + seconds
        next_at = start
        rid = self._next_id
        while True:
            now = clock()
            while next_at <= now and next_at < end:
                if len(sent_at) < max_outstanding:
                    sent_at[rid] = clock()
                    sock.send_multipart([packb([REQUEST, rid, self.app, self.event, None]),
                                         payload])
                    rid += 1
                else:
                    held_back += 1
                next_at += interval
            if next_at >= end and not sent_at:
                break
            wait_ms = max(1, int((next_at - clock()) * 1000)) if next_at < end else \
                int(answer_timeout * 1000)
            if not sock.poll(wait_ms):
                if next_at >= end:
                    raise TimeoutError(f"{len(sent_at)} requests unanswered for "
                                       f"{answer_timeout:g} s")
                continue
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                header = unpackb(frames[0])
                code, answer_id = header[0], header[1]
                if code == CHUNK:
                    received[answer_id] = received.get(answer_id, 0) + len(frames[1])
                    continue
                t0 = sent_at.pop(answer_id, None)
                if t0 is None:
                    continue
                answered += 1
                elapsed = clock() - t0
                if code == CHOKE:
                    got = received.pop(answer_id, 0) + (len(frames[1]) if len(frames) > 1 else 0)
                    if got == len(payload):
                        done += 1
                        latencies.append(elapsed)
                    else:
                        wrong += 1
                else:
                    received.pop(answer_id, None)
                    errors[header[2] if code == ERROR and len(header) > 2 else -1] += 1
                    error_latencies.append(elapsed)
        self._next_id = rid
        return LoadResult(done=done, seconds=seconds, latencies=latencies, errors=errors,
                          error_latencies=error_latencies, wrong=wrong, answered=answered,
                          held_back=held_back)

def probe(endpoint: str, app: str = "bench", event: str = "echo", timeout: float = 30.0,
          payload: bytes = b"probe") -> float:
    """Send requests until one is answered with a choke; return the seconds it took.

    Used to wait until a node or a broker (and its workers) is up. An error answer (say 503
    while an app starts) or silence is retried until ``timeout``.
    """
    context = zmq.Context.instance()
    started = time.monotonic()
    deadline = started + timeout
    attempt = 0
    while True:
        attempt += 1
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        try:
            sock.send_multipart([msgpack.packb([REQUEST, attempt, app, event, None]), payload])
            while sock.poll(500):
                header = msgpack.unpackb(sock.recv_multipart()[0])
                if header[0] == CHOKE:
                    return time.monotonic() - started
                if header[0] == ERROR:
                    break
        finally:
            sock.close(linger=0)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{endpoint} did not answer {app}/{event} within {timeout:g} s")
        time.sleep(0.05)

