"""Drivers whose messages become jobs nobody waits for: the base of sink and subscriber.

Flow control: a message is submitted only while the app's engine has room for it
(``engine.has_room()``: its queue is below ``engine.queue-limit`` and the app is running). When
it has none, the driver stops reading its socket, so messages wait in ZeroMQ (up to
``backlog``, then at the senders: a PUSH blocks or turns to another peer, a PUB drops), and none
is refused for lack of room. Reading resumes as soon as the engine has room again.

Results: dropped, or, with ``publish``, every chunk is sent on a PUB socket as
``[topic = event name][chunk]`` the moment it is produced.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

import zmq

from cocaine_core.protocol import Status
from cocaine_core.schema import Key
from cocaine_core.zmqloop import SocketReader
from cocaine_zmq.driver import COMMON_KEYS, ZeroMQDriver
from cocaine_zmq.endpoints import bind, close_quietly, optional_endpoint
from cocaine_zmq.frames import pack_frames

if TYPE_CHECKING:
    from cocaine_core.drivers import EngineHandle
    from cocaine_core.manifest import TaskConfig

PUBLISH_KEY = Key("publish", optional_endpoint, None,
                  "bind a PUB socket here and publish every result chunk, topic = event name")


class ResultSink:
    """Where an intake job's answer goes: each chunk published (or dropped), the end counted."""

    __slots__ = ("driver",)

    def __init__(self, driver: MessageIntake) -> None:
        self.driver = driver

    def chunk(self, data: bytes) -> None:
        """Publish the chunk (if the task publishes)."""
        self.driver.publish(data)

    def choke(self) -> None:
        """Count a job done."""
        self.driver.job_ended(None, "")

    def error(self, code: int, message: str) -> None:
        """Count and log a failed job."""
        self.driver.job_ended(code, message)


