"""The ``http-server`` driver: every HTTP request under the task's path becomes a job.

The handler gets the body (streamed: ``request.stream``; or whole: ``request.data``) and, in
``request.meta``: ``method``, ``path``, ``query`` (raw), ``headers`` (``[[name, value], ...]``,
names in lower case, as received), ``http_version`` and ``remote`` (``ip:port``). It may set
the status and headers (``cocaine_python.Response``). See docs/http.md.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from cocaine_core.drivers import Driver
from cocaine_core.protocol import Status
from cocaine_core.ratelog import RateLimitedLog
from cocaine_core.schema import Key
from cocaine_http.keys import KEYS
from cocaine_http.listener import Listener, attach

if TYPE_CHECKING:
    from cocaine_core.drivers import EngineHandle
    from cocaine_core.engine.body import BodyStream
    from cocaine_core.engine.job import Job, JobSink
    from cocaine_core.manifest import TaskConfig

log = logging.getLogger("cocaine.http")


class HttpServer(Driver):
    """Serves the task's event to HTTP/1.1 clients under ``path`` on ``listen``."""

    keys: ClassVar[tuple[Key, ...]] = KEYS

    def __init__(self, task: TaskConfig, engine: EngineHandle) -> None:
        super().__init__(task, engine)
        self.listen: str = self.options["listen"]
        self.path: str = self.options["path"]
        self.max_body: int = self.options["max-body"]
        self.body_timeout: float = self.options["body-timeout"]
        self.min_body_rate: int = self.options["min-body-rate"]
        #: How messages name this task: ``task 'api' (http-server)``.
        self.owner = f"task '{task.name}' ({task.type})"
        self.log = RateLimitedLog(log, f"app {engine.name}: {self.owner}: ")
        self.listener: Listener | None = None
        self.stopping = False
        #: It stopped to make way for a new version of the app (which takes its listener).
        self.handed = False
        self.requests = 0
        self.statuses: dict[str, int] = {}

    async def start(self) -> None:
        """Listen (or join the app's server on the same address) and serve ``path``."""
        self.listener = await attach(self)

    async def stop(self) -> None:
        """Take no new requests; answers on their way still go out. The app stopping: new
        requests get 503 and the last task closes the socket. A new version of the app
        coming (a redeploy): the socket stays open and new requests wait for it."""
        self.stopping = True
        self.handed = not _engine_stopping(self.engine)
        if self.listener is not None:
            self.listener.remove(self, hand_over=self.handed)

    async def close(self) -> None:
        """Close the connections left (the app has stopped: no answer will come), unless a
        new version of the app took the listener over."""
        self.stopping = True
        self.handed = False
        if self.listener is not None:
            self.listener.remove(self)
            if not self.listener.routes:
                self.listener.close()

    def submit_request(self, data: bytes, meta: dict[str, Any], sink: JobSink,
                       stream: BodyStream | None = None) -> Job:
        """Make the job of a request and give it to the engine."""
        self.requests += 1
        job = self.make_job(data, meta, sink, stream=stream)
        try:
            self.engine.submit(job)
        except Exception as exc:  # never leave a client without its answer
            self.log.log(logging.ERROR, "submit", f"could not submit a job: {exc!r}")
            job.fail(Status.SERVER_ERROR, f"the node failed to queue the request: {exc}")
        return job

    def cancel(self, job: Job, why: str) -> None:
        """Nobody waits for ``job`` any more: it never starts, or its slave is told to stop."""
        self.engine.cancel(job, why)

    def count(self, status: int) -> None:
        """Count an answer's status by class (``2xx``, ``4xx``...)."""
        kind = f"{status // 100}xx"
        self.statuses[kind] = self.statuses.get(kind, 0) + 1

    def info(self) -> dict[str, Any]:
        """Address (a port 0 resolved), path, requests, answers by status class, and the
        server's connections and bytes (shared by the app's tasks on the address)."""
        info: dict[str, Any] = {**super().info(), "listen": self.listen, "path": self.path,
                                "requests": self.requests, "statuses": dict(self.statuses)}
        if self.listener is not None:
            info.update(self.listener.info())
        return info


def _engine_stopping(engine: EngineHandle) -> bool:
    """Whether the app itself stops (its engine drains), rather than its drivers stopping
    for a new version (a redeploy: the engine hands over and still runs). An engine that
    cannot say is taken to stop."""
    stopping = getattr(engine, "stopping", None)
    return not callable(stopping) or bool(stopping())
