"""The ``mdns`` discovery: nodes of one LAN find each other with no configuration.

``cocaine node --cluster NAME --discovery mdns``. Each node publishes, with multicast DNS
(python-zeroconf), the service ``<cluster>-<node id>._cocaine._tcp.local.``: its address (the
link's host; with a wildcard listen host, every non-loopback IPv4 address of the host), the
link's port, and its record in TXT properties (id, name, endpoint, link, cluster, started,
version). It browses ``_cocaine._tcp.local.`` for the others.

Records live ``TTL`` seconds; a node announces its own again every ``ANNOUNCE_EVERY`` seconds,
so the others' caches keep it. A node that leaves sends goodbyes (the others drop it at
once); one that dies or is cut off drops out when its records expire (``TTL``). What is heard
is only a candidate (its ``link``; the cluster's Curve handshake proves who it is), but it is
bounded: a name not of this cluster's form is never resolved, a record that does not read as
one of this cluster's nodes is skipped (one log line per sender per minute), at most
``MAX_PEERS`` peers are held and one resolve runs at a time per name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import time
from typing import Any

from zeroconf import (
    IPVersion,
    RecordUpdate,
    RecordUpdateListener,
    ServiceStateChange,
    Zeroconf,
    current_time_millis,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from cocaine_core.cluster.discovery import NODE_ID, NodeRecord
from cocaine_core.errors import NodeError

log = logging.getLogger("cocaine.discovery")

SERVICE = "_cocaine._tcp.local."
#: Seconds a node's published records live in the others' caches: how long a node killed
#: (or cut off) stays listed at most.
TTL = 15
#: Seconds between a node's announces of itself (three before its records expire).
ANNOUNCE_EVERY = TTL / 3
#: Seconds between checks of the cache (records expired, peers not yet resolved).
SWEEP_EVERY = 1.0
#: Seconds a peer's records may take to arrive once its name is heard.
RESOLVE_TIMEOUT = 3.0
#: Seconds ``start`` may take to claim the node's name; ``stop`` to say goodbye and close.
REGISTER_TIMEOUT = 10.0
STOP_TIMEOUT = 3.0
#: Peers held at most; names being resolved at most; resolves running at once.
MAX_PEERS = 1024
MAX_RESOLVING = 16
#: Names remembered as unreadable (not resolved again for a TTL), and log lines per minute.
MAX_REJECTED = 4096
LOG_EVERY = 60.0
MAX_LINES_PER_MINUTE = 20
WILDCARDS = ("*", "0.0.0.0", "::", "[::]")
NO_LAN = ("mdns needs an IPv4 interface with multicast (not loopback) to announce on: use "
          "--cluster-listen tcp://ADDRESS:PORT with an address of the LAN, or --discovery "
          "static --peer ENDPOINT")
_PTR, _SRV, _IN = 12, 33, 1
_IFF_MULTICAST = 0x1000


def lan_addresses() -> list[tuple[str, str]]:
    """Every non-loopback IPv4 address of this host, with its interface's name."""
    import ifaddr

    found = []
    for adapter in ifaddr.get_adapters():
        for address in adapter.ips:
            if isinstance(address.ip, str) and not address.ip.startswith("127."):
                found.append((address.ip, adapter.name))
    return found


def _multicast_capable(interface: str) -> bool:
    try:
        with open(f"/sys/class/net/{interface}/flags") as f:
            return bool(int(f.read(), 16) & _IFF_MULTICAST)
    except (OSError, ValueError):
        return True  # not Linux, or unknown: let zeroconf try


