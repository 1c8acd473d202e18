"""The node's control service, the reserved app ``@node``: list, info, deploy, remove, restart.

Requests reach it through the same endpoint and framing as any app's (``protocol.md``): the
method is the event, the arguments a msgpack map in the body, the answer one msgpack chunk.
Large code archives are uploaded in pieces (``upload-begin``, ``upload-chunk``…) and then
named in ``deploy``, so a client can show progress and the node never holds one huge message.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgpack

from cocaine_core import archive
from cocaine_core.cluster.cluster import cluster_nodes
from cocaine_core.deploy_steps import install
from cocaine_core.errors import (
    BusyError,
    CocaineError,
    NodeError,
    NotFoundError,
    ServiceError,
    StorageError,
    StorageUnavailable,
)
from cocaine_core.manifest import check_app_name
from cocaine_core.protocol import Status
from cocaine_core.storages import NonceStorage
from cocaine_core.trust.signatures import MAX_SKEW, find_key
from cocaine_core.uploads import UPLOAD_CHUNK, UploadLimits, Uploads

if TYPE_CHECKING:
    from cocaine_core.engine.job import JobSink
    from cocaine_core.node import Node
    from cocaine_core.trust.keyring import KeyEntry

log = logging.getLogger("cocaine.control")

#: Most control requests under way at once (looking up their key, checking, running): past
#: it, one more is a 503 at once, so a flood holds a bounded amount of the node.
MAX_UNDER_WAY = 256
#: The methods that change what a node runs: their nonce is claimed in a shared storage too.
CHANGING = frozenset({"deploy", "remove", "restart"})

#: Most seconds a deploy, removal or restart waits for the app's start or stop from storage
#: to end before it is refused as busy (a removal right after a deploy through another node
#: finds the start under way).
START_WAIT = 30.0

#: Bodies up to this many bytes are hashed for their signature's check on the event loop;
#: larger ones (an archive sent whole) in a thread, so the node keeps serving meanwhile.
HASH_IN_LOOP = 256 * 1024

class ControlService:
    """The methods of ``@node``."""

    def __init__(self, node: Node, limits: UploadLimits | None = None) -> None:
        self.node = node
        #: Archives being received in pieces.
        self.uploads = Uploads(limits)
        #: Deploys under way by app name: the task running the method, and its inner work
        #: (cancelled by a remove of the same name or past the deploy timeout).
        self._deploys: dict[str, tuple[asyncio.Task[Any], asyncio.Task[Any]]] = {}
        #: Methods under way (each runs as a task of its own: a deploy takes seconds).
        self._running: set[asyncio.Task[None]] = set()
        self.methods: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "list": self.list,
            "info": self.info,
            "app-info": self.app_info,
            "cluster-nodes": functools.partial(cluster_nodes, node),
            "upload-begin": self.upload_begin,
            "upload-chunk": self.upload_chunk,
            "deploy": self.deploy,
            "remove": self.remove,
            "restart": self.restart,
        }

    def submit(self, sink: JobSink, method: str, body: bytes, auth: Any = None) -> None:
        """Start ``method`` with the msgpack map in ``body``, if ``auth`` signs it with a key
        the node authorizes (else a 401 saying what to do); its answer goes to ``sink``."""
        guard = self.node.guard
        try:
            fingerprint = guard.screen(auth)
            known, entry = guard.ring.cached(fingerprint)
            signer = guard.admit(fingerprint, entry) if known else None
        except ServiceError as exc:
            sink.error(exc.code, exc.message)
            return
        if len(self._running) >= MAX_UNDER_WAY:
            sink.error(Status.UNAVAILABLE, f"this node has {MAX_UNDER_WAY} control requests "
                                           f"under way; retry in a moment")
            return
        task = asyncio.get_running_loop().create_task(
            self._verified(sink, method, body, auth, fingerprint, signer))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _verified(self, sink: JobSink, method: str, body: bytes, auth: Any,
                        fingerprint: str, signer: KeyEntry | None) -> None:
        """Find the signing key (in a thread: the storage may be remote), check the
        signature over ``body`` (hashed off the loop when large), then run ``method``."""
        guard = self.node.guard
        try:
            if signer is None:
                signer = guard.admit(fingerprint,
                                     await asyncio.to_thread(find_key, guard, fingerprint))
            digest = (hashlib.sha256(body).digest() if len(body) <= HASH_IN_LOOP
                      else await asyncio.to_thread(_sha256, body))
            guard.verify(signer, method, digest, auth)
            if method in CHANGING and isinstance(self.node.storage, NonceStorage):
                await self._claim_nonce(auth["nonce"])
        except CocaineError as exc:  # ServiceError; StorageUnavailable: the keys are remote
            sink.error(exc.code, exc.message if isinstance(exc, ServiceError) else str(exc))
            return
        if method not in self.methods:
            sink.error(Status.NOT_FOUND, f"the control service has no method '{method}'; "
                                         f"methods: {', '.join(sorted(self.methods))}")
            return
        await self.handle(sink, method, body)

    async def _claim_nonce(self, nonce: bytes) -> None:
        """Refuse (401) a changing request whose nonce another node sharing the storage took
        already: a request captured on its way to one node, replayed to another."""
        storage = self.node.storage
        assert isinstance(storage, NonceStorage)
        if not await asyncio.to_thread(storage.claim_nonce, nonce, 2 * MAX_SKEW):
            raise ServiceError(Status.UNAUTHORIZED, "the request's nonce was taken by another "
                                                    "node of this cluster: a replayed request "
                                                    "is refused. Send a new request")

    async def close(self) -> None:
        """Cancel the methods under way (the node is stopping) and drop partial uploads."""
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        await self.uploads.close()

    async def handle(self, sink: JobSink, method: str, body: bytes) -> None:
        """Run ``method`` with the msgpack map in ``body``; answer on ``sink``."""
        handler = self.methods[method]
        try:
            args = msgpack.unpackb(body, raw=False) if body else {}
            if not isinstance(args, dict):
                raise ValueError
        except Exception:
            sink.error(Status.BAD_REQUEST, f"'{method}' takes a msgpack map as its body")
            return
        try:
            result = await handler(args)
        except CocaineError as exc:
            sink.error(exc.code, str(exc))
            return
        except Exception as exc:
            log.exception("control method %s failed", method)
            sink.error(Status.SERVER_ERROR, f"'{method}' failed: {type(exc).__name__}: {exc}")
            return
        sink.chunk(msgpack.packb(result, use_bin_type=True))
        sink.choke()

    # -- reading ----------------------------------------------------------------------------

    async def list(self, args: dict[str, Any]) -> list[str]:
        """The running apps' names."""
        return sorted(self.node.apps)

    async def info(self, args: dict[str, Any]) -> dict[str, Any]:
        """The node's state (see ``Node.info``)."""
        return self.node.info()

    async def app_info(self, args: dict[str, Any]) -> dict[str, Any]:
        """One app: its engine's state, and its stored record."""
        name = _name(args)
        engine = self.node.apps.get(name)
        try:
            record = await asyncio.to_thread(self.node.store.get, name) if self.node.store \
                else None
        except StorageUnavailable:
            if engine is None:
                raise
            record = engine.record  # what runs, while the store cannot say more
        if engine is None and record is None:
            raise _not_found(name, self.node)
        out: dict[str, Any] = engine.info() if engine else {"state": "stopped"}
        if engine is not None and engine.record is not None:  # what runs here, which the
            out["running"] = {"version": engine.record.version,  # store may have passed
                              "sha256": engine.record.sha256}
        if record is not None:
            out["deployed"] = {"version": record.version, "sha256": record.sha256,
                               "at": record.deployed_at, "manifest": record.manifest}
        return out

    # -- uploads ------------------------------------------------------------------------------

    async def upload_begin(self, args: dict[str, Any]) -> dict[str, Any]:
        """Start receiving an archive of ``size`` bytes; returns its id and the chunk size."""
        upload = self.uploads.begin(args.get("size"), self.node.max_upload,
                                    self.node.run_dir / "uploads")
        return {"upload": upload.id, "chunk-size": UPLOAD_CHUNK}

    async def upload_chunk(self, args: dict[str, Any]) -> dict[str, Any]:
        """Append ``data`` at ``offset`` to an upload; returns the bytes received so far."""
        upload = self.uploads.append(args.get("upload"), args.get("data"), args.get("offset"))
        return {"received": upload.received}

    # -- changing apps ----------------------------------------------------------------------

    async def deploy(self, args: dict[str, Any]) -> dict[str, Any]:
        """Check, store and start (or replace) an app.

        Arguments: ``name``; ``manifest`` (a map); the code as ``upload`` (an id) or
        ``archive`` (bytes); ``sha256`` of the archive. Nothing is stored unless the archive
        is safe, the manifest passes every check of this node's plugins, and the code loads.
        A deploy still unpacking or loading past the node's deploy timeout, or when a
        ``remove`` of the same name comes, is cancelled: what it started is stopped and
        removed, and the running version (if any) keeps serving.
        """
        name = _name(args)
        self._store()
        manifest_data = args.get("manifest")
        if not isinstance(manifest_data, dict):
            raise NodeError("deploy needs 'manifest', the app's manifest as a map")
        code = await self._archive(args)
        checksum = await asyncio.to_thread(archive.sha256, code)
        if args.get("sha256") != checksum:
            raise NodeError("the code archive's sha256 does not match: it was damaged on the "
                            "way; deploy again")
        await self._settle(name)
        with self._claim(name, "deploy"):
            outer = asyncio.current_task()
            assert outer is not None
            inner = asyncio.get_running_loop().create_task(
                install(self.node, self._store(), name, manifest_data, code, checksum))
            self._deploys[name] = (outer, inner)
            try:
                # The code's load is bounded by the deploy timeout (Node.run_app); the whole
                # deploy, with unpacking, a wait for a loading slot and stopping what a cut
                # load started, by twice that and 10 s.
                limit = self.node.deploy_timeout
                done, _ = await asyncio.wait({inner}, timeout=limit and 2 * limit + 10)
                if not done:
                    await _cancel(inner)
                    if inner.cancelled() or inner.exception() is not None:
                        raise NodeError(
                            f"the deploy of app '{name}' took longer than twice this node's "
                            f"deploy timeout of {limit:g} s and 10 s (cocaine node "
                            f"--deploy-timeout), waiting to unpack and load; what it started "
                            f"was stopped and removed"
                            + ("; the running version keeps serving"
                               if name in self.node.apps else ""))
                if inner.cancelled():
                    raise NodeError(f"the deploy of app '{name}' was cancelled by a remove of "
                                    f"'{name}'")
            except asyncio.CancelledError:
                await _cancel(inner)
                raise
            finally:
                self._deploys.pop(name, None)
            engine, record = inner.result()
        log.info("app %s deployed (version %d, sha256 %s)", name, record.version,
                 record.sha256[:12])
        return {"name": name, "version": record.version, "sha256": record.sha256,
                "state": engine.state.value}

    async def _archive(self, args: dict[str, Any]) -> bytes:
        if isinstance(args.get("archive"), bytes):
            code: bytes = args["archive"]
            if len(code) > self.node.max_upload:
                raise NodeError(f"the code archive is over this node's upload limit of "
                                f"{self.node.max_upload} bytes")
            return code
        upload = self.uploads.get(args.get("upload"))
        try:
            if upload.received != upload.size:
                raise NodeError(f"the upload is incomplete ({upload.received} of {upload.size} "
                                f"bytes)")
            return await asyncio.to_thread(upload.path.read_bytes)
        finally:
            self.uploads.forget(upload)

    async def remove(self, args: dict[str, Any]) -> dict[str, Any]:
        """Stop an app (draining it) and remove it from storage. A deploy of the same name
        under way is cancelled first; a start from storage (a deploy made through another
        node, arriving here) is waited for, up to ``START_WAIT`` seconds; during a restart,
        or a start that takes longer, the answer is 503 (busy), never 404."""
        name = _name(args)
        cancelled = False
        deploying = self._deploys.get(name)
        if deploying is not None:
            outer, inner = deploying
            inner.cancel()
            await asyncio.wait({outer}, timeout=120)
            cancelled = True
        await self._settle(name)
        if name in self.node.busy:
            raise BusyError(f"app '{name}' is busy with a {self.node.busy[name]} right now; "
                            f"try again when it is done")
        try:
            stored: Any = (await asyncio.to_thread(self.node.store.get, name)
                           if self.node.store else None)
        except StorageUnavailable:
            raise
        except StorageError:
            stored = "damaged"  # a record no node could use: removing it is the way out
        if name not in self.node.apps and stored is None:
            if cancelled:
                return {"name": name, "removed": True, "cancelled-deploy": True}
            raise _not_found(name, self.node)
        with self._claim(name, "removal"):
            if self.node.store is not None:
                await asyncio.to_thread(self.node.store.remove, name)
            if name in self.node.apps:
                await self.node.remove_app(name)
            if self.node.store is not None:
                self.node.store.forget_unpacked(name)
        return {"name": name, "removed": True, **({"cancelled-deploy": True} if cancelled
                                                  else {})}

    async def restart(self, args: dict[str, Any]) -> dict[str, Any]:
        """Start an app again from storage (fresh slaves on freshly loaded code)."""
        name = _name(args)
        store = self._store()
        record = await asyncio.to_thread(store.get, name)
        if record is None:
            raise _not_found(name, self.node)
        await self._settle(name)
        with self._claim(name, "restart"):
            engine = await self.node.start_record(record)
        return {"name": name, "state": engine.state.value}

    def _store(self) -> Any:
        if self.node.store is None:
            raise NodeError("this node has no storage (cocaine run hosts one app); deploy to "
                            "a node started with cocaine node")
        return self.node.store

    async def _settle(self, name: str) -> None:
        """Wait (up to ``START_WAIT`` s) while ``name`` starts or stops as storage says: a
        change made through another node is arriving here, and what comes next should
        follow it."""
        waited = 0.0
        while self.node.busy.get(name) in ("start", "stop") and waited < START_WAIT:
            await asyncio.sleep(0.05)
            waited += 0.05

    def _claim(self, name: str, what: str) -> _Claim:
        return _Claim(self.node.busy, name, what)


class _Claim:
    """One operation per app name at a time; a second one is refused with a clear message."""

    def __init__(self, busy: dict[str, str], name: str, what: str) -> None:
        self.busy, self.name, self.what = busy, name, what

    def __enter__(self) -> None:
        if self.name in self.busy:
            raise BusyError(f"app '{self.name}' is busy with a {self.busy[self.name]} right "
                            f"now; try again when it is done")
        self.busy[self.name] = self.what

    def __exit__(self, *exc: object) -> None:
        self.busy.pop(self.name, None)


def _name(args: dict[str, Any]) -> str:
    return check_app_name(args.get("name"))


def _not_found(name: str, node: Node) -> NotFoundError:
    return NotFoundError(f"no app named '{name}' on this node; apps: "
                         f"{', '.join(sorted(node.apps)) or '(none)'}")


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait (bounded) until it has undone its work."""
    task.cancel()
    await asyncio.wait({task}, timeout=120)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
