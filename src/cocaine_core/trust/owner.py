"""The node's first start: with no key authorized yet, its owner's key is."""

from __future__ import annotations

import logging
from pathlib import Path

from cocaine_core.errors import TrustError
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