def _addresses(host: str) -> list[str]:
    """The addresses to announce ``host`` at; NodeError if none can carry mDNS."""
    interfaces = lan_addresses()
    if host in WILDCARDS:
        chosen = interfaces
    else:
        try:
            address = socket.gethostbyname(host.strip("[]"))
        except OSError as exc:
            raise NodeError(f"mdns: the link host {host!r} does not resolve ({exc})") from None
        if address.startswith("127."):
            raise NodeError(f"mdns: the link host {host!r} is loopback; " + NO_LAN)
        chosen = [(a, i) for a, i in interfaces if a == address] or [(address, "?")]
    if not chosen:
        raise NodeError("mdns: this host has no IPv4 address but loopback; " + NO_LAN)
    for address, interface in chosen:
        if not _multicast_capable(interface):
            raise NodeError(f"mdns: interface {interface} ({address}) does not do multicast: "
                            f"`ip link set {interface} multicast on`, or " + NO_LAN[6:])
    return [a for a, _ in chosen]


class _Heard(RecordUpdateListener):
    """Follows the SRV records of the peers held: when each expires. The peers' liveness
    is kept here rather than read from zeroconf's cache, which a flood of records may evict
    entries from."""

    def __init__(self, expiry: dict[str, float]) -> None:
        self.expiry = expiry

    def async_update_records(self, zc: Zeroconf, now: float,
                             records: list[RecordUpdate]) -> None:
        """Note when each held peer's SRV record now expires (a goodbye: at once)."""
        for update in records:
            record = update.new
            if record.type == _SRV and record.key in self.expiry:
                self.expiry[record.key] = record.created + record.ttl * 1000.0

    def async_update_records_complete(self) -> None:
        """Nothing to do once a batch is in."""


