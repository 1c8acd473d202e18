"""The ceiling for cocaine's design: a plain-pyzmq load-balancing broker and its workers.

Same topology as cocaine's native path: client DEALER → broker (ROUTER front, ROUTER back) →
worker processes (DEALER), and the same frames: the client sends cocaine's REQUEST header and
body, a worker answers with a CHOKE carrying the data (docs/protocol.md: a one-chunk answer is
one message), exactly like a slave behind a node. What the
broker leaves out is everything cocaine adds: no queue of its own (it stops reading the front
socket while no worker has room, the classic ZeroMQ "LRU broker"), no job objects, timeouts,
heartbeats, policies or statistics. A worker takes ``credit`` jobs at a time: 1 is cocaine's
``concurrency`` 1, 16 its ``concurrency`` 16 (the worker finds its next job already waiting).

This file runs standalone (no import of the bench or of cocaine), as the broker or a worker:

    python bench/baselines/broker.py broker FRONTEND BACKEND
    python bench/baselines/broker.py worker BACKEND CREDIT
"""

from __future__ import annotations

import os
import signal
import sys
from collections import deque
from pathlib import Path
from typing import Any

import msgpack
import zmq

CHOKE, ERROR = 6, 7
READY = b"R"  # a worker's first message: [READY, credit]


def serve_broker(frontend_endpoint: str, backend_endpoint: str) -> None:
    """Route each request to a worker with room; answers go back to their client."""
    context = zmq.Context(io_threads=1)
    frontend = context.socket(zmq.ROUTER)
    backend = context.socket(zmq.ROUTER)
    for sock in (frontend, backend):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
    frontend.bind(frontend_endpoint)
    backend.bind(backend_endpoint)
    slots: deque[bytes] = deque()  # one entry per free job slot of a worker
    poller = zmq.Poller()
    poller.register(backend, zmq.POLLIN)
    reading_front = False
    front_recv, back_recv = frontend.recv_multipart, backend.recv_multipart
    front_send, back_send = frontend.send_multipart, backend.send_multipart
    while True:
        events = dict(poller.poll())
        if backend in events:
            while True:
                try:
                    frames = back_recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                worker = frames[0]
                if frames[1] == READY:
                    slots.extend([worker] * int(frames[2]))
                    continue
                # frames: worker, client, header, [data]; the header is a msgpack fixarray, so
                # its second byte is the message code: a choke or an error frees the slot.
                if frames[2][1] in (CHOKE, ERROR):
                    slots.append(worker)
                front_send(frames[1:])
        if frontend in events:
            while slots:
                try:
                    frames = front_recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                back_send([slots.popleft(), *frames])
        if slots and not reading_front:
            poller.register(frontend, zmq.POLLIN)
            reading_front = True
        elif not slots and reading_front:
            poller.unregister(frontend)
            reading_front = False


def echo(data: bytes) -> bytes:
    """The work: the same as the cocaine benchmark app's handler."""
    return data


def serve_worker(backend_endpoint: str, credit: int) -> None:
    """Answer each request with its body in one CHOKE; one request at a time."""
    context = zmq.Context(io_threads=1)
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(backend_endpoint)
    sock.send_multipart([READY, str(credit).encode()])
    recv, send = sock.recv_multipart, sock.send_multipart
    packb, unpackb = msgpack.packb, msgpack.unpackb
    handlers: dict[str, Any] = {"echo": echo}
    while True:
        frames = recv()
        client, header = frames[0], unpackb(frames[1])
        request_id, event = header[1], header[3]
        body = frames[2] if len(frames) > 2 else b""
        handler = handlers.get(event)
        if handler is None:
            send([client, packb([ERROR, request_id, 404, f"no handler {event!r}"])])
            continue
        result = handler(body)
        # A one-chunk answer is one CHOKE carrying the data, as cocaine's slaves send it.
        send([client, packb([CHOKE, request_id]), result], copy=len(result) < 65536)


def main(argv: list[str]) -> None:
    """Entry point: ``broker FRONTEND BACKEND`` or ``worker BACKEND CREDIT``."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if argv[:1] == ["broker"] and len(argv) == 3:
        serve_broker(argv[1], argv[2])
    elif argv[:1] == ["worker"] and len(argv) == 3:
        serve_worker(argv[1], int(argv[2]))
    else:
        sys.exit(f"usage: {Path(__file__).name} broker FRONTEND BACKEND | worker BACKEND CREDIT")


if __name__ == "__main__":
    main(sys.argv[1:])


class BrokerBaseline:
    """The broker and ``workers`` worker processes, started through a bench ``ProcessGroup``."""

    def __init__(self, group: Any, folder: Path, frontend: str, *, workers: int = 2,
                 credit: int = 1, python: str = sys.executable) -> None:
        self.group = group
        self.folder = folder
        self.endpoint = frontend
        self.backend = f"ipc://{folder / f'broker-{credit}.ipc'}"
        self.workers = workers
        self.credit = credit
        self.python = python
        self.processes: list[Any] = []

    def start(self) -> BrokerBaseline:
        """Start the broker, then its workers; return once a request is answered."""
        from bench.loadgen import probe

        script = str(Path(__file__).resolve())
        log = self.folder / f"broker-{self.credit}.log"
        self.processes.append(self.group.start(
            [self.python, script, "broker", self.endpoint, self.backend], log=log))
        for _ in range(self.workers):
            self.processes.append(self.group.start(
                [self.python, script, "worker", self.backend, str(self.credit)], log=log))
        probe(self.endpoint)
        return self

    @property
    def pid(self) -> int:
        """The broker's pid."""
        return self.processes[0].pid

    def stop(self) -> None:
        """Stop the workers, then the broker."""
        for process in reversed(self.processes):
            self.group.stop(process)
        self.processes.clear()
