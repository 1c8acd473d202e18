"""The node's first start: with no key authorized yet, its owner's key is."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from cocaine_core.errors import CocaineError, StorageUnavailable, TrustError
from cocaine_core.storages import Storage
from cocaine_core.trust.curve import server_public_key
from cocaine_core.trust.keyring import KeyRing
from cocaine_core.trust.keys import default_key_path, load_or_create

log = logging.getLogger("cocaine.node")


def authorize_owner(keys: KeyRing, owner_key: Path | None) -> str | None:
    """At the first start (no key was ever authorized, not even one revoked since),
    authorize the key of the user running the node (``owner_key``, or their default key,
    made if needed), so that they, and nobody else, can control it at once. Returns the line
    to log, if it did."""
    if not keys.empty():
        return None
    path = owner_key or default_key_path()
    try:
        signer, made = load_or_create(path)
    except TrustError as exc:
        log.warning("no key is authorized to control this node, and the key of the user "
                    "running it could not be used (%s): control requests are refused "
                    "until an operator runs cocaine keys authorize", exc)
        return None
    keys.authorize(signer.public)
    return (f"authorized {signer.fingerprint} ({path}{', made now' if made else ''}) to "
            f"control this node, as no key was authorized yet; cocaine keys authorize "
            f"adds others")


def authorize_at_start(keys: KeyRing, owner_key: Path | None) -> str | None:
    """``authorize_owner`` at a node's start: a storage out of reach is a warning (it is
    checked again at the next start), not a failure."""
    try:
        return authorize_owner(keys, owner_key)
    except StorageUnavailable as exc:
        log.warning("%s; whether a key is authorized to control this node is checked "
                    "again at its next start", exc)
        return None


async def held_curve_key(storage: Storage) -> bool:
    """Whether ``storage`` holds a Curve key pair (a node of it ran --curve)."""
    try:
        return await asyncio.to_thread(server_public_key, storage) is not None
    except StorageUnavailable:
        return False  # cannot tell now: no warning on a guess
    except CocaineError:
        return True  # a damaged one: it was there
