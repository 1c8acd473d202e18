"""The keys a node authorizes, kept in its storage (namespace ``keys``).

Each key is one value, named by the hex of its SHA-256 (so a fingerprint finds it in one
read): ``{"key": "ssh-ed25519 AAAA… comment", "added": time, "revoked": time or null}``. A
revoked key stays listed, so the node can tell its owner why a request was refused. Nodes
that share a storage share their keys; a change counts from the next request, since the node
reads the key of every signed request afresh, or, from a storage that reports changes
(etcd), keeps what it read until the storage says the key changed (``forget``).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import attrs

from cocaine_core.errors import TrustError
from cocaine_core.trust.keys import PublicKey, digest_of_fingerprint, parse_public

if TYPE_CHECKING:
    from cocaine_core.storages import Storage

NAMESPACE = "keys"
#: The most keys a node lists (a bound on what ``cocaine keys list`` reads).
MAX_KEYS = 10_000
#: The most lookups a caching ring remembers, found or not (the least recently used go).
MAX_CACHED = 4096


@attrs.frozen
class KeyEntry:
    """An authorized (or revoked) key."""

    key: PublicKey
    added: float
    revoked: float | None = None

    @property
    def active(self) -> bool:
        """Whether requests signed with this key are taken."""
        return self.revoked is None

    def to_json(self) -> dict[str, Any]:
        """The entry as ``cocaine keys list --json`` shows it."""
        return {"fingerprint": self.key.fingerprint, "key": self.key.openssh(),
                "comment": self.key.comment, "added": self.added, "revoked": self.revoked}


class KeyRing:
    """The authorized keys in ``storage``, or in memory for a node without one."""

    def __init__(self, storage: Storage | None, *, cache: bool = False) -> None:
        """``cache``: keep what ``find`` read until ``forget`` (for a storage that says when
        its keys change)."""
        self.storage = storage
        self._memory: dict[str, bytes] = {}
        self.cache = cache
        self._cached: OrderedDict[str, KeyEntry | None] = OrderedDict()

    def forget(self) -> None:
        """Drop what the cache holds: the keys in storage changed (or may have)."""
        self._cached.clear()

    def authorize(self, key: PublicKey) -> KeyEntry:
        """Authorize ``key`` (again, if it was revoked); return its entry."""
        old = self.get(key.digest.hex())
        entry = KeyEntry(key, old.added if old and old.active else time.time())
        self._put(key.digest.hex(), entry)
        return entry

    def revoke(self, fingerprint: str) -> KeyEntry:
        """Revoke the key with ``fingerprint``; ``TrustError`` if it is not known."""
        name = digest_of_fingerprint(fingerprint).hex()
        old = self.get(name)
        if old is None:
            raise TrustError(f"no key {fingerprint} is known here; cocaine keys list shows "
                             f"the keys and their fingerprints")
        if not old.active:
            return old
        entry = attrs.evolve(old, revoked=time.time())
        self._put(name, entry)
        return entry

    def find(self, fingerprint: str) -> KeyEntry | None:
        """The entry of the key with ``fingerprint``, or None."""
        try:
            name = digest_of_fingerprint(fingerprint).hex()
        except TrustError:
            return None
        if not self.cache:
            return self.get(name)
        if name in self._cached:
            self._cached.move_to_end(name)
            return self._cached[name]
        entry = self.get(name)
        self._cached[name] = entry
        if len(self._cached) > MAX_CACHED:
            self._cached.popitem(last=False)
        return entry

    def cached(self, fingerprint: str) -> tuple[bool, KeyEntry | None]:
        """``(True, entry)`` if a caching ring holds ``fingerprint``'s lookup (no storage
        read needed), else ``(False, None)``."""
        try:
            name = digest_of_fingerprint(fingerprint).hex()
        except TrustError:
            return True, None
        if name in self._cached:
            return True, self._cached[name]
        return False, None

    def get(self, name: str) -> KeyEntry | None:
        """The entry stored under ``name`` (a key's SHA-256 in hex), or None."""
        try:
            data = (self._memory[name] if self.storage is None
                    else self.storage.get(NAMESPACE, name))
        except KeyError:
            return None
        return _decode(name, data)

    def entries(self) -> list[KeyEntry]:
        """Every key, authorized or revoked, oldest first."""
        found = [entry for name in self._names()[:MAX_KEYS]
                 if (entry := self.get(name)) is not None]
        return sorted(found, key=lambda entry: entry.added)

    def empty(self) -> bool:
        """Whether no key was ever authorized here (a revoked key counts: it was)."""
        return not self._names()

    def _names(self) -> list[str]:
        """The stored entries' names, sorted."""
        return sorted(self._memory) if self.storage is None else self.storage.keys(NAMESPACE)

    def _put(self, name: str, entry: KeyEntry) -> None:
        data = json.dumps({"key": entry.key.openssh(), "added": entry.added,
                           "revoked": entry.revoked}).encode()
        if self.storage is None:
            self._memory[name] = data
        else:
            self.storage.put(NAMESPACE, name, data)
        self._cached.pop(name, None)


def _decode(name: str, data: bytes) -> KeyEntry | None:
    """An entry from its stored form; None (the key refused) if it is damaged or does not
    belong under ``name``."""
    try:
        value = json.loads(data)
        key = parse_public(str(value["key"]))
        added = float(value.get("added") or 0.0)
        revoked = value.get("revoked")
        entry = KeyEntry(key, added, None if revoked is None else float(revoked))
    except (ValueError, KeyError, TypeError, TrustError, AttributeError):
        return None
    return entry if key.digest.hex() == name else None

