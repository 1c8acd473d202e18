"""The node: hosts apps' engines, keeps them in step with storage, and serves clients.

Clients reach it on one endpoint (``cocaine_core.endpoint``), which routes each request to an
app's engine or to the control service (``@node``: ``cocaine_core.control``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cocaine_core import __version__, archive, node_hooks, paths
from cocaine_core.appinfo import AppInfo, SlaveBudget
from cocaine_core.appstore import AppRecord, AppStore
from cocaine_core.backends.orphans import sweep_user
from cocaine_core.clients import DEFAULT_CLIENT_BACKLOG
from cocaine_core.cluster.cluster import Cluster, ClusterSettings, load_key
from cocaine_core.cluster.discovery import Discovery, NodeRecord, advertised, open_discovery
from cocaine_core.control import ControlService, UploadLimits
from cocaine_core.endpoint import DEFAULT_MAX_MESSAGE, NativeEndpoint
from cocaine_core.engine import AppState, Engine
from cocaine_core.errors import CocaineError, NodeError, StorageError, StorageUnavailable
from cocaine_core.event_stream import EventStream
from cocaine_core.events import NODE, EventBus
from cocaine_core.manifest import Manifest, check_app_name, parse_manifest
from cocaine_core.node_info import node_info
from cocaine_core.node_view import NodeView
from cocaine_core.paths import check_run_dir
from cocaine_core.ports import PortAllocator, check_listen_port
from cocaine_core.protocol import DEFAULT_ENDPOINT
from cocaine_core.storages import Storage, WatchedStorage
from cocaine_core.store_follower import StoreFollower
from cocaine_core.tasks import run_to_end
from cocaine_core.trust.app_users import AppUsers
from cocaine_core.trust.curve import CurveServer, announce
from cocaine_core.trust.keyring import KeyRing
from cocaine_core.trust.owner import authorize_at_start, held_curve_key
from cocaine_core.trust.signatures import ControlGuard

log = logging.getLogger("cocaine.node")

DEFAULT_MAX_UPLOAD = 100 * 2**20


class Node:
    """Hosts apps and serves their native events and the control service on ``listen``."""

    def __init__(self, *, listen: str = DEFAULT_ENDPOINT, run_dir: str | Path | None = None,
                 name: str | None = None, ports: PortAllocator | None = None,
                 storage: Storage | None = None,
                 max_upload: int = DEFAULT_MAX_UPLOAD,
                 limits: archive.Limits | None = None,
                 uploads: UploadLimits | None = None,
                 deploy_timeout: float | None = None,
                 max_slaves: int | None = None,
                 max_message: int = DEFAULT_MAX_MESSAGE,
                 client_backlog: int = DEFAULT_CLIENT_BACKLOG,
                 owner_key: Path | None = None,
                 app_users: AppUsers | None = None,
                 curve: bool = False, client_keys: Path | None = None,
                 discovery: str | None = None,
                 cluster: ClusterSettings | None = None,
                 options: Mapping[str, Any] | None = None, events: str | None = None) -> None:
        self.listen = listen
        #: Plugin options given (``plugin_options``), and where events are published.
        self.options, self.events_endpoint = dict(options or {}), events
        #: CurveZMQ on the endpoint (``--curve``), and the clients it lets in (a file).
        self.curve, self.client_keys = curve, client_keys
        if client_keys is not None and not curve:
            raise NodeError("--client-keys needs --curve: only CurveZMQ clients have keys a "
                            "node can check; add --curve (clients then pass --server-key)")
        #: The uids apps run as (``--app-uids``); None: apps run as the node's own user.
        self.app_users = app_users
        #: Slaves across all apps, against ``--max-slaves`` (None: from this machine).
        self.slaves = SlaveBudget(max_slaves)
        self.ports = ports or PortAllocator()
        self.storage = storage
        self.max_upload = max_upload
        #: Longest a deploy (or an app's first load) may take, in seconds; None: only the
        #: manifest's ``startup-timeout`` bounds it (``cocaine run``).
        self.deploy_timeout = deploy_timeout
        self.name = name or socket.gethostname()
        #: Lifecycle events (``events.py``), out on the event stream once the node listens.
        self.events = EventBus(self.name)
        self.event_stream: EventStream | None = None
        self.view = NodeView(self)
        self._own_run_dir = run_dir is None
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix="cocaine-run-"))
        self.apps: dict[str, Engine] = {}
        self.started_at = time.time()
        self.endpoint = NativeEndpoint(self, listen, max_message=max_message,
                                       client_backlog=client_backlog)
        self.store = AppStore(storage, self.run_dir / "code", limits) if storage else None
        self.control = ControlService(self, uploads)
        #: The keys allowed to control this node (in storage, shared by nodes that share it),
        #: and the check of every control request against them.
        self.keys = KeyRing(storage, cache=isinstance(storage, WatchedStorage))
        self.guard = ControlGuard(self.keys)
        #: Follows a storage other nodes write too (etcd): their deploys reach this node.
        self.follower = (StoreFollower(self, storage) if isinstance(storage, WatchedStorage)
                         else None)
        #: How this node finds the others (``--discovery``), made at start.
        self.discovery_name = cluster.discovery(discovery) if cluster else discovery
        #: ``--cluster``: this node shares load with the others of that name (made at start).
        self.cluster_settings = cluster
        self.cluster: Cluster | None = None
        #: The peers given with ``--peer`` (the ``static`` discovery reads them).
        self.static_peers = list(cluster.peers) if cluster else []
        self.discovery: Discovery | None = None
        #: This node as its discovery announces it (made once it listens).
        self.record: NodeRecord | None = None
        #: The key authorized at the first start, when storage authorizes none.
        self.owner_key = owner_key
        #: Names with a deploy, removal or restart under way (one operation per name).
        self.busy: dict[str, str] = {}
        #: True while the node starts the apps in its storage.
        self.loading = False
        #: Stored records that did not start, by name: not tried again until they change.
        self._failed: dict[str, AppRecord] = {}
        #: True once the node drains to stop: requests for apps already stopped get 503.
        self.stopping = False
        #: Apps loading their code at once: each is an interpreter starting and importing, and
        #: fifty at once on two cores thrash; a few at a time finish sooner.
        self._loading = asyncio.Semaphore(4)
        #: The folders registered with ``cocaine_core.paths`` while the node runs.
        self._guarded: dict[str, Any] = {}

    # -- life -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the endpoint; raise NodeError naming it if it is taken."""
        settings = self.cluster_settings
        if settings is not None:  # no key, no cluster: said before anything starts
            settings.check()
            key = await asyncio.to_thread(load_key, settings, self.storage)
            self.cluster = Cluster(self, settings, key)
        if self.discovery_name is not None:  # a discovery the node lacks: an error at once
            self.discovery = open_discovery(self.discovery_name, self)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)
        storage_root = getattr(self.storage, "root", None)
        check_run_dir(self.run_dir, storage_root)
        check_listen_port(self.listen)
        paths.check_node_listen(self.listen, self.name, storage_root, self.run_dir)
        if self.store is not None:
            # Before anything listens: no deploy can be half-way through storing its code.
            await asyncio.to_thread(self.store.drop_partials)
            try:
                await asyncio.to_thread(self.store.collect_garbage)
            except StorageUnavailable as exc:
                log.warning("%s; orphaned code is collected at a later start", exc)
            self.loading = True  # from the first request on, apps not yet started are 503
        authorized = await asyncio.to_thread(authorize_at_start, self.keys, self.owner_key)
        if self.curve:
            self.endpoint.curve = await asyncio.to_thread(CurveServer.load, self.storage,
                                                          self.client_keys)
        self.listen = self.endpoint.bind()
        self._guarded = {"protected": [self.run_dir] + ([Path(storage_root)] if storage_root
                                                        else []),
                         "code_root": self.run_dir / "code" if self.store else None}
        paths.guard(**self._guarded)
        if authorized:  # said once the node listens: a node that cannot is one error line
            log.info("%s", authorized)
        log.info("node %s listening on %s", self.name, self.listen)
        announce(self.listen, self.endpoint.curve)
        await node_hooks.started(self)  # the event stream, and plugins beside the node
        if not self.curve and self.storage is not None and await held_curve_key(self.storage):
            log.warning("this node runs without --curve, yet its storage holds a Curve key "
                        "pair: a node of it ran with --curve before, and its clients now talk "
                        "to this one in plaintext; add --curve if that was not meant")
        if self.cluster is not None:  # before the apps load: peers serve them meanwhile
            self.record = await self.cluster.start(self.discovery)
        if self.store is not None:
            try:
                await self.load_from_storage()
            except StorageUnavailable as exc:
                if self.follower is None:
                    raise
                log.error("%s; this node starts without its apps, and starts them once the "
                          "store is back", exc)
            finally:
                self.loading = False
        if self.follower is not None:
            self.follower.start()
        if self.cluster is None and self.discovery is not None:
            self.record = NodeRecord.new(self.name, advertised(self.listen), __version__)
            await self.discovery.start(self.record)

    async def stop(self) -> None:
        """Drain every app (see ``Engine.stop``), then close the endpoint."""
        self.stopping = True
        self.events.emit(NODE, "node-stopping")
        if self.discovery is not None:  # the others stop sending work here first
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.discovery.stop(), 10)
        if self.cluster is not None:  # peers send nothing more; what they sent still runs
            self.cluster.leave()
        if self.follower is not None:
            await self.follower.stop()
        await asyncio.gather(*(self.remove_app(name) for name in list(self.apps)),
                             return_exceptions=True)
        if self.cluster is not None:
            await self.cluster.close()
        await node_hooks.stopped(self)
        self.endpoint.close()
        await self.control.close()
        if self._guarded:
            paths.unguard(**self._guarded)
            self._guarded = {}
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    async def add_app(self, name: str, manifest: Manifest, root: Path | None = None) -> Engine:
        """Start an app (not stored) from a checked manifest; its code is read from ``root``
        (or the manifest's folder). ``cocaine run`` hosts its app this way."""
        if name in self.apps:
            raise NodeError(f"app '{name}' is already running; remove it first")
        return await self.run_app(name, manifest, root)

    # -- apps in storage -----------------------------------------------------------------------

    async def load_from_storage(self, *, retry: bool = False) -> None:
        """Make the running apps match storage: start new, replace changed, stop removed.

        Called at start, on SIGHUP (``retry``) and as a shared storage changes. An app that
        fails to start is logged; the others run. A record that failed is not tried again
        until it changes, or ``retry``. Deploys and removals may run meanwhile: what storage
        said is read again before an app is stopped or started, and a record older than the
        running version is left.
        """
        assert self.store is not None
        store = self.store
        if retry:
            self._failed.clear()
        records = await asyncio.to_thread(store.records)
        for name in [n for n in self.apps if n not in records and n not in self.busy]:
            try:
                stored = await asyncio.to_thread(store.get, name)
            except StorageUnavailable:
                raise
            except StorageError:
                continue  # a damaged record (said once by records()): what runs keeps running
            if stored is not None or name in self.busy:
                continue  # stored after all, or a deploy began meanwhile: it decides
            self.busy[name] = "stop"
            try:
                await self.remove_app(name)
                store.forget_unpacked(name)
            finally:
                self.busy.pop(name, None)
        todo = [record for name, record in records.items() if name not in self.busy
                and _outdated(self.apps.get(name), record) and self._failed.get(name) != record]
        for record in todo:
            self.busy[record.name] = "start"
        async def start(record: AppRecord) -> None:
            try:
                if await asyncio.to_thread(store.get, record.name) == record:
                    await self.start_record(record)
                    self._failed.pop(record.name, None)
            except StorageUnavailable:
                raise
            except CocaineError as exc:
                self._failed[record.name] = record
                log.error("app %s from storage did not start: %s", record.name, exc)
            except Exception as exc:  # storage changed under it: one line, the rest go on
                self._failed[record.name] = record
                log.error("app %s from storage did not start: %s: %s", record.name,
                          type(exc).__name__, exc)
            finally:
                self.busy.pop(record.name, None)

        await asyncio.gather(*(start(record) for record in todo))

    async def start_record(self, record: AppRecord) -> Engine:
        """Start (or replace) an app from a stored record."""
        assert self.store is not None
        root = await asyncio.to_thread(self.store.unpack, record)
        manifest = parse_manifest(record.manifest, root=root, source=f"app '{record.name}'")
        engine = await self.run_app(record.name, manifest, root)
        engine.record = record
        self.events.emit(record.name, "deployed", version=record.version,
                         sha256=record.sha256)
        self.store.forget_unpacked(record.name, keep=root)
        return engine

    async def run_app(self, name: str, manifest: Manifest, root: Path | None = None,
                      *, refuse_broken: bool = False) -> Engine:
        """Start ``name``, or replace the running version without dropping a job. A new
        version that cannot start its drivers, or (with ``refuse_broken``) load its code, is
        stopped and refused (NodeError), and the running version, if any, keeps serving."""
        check_app_name(name)
        old = self.apps.get(name)
        app = AppInfo(name=name, manifest=manifest, run_dir=self.run_dir, node=self.name,
                      root=root, ports=self.ports, slaves=self.slaves, events=self.events,
                      user=self.app_users.user_for(name) if self.app_users else None)
        engine = Engine(app)
        first = old is None and name not in self.busy
        if first:
            self.busy[name] = "start"
        try:
            try:
                await self._load(engine)
            except TimeoutError:
                raise NodeError(f"app '{name}': its code did not load within the node's deploy "
                                f"timeout of {self.deploy_timeout:g} s (cocaine node "
                                f"--deploy-timeout); it was stopped") from None
        finally:
            if first:
                self.busy.pop(name, None)
        if refuse_broken and engine.state is AppState.BROKEN:
            reason = engine.broken_reason
            await engine.stop()
            await sweep_user(engine, self.apps)
            kept = " ; the running version keeps serving" if old else ""
            raise NodeError(f"app '{name}': its code failed to load: {reason}{kept}")
        self.apps[name] = engine
        try:  # once the code has loaded, a cancel waits for the switch to be whole
            if old is None:
                await run_to_end(engine.start_drivers())
            else:
                await run_to_end(old.hand_over(engine))
        except BaseException:  # the running version, if any, goes on serving (hand_over)
            if old is not None and old.running():
                self.apps[name] = old
            else:
                self.apps.pop(name, None)
            await engine.stop()
            raise
        log.info("app %s: %s with %d task(s)%s", name, engine.state.value,
                 len(manifest.tasks), " (new version)" if old else "")
        return engine

    async def _load(self, engine: Engine) -> None:
        """Start ``engine`` without its drivers in one of the node's loading slots, for at
        most ``deploy_timeout`` seconds (TimeoutError past it). A load cut short (timeout or
        cancel) gives its slot back at once, then waits until what it started has stopped."""
        await self._loading.acquire()
        held = True
        try:
            start = asyncio.ensure_future(engine.start(drivers=False))
            try:
                await asyncio.wait_for(asyncio.shield(start), self.deploy_timeout)
            except BaseException:
                self._loading.release()
                held = False
                if not start.done():
                    start.cancel()  # the engine tears down what it started
                    await run_to_end(asyncio.wait({start}, timeout=60))
                raise
        finally:
            if held:
                self._loading.release()

    async def remove_app(self, name: str) -> None:
        """Stop an app (draining it) and forget it."""
        engine = self.apps.get(name)
        if engine is None:
            raise NodeError(f"no app named '{name}' on this node")
        try:
            await engine.stop()
        finally:
            self.apps.pop(name, None)
            await sweep_user(engine, self.apps)
        if not self.stopping:
            self.events.emit(name, "removed")
        log.info("app %s stopped", name)

    # -- introspection ------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The node's state: its apps' pools, queues, jobs and tasks (``node_info``)."""
        return node_info(self)


def _outdated(engine: Engine | None, record: AppRecord) -> bool:
    """Whether the running ``engine`` (if any) is not the stored ``record``'s version, and
    not newer either (a deploy may have finished since ``record`` was read)."""
    running = engine.record if engine is not None else None
    return running is None or (running != record and running.version <= record.version)
