"""The node: hosts apps' engines and serves clients on one ROUTER endpoint.

Every request (``[REQUEST, id, app, event, policy] + body``) arrives here. Requests for the
reserved app ``@node`` go to the control service (``info``, ``list``, …); the others go to the
named app's engine, if a ``native-server`` task serves that event.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import zmq

from cocaine_core import __version__, protocol
from cocaine_core.drivers.native import NativeServer
from cocaine_core.engine import Engine
from cocaine_core.errors import CocaineError, NodeError, ProtocolError
from cocaine_core.manifest import Manifest
from cocaine_core.ports import PortAllocator
from cocaine_core.protocol import Code, Status
from cocaine_core.slaves import AppInfo
from cocaine_core.zmqloop import SocketReader

log = logging.getLogger("cocaine.node")

DEFAULT_ENDPOINT = "tcp://127.0.0.1:10053"
CONTROL_APP = "@node"
APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_app_name(name: str) -> str:
    """Return ``name`` if it is a plain app name, else raise NodeError saying what is allowed."""
    if not isinstance(name, str) or not APP_NAME.match(name) or ".." in name:
        raise NodeError(f"app name {name!r} is not allowed: use 1 to 64 letters, digits, "
                        f"'.', '_' or '-', starting with a letter or digit")
    return name


class NativeSink:
    """Sends a job's answer back to the client that asked, over the node's ROUTER."""

    __slots__ = ("envelope", "reader", "request_id")

    def __init__(self, reader: SocketReader, envelope: list[bytes], request_id: Any) -> None:
        self.reader = reader
        self.envelope = envelope
        self.request_id = request_id

    def chunk(self, data: bytes) -> None:
        """Send one chunk."""
        self.reader.send([*self.envelope, protocol.pack(Code.CHUNK, self.request_id), data])

    def choke(self) -> None:
        """Send the end of the answer."""
        self.reader.send([*self.envelope, protocol.pack(Code.CHOKE, self.request_id)])

    def error(self, code: int, message: str) -> None:
        """Send an error (no choke follows)."""
        self.reader.send([*self.envelope,
                          protocol.pack(Code.ERROR, self.request_id, code, message)])


class RequestError(Exception):
    """A request the node answers with an error code at once."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


ControlMethod = Callable[[Any], Awaitable[Any]]


