"""The ``zeromq-server`` driver: a ROUTER socket where every request gets exactly one reply.

Requests: ``[envelope…][body frames…]``. The envelope is every frame up to and including the
first empty frame (a REQ socket's delimiter, after any routing frames proxies added); a message
without an empty frame has only its sender's identity as envelope (a DEALER that sends no
delimiter). The reply carries the envelope back unchanged, then a status frame:

- ``[envelope…][b"ok"][chunk…]``: the handler's answer, every chunk a frame (maybe none);
- ``[envelope…][b"error"][code][message]``: code in ASCII digits (``b"502"``), message UTF-8.

See docs/zeromq.md for the whole contract.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import zmq

from cocaine_core.protocol import Status
from cocaine_core.schema import Key
from cocaine_core.zmqloop import SocketReader
from cocaine_zmq.driver import COMMON_KEYS, ZeroMQDriver
from cocaine_zmq.endpoints import bind, bind_free_port, optional_endpoint
from cocaine_zmq.frames import pack_frames

if TYPE_CHECKING:
    from cocaine_core.drivers import EngineHandle
    from cocaine_core.manifest import TaskConfig

OK = b"ok"
ERROR = b"error"


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split a ROUTER message into its envelope (up to and including the first empty frame
    after the identity, or just the identity if there is none) and its body frames."""
    for index in range(1, len(frames)):
        if not frames[index]:
            return frames[:index + 1], frames[index + 1:]
    return frames[:1], frames[1:]


def error_frames(code: int, message: str) -> list[bytes]:
    """The frames of an error reply (after the envelope)."""
    return [ERROR, str(int(code)).encode("ascii"), message.encode("utf-8", "replace")]


class ReplySink:
    """Collects a job's chunks and sends them as one reply when the job ends."""

    __slots__ = ("chunks", "driver", "envelope", "size")

    def __init__(self, driver: ZeroMQServer, envelope: list[bytes]) -> None:
        self.driver = driver
        self.envelope = envelope
        self.chunks: list[bytes] | None = []
        self.size = 0

    def chunk(self, data: bytes) -> None:
        """Keep a chunk for the reply (dropping them all once the reply is too large)."""
        if self.chunks is None:
            return
        self.size += len(data)
        if self.size > self.driver.max_size:
            self.chunks = None  # the reply will be an error; free the memory now
        else:
            self.chunks.append(data)

    def choke(self) -> None:
        """Send ``ok`` and the chunks, or an error if they grew over max-message-size."""
        if self.chunks is None:
            self.driver.reply(self.envelope, error_frames(
                Status.SERVER_ERROR, f"the answer grew to over {self.driver.max_size} bytes, "
                                     f"this task's max-message-size; raise it in the manifest "
                                     f"or answer with less"), ok=False)
        else:
            self.driver.reply(self.envelope, [OK, *self.chunks], ok=True)
        self.chunks = None

    def error(self, code: int, message: str) -> None:
        """Send the error reply."""
        self.chunks = None
        self.driver.reply(self.envelope, error_frames(code, message), ok=False)


class ZeroMQServer(ZeroMQDriver):
    """Serves the task's event to ZeroMQ REQ and DEALER clients on a ROUTER socket."""

    keys: ClassVar[tuple[Key, ...]] = (
        Key("endpoint", optional_endpoint, None,
            "where to bind; omitted: a free port from the node's port range"),
        *COMMON_KEYS,
    )

    def __init__(self, task: TaskConfig, engine: EngineHandle) -> None:
        super().__init__(task, engine)
        self.endpoint: str | None = self.options.get("endpoint")
        self.requests = self.answered = self.errors = self.dropped = self.too_large_count = 0
        self.inflight = 0
        self._reader: SocketReader | None = None
        self._stopping = False

    async def start(self) -> None:
        """Bind the ROUTER (a free port if no endpoint is given) and start serving."""
        self.track()
        try:
            sock = self.open_socket(zmq.ROUTER, inbound=True)
            # Unroutable replies (client gone) and full queues (client not reading) raise
            # instead of vanishing, so they are counted as dropped.
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            if self.endpoint is None:
                self.endpoint, port = bind_free_port(sock, self.engine.app.ports, self.owner)
                self.keep_port(port)
            else:
                self.endpoint = bind(sock, self.endpoint, self.owner)
            self._reader = SocketReader(sock, self._on_request)
        except BaseException:
            self.close_now()
            raise
        self.log.info("listening", f"serving on {self.endpoint}")

    async def stop(self) -> None:
        """Refuse new requests (503); close once every request in flight has its reply."""
        self._stopping = True
        if self.inflight == 0:
            self.close_now()

    def close_now(self) -> None:
        """Stop reading and close the socket."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        super().close_now()

    def _on_request(self, frames: list[bytes]) -> None:
        self.requests += 1
        envelope, body = split_envelope(frames)
        if self._stopping:
            self.errors += 1
            self._send(envelope, error_frames(Status.UNAVAILABLE, f"app '{self.engine.name}' "
                                                                  f"is stopping; retry later"))
            return
        size = sum(map(len, body))
        if size > self.max_size:
            self.too_large_count += 1
            self.errors += 1
            self._send(envelope, error_frames(Status.BAD_REQUEST, self.too_large(size)))
            return
        payload, meta = pack_frames(body)
        self.inflight += 1
        job = self.make_job(payload, meta, ReplySink(self, envelope))
        try:
            self.engine.submit(job)
        except Exception as exc:  # never leave a client without its reply
            self.log.log(logging.ERROR, "submit", f"could not submit a job: {exc!r}")
            job.fail(Status.SERVER_ERROR, f"the node failed to queue the request: {exc}")

    def reply(self, envelope: list[bytes], frames: list[bytes], *, ok: bool) -> None:
        """Send the one reply of a request in flight (called by its ``ReplySink``)."""
        self.inflight -= 1
        if ok:
            self.answered += 1
        else:
            self.errors += 1
        self._send(envelope, frames)
        if self._stopping and self.inflight == 0:
            self.close_now()

    def _send(self, envelope: list[bytes], frames: list[bytes]) -> None:
        sent = False
        if self._reader is not None:
            try:
                sent = self._reader.send([*envelope, *frames])
            except zmq.ZMQError as exc:
                self.log.warning("send-failed", f"could not send a reply: {exc}")
        if not sent:
            self.dropped += 1
            self.log.info("dropped", f"dropped a reply: its client disconnected, or has "
                                     f"{self.backlog} replies waiting unread (backlog)")

    def info(self) -> dict[str, Any]:
        """Endpoint, requests, replies (ok, error, dropped), oversized, in flight."""
        return {**super().info(), "endpoint": self.endpoint, "requests": self.requests,
                "answered": self.answered, "errors": self.errors, "dropped": self.dropped,
                "too-large": self.too_large_count, "in-flight": self.inflight}
