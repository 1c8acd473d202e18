"""Code in etcd: content-addressed chunks and a small index, published in one transaction.

``P/chunks/<sha256 hex>`` holds at most ``CHUNK_SIZE`` bytes of code (etcd refuses requests
over 1.5 MiB by default); ``P/code/<key>`` holds the index, JSON
``{"format": 1, "sha256": TOTAL, "size": N, "chunks": [HEX, ...]}``.

- put: write the chunks that are missing (the same code again writes none), then one
  transaction that checks every chunk is still there and writes the index. A chunk removed
  meanwhile (a concurrent sweep) fails the check: the missing chunks are written again and
  the transaction retried. So an index is never visible before all of its chunks.
- get: the index, then each chunk, each checked against its hash and the whole against the
  total. A missing chunk means the index was replaced or removed meanwhile: read it again
  once.
- remove: delete the index, then sweep: delete the chunks no index references, in
  transactions that hold only if no index changed since the sweep read them (a compare over
  the whole ``P/code/`` range), so a put that just came to reference a chunk keeps it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aetcd
import aetcd.utils

from cocaine_core.errors import StorageError
from cocaine_etcd.connection import EtcdConnection

log = logging.getLogger("cocaine.etcd")

#: Bytes per chunk: 1 MiB, under etcd's default request limit (--max-request-bytes 1.5 MiB).
CHUNK_SIZE = 2**20
#: The most chunks of one value: the publishing transaction checks each one, and etcd allows
#: 128 comparisons per transaction by default (--max-txn-ops). So code up to 120 MiB.
MAX_CHUNKS = 120
#: Attempts at publishing an index whose chunks a concurrent sweep removed.
PUBLISH_ATTEMPTS = 3
#: Attempts at a sweep whose transaction found the indexes changed.
SWEEP_ATTEMPTS = 3
#: Chunks deleted per sweep transaction (under --max-txn-ops 128).
SWEEP_BATCH = 100
INDEX_FORMAT = 1
#: What the name of a chunk is (the hex SHA-256 of its bytes).
CHUNK_NAME = re.compile(rb"[0-9a-f]{64}")
DIGEST = re.compile(r"[0-9a-f]{64}")


def sha256(data: bytes) -> str:
    """The hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _put(key: bytes, value: bytes) -> Callable[[aetcd.Client], Awaitable[Any]]:
    return lambda client: client.put(key, value)


def _get(key: bytes) -> Callable[[aetcd.Client], Awaitable[Any]]:
    return lambda client: client.get(key)


def _names(prefix: bytes) -> Callable[[aetcd.Client], Awaitable[Any]]:
    return lambda client: client.get_prefix(prefix, keys_only=True)


