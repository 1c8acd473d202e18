"""A slave's heartbeat thread (``SlaveChannel.ready`` starts it): heartbeats and the app's
output on a DEALER of its own, and answers held too long on the channel's main socket.

Heartbeats go every ``heartbeat_interval`` however long a handler runs, so the engine tells a
busy slave from a hung one. The app's output goes from the channel's bounded buffer: printing
never blocks a handler.

Held answers (``slave_batch.Answers``): a slave holds a finished job's answer while it starts
a job whose event was quick last time, to send several in one CHOKE_BATCH. That job may be
slow this time (its duration may depend on its body): then this thread sends what is held
once it has waited ``OVERDUE`` seconds, so a quick answer waits for a slow job by about
``BUSY_TICK`` at most (``IDLE_TICK`` when no answer was held in the last ``BUSY_FOR``: the
thread is not woken when one is), not for the whole job (nor past its own timeout, nor into a
second run after the slow job's slave is stopped). It takes the channel's lock only if it is
free: the main thread holds it while it uses the main socket (ZeroMQ sockets are not shared
between threads without it), and before the main thread waits on that socket it sends what is
held itself.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import TYPE_CHECKING

import zmq

from cocaine_core import protocol
from cocaine_core.backends.output import MAX_LINE, OutputBudget
from cocaine_core.protocol import Code

if TYPE_CHECKING:
    from cocaine_core.slave_channel import SlaveChannel

#: Seconds between the thread's looks while answers were held lately (the bound of how long
#: a held answer may wait behind a slow job), and while none were (an idle slave).
BUSY_TICK, IDLE_TICK = 0.01, 0.05
#: Seconds a held answer may wait before this thread sends it.
OVERDUE = 0.005
#: Seconds after the last held answer during which the thread keeps looking every BUSY_TICK.
BUSY_FOR = 1.0


def beat(channel: SlaveChannel) -> None:
    """The thread's body: until the channel stops, beat, forward output, send overdue
    answers; exit the process if its parent (the template, or the node) is gone."""
    interval = float(channel.settings.get("heartbeat_interval", 1.0))
    socket = channel.context.socket(zmq.DEALER)
    socket.setsockopt(zmq.ROUTING_ID, f"{channel.slave_id}/hb".encode())
    socket.setsockopt(zmq.LINGER, 500)
    socket.setsockopt(zmq.SNDHWM, 1000)
    socket.connect(channel.endpoint)
    heartbeat = protocol.pack(Code.HEARTBEAT, channel.slave_id)
    answers = channel.answers
    next_beat = 0.0
    tick = IDLE_TICK
    try:
        while not channel.stopping.wait(tick):
            if channel.parent_pid is not None and os.getppid() != channel.parent_pid:
                os._exit(70)  # the process that made us is gone: never outlive the node
            now = time.monotonic()
            if now >= next_beat:
                send(socket, [heartbeat])
                next_beat = now + interval
            flush_logs(channel, socket)
            if answers is not None:
                if answers.held and now - answers.since >= OVERDUE:
                    channel.flush_overdue()
                tick = BUSY_TICK if now - answers.since < BUSY_FOR else IDLE_TICK
        flush_logs(channel, socket)
    finally:
        socket.close(linger=500)


class OutputBuffer:
    """The app's output lines, bounded, until the heartbeat thread sends them: lines cut past
    ``MAX_LINE`` bytes, each stream within the budget the engine applies
    (``backends/output.py``); past the budget or ``size`` lines, dropped and counted."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lines: collections.deque[tuple[str, str]] = collections.deque()
        self._budgets = {"stdout": OutputBudget(), "stderr": OutputBudget()}
        self._dropped = {"stdout": 0, "stderr": 0}
        self._lock = threading.Lock()

    def add(self, stream: str, text: str) -> None:
        """Buffer a line of ``stream`` (``stdout``, else ``stderr``), or count it dropped."""
        stream = "stdout" if stream == "stdout" else "stderr"
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE + 1]  # longer than MAX_LINE bytes: the engine marks it cut
        with self._lock:
            if (len(self._lines) >= self.size
                    or not self._budgets[stream].allows(min(len(text), MAX_LINE))):
                self._dropped[stream] += 1
            else:
                self._lines.append((stream, text))

    def take(self) -> tuple[collections.deque[tuple[str, str]], dict[str, int]]:
        """The lines buffered and the counts of lines dropped, by stream (both emptied)."""
        with self._lock:
            lines, self._lines = self._lines, collections.deque()
            dropped, self._dropped = self._dropped, {"stdout": 0, "stderr": 0}
        return lines, dropped

    def count_dropped(self, stream: str, count: int) -> None:
        """Lines of ``stream`` dropped whose count could not be sent yet (sent next time)."""
        with self._lock:
            self._dropped[stream] += count


def flush_logs(channel: SlaveChannel, socket: zmq.Socket) -> None:
    """Send the output lines buffered, then the counts of lines dropped."""
    lines, dropped = channel.output.take()
    for stream, text in lines:
        if not send(socket, [protocol.pack(Code.LOG, channel.slave_id, stream, text)]):
            dropped[stream] += 1  # the engine's queue for us is full: counted, sent below
    for stream, count in dropped.items():
        # The count only (empty text): the engine adds it to its notice of dropped lines.
        if count and not send(socket, [protocol.pack(Code.LOG, channel.slave_id, stream, "",
                                                     count)]):
            channel.output.count_dropped(stream, count)  # send it next time


def send(socket: zmq.Socket, frames: list[bytes]) -> bool:
    """Send without waiting; False if the engine is not reading (a lost heartbeat or log line
    is the right loss; False says so, so that lost lines are counted)."""
    try:
        socket.send_multipart(frames, zmq.NOBLOCK)
    except zmq.Again:
        return False
    return True