class Node:
    """Hosts apps and serves their native events and the control service on ``listen``."""

    def __init__(self, *, listen: str = DEFAULT_ENDPOINT, run_dir: str | Path | None = None,
                 name: str | None = None, ports: PortAllocator | None = None) -> None:
        self.listen = listen
        self.ports = ports or PortAllocator()
        self.name = name or socket.gethostname()
        self._own_run_dir = run_dir is None
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix="cocaine-run-"))
        self.apps: dict[str, Engine] = {}
        self.started_at = time.time()
        self.requests = 0
        self._socket: zmq.Socket | None = None
        self._reader: SocketReader | None = None
        self.control: dict[str, ControlMethod] = {"info": self._control_info,
                                                  "list": self._control_list}
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- life -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the endpoint; raise NodeError naming it if it is taken."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        try:
            sock.bind(self.listen)
        except zmq.ZMQError as exc:
            sock.close()
            raise NodeError(f"cannot listen on {self.listen}: {exc.strerror}; is another node "
                            f"running there? Choose another endpoint with --listen") from None
        self._socket = sock
        self.listen = sock.getsockopt_string(zmq.LAST_ENDPOINT) or self.listen
        self._reader = SocketReader(sock, self._on_request)
        log.info("node %s listening on %s", self.name, self.listen)

    async def stop(self) -> None:
        """Drain every app (see ``Engine.stop``), then close the endpoint."""
        await asyncio.gather(*(self.remove_app(name) for name in list(self.apps)),
                             return_exceptions=True)
        if self._reader is not None:
            self._reader.close()
        if self._socket is not None:
            self._socket.close(linger=100)
            self._socket = None
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    async def add_app(self, name: str, manifest: Manifest, root: Path | None = None) -> Engine:
        """Start an app from a checked manifest; its code is read from ``root`` (or the
        manifest's folder)."""
        check_app_name(name)
        if name in self.apps:
            raise NodeError(f"app '{name}' is already running; remove it first")
        app = AppInfo(name=name, manifest=manifest, run_dir=self.run_dir, node=self.name,
                      root=root, ports=self.ports)
        engine = Engine(app)
        self.apps[name] = engine
        try:
            await engine.start()
        except BaseException:
            self.apps.pop(name, None)
            raise
        log.info("app %s: %s with %d task(s)", name, engine.state.value, len(manifest.tasks))
        return engine

    async def remove_app(self, name: str) -> None:
        """Stop an app (draining it) and forget it."""
        engine = self.apps.get(name)
        if engine is None:
            raise NodeError(f"no app named '{name}' on this node")
        try:
            await engine.stop()
        finally:
            self.apps.pop(name, None)
        log.info("app %s stopped", name)

    # -- requests ---------------------------------------------------------------------------------

    def _on_request(self, frames: list[bytes]) -> None:
        self.requests += 1
        assert self._reader is not None
        envelope, request_id = frames[:1], None
        try:
            if len(frames) < 2:
                raise RequestError(Status.BAD_REQUEST, "empty request: expected a header frame")
            try:
                fields = protocol.unpack(frames[1])
            except ProtocolError as exc:
                raise RequestError(Status.BAD_REQUEST, str(exc)) from None
            if len(fields) >= 2:
                request_id = fields[1]
            if fields[0] != Code.REQUEST or len(fields) < 4:
                raise RequestError(Status.BAD_REQUEST, "expected [10, request_id, app, event, "
                                                       "policy] in the header frame")
            body = frames[2] if len(frames) > 2 else b""
            self._route(NativeSink(self._reader, envelope, request_id), fields, body)
        except RequestError as exc:
            NativeSink(self._reader, envelope, _safe_id(request_id)).error(exc.code, exc.message)
        except Exception as exc:  # the node never dies of what a client sends
            log.exception("request failed")
            NativeSink(self._reader, envelope, _safe_id(request_id)).error(
                Status.SERVER_ERROR, f"the node failed to handle the request: {exc}")

    def _route(self, sink: NativeSink, fields: list[Any], body: bytes) -> None:
        app, event = fields[2], fields[3]
        policy = fields[4] if len(fields) > 4 else {}
        if not isinstance(app, str) or not isinstance(event, str):
            raise RequestError(Status.BAD_REQUEST, "app and event must be strings")
        urgent, timeout, deadline = _parse_policy(policy)
        if app == CONTROL_APP:
            self._spawn(self._run_control(sink, event, body))
            return
        engine = self.apps.get(app)
        if engine is None:
            names = ", ".join(sorted(self.apps)) or "(none)"
            raise RequestError(Status.NOT_FOUND, f"no app named '{app}' on this node; "
                                                 f"apps: {names}")
        driver = _native_driver(engine, event)
        if driver is None:
            served = ", ".join(sorted(d.task.event for d in engine.drivers
                                      if isinstance(d, NativeServer))) or "(none)"
            raise RequestError(Status.NOT_FOUND, f"app '{app}' has no event '{event}' served "
                                                 f"natively; events: {served}")
        driver.requests += 1
        job = driver.make_job(body, {}, sink, urgent=urgent,
                              deadline=None if deadline is None else time.monotonic() + deadline,
                              timeout=timeout)
        engine.submit(job)

    # -- control service --------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_control(self, sink: NativeSink, method: str, body: bytes) -> None:
        handler = self.control.get(method)
        if handler is None:
            sink.error(Status.NOT_FOUND, f"the control service has no method '{method}'; "
                                         f"methods: {', '.join(sorted(self.control))}")
            return
        try:
            args = msgpack.unpackb(body, raw=False) if body else {}
        except Exception:
            sink.error(Status.BAD_REQUEST, f"'{method}' takes a msgpack map as its body")
            return
        try:
            result = await handler(args)
        except CocaineError as exc:
            sink.error(Status.BAD_REQUEST, str(exc))
            return
        except Exception as exc:
            log.exception("control method %s failed", method)
            sink.error(Status.SERVER_ERROR, f"'{method}' failed: {type(exc).__name__}: {exc}")
            return
        sink.chunk(msgpack.packb(result, use_bin_type=True))
        sink.choke()

    async def _control_info(self, args: Any) -> dict[str, Any]:
        return self.info()

    async def _control_list(self, args: Any) -> list[str]:
        return sorted(self.apps)

    def info(self) -> dict[str, Any]:
        """The node's state: its apps' pools, queues, jobs and tasks."""
        return {
            "node": self.name,
            "version": __version__,
            "endpoint": self.listen,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started_at, 3),
            "requests": self.requests,
            "rss-bytes": _own_rss(),
            "apps": {name: engine.info() for name, engine in sorted(self.apps.items())},
        }


def _native_driver(engine: Engine, event: str) -> NativeServer | None:
    for driver in engine.drivers:
        if isinstance(driver, NativeServer) and driver.task.event == event:
            return driver
    return None


def _parse_policy(policy: Any) -> tuple[bool, float | None, float | None]:
    if policy is None:
        return False, None, None
    if not isinstance(policy, dict):
        raise RequestError(Status.BAD_REQUEST, "policy must be a map with urgent, timeout and "
                                               "deadline")
    urgent = policy.get("urgent", False)
    timeout = policy.get("timeout")
    deadline = policy.get("deadline")
    if not isinstance(urgent, bool):
        raise RequestError(Status.BAD_REQUEST, "policy.urgent must be true or false")
    for key, value in (("timeout", timeout), ("deadline", deadline)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or value <= 0):
            raise RequestError(Status.BAD_REQUEST, f"policy.{key} must be a number of seconds "
                                                   f"above 0, or nil")
    return urgent, timeout, deadline


def _safe_id(request_id: Any) -> Any:
    return request_id if isinstance(request_id, int | str | bytes) else None


def _own_rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
