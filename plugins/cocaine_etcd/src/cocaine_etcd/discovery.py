"""The ``etcd`` discovery: nodes register under a lease in the storage's etcd.

``cocaine node --storage etcd://HOST:PORT/PREFIX --discovery etcd``. Each node puts its record
(``NodeRecord.to_json()``) at ``P/nodes/<id>`` under a lease of ``LEASE_TTL`` seconds, which
it keeps alive every ``KEEPALIVE_EVERY`` seconds; it watches ``P/nodes/`` for the others. A
node that leaves revokes its lease (the others drop it at once); one that dies drops out when
its lease expires. A lease lost while the node could not reach etcd is granted again, and the
record put again, once etcd answers. While etcd is unreachable, ``peers()`` keeps the last
view and ``info()`` says ``unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cocaine_core.cluster.discovery import NodeRecord
from cocaine_core.errors import NodeError, StorageUnavailable
from cocaine_core.storages import Change
from cocaine_etcd.storage import EtcdStorage
from cocaine_etcd.watching import PrefixWatch

log = logging.getLogger("cocaine.discovery")

#: Seconds a node's record outlives its last keep-alive: how long a killed node stays
#: listed. Short, so work stops going to a dead node soon; long enough for a busy machine
#: (or an etcd leader election, ~1 s) not to drop a live one.
LEASE_TTL = 5
#: Seconds between keep-alives: three chances before the lease expires.
KEEPALIVE_EVERY = LEASE_TTL / 3
#: Seconds ``stop`` may take to revoke the lease (then it expires by itself).
REVOKE_TIMEOUT = 2.0
#: Peers held at most (a store full of records, by mistake or malice, cannot grow the node).
MAX_PEERS = 1024
NEEDS_ETCD = ("--discovery etcd needs --storage etcd://HOST:PORT/PREFIX, where the nodes "
              "register")


class EtcdDiscovery:
    """Nodes under leases at ``P/nodes/`` of the node's etcd storage (module docstring)."""

    #: Records come from the store, which only its writers (who may deploy code) write:
    #: the cluster links them and keeps trying them.
    trusted = True

    def __init__(self, node: Any) -> None:
        storage = getattr(node, "storage", None)
        if not isinstance(storage, EtcdStorage):
            raise NodeError(NEEDS_ETCD + f" (the storage is {getattr(storage, 'uri', None)!r})")
        self.storage = storage
        self.connection = storage.connection
        self.prefix = storage.prefix + b"/nodes/"
        self.state = "stopped"
        self.me: NodeRecord | None = None
        self.lease_id: int | None = None
        self._peers: dict[str, NodeRecord] = {}
        #: Records skipped as unreadable, by node id: the value's hash (one line until it
        #: changes). Bounded like the peers.
        self._unreadable: dict[str, int] = {}
        self._over_cap = False
        self._read_failing = False
        self._keeper: asyncio.Future[None] | None = None
        self._stop_watch: Any = None

    # -- Discovery ---------------------------------------------------------------------------

    async def start(self, me: NodeRecord) -> None:
        """Register ``me`` under a new lease and follow the others. If etcd cannot be reached
        now, the node starts anyway and registers once it can (``info`` says so)."""
        self.me = me
        self.state = "joining"
        try:
            await asyncio.wrap_future(self.connection.submit(self._register()))
        except StorageUnavailable as exc:
            self.state = "unavailable"
            log.warning("discovery: cannot register yet (%s); retrying in the background", exc)
        watch = PrefixWatch(self.connection, {"nodes": self.prefix}, self._changed)
        watch.start()
        self._stop_watch = watch.stop
        self._keeper = self.connection.submit(self._keep())  # type: ignore[assignment]

    def peers(self) -> dict[str, NodeRecord]:
        """The other nodes registered now, by id (the last view while etcd is unreachable)."""
        return dict(self._peers)

    def info(self) -> dict[str, Any]:
        """The discovery's name, state (joined, unavailable, joining, stopped) and peers."""
        return {"discovery": "etcd", "state": self.state, "lease_ttl": LEASE_TTL,
                "peers": {p.id: {"name": p.name, "endpoint": p.endpoint,
                                 "started": p.started} for p in self.peers().values()}}

    async def stop(self) -> None:
        """Revoke the lease (bounded), so the others drop this node at once; stop following.
        Never raises (but for its own cancellation): a lease not revoked expires by itself."""
        self.state = "stopped"
        if self._keeper is not None:
            self._keeper.cancel()
        lease_id, self.lease_id = self.lease_id, None
        try:
            if self._stop_watch is not None:
                await asyncio.to_thread(self._stop_watch)
            if lease_id is None or self.connection.closed:
                return
            revoke = self.connection.submit(self.connection.run(
                lambda c: c.revoke_lease(lease_id), "revoke the node's lease",
                total=REVOKE_TIMEOUT))
            await asyncio.wait_for(asyncio.wrap_future(revoke), REVOKE_TIMEOUT + 0.5)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the caller cancels stop itself
            log.warning("discovery: the lease's revocation was cut; the record expires "
                        "within %d s", LEASE_TTL)
        except Exception as exc:  # TimeoutError, StorageError, a closed connection
            log.warning("discovery: could not revoke the lease (%s); the record expires "
                        "within %d s", exc, LEASE_TTL)

    # -- on the storage's loop ---------------------------------------------------------------

    async def _register(self) -> None:
        assert self.me is not None
        record, key = self.me.to_json(), self.prefix + self.me.id.encode()
        lease = await self.connection.run(lambda c: c.lease(LEASE_TTL), "grant a node lease")
        await self.connection.run(lambda c: c.put(key, record, lease=lease.id),
                                  "register the node")
        self.lease_id = lease.id
        self.state = "joined"
        log.info("discovery: registered as %s under lease %x", self.me.id, lease.id)

    async def _keep(self) -> None:
        while self.state != "stopped":
            await asyncio.sleep(KEEPALIVE_EVERY)
            try:
                if self.lease_id is None:
                    await self._register()
                    continue
                lease_id = self.lease_id
                reply = await self.connection.run(
                    lambda c, lease_id=lease_id: c.refresh_lease(lease_id),  # type: ignore[misc]
                    "keep the node's lease alive", total=KEEPALIVE_EVERY)
                if reply is None or reply.TTL <= 0:
                    log.warning("discovery: lease %x expired; registering again", lease_id)
                    self.lease_id = None
                    await self._register()
                elif self.state == "unavailable":
                    self.state = "joined"
            except StorageUnavailable:
                if self.state != "stopped":
                    self.state = "unavailable"
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("discovery: keep-alive failed")

    # -- the watch's thread ------------------------------------------------------------------

    def _changed(self, change: Change) -> None:
        try:
            self._follow(change)
        except Exception as exc:  # StorageUnavailable mostly: keep the last view
            if not self._read_failing and self.state != "stopped":
                log.warning("discovery: cannot read the node records (%s); keeping the last "
                            "list of peers until etcd answers", exc)
            self._read_failing = True
        else:
            if self._read_failing:
                log.info("discovery: reading the node records again")
            self._read_failing = False

    def _follow(self, change: Change) -> None:
        me = self.me.id if self.me is not None else ""
        if change is None:
            found = self.connection.call(lambda c: c.get_prefix(self.prefix), "list the nodes")
            peers: dict[str, NodeRecord] = {}
            seen = refused = False
            for kv in found:
                record = self._read(kv.key, kv.value)
                if record is None:
                    continue
                if record.id == me:
                    seen = True
                elif self._admit(peers, record.id):
                    peers[record.id] = record
                else:
                    refused = True
            self._peers = peers
            self._over_cap = refused
            if self.me is not None and not seen and self.lease_id:
                self._put_again()
            return
        _, node_id = change
        key = self.prefix + node_id.encode()
        kv = self.connection.call(lambda c: c.get(key), "read a node record")
        record = self._read(key, kv.value) if kv is not None else None
        if node_id == me:
            if record is None and self.state != "stopped":
                self._put_again()
            return
        peers = dict(self._peers)
        if record is None:
            peers.pop(node_id, None)
            if kv is None:
                self._unreadable.pop(node_id, None)
            if len(peers) < MAX_PEERS:
                self._over_cap = False
        elif self._admit(peers, node_id):
            peers[node_id] = record
        self._peers = peers

    def _admit(self, peers: dict[str, NodeRecord], node_id: str) -> bool:
        """Whether ``node_id`` fits among ``peers`` (at most MAX_PEERS; one line when not)."""
        if node_id in peers or len(peers) < MAX_PEERS:
            return True
        if not self._over_cap:
            log.warning("discovery: more than %d node records under %s; following the first "
                        "%d only", MAX_PEERS, self.prefix.decode(errors="replace"), MAX_PEERS)
            self._over_cap = True
        return False

    def _put_again(self) -> None:
        # Our record vanished while our lease lives (deleted by hand): put it back.
        if self.me is None or self.lease_id is None:
            return
        key, record, lease_id = self.prefix + self.me.id.encode(), self.me.to_json(), self.lease_id
        try:
            self.connection.call(lambda c: c.put(key, record, lease=lease_id),
                                 "register the node again")
        except Exception as exc:  # an expired lease: the keep-alive registers anew
            log.info("discovery: could not put the record back (%s)", exc)

    def _read(self, key: bytes, value: bytes) -> NodeRecord | None:
        """The record in ``value``, or None (one line per bad record until it changes)."""
        name = key[len(self.prefix):].decode(errors="replace")
        try:
            record = NodeRecord.from_json(bytes(value))
            if record.id != name:
                raise NodeError(f"its id is {record.id!r}")
        except NodeError as exc:
            digest = hash(bytes(value))
            if self._unreadable.get(name) != digest:
                if len(self._unreadable) >= MAX_PEERS:
                    self._unreadable.clear()
                self._unreadable[name] = digest
                log.warning("discovery: skipping the unreadable node record %s: %s",
                            name[:200], exc)
            return None
        self._unreadable.pop(name, None)
        return record