class MdnsDiscovery:
    """The nodes of this cluster on the LAN, by multicast DNS (module docstring)."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.state = "stopped"
        self.me: NodeRecord | None = None
        self.addresses: list[str] = []
        self._prefix = ""
        self._azc: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._peers: dict[str, NodeRecord] = {}
        self._names: dict[str, str] = {}  # service name -> peer id
        self._expiry: dict[str, float] = {}  # held name, lower case -> SRV expiry (ms)
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._rejected: dict[str, float] = {}
        self._logged: dict[str, float] = {}
        self._lines: list[float] = []
        self._slots = asyncio.Semaphore(MAX_RESOLVING)

    # -- Discovery ---------------------------------------------------------------------------

    async def start(self, me: NodeRecord) -> None:
        """Publish ``me`` on the LAN and browse for the others; NodeError if mDNS cannot
        run here (no multicast interface, or the name taken)."""
        self.me = me
        link = me.link or me.endpoint
        host, _, port = link[len("tcp://"):].rpartition(":")
        self.addresses = _addresses(host)
        if host in WILDCARDS:
            link = f"tcp://{self.addresses[0]}:{port}"
        self._prefix = f"{me.cluster}-" if me.cluster else ""
        instance = f"{self._prefix}{me.id}"
        if len(instance.encode()) > 63:
            raise NodeError(f"mdns: the cluster name {me.cluster!r} is too long for an mDNS "
                            f"name: at most {62 - len(me.id)} characters")
        properties = {"id": me.id, "name": me.name, "endpoint": me.endpoint, "link": link,
                      "cluster": me.cluster, "started": repr(me.started), "version": me.version}
        for key, value in properties.items():
            if len(key) + 1 + len(value.encode()) > 255:
                raise NodeError(f"mdns: the node's {key} {value!r} is too long for a TXT "
                                "property (255 bytes with its key)")
        self.state = "joining"
        try:
            self._azc = AsyncZeroconf(interfaces=self.addresses, ip_version=IPVersion.V4Only)
            await self._azc.zeroconf.async_wait_for_start()
            if not self._azc.zeroconf.engine.senders:
                raise OSError("no socket could join the mDNS group")
            self._info = AsyncServiceInfo(
                SERVICE, f"{instance}.{SERVICE}", port=int(port), properties=properties,
                addresses=[socket.inet_aton(a) for a in self.addresses],
                server=f"coc-{me.id}.local.", host_ttl=TTL, other_ttl=TTL)
            await asyncio.wait_for(self._azc.async_register_service(self._info),
                                   REGISTER_TIMEOUT)
        except BaseException as exc:
            await self._close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise NodeError(f"mdns: cannot announce on {', '.join(self.addresses)} "
                            f"({type(exc).__name__}: {exc}); " + NO_LAN) from None
        self._azc.zeroconf.async_add_listener(_Heard(self._expiry), None)
        self._browser = AsyncServiceBrowser(self._azc.zeroconf, SERVICE,
                                            handlers=[self._changed])
        self._keeper = asyncio.create_task(self._keep())
        self.state = "joined"

    def peers(self) -> dict[str, NodeRecord]:
        """The other nodes of this cluster heard on the LAN, by id."""
        return dict(self._peers)

    def info(self) -> dict[str, Any]:
        """The discovery's name, state (joined, joining, stopped), peers and settings."""
        return {"name": "mdns", "state": self.state, "peers": len(self._peers), "ttl": TTL,
                "addresses": list(self.addresses)}

    async def stop(self) -> None:
        """Say goodbye (the others drop this node at once) and close, within
        ``STOP_TIMEOUT``; never raises (but for its own cancellation)."""
        self.state = "stopped"
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
        for task in list(self._resolving.values()):
            task.cancel()
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await self._close(goodbye=True)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception as exc:  # TimeoutError, OSError
            log.warning("discovery: mdns did not close cleanly (%s); this node's records "
                        "expire within %d s", exc, TTL)
        self._peers.clear()
        self._names.clear()
        self._expiry.clear()

    async def _close(self, goodbye: bool = False) -> None:
        azc, self._azc = self._azc, None
        if azc is None:
            return
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if goodbye and self._info is not None:
            await (await azc.async_unregister_service(self._info))
        await azc.async_close()

    # -- on the loop -------------------------------------------------------------------------

    def _changed(self, zeroconf: Zeroconf, service_type: str, name: str,
                 state_change: ServiceStateChange) -> None:
        if self.state != "joined":
            return
        if state_change is ServiceStateChange.Removed:
            self._drop(name)
        else:
            self._rejected.pop(name, None)
            self._consider(name)

    def _peer_id(self, name: str) -> str | None:
        """The node id in ``name`` if it is a name of this cluster's form (not ours)."""
        suffix = "." + SERVICE
        if not name.endswith(suffix) or not name.startswith(self._prefix):
            return None
        node_id = name[len(self._prefix):-len(suffix)]
        if not NODE_ID.fullmatch(node_id) or self.me is None or node_id == self.me.id:
            return None
        return node_id

    def _consider(self, name: str) -> None:
        node_id = self._peer_id(name)
        if node_id is None:
            return
        if name in self._resolving:
            self._again.add(name)
            return
        if name not in self._names and len(self._names) + len(self._resolving) >= MAX_PEERS:
            self._warn("over cap", f"discovery: mdns holds {MAX_PEERS} peers already; "
                       f"{name!r} and others are not resolved")
            return
        self._resolving[name] = asyncio.create_task(self._resolve(name, node_id))

    async def _resolve(self, name: str, node_id: str) -> None:
        record: NodeRecord | None = None
        problem = ""
        sender = name
        try:
            async with self._slots:
                while True:
                    self._again.discard(name)
                    zc = self._azc.zeroconf if self._azc else None
                    if zc is None:
                        return
                    info = AsyncServiceInfo(SERVICE, name)
                    found = info.load_from_cache(zc) or \
                        await info.async_request(zc, RESOLVE_TIMEOUT * 1000)
                    sender = next(iter(info.parsed_addresses()), name)
                    record, problem = self._read(info, node_id) if found else (None, "")
                    if name not in self._again:
                        break
        finally:
            self._resolving.pop(name, None)
        if self.state != "joined":
            return
        if record is not None and self._azc is not None:
            srv = self._azc.zeroconf.cache.async_all_by_details(name.lower(), _SRV, _IN)
            self._expiry[name.lower()] = max(
                [r.created + r.ttl * 1000.0 for r in srv] or [current_time_millis() + TTL * 1e3])
            self._names[name] = record.id
            self._peers[record.id] = record
        elif problem:
            self._drop(name)
            if len(self._rejected) >= MAX_REJECTED:
                self._rejected.pop(next(iter(self._rejected)))
            self._rejected[name] = time.monotonic()
            self._warn(sender, f"discovery: mdns skips {name!r} from {sender}: {problem}")

    def _read(self, info: AsyncServiceInfo, node_id: str) -> tuple[NodeRecord | None, str]:
        """The record ``info`` carries, or why it is not one of this cluster's nodes."""
        assert self.me is not None
        fields: dict[str, Any] = {}
        try:
            for key, value in (info.properties or {}).items():
                if isinstance(key, bytes) and isinstance(value, bytes):
                    fields[key.decode()] = value.decode()
            fields["started"] = float(fields.get("started", "nan"))
            record = NodeRecord.from_json(json.dumps(fields).encode())
        except (UnicodeDecodeError, ValueError, NodeError) as exc:
            return None, str(exc) or type(exc).__name__
        if record.id != node_id:
            return None, "its record's id is not its name's"
        if record.cluster != self.me.cluster:
            return None, f"its record is of cluster {record.cluster!r}"
        if not record.link:
            return None, "its record has no link"
        host = record.link.removeprefix("tcp://").rpartition(":")[0].strip("[]")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:  # a name would have this node look up and connect to anything
            return None, "its link's host is not an IP address"
        if address.is_loopback or address.is_link_local or address.is_unspecified or \
                address.is_multicast or address.is_reserved:
            return None, "its link's address is not one a node on the LAN could have"
        return record, ""

    def _drop(self, name: str) -> None:
        self._expiry.pop(name.lower(), None)
        node_id = self._names.pop(name, None)
        if node_id is not None:
            self._peers.pop(node_id, None)

    async def _keep(self) -> None:
        """Announce this node every ``ANNOUNCE_EVERY``; drop peers whose records expired;
        resolve names heard but not yet held."""
        last_announce = time.monotonic()
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            azc = self._azc
            if azc is None or self.state != "joined":
                return
            zc = azc.zeroconf
            try:
                if self._info is not None and time.monotonic() - last_announce >= ANNOUNCE_EVERY:
                    last_announce = time.monotonic()
                    zc.async_send(zc.generate_service_broadcast(self._info, None))
                self._sweep(zc)
            except Exception:  # never let the keeper die: the view would freeze
                log.exception("discovery: mdns sweep failed")

    def _sweep(self, zc: Zeroconf) -> None:
        now, clock = current_time_millis(), time.monotonic()
        for name in list(self._names):
            if self._expiry.get(name.lower(), 0.0) <= now:
                self._drop(name)
        for name, when in list(self._rejected.items()):
            if clock - when > TTL:
                del self._rejected[name]
        for pointer in zc.cache.async_all_by_details(SERVICE, _PTR, _IN):
            name = getattr(pointer, "alias", "")
            if name and name not in self._names and name not in self._resolving and \
                    name not in self._rejected and self._alive(zc, name, now):
                self._consider(name)

    @staticmethod
    def _alive(zc: Zeroconf, name: str, now: float) -> bool:
        return any(not r.is_expired(now)
                   for r in zc.cache.async_all_by_details(name.lower(), _SRV, _IN))

    def _warn(self, sender: str, message: str) -> None:
        """Log ``message`` unless ``sender`` was heard of in the last minute (and at most
        ``MAX_LINES_PER_MINUTE`` lines a minute in all)."""
        clock = time.monotonic()
        if clock - self._logged.get(sender, -LOG_EVERY) < LOG_EVERY:
            return
        self._lines = [t for t in self._lines if clock - t < 60.0]
        if len(self._lines) >= MAX_LINES_PER_MINUTE:
            return
        if len(self._logged) >= MAX_REJECTED:
            self._logged = {k: t for k, t in self._logged.items() if clock - t < LOG_EVERY}
        self._logged[sender] = clock
        self._lines.append(clock)
        log.warning("%s", message)
