"""The keys a node authorizes, kept in its storage (namespace ``keys``).

Each key is one value, named by the hex of its SHA-256 (so a fingerprint finds it in one
read): ``{"key": "ssh-ed25519 AAAA… comment", "added": time, "revoked": time or null}``. A
revoked key stays listed, so the node can tell its owner why a request was refused. Nodes
that share a storage share their keys; a change counts from the next request, since the node
reads the key of every signed request afresh, or, from a storage that reports changes
(etcd), holds every key in memory and reads one again when the storage says it changed
(``forget``).
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

import attrs

from cocaine_core.errors import StorageUnavailable, TrustError
from cocaine_core.trust.keys import PublicKey, digest_of_fingerprint, parse_public

if TYPE_CHECKING:
    from cocaine_core.storages import Storage

NAMESPACE = "keys"
#: The most keys a node lists (a bound on what ``cocaine keys list`` reads).
MAX_KEYS = 10_000


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
        """``cache``: hold every key in memory, read once and then again only where the
        storage says a key changed (``forget``): for a storage that reports its changes.
        Then an unknown fingerprint is refused without reading the storage at all."""
        self.storage = storage
        self._memory: dict[str, bytes] = {}
        self.cache = cache
        #: Every entry by name, once read (None: not read yet, or all of it may be stale),
        #: and the names whose entry changed since.
        self._mirror: dict[str, KeyEntry | None] | None = None
        self._stale: set[str] = set()
        #: Whether the mirror holds every name the storage had (at most ``MAX_KEYS``): if
        #: not, a name it lacks is read from storage rather than refused.
        self._complete = True
        #: Counts ``forget(None)``: a mirror read while it changed is not kept.
        self._generation = 0
        #: The mirror ``forget(None)`` let go (less what was marked stale), answered from
        #: while the storage cannot be read: an outage does not lock every key out.
        self._previous: dict[str, KeyEntry | None] | None = None
        self._lock = threading.Lock()

    def forget(self, name: str | None = None) -> None:
        """The entry ``name`` changed in storage (None: any may have): read it again when a
        request needs it. Never waits (it runs on the node's loop, while a thread may be
        reading the keys)."""
        if name is None or len(self._stale) >= MAX_KEYS:  # a churn: read it all again
            self._generation += 1
            if self._mirror is not None and self._complete:
                self._previous = {n: e for n, e in self._mirror.items() if n not in self._stale}
            self._mirror = None
            self._stale = set()
        else:
            self._stale.add(name)

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
        with self._lock:  # one reader fills the mirror; the others then find it there
            mirror = self._mirror
            if mirror is None:
                generation = self._generation
                try:
                    names = self._names()
                    mirror = {n: self.get(n) for n in names[:MAX_KEYS]}
                except StorageUnavailable:
                    if self._previous is None or name in self._stale:
                        raise
                    # The keys as last read: a change the storage makes while out of
                    # reach cannot be known before it is back anyway.
                    return self._previous.get(name)
                self._stale.difference_update(names[:MAX_KEYS])
                self._complete = len(names) <= MAX_KEYS
                if generation == self._generation:
                    self._mirror, self._previous = mirror, None
            if name in self._stale:
                self._stale.discard(name)
                mirror[name] = self.get(name)
                if mirror[name] is None:
                    del mirror[name]  # removed: the mirror holds only what is stored
            elif name not in mirror and not self._complete:
                return self.get(name)  # past MAX_KEYS: read, never held
            return mirror.get(name)

    def cached(self, fingerprint: str) -> tuple[bool, KeyEntry | None]:
        """``(True, entry)`` when the answer of ``find`` is known without reading storage (a
        caching ring that holds every key; an unknown key's entry is None), else
        ``(False, None)``."""
        try:
            name = digest_of_fingerprint(fingerprint).hex()
        except TrustError:
            return True, None
        mirror = self._mirror
        if mirror is None or name in self._stale or (name not in mirror and
                                                     not self._complete):
            return False, None
        return True, mirror.get(name)

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
        self.forget(name)


def _decode(name: str, data: bytes) -> KeyEntry | None:
    """An entry from its stored form; None (the key refused) if it is damaged or does not
    belong under ``name``."""
    try:
        value = json.loads(data)
        key = parse_public(str(value["key"]))
        added = float(value.get("added") or 0.0)
        revoked = value.get("revoked")
        entry = KeyEntry(key, added, None if revoked is None else float(revoked))
    except (ValueError, KeyError, TypeError, TrustError, AttributeError, RecursionError):
        return None
    return entry if key.digest.hex() == name else None