def _batches(items: list[bytes], size: int) -> Iterable[list[bytes]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class CodeChunks:
    """The ``code`` namespace of one storage (see the module's docstring)."""

    def __init__(self, connection: EtcdConnection, prefix: bytes) -> None:
        self.connection = connection
        self.index_prefix = prefix + b"/code/"
        self.chunk_prefix = prefix + b"/chunks/"

    def chunk_key(self, digest: str) -> bytes:
        """The etcd key of the chunk with hash ``digest``."""
        return self.chunk_prefix + digest.encode()

    def index_key(self, key: str) -> bytes:
        """The etcd key of the index of code ``key``."""
        return self.index_prefix + key.encode()

    @staticmethod
    def budget(size: int) -> float:
        """Seconds a put or get of ``size`` bytes may take in all (a bound for waiting)."""
        chunks = size // CHUNK_SIZE + 1
        return 12.0 + 2.0 * (3 * min(chunks, MAX_CHUNKS) + 4)

    # -- put ---------------------------------------------------------------------------------

    async def put(self, key: str, value: bytes) -> None:
        """Store ``value`` as code ``key`` (chunks first, then the index in a transaction)."""
        pieces = [value[i:i + CHUNK_SIZE] for i in range(0, len(value), CHUNK_SIZE)] or [b""]
        if len(pieces) > MAX_CHUNKS:
            raise StorageError(
                f"code {key!r} is {len(value)} bytes; the etcd storage holds code up to "
                f"{MAX_CHUNKS * CHUNK_SIZE // 2**20} MiB ({MAX_CHUNKS} chunks of 1 MiB)")
        by_hash = {sha256(p): p for p in pieces}
        digests = [sha256(p) for p in pieces]
        index = json.dumps({"format": INDEX_FORMAT, "sha256": sha256(value),
                            "size": len(value), "chunks": digests}).encode()
        old = await self._index(key)
        what = f"store code {key}"
        for _ in range(PUBLISH_ATTEMPTS):
            for digest in await self._missing(list(by_hash)):
                chunk, data = self.chunk_key(digest), by_hash[digest]
                await self.connection.run(_put(chunk, data), what)
            if await self._publish(key, list(by_hash), index):
                break
            log.info("code %s: a chunk was swept while it was published; writing it again", key)
        else:
            raise StorageError(f"could not publish code {key!r}: its chunks were removed "
                               f"{PUBLISH_ATTEMPTS} times while it was written (removals "
                               "running at the same time); try again")
        if old is not None and set(old.get("chunks", [])) - set(digests):
            await self.sweep()

    async def _missing(self, digests: list[str]) -> list[str]:
        missing = []
        for digest in digests:
            key = self.chunk_key(digest)
            found = await self.connection.run(_names(key), "check code chunks")
            if not any(kv.key == key for kv in found):
                missing.append(digest)
        return missing

    async def _publish(self, key: str, digests: list[str], index: bytes) -> bool:
        def txn(client: aetcd.Client) -> Any:
            t = client.transactions
            return client.transaction(
                compare=[t.version(self.chunk_key(d)) > 0 for d in digests],
                success=[t.put(self.index_key(key), index)], failure=[])

        done, _ = await self.connection.run(txn, f"publish code {key}")
        return bool(done)

    # -- get ---------------------------------------------------------------------------------

    async def _index(self, key: str) -> dict[str, Any] | None:
        kv = await self.connection.run(lambda c: c.get(self.index_key(key)), f"read code {key}")
        if kv is None:
            return None
        try:
            index = json.loads(kv.value)
            _check_index(index)
        except (ValueError, RecursionError):
            raise StorageError(f"the index of code {key!r} in etcd is damaged "
                               f"({len(kv.value)} bytes that are not a chunk index); "
                               "deploy the app again") from None
        return index

    async def exists(self, key: str) -> bool:
        """Whether code ``key`` has an index (its chunks are there once it has)."""
        kv = await self.connection.run(lambda c: c.get(self.index_key(key)), f"read code {key}")
        return kv is not None

    async def get(self, key: str) -> bytes:
        """Code ``key``, checked against its hashes; KeyError if there is none."""
        for _ in range(2):
            index = await self._index(key)
            if index is None:
                raise KeyError(f"code/{key}")
            parts: list[bytes] = []
            for digest in index["chunks"]:
                chunk = self.chunk_key(str(digest))
                kv = await self.connection.run(_get(chunk), f"read code {key}")
                if kv is None:
                    break  # replaced or removed meanwhile: read the index again
                if sha256(kv.value) != digest:
                    raise StorageError(f"code {key!r} in etcd is damaged: chunk {digest} "
                                       f"does not match its hash; deploy the app again")
                parts.append(kv.value)
            else:
                data = b"".join(parts)
                if sha256(data) != index.get("sha256") or len(data) != index.get("size"):
                    raise StorageError(f"code {key!r} in etcd is damaged: its chunks do not "
                                       "add up to its hash; deploy the app again")
                return data
        raise StorageError(f"code {key!r} in etcd is incomplete: a chunk its index names is "
                           "missing; deploy the app again")

    # -- remove and sweep --------------------------------------------------------------------

    async def remove(self, key: str) -> None:
        """Remove code ``key``'s index, then the chunks no other index references."""
        await self.connection.run(lambda c: c.delete(self.index_key(key)), f"remove code {key}")
        await self.sweep()

    async def sweep(self) -> int:
        """Delete the chunks no index references; returns how many. Leaves them for a later
        sweep if the indexes keep changing meanwhile."""
        removed = 0
        end = aetcd.utils.prefix_range_end(self.index_prefix)
        for _ in range(SWEEP_ATTEMPTS):
            indexes = await self.connection.run(
                lambda c: c.get_prefix(self.index_prefix), "read code indexes")
            seen = indexes.header.revision
            referenced: set[str] = set()
            for kv in indexes:
                try:
                    referenced.update(str(d) for d in json.loads(kv.value)["chunks"])
                except (ValueError, KeyError, TypeError, RecursionError):
                    log.warning("sweep: code index %s is damaged; its chunks may be removed",
                                kv.key.decode(errors="replace"))
            chunks = await self.connection.run(
                lambda c: c.get_prefix(self.chunk_prefix, keys_only=True), "list code chunks")
            # Chunks written after the read may belong to a put not yet published: later.
            # Only what is a chunk's name (64 hex digits): never a key of anything else.
            orphans = [kv.key for kv in chunks if kv.mod_revision <= seen
                       and CHUNK_NAME.fullmatch(kv.key[len(self.chunk_prefix):])
                       and kv.key[len(self.chunk_prefix):].decode() not in referenced]
            clean = True
            for batch in _batches(orphans, SWEEP_BATCH):
                def txn(client: aetcd.Client, batch: list[bytes] = batch,
                        seen: int = seen) -> Any:
                    t = client.transactions
                    return client.transaction(
                        compare=[t.mod(self.index_prefix, end) < seen + 1],
                        success=[t.delete(k) for k in batch], failure=[])

                done, _ = await self.connection.run(txn, "remove unused code chunks")
                if not done:
                    clean = False
                    break
                removed += len(batch)
            if clean:
                return removed
        log.info("sweep: code indexes kept changing; unused chunks are left for the next one")
        return removed


def _check_index(index: Any) -> None:
    """ValueError unless ``index`` is one this storage could have written: before a chunk is
    read, so a damaged or hostile index cannot make a node read (and hold) more than the
    largest code there may be."""
    if not isinstance(index, dict) or not isinstance(index.get("chunks"), list):
        raise ValueError("not an index")
    chunks, size = index["chunks"], index.get("size")
    if not 0 < len(chunks) <= MAX_CHUNKS or not all(isinstance(d, str) and DIGEST.fullmatch(d)
                                                    for d in chunks):
        raise ValueError("bad chunk list")
    if isinstance(size, bool) or not isinstance(size, int) or \
            not (len(chunks) - 1) * CHUNK_SIZE <= size <= len(chunks) * CHUNK_SIZE:
        raise ValueError("bad size")
    if not isinstance(index.get("sha256"), str) or not DIGEST.fullmatch(index["sha256"]):
        raise ValueError("bad sha256")