class MessageIntake(ZeroMQDriver):
    """Base of ``zeromq-sink`` and ``zeromq-subscriber``: reads, submits, publishes."""

    keys: ClassVar[tuple[Key, ...]] = (*COMMON_KEYS, PUBLISH_KEY)
    #: Seconds between checks for room in the app's queue while reading is paused.
    RESUME_CHECK = 0.05

    def __init__(self, task: TaskConfig, engine: EngineHandle) -> None:
        super().__init__(task, engine)
        self.publish_endpoint: str | None = self.options.get("publish")
        self.received = self.done = self.failed = self.refused = self.too_large_count = 0
        self.published = self.pauses = self.inflight = 0
        self.topic = task.event.encode("utf-8")
        self._inbound: zmq.Socket | None = None
        self._publisher: zmq.Socket | None = None
        self._reader: SocketReader | None = None
        self._held: deque[list[bytes]] = deque()
        self._paused = False
        self._stopping = False
        self._resume_timer: asyncio.TimerHandle | None = None

    # -- what subclasses provide ------------------------------------------------------------

    def open_inbound(self) -> zmq.Socket:
        """Open, bind or connect the socket messages arrive on."""
        raise NotImplementedError

    def job_input(self, frames: list[bytes]) -> tuple[bytes, dict[str, Any]]:
        """The body and meta of the job made from a message."""
        return pack_frames(frames)

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the PUB socket (with ``publish``), open the inbound socket, start reading."""
        self.track()
        try:
            if self.publish_endpoint is not None:
                self._publisher = self.open_socket(zmq.PUB, inbound=False)
                self.publish_endpoint = bind(self._publisher, self.publish_endpoint,
                                             self.owner)
            self._inbound = self.open_inbound()
            self._reader = SocketReader(self._inbound, self._on_message)
        except BaseException:
            self.close_now()
            raise

    async def stop(self) -> None:
        """Stop reading (unread messages are dropped); publish what jobs in flight still
        produce, then close."""
        self._stopping = True
        self._stop_reading()
        close_quietly(self._inbound)
        if self._held:
            self.log.warning("held", f"stopping: dropped {len(self._held)} message(s) read "
                                     f"but not yet given to the app")
            self._held.clear()
        if self.inflight == 0:
            self.close_now()

    def close_now(self) -> None:
        """Stop reading and close every socket."""
        self._stop_reading()
        self._held.clear()
        super().close_now()

    def _stop_reading(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None

    # -- messages in ------------------------------------------------------------------------

    def _on_message(self, frames: list[bytes]) -> None:
        self.received += 1
        if self._paused:  # the rest of a batch read before the pause
            self._held.append(frames)
        elif not self._take(frames):
            self._held.append(frames)
            self._pause()

    def _take(self, frames: list[bytes]) -> bool:
        """Submit a job for the message, or drop it if too large; False if the engine has no
        room for it (the message must wait)."""
        size = sum(map(len, frames))
        if size > self.max_size:
            self.too_large_count += 1
            self.log.warning("too-large", f"dropped a message: {self.too_large(size)}")
            return True
        if not self.engine.has_room():
            return False
        body, meta = self.job_input(frames)
        self.inflight += 1
        job = self.make_job(body, meta, ResultSink(self))
        try:
            self.engine.submit(job)
        except Exception as exc:
            job.fail(Status.SERVER_ERROR, f"the node failed to queue the message: {exc!r}")
        return True

    def _pause(self) -> None:
        self._paused = True
        self.pauses += 1
        self._stop_reading()
        self.log.info("paused", f"the app takes no more jobs for now (its queue is at "
                                f"engine.queue-limit {self.engine.config.queue_limit}, or it "
                                f"is not running): reading paused; messages wait in ZeroMQ "
                                f"until it has room")
        self._schedule_resume(self.RESUME_CHECK)

    def _schedule_resume(self, delay: float) -> None:
        if self._resume_timer is not None:
            self._resume_timer.cancel()
        self._resume_timer = asyncio.get_running_loop().call_later(delay, self._try_resume)

    def _try_resume(self) -> None:
        self._resume_timer = None
        if not self._paused or self._stopping or self.closed:
            return
        while self._held:
            if not self._take(self._held[0]):
                self._schedule_resume(self.RESUME_CHECK)
                return
            self._held.popleft()
        self._paused = False
        assert self._inbound is not None
        self._reader = SocketReader(self._inbound, self._on_message)

    # -- results out ------------------------------------------------------------------------

    def publish(self, chunk: bytes) -> None:
        """Publish one result chunk as ``[topic][chunk]`` (dropped without ``publish``)."""
        if self._publisher is None or self.closed:
            return
        try:
            # A PUB socket never blocks: a subscriber whose queue holds `backlog` messages
            # misses the next ones (ZeroMQ's rule for slow subscribers).
            self._publisher.send_multipart([self.topic, chunk], zmq.NOBLOCK)
            self.published += 1
        except zmq.ZMQError as exc:
            self.log.warning("publish", f"could not publish a result: {exc}")

    def job_ended(self, code: int | None, message: str) -> None:
        """Count a job's end; resume reading if paused; close if stopping and the last."""
        self.inflight -= 1
        if code is None:
            self.done += 1
        elif code == Status.UNAVAILABLE:
            self.refused += 1
            self.log.warning("refused", f"a message was refused: {message}")
        else:
            self.failed += 1
            if code != Status.APP_ERROR:  # the engine logs a handler's error with its traceback
                self.log.warning(f"failed-{code}", f"a job failed with {code}: {message}")
        if self._stopping and self.inflight == 0:
            self.close_now()
        elif self._paused and self._resume_timer is not None:
            self._schedule_resume(0)

    def info(self) -> dict[str, Any]:
        """Counters: received, done, failed, refused, too large, published, paused."""
        info: dict[str, Any] = {**super().info(), "received": self.received,
                                "done": self.done, "failed": self.failed,
                                "refused": self.refused, "too-large": self.too_large_count,
                                "in-flight": self.inflight, "paused": self._paused,
                                "pauses": self.pauses}
        if self.publish_endpoint is not None:
            info["publish"] = self.publish_endpoint
            info["published"] = self.published
        return info
