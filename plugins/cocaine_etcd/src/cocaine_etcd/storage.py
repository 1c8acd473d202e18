"""The ``etcd`` storage: ``etcd://HOST:PORT[,HOST:PORT...]/PREFIX``, one app store that every
node of a cluster shares and follows.

Key layout under the prefix ``P`` (``/cocaine`` for ``etcd://h:2379/cocaine``)::

    P/apps/<name>            an app record (JSON), written last: the commit point of a deploy
    P/code/<name>@<sha16>    the index of an app's packed code (JSON: total sha256, size,
                             chunk hashes), published only once its chunks are all there
    P/chunks/<sha256 hex>    up to 1 MiB of packed code, content-addressed (shared by every
                             index that names it; the same code deployed again writes none)
    P/keys/<name>            public keys (cocaine_core's trust)
    P/curve/<name>           the nodes' Curve key pair
    P/nodes/<node id>        a node record under the node's lease (discovery ``etcd``)
    P/nonces/<hex>           a signed request's nonce, taken (under a shared lease)

Values other than code are stored whole and may be up to 1 MiB. Every method is blocking
(the node calls them in threads) and runs on the storage's private asyncio loop
(``connection.py``); when no etcd member can be reached it raises ``StorageUnavailable``
(503) within about 5 s, and never answers as if the store were empty.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import aetcd

from cocaine_core.errors import StorageError
from cocaine_core.storages import Change
from cocaine_core.storages.files import KEY, NAMESPACE
from cocaine_etcd.chunks import CodeChunks
from cocaine_etcd.connection import TOTAL_TIMEOUT, EtcdConnection
from cocaine_etcd.uri import parse_uri
from cocaine_etcd.watching import PrefixWatch

log = logging.getLogger("cocaine.etcd")

#: The largest value outside ``code`` (etcd refuses requests over 1.5 MiB by default).
MAX_VALUE = 2**20
#: Namespaces that are not the Storage's: chunks of code, the discovery's node records, and
#: the nonces taken.
RESERVED = ("chunks", "nodes", "nonces")
#: A nonce's length in bytes (``claim_nonce``).
NONCE_MIN, NONCE_MAX = 16, 64
#: Seconds a nonce may be held at most (``claim_nonce``'s ``ttl``).
NONCE_TTL_MAX = 86_400.0
#: Seconds of one nonce lease's window: the nonces claimed within one window share a lease
#: whose TTL is ``ttl + NONCE_WINDOW`` (one lease per window, not one per nonce).
NONCE_WINDOW = 60.0
#: Nonce leases held at once (one per window and ttl); the oldest are forgotten past this.
MAX_NONCE_LEASES = 16


class EtcdStorage:
    """Named blobs in etcd under one prefix (see the module's docstring)."""

    def __init__(self, uri: str) -> None:
        self.parsed = parse_uri(uri)
        self.uri = uri
        self.prefix = self.parsed.prefix.encode()
        self.connection = EtcdConnection(self.parsed)
        self.code = CodeChunks(self.connection, self.prefix)
        #: Nonce leases by ttl (whole seconds): (end of their window on the loop's clock, id).
        self._nonce_leases: dict[int, tuple[float, int]] = {}
        self._nonce_lock: asyncio.Lock | None = None
        #: Seconds of a nonce lease's window (``NONCE_WINDOW``; tests shorten it).
        self.nonce_window = NONCE_WINDOW

    def __repr__(self) -> str:
        return f"EtcdStorage({self.uri!r})"

    def key(self, namespace: str, key: str) -> bytes:
        """The etcd key of ``namespace/key``; StorageError for a bad or reserved name."""
        self.namespace_prefix(namespace)
        if not KEY.fullmatch(key):
            raise StorageError(f"bad storage key {key!r}: letters, digits, '_', '.', '@', '-'")
        return self.prefix + f"/{namespace}/{key}".encode()

    def namespace_prefix(self, namespace: str) -> bytes:
        """``P/<namespace>/``; StorageError for a bad or reserved namespace."""
        if not NAMESPACE.fullmatch(namespace) or namespace in RESERVED:
            raise StorageError(f"bad storage namespace {namespace!r}"
                               + (" (reserved by the etcd storage)"
                                  if namespace in RESERVED else ""))
        return self.prefix + f"/{namespace}/".encode()

    # -- Storage -----------------------------------------------------------------------------

    def put(self, namespace: str, key: str, value: bytes) -> None:
        """Store ``value`` (code: chunked and published in a transaction)."""
        etcd_key = self.key(namespace, key)
        if namespace == "code":
            self.connection.wait(self.code.put(key, bytes(value)), f"store code {key}",
                                 self.code.budget(len(value)))
            return
        if len(value) > MAX_VALUE:
            raise StorageError(f"a value of {namespace!r} is at most {MAX_VALUE // 2**20} MiB "
                               f"in the etcd storage; {key!r} is {len(value)} bytes")
        self.connection.call(lambda c: c.put(etcd_key, bytes(value)),
                             f"write {namespace}/{key}")

    def get(self, namespace: str, key: str) -> bytes:
        """The value under ``key``; KeyError if there is none."""
        etcd_key = self.key(namespace, key)
        if namespace == "code":
            return self.connection.wait(self.code.get(key), f"read code {key}",
                                        self.code.budget(100 * 2**20))
        kv = self.connection.call(lambda c: c.get(etcd_key), f"read {namespace}/{key}")
        if kv is None:
            raise KeyError(f"{namespace}/{key}")
        return bytes(kv.value)

    def exists(self, namespace: str, key: str) -> bool:
        """Whether ``key`` has a value (code: whether its index is published)."""
        etcd_key = self.key(namespace, key)
        found = self.connection.call(lambda c: c.get_prefix(etcd_key, keys_only=True),
                                     f"read {namespace}/{key}")
        return any(kv.key == etcd_key for kv in found)

    def keys(self, namespace: str) -> list[str]:
        """Every key of ``namespace``, sorted (names only: values are never read)."""
        start = self.namespace_prefix(namespace)
        found = self.connection.call(lambda c: c.get_prefix(start, keys_only=True),
                                     f"list {namespace}")
        names = (kv.key[len(start):].decode(errors="replace") for kv in found)
        return sorted(n for n in names if KEY.fullmatch(n))

    def remove(self, namespace: str, key: str) -> None:
        """Remove ``key`` (code: then the chunks nothing references any more)."""
        etcd_key = self.key(namespace, key)
        if namespace == "code":
            self.connection.wait(self.code.remove(key), f"remove code {key}",
                                 self.code.budget(0) + 4 * TOTAL_TIMEOUT)
            return
        self.connection.call(lambda c: c.delete(etcd_key), f"remove {namespace}/{key}")

    # -- ConditionalStorage ------------------------------------------------------------------

    def put_if_present(self, namespace: str, key: str, value: bytes,
                       requires: Sequence[tuple[str, str]]) -> bool:
        """Store ``value`` only if every ``(namespace, key)`` of ``requires`` has a value,
        in one transaction; False (nothing written) if one has none."""
        etcd_key = self.key(namespace, key)
        if namespace == "code":
            raise StorageError("put_if_present does not write code (it is chunked); "
                               "use put")
        if len(value) > MAX_VALUE:
            raise StorageError(f"a value of {namespace!r} is at most {MAX_VALUE // 2**20} MiB "
                               f"in the etcd storage; {key!r} is {len(value)} bytes")
        needed = [self.key(ns, k) for ns, k in requires]

        def txn(client: aetcd.Client) -> Any:
            t = client.transactions
            return client.transaction(compare=[t.version(k) > 0 for k in needed],
                                      success=[t.put(etcd_key, bytes(value))], failure=[])

        done, _ = self.connection.call(txn, f"write {namespace}/{key}")
        return bool(done)

    # -- NonceStorage ------------------------------------------------------------------------

    def claim_nonce(self, nonce: bytes, ttl: float) -> bool:
        """Mark ``nonce`` (16 to 64 bytes) taken for at least ``ttl`` seconds, in one
        transaction (``P/nonces/<hex>``, written only if absent, under a lease shared by the
        nonces of a ``NONCE_WINDOW``); False (nothing changed) if it is taken already.
        StorageUnavailable when etcd cannot be reached."""
        if not isinstance(nonce, bytes | bytearray) or not (
                NONCE_MIN <= len(nonce) <= NONCE_MAX):
            size = len(nonce) if isinstance(nonce, bytes | bytearray) else type(nonce).__name__
            raise StorageError(f"a nonce is {NONCE_MIN} to {NONCE_MAX} bytes; got {size}")
        if not isinstance(ttl, int | float) or not math.isfinite(ttl) or not (
                0 < ttl <= NONCE_TTL_MAX):
            raise StorageError(f"a nonce's ttl is more than 0 and at most {NONCE_TTL_MAX:g} "
                               f"seconds; got {ttl!r}")
        key = self.prefix + b"/nonces/" + bytes(nonce).hex().encode()
        return self.connection.wait(self._claim(key, math.ceil(ttl)), "take a nonce",
                                    3 * TOTAL_TIMEOUT + 1.0)

    async def _claim(self, key: bytes, ttl: int) -> bool:
        for attempt in range(2):
            lease = await self._nonce_lease(ttl)

            def txn(client: aetcd.Client, lease: int = lease) -> Any:
                t = client.transactions
                return client.transaction(compare=[t.version(key) == 0],
                                          success=[t.put(key, b"", lease=lease)], failure=[])
            try:
                done, _ = await self.connection.run(txn, "take a nonce")
            except StorageError as exc:
                if "lease not found" not in str(exc) or attempt:
                    raise
                self._nonce_leases.pop(ttl, None)  # revoked or expired early: a new one
                continue
            return bool(done)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _nonce_lease(self, ttl: int) -> int:
        """The lease for nonces of ``ttl`` claimed now: granted once per window."""
        if self._nonce_lock is None:
            self._nonce_lock = asyncio.Lock()
        async with self._nonce_lock:
            now = self.connection.loop.time()
            held = self._nonce_leases.get(ttl)
            if held is not None and now < held[0]:
                return held[1]
            lease = await self.connection.run(
                lambda c: c.lease(ttl + math.ceil(self.nonce_window)), "grant a nonce lease")
            for old in [t for t, (end, _) in self._nonce_leases.items() if end <= now]:
                del self._nonce_leases[old]
            while len(self._nonce_leases) >= MAX_NONCE_LEASES:
                del self._nonce_leases[next(iter(self._nonce_leases))]
            self._nonce_leases[ttl] = (now + self.nonce_window, int(lease.id))
            return int(lease.id)

    # -- WatchedStorage ----------------------------------------------------------------------

    def watch(self, namespaces: Sequence[str],
              changed: Callable[[Change], None]) -> Callable[[], None]:
        """Follow writes and removals of ``namespaces`` by anyone: ``changed((ns, key))`` for
        each, in order, ``changed(None)`` when the watch starts and each time it resumes.
        Returns a function that stops the watch (see ``watching.py``)."""
        prefixes = {ns: self.namespace_prefix(ns) for ns in namespaces}
        watch = PrefixWatch(self.connection, prefixes, changed)
        watch.start()
        return watch.stop

    def available(self) -> bool:
        """Whether the last request or watch attempt reached etcd."""
        return self.connection.available

    # -- Closable ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop watches, close the clients, end the private loop's thread (idempotent)."""
        self.connection.close()
