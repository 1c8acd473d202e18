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
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import zmq

from cocaine_core import __version__, protocol
from cocaine_core.appinfo import AppInfo
from cocaine_core.appstore import AppRecord, AppStore
from cocaine_core.control import ControlService
from cocaine_core.drivers.native import NativeServer
from cocaine_core.engine import AppState, Engine
from cocaine_core.errors import CocaineError, NodeError, ProtocolError
from cocaine_core.manifest import Manifest, parse_manifest
from cocaine_core.ports import PortAllocator
from cocaine_core.protocol import CONTROL_APP, DEFAULT_ENDPOINT, Code, Status
from cocaine_core.storages import Storage
from cocaine_core.zmqloop import SocketReader

log = logging.getLogger("cocaine.node")

DEFAULT_MAX_UPLOAD = 100 * 2**20
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

    def last(self, data: bytes) -> None:
        """Send the last chunk with the end of the answer, in one message."""
        self.reader.send([*self.envelope, protocol.pack(Code.CHOKE, self.request_id), data])

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


class Node:
    """Hosts apps and serves their native events and the control service on ``listen``."""

    def __init__(self, *, listen: str = DEFAULT_ENDPOINT, run_dir: str | Path | None = None,
                 name: str | None = None, ports: PortAllocator | None = None,
                 storage: Storage | None = None,
                 max_upload: int = DEFAULT_MAX_UPLOAD) -> None:
        self.listen = listen
        self.ports = ports or PortAllocator()
        self.storage = storage
        self.max_upload = max_upload
        self.name = name or socket.gethostname()
        self._own_run_dir = run_dir is None
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix="cocaine-run-"))
        self.apps: dict[str, Engine] = {}
        self.started_at = time.time()
        self.requests = 0
        self._socket: zmq.Socket | None = None
        self._reader: SocketReader | None = None
        self.store = AppStore(storage, self.run_dir / "code") if storage else None
        self.control = ControlService(self)
        #: Names with a deploy, removal or restart under way (one operation per name).
        self.busy: dict[str, str] = {}
        #: True while the node starts the apps in its storage.
        self.loading = False
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Apps loading their code at once: each is an interpreter starting and importing, and
        #: fifty at once on two cores thrash; a few at a time finish sooner.
        self._loading = asyncio.Semaphore(4)

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
        if self.store is not None:
            self.loading = True
            try:
                await self.load_from_storage()
            finally:
                self.loading = False

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
        """Start an app (not stored) from a checked manifest; its code is read from ``root``
        (or the manifest's folder). ``cocaine run`` hosts its app this way."""
        if name in self.apps:
            raise NodeError(f"app '{name}' is already running; remove it first")
        return await self.run_app(name, manifest, root)

    # -- apps in storage -----------------------------------------------------------------------

    async def load_from_storage(self) -> None:
        """Make the running apps match storage: start new, replace changed, stop removed.

        Called at start and on SIGHUP. An app that fails to start is logged; the others run.
        """
        assert self.store is not None
        store = self.store
        records = await asyncio.to_thread(store.records)
        await asyncio.to_thread(store.collect_garbage)
        for name in [n for n in self.apps if n not in records and n not in self.busy]:
            await self.remove_app(name)
        todo = [record for name, record in records.items() if name not in self.busy
                and getattr(self.apps.get(name), "record", None) != record]
        for record in todo:
            self.busy[record.name] = "start"
        async def start(record: AppRecord) -> None:
            try:
                await self.start_record(record)
            except CocaineError as exc:
                log.error("app %s from storage did not start: %s", record.name, exc)
            finally:
                self.busy.pop(record.name, None)

        await asyncio.gather(*(start(record) for record in todo))

    async def start_record(self, record: AppRecord) -> Engine:
        """Start (or replace) an app from a stored record."""
        assert self.store is not None
        root = await asyncio.to_thread(self.store.unpack, record)
        manifest = parse_manifest(record.manifest, root=root, source=f"app '{record.name}'")
        engine = await self.run_app(record.name, manifest, root)
        engine.record = record  # type: ignore[attr-defined]
        self.store.forget_unpacked(record.name, keep=root)
        return engine

    async def run_app(self, name: str, manifest: Manifest, root: Path | None = None,
                      *, refuse_broken: bool = False) -> Engine:
        """Start ``name``, or replace the running version without dropping a job.

        With ``refuse_broken``, a new version whose code does not load is stopped and
        refused (NodeError) and the running version, if any, keeps serving.
        """
        check_app_name(name)
        old = self.apps.get(name)
        app = AppInfo(name=name, manifest=manifest, run_dir=self.run_dir, node=self.name,
                      root=root, ports=self.ports)
        engine = Engine(app)
        first = old is None and name not in self.busy
        if first:
            self.busy[name] = "start"
        try:
            async with self._loading:
                await engine.start(drivers=False)
        finally:
            if first:
                self.busy.pop(name, None)
        if refuse_broken and engine.state is AppState.BROKEN:
            reason = engine.broken_reason
            await engine.stop()
            kept = " ; the running version keeps serving" if old else ""
            raise NodeError(f"app '{name}': its code failed to load: {reason}{kept}")
        self.apps[name] = engine
        try:
            if old is None:
                await engine.start_drivers()
            else:
                await old.hand_over(engine)
        except BaseException:
            self.apps.pop(name, None)
            await engine.stop()
            raise
        log.info("app %s: %s with %d task(s)%s", name, engine.state.value,
                 len(manifest.tasks), " (new version)" if old else "")
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
            self._spawn(self.control.handle(sink, event, body))
            return
        engine = self.apps.get(app)
        if engine is None and (self.loading or self.busy.get(app) == "start"):
            raise RequestError(Status.UNAVAILABLE, f"app '{app}' is not serving yet: the "
                                                   f"node is starting its apps; retry in a "
                                                   f"moment")
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
            "busy": dict(self.busy),
            "loading": self.loading,
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
