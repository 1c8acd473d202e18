"""Storages: where a node keeps its apps (manifests and code) so they survive restarts.

A storage is registered with ``registry.add(scheme, factory)`` in
``cocaine_register_storages``; ``open_storage("files:///var/lib/cocaine")`` picks it by the
URI's scheme and calls ``factory(uri)``.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit

from cocaine_core.errors import StorageError
from cocaine_core.plugins import get_host

#: The namespaces a node uses: app records, packed code, public keys, its Curve key pair.
NAMESPACES = ("apps", "code", "keys", "curve")


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


def open_storage(uri: str) -> Storage:
    """Open the storage named by ``uri`` (its scheme picks the plugin)."""
    scheme = urlsplit(uri).scheme
    if not scheme:
        raise StorageError(f"storage URI {uri!r} has no scheme; e.g. files:///var/lib/cocaine")
    factory = get_host().registry("storages").get(scheme, where=f"storage {uri!r}")
    return factory(uri)
