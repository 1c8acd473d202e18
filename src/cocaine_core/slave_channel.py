"""The slave's side of the engine ↔ slave protocol, for slave runtimes written in Python.

A ``SlaveChannel`` connects a DEALER to the engine's ROUTER, shakes hands, and runs a
heartbeat thread with a DEALER of its own (ZeroMQ sockets are not shared between threads), so
the engine hears from the slave however long a handler runs. The same thread forwards what the
app prints, from a bounded buffer: printing never blocks a handler; past the buffer, lines are
dropped and counted.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import Any

import zmq

from cocaine_core import protocol
from cocaine_core.protocol import Code


class SlaveChannel:
    """A slave's connection to its engine: messages in, answers, heartbeats and logs out."""

    #: Most log lines buffered before further lines are dropped (and counted).
    LOG_BUFFER_LINES = 10_000

    def __init__(self, endpoint: str, slave_id: str, *, parent_pid: int | None = None) -> None:
        self.endpoint = endpoint
        self.slave_id = slave_id
        self.parent_pid = parent_pid
        self.context = zmq.Context(io_threads=1)
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.ROUTING_ID, slave_id.encode())
        self.socket.setsockopt(zmq.LINGER, 2000)
        self.socket.connect(endpoint)
        self.settings: dict[str, Any] = {}
        self._logs: collections.deque[tuple[str, str]] = collections.deque()
        self._dropped = 0
        self._log_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- start-up -------------------------------------------------------------------------------

    def handshake(self) -> dict[str, Any]:
        """Introduce this slave and wait for CONFIGURE; return its settings.

        A spare slave may wait long (until the pool grows): it waits as long as its parent
        lives, and exits when it is told to terminate.
        """
        self.socket.send(protocol.pack(Code.HANDSHAKE, self.slave_id, os.getpid()))
        while not self.socket.poll(1000):
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                os._exit(70)
        fields = protocol.unpack(self.socket.recv_multipart()[0])
        if fields[0] == Code.TERMINATE:
            raise SystemExit(0)
        if fields[0] != Code.CONFIGURE:
            raise RuntimeError(f"expected configure, got message code {fields[0]}")
        self.settings = fields[1] if len(fields) > 1 and isinstance(fields[1], dict) else {}
        return self.settings

    def ready(self) -> None:
        """Tell the engine this slave is ready for jobs (its first heartbeat), then start the
        heartbeat thread (after: so the ready message does not wait for it)."""
        self.socket.send(protocol.pack(Code.HEARTBEAT, self.slave_id))
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="cocaine-heartbeat",
                                            daemon=True)
            self._thread.start()

    # -- messages -------------------------------------------------------------------------------

    def recv(self) -> tuple[list[Any], bytes | None]:
        """Wait for the next message: its header fields and payload (or None)."""
        frames = self.socket.recv_multipart()
        return protocol.unpack(frames[0]), (frames[1] if len(frames) > 1 else None)

    def chunk(self, job_id: int, data: bytes) -> None:
        """Send one chunk of a job's answer."""
        self.socket.send_multipart([protocol.pack(Code.CHUNK, job_id), data],
                                   copy=len(data) < 65536)

    def choke(self, job_id: int, last: bytes | None = None) -> None:
        """Say a job's answer is complete; ``last`` is its final chunk, sent along."""
        if last is None:
            self.socket.send(protocol.pack(Code.CHOKE, job_id))
        else:
            self.socket.send_multipart([protocol.pack(Code.CHOKE, job_id), last],
                                       copy=len(last) < 65536)

    def error(self, job_id: int | None, code: int, message: str, traceback: str = "") -> None:
        """Fail a job (or, with ``job_id`` None, the slave's start) with a code and message."""
        self.socket.send(protocol.pack(Code.ERROR, job_id, code, message, traceback))

    def log(self, stream: str, text: str) -> None:
        """Queue a line of output for the node's log; never blocks, drops past the buffer."""
        with self._log_lock:
            if len(self._logs) >= self.LOG_BUFFER_LINES:
                self._dropped += 1
            else:
                self._logs.append((stream, text))

    # -- the heartbeat thread ------------------------------------------------------------------

    def _beat(self) -> None:
        interval = float(self.settings.get("heartbeat_interval", 1.0))
        socket = self.context.socket(zmq.DEALER)
        socket.setsockopt(zmq.ROUTING_ID, f"{self.slave_id}/hb".encode())
        socket.setsockopt(zmq.LINGER, 500)
        socket.setsockopt(zmq.SNDHWM, 1000)
        socket.connect(self.endpoint)
        beat = protocol.pack(Code.HEARTBEAT, self.slave_id)
        next_beat = 0.0
        try:
            while not self._stop.wait(0.05):
                if self.parent_pid is not None and os.getppid() != self.parent_pid:
                    os._exit(70)  # the process that made us is gone: never outlive the node
                now = time.monotonic()
                if now >= next_beat:
                    _send(socket, [beat])
                    next_beat = now + interval
                self._flush_logs(socket)
            self._flush_logs(socket)
        finally:
            socket.close(linger=500)

    def _flush_logs(self, socket: zmq.Socket) -> None:
        with self._log_lock:
            lines, self._logs = self._logs, collections.deque()
            dropped, self._dropped = self._dropped, 0
        for stream, text in lines:
            if not _send(socket, [protocol.pack(Code.LOG, self.slave_id, stream, text)]):
                dropped += 1  # the engine's queue for us is full: counted, said below
        if dropped:
            note = (f"[{dropped} lines of output dropped: the app printed faster than the "
                    f"node reads]")
            if not _send(socket, [protocol.pack(Code.LOG, self.slave_id, "stderr", note)]):
                with self._log_lock:  # say it next time
                    self._dropped += dropped

    def close(self) -> None:
        """Stop the heartbeat thread and close the sockets, flushing what is queued."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.socket.close(linger=2000)
        self.context.term()


def _send(socket: zmq.Socket, frames: list[bytes]) -> bool:
    # If the engine is not reading, a lost heartbeat or log line is the right loss; False
    # says so, so that lost lines are counted.
    try:
        socket.send_multipart(frames, zmq.NOBLOCK)
    except zmq.Again:
        return False
    return True
