"""Storages: where a node keeps its apps (manifests and code) so they survive restarts.

A storage is registered with ``registry.add(scheme, factory)`` in
``cocaine_register_storages``; ``open_storage("files:///var/lib/cocaine")`` picks it by the
URI's scheme and calls ``factory(uri)``.

Every storage is a ``Storage``. A storage that several nodes share (``etcd``) may also be a
``WatchedStorage`` (nodes follow what others write), a ``ConditionalStorage`` (a write that
holds only if what it depends on is still there) and ``Closable``. The node uses each of
these when the storage has it, and works without.

The methods are blocking: the node calls them in threads. A storage that cannot be reached
raises ``StorageUnavailable`` (503) and must never answer as if it were empty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from cocaine_core.errors import StorageError
from cocaine_core.plugins import get_host

#: The namespaces a node uses: app records, packed code, public keys, its Curve key pair,
#: cluster keys (``cocaine cluster key --storage``).
NAMESPACES = ("apps", "code", "keys", "curve", "cluster")

#: What a watch reports: a (namespace, key) that was written or removed, or None: the watch
#: was cut and resumed (or started), so anything may have changed; read everything again.
Change = tuple[str, str] | None


class Storage(Protocol):
    """Named blobs in namespaces. Writes are atomic: a reader sees the old or the new value."""

    uri: str

    def put(self, namespace: str, key: str, value: bytes) -> None:
        """Store ``value`` under ``key``, replacing any old value atomically."""
        ...

    def get(self, namespace: str, key: str) -> bytes:
        """The value under ``key``; ``KeyError`` if there is none."""
        ...

    def exists(self, namespace: str, key: str) -> bool:
        """Whether ``key`` has a value."""
        ...

    def keys(self, namespace: str) -> list[str]:
        """Every key of ``namespace``, sorted."""
        ...

    def remove(self, namespace: str, key: str) -> None:
        """Remove ``key`` (no error if it is absent)."""
        ...


@runtime_checkable
class WatchedStorage(Protocol):
    """A storage others write to as well, which tells its readers what changed."""

    def watch(self, namespaces: Sequence[str],
              changed: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``changed`` (from any thread, never concurrently) for every write or removal
        of a key of ``namespaces`` by anyone, this process included, in the order they
        happened; ``changed(None)`` once the watch runs and again each time it resumes after
        the storage was unreachable. Returns a function that stops the watch."""
        ...

    def available(self) -> bool:
        """Whether the storage answered its last request or keep-alive (False while it is
        unreachable)."""
        ...


@runtime_checkable
class ConditionalStorage(Protocol):
    """A storage that can make a write depend on other keys, atomically."""

    def put_if_present(self, namespace: str, key: str, value: bytes,
                       requires: Sequence[tuple[str, str]]) -> bool:
        """Store ``value`` under ``key`` only if every ``(namespace, key)`` of ``requires``
        has a value, in one step; False (nothing written) if one has none."""
        ...


@runtime_checkable
class NonceStorage(Protocol):
    """A storage several nodes share that can tell a request's nonce was used at any of
    them: a signed request captured on its way to one node is refused by the others."""

    def claim_nonce(self, nonce: bytes, ttl: float) -> bool:
        """Mark ``nonce`` (16 to 64 bytes) used for at least ``ttl`` seconds, in one step;
        False (nothing changed) if it already is. Raises ``StorageUnavailable`` when the
        storage cannot be reached."""
        ...


@runtime_checkable
class Closable(Protocol):
    """A storage holding connections or threads, released by ``close``."""

    def close(self) -> None:
        """Release what the storage holds (idempotent); it is not used afterwards."""
        ...


def open_storage(uri: str) -> Storage:
    """Open the storage named by ``uri`` (its scheme picks the plugin)."""
    scheme = urlsplit(uri).scheme
    if not scheme:
        raise StorageError(f"storage URI {uri!r} has no scheme; e.g. files:///var/lib/cocaine")
    factory = get_host().registry("storages").get(scheme, where=f"storage {uri!r}")
    return factory(uri)
