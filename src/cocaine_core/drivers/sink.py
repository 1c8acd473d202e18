"""The ``native-sink`` driver: one-way requests on the node's endpoint, results published.

A client's request for this task's event (on the node's native endpoint, like a
``native-server``'s) is acknowledged at once with an empty answer, as soon as the engine has
taken the job (started or queued). A request the engine refuses at once (its queue is full:
503; the app stopping: 503; a deadline already past: 520) gets that error instead, and
nothing is published for it.

The job's answer does not go back to the client: every chunk is published, the moment it is
produced, on the PUB socket bound at ``publish`` as the message ``[event][chunk]`` (the
topic is the event name, UTF-8). A job that fails publishes nothing more (what it yielded
before failing is already out), is counted, and is logged, at most one line per kind of
failure every 10 seconds.

The PUB socket never blocks the node: each subscriber has at most ``backlog`` messages
queued (ZMQ_SNDHWM); past that it misses messages. Without a subscriber, ZeroMQ drops
every message at once. Tasks of one app naming the same ``publish`` share one socket.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import zmq

from cocaine_core.drivers.native import NativeServer
from cocaine_core.drivers.sink_publisher import Publisher, acquire, publish_endpoint, release
from cocaine_core.engine.job import Job, JobSink
from cocaine_core.ratelog import RateLimitedLog
from cocaine_core.schema import Key, int_range

if TYPE_CHECKING:
    from cocaine_core.drivers import EngineHandle
    from cocaine_core.manifest_model import TaskConfig
    from cocaine_core.native_sink import NativeSink

log = logging.getLogger("cocaine.sink")

#: Messages the PUB socket queues per subscriber before that subscriber misses the next ones.
DEFAULT_BACKLOG = 1000
MAX_BACKLOG = 100_000


class PublishSink:
    """Where a native-sink job's answer goes: chunks published, the end counted.

    Until the client has been acknowledged, an error is the engine refusing the job at once:
    it is kept (``refusal``) for the driver to answer the client with."""

    __slots__ = ("accepted", "driver", "refusal")

    def __init__(self, driver: NativeSinkDriver) -> None:
        self.driver = driver
        self.accepted = False
        self.refusal: tuple[int, str] | None = None

    def chunk(self, data: bytes) -> None:
        """Publish one chunk."""
        self.driver.publish(data)

    def last(self, data: bytes) -> None:
        """Publish the last chunk; the job is done."""
        self.driver.publish(data)
        self.driver.job_ended(self, None, "")

    def choke(self) -> None:
        """The job is done."""
        self.driver.job_ended(self, None, "")

    def error(self, code: int, message: str) -> None:
        """The job failed; before it was accepted, that is the engine's refusal."""
        if not self.accepted:
            self.refusal = (code, message)
            return
        self.driver.job_ended(self, code, message)


class NativeSinkDriver(NativeServer):
    """Acknowledges native requests at once and publishes their results on ``publish``."""

    #: A one-way request carries its body whole (the acknowledgement means it was taken).
    accepts_streams: ClassVar[bool] = False
    #: Its results are published here, where its subscribers listen: never run on a peer.
    forwardable: ClassVar[bool] = False

    keys: ClassVar[tuple[Key, ...]] = (
        Key("publish", publish_endpoint,
            help="the ZeroMQ endpoint (tcp:// or ipc://) to bind a PUB socket on; every "
                 "result chunk is published there, topic = event name"),
        Key("backlog", int_range(1, MAX_BACKLOG), DEFAULT_BACKLOG,
            "messages queued per subscriber (ZMQ_SNDHWM) before a slow one misses messages"),
    )

    def __init__(self, task: TaskConfig, engine: EngineHandle) -> None:
        super().__init__(task, engine)
        self.address: str = self.options["publish"]
        self.backlog: int = self.options["backlog"]
        self.topic = task.event.encode("utf-8")
        self.owner = f"task '{task.name}' (native-sink)"
        self.log = RateLimitedLog(log, f"app {engine.name}: {self.owner}: ")
        self.acknowledged = self.refused = self.published = self.failed = 0
        self.done = self.running = self.send_errors = 0
        self._publisher: Publisher | None = None

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the PUB socket (or take the app's socket on that endpoint).

        :raises NodeError: naming the task and the endpoint if it cannot be bound.
        """
        if self._publisher is None:
            app = self.engine.app
            self._publisher = await acquire(app.node, app.name, app.instance, self.address,
                                            self.backlog, self.owner)
            self.log.info("listening", f"publishing results on {self._publisher.bound}")

    async def close(self) -> None:
        """Let the PUB socket go (closed with the app's last holder); results of jobs still
        running are published until then."""
        if self._publisher is not None:
            release(self._publisher, self.engine.app.instance)
            self._publisher = None

    # -- requests ---------------------------------------------------------------------------

    def make_job(self, body: bytes = b"", meta: dict[str, Any] | None = None,
                 sink: JobSink | None = None, **policy: Any) -> Job:
        """A job whose answer is published rather than sent to ``sink`` (the client's, which
        ``submitted`` acknowledges)."""
        return super().make_job(body, meta, PublishSink(self), **policy)

    def submitted(self, job: Job, sink: NativeSink) -> None:
        """Acknowledge the client with an empty answer if the engine took ``job``; if it
        refused it at once, answer the client with that error instead."""
        own = job.sink
        assert isinstance(own, PublishSink), "a native-sink job is made by its make_job"
        if own.refusal is not None:
            self.refused += 1
            sink.error(*own.refusal)
            return
        own.accepted = True
        self.acknowledged += 1
        if not job.finished:
            self.running += 1
        sink.choke()

    # -- results ----------------------------------------------------------------------------

    def publish(self, chunk: bytes) -> None:
        """Publish one result chunk as ``[topic][chunk]``, never blocking."""
        publisher = self._publisher
        if publisher is None or publisher.closed:
            self.send_errors += 1
            self.log.warning("closed", "a result was dropped: the publish socket is closed "
                                       "(the app has stopped)")
            return
        try:
            publisher.send(self.topic, chunk)
            self.published += 1
        except zmq.ZMQError as exc:
            self.send_errors += 1
            self.log.warning("publish", f"could not publish a result: {exc}")

    def job_ended(self, sink: PublishSink, code: int | None, message: str) -> None:
        """Count a job's end (``code`` None: done); log a failure, rate-limited."""
        if sink.accepted:
            self.running -= 1
        if code is None:
            self.done += 1
            return
        self.failed += 1
        self.log.warning(f"failed-{code}", f"a job failed with {code} (nothing more is "
                                           f"published for it): {message}")

    def info(self) -> dict[str, Any]:
        """Counters and the endpoint bound."""
        publisher = self._publisher
        return {**super().info(), "acknowledged": self.acknowledged, "refused": self.refused,
                "running": self.running, "done": self.done, "failed": self.failed,
                "published": self.published, "publish-errors": self.send_errors,
                "publish": publisher.bound if publisher is not None else self.address,
                "backlog": self.backlog}
