"""The node's check of a signed control request (``@node``): who sent it, and is it fresh.

A request is refused with 401 and a message saying what to do when it is unsigned, its
``auth`` map is malformed, its time is more than ``MAX_SKEW`` seconds from the node's clock,
it is signed by a key the node does not know or has revoked, its signature does not match, or
its nonce was already seen. The checks run cheapest first, and a nonce is remembered only once
the signature is good, so nobody without an authorized key can fill the node's memory.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from cocaine_core.errors import CocaineError, ServiceError, StorageUnavailable
from cocaine_core.protocol import Status
from cocaine_core.trust.keyring import KeyEntry, KeyRing
from cocaine_core.trust.keys import NONCE_BYTES, signing_payload

log = logging.getLogger("cocaine.trust")

#: Most seconds a request's time may be from the node's clock.
MAX_SKEW = 60.0
#: Most nonces remembered at once: past it, signed requests are refused (503) until the
#: oldest age out of the window (twice ``MAX_SKEW``).
MAX_NONCES = 200_000
#: Most nonces one key may hold: a key that floods the node slows down itself, not the
#: node's other keys.
MAX_NONCES_PER_KEY = 50_000
#: Seconds a request may have been signed before the node started (clocks a little apart).
START_GRACE = 1.0
#: What a key's fingerprint looks like (``keys.PublicKey.fingerprint``).
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
#: Seconds between two log lines about refused requests (the rest are counted).
LOG_EVERY = 10.0

_HOW_TO_SIGN = ("sign with a key this node authorizes: make one with `cocaine keys generate`, "
                "have the node's operator run `cocaine keys authorize` with its .pub file, and "
                "call with --key (by default the CLI and Client sign with "
                "$XDG_CONFIG_HOME/cocaine/id_ed25519, or the file $COCAINE_KEY names)")


class ControlGuard:
    """Checks the signature of each control request against a ``KeyRing``."""

    def __init__(self, ring: KeyRing, clock: Callable[[], float] = time.time) -> None:
        self.ring = ring
        self.clock = clock
        #: When this node (its guard) started: nonces seen before are forgotten, so a
        #: request signed before it is refused.
        self.started = clock()
        #: nonce → the time after which it can be forgotten (its request would be stale),
        #: and the key that signed it; the nonces held per key.
        self._nonces: OrderedDict[bytes, tuple[float, str]] = OrderedDict()
        self._per_key: dict[str, int] = {}
        #: Requests refused, and accepted.
        self.refused = 0
        self.accepted = 0
        self._logged_at = -math.inf
        self._unlogged = 0

    def check(self, method: str, body: bytes, auth: Any) -> str:
        """The fingerprint of the key that signed a good request; ``ServiceError`` 401 (503
        when too many nonces are held) saying why and what to do otherwise."""
        entry = self.identify(auth)
        self.verify(entry, method, hashlib.sha256(body).digest(), auth)
        return entry.key.fingerprint

    def identify(self, auth: Any) -> KeyEntry:
        """The first, cheap half of ``check``: ``auth``'s shape and time, and its key, which
        must be authorized (a 401 otherwise)."""
        fingerprint = self.screen(auth)
        return self.admit(fingerprint, self.ring.find(fingerprint))

    def screen(self, auth: Any) -> str:
        """What ``identify`` checks before it reads the key: ``auth``'s shape and time
        (a 401 otherwise). Returns the fingerprint to look up (``KeyRing.find``, which may
        read a storage over the network: a caller on the event loop runs it in a thread)."""
        try:
            return self._screen(auth)
        except ServiceError as exc:
            self._refused(exc)
            raise

    def admit(self, fingerprint: str, entry: KeyEntry | None) -> KeyEntry:
        """The rest of ``identify``, given what the key ring holds for ``fingerprint``: the
        key must be authorized and not revoked (a 401 otherwise)."""
        try:
            return self._admit(fingerprint, entry)
        except ServiceError as exc:
            self._refused(exc)
            raise

    def verify(self, entry: KeyEntry, method: str, digest: bytes, auth: Any) -> None:
        """The second half of ``check``, given the SHA-256 of the body (which may be large:
        the caller may hash it off the event loop): the signature, and the nonce's first
        use."""
        try:
            payload = signing_payload(method, b"", float(auth["ts"]), auth["nonce"],
                                      digest=digest)
            if not entry.key.verify(auth["sig"], payload):
                raise _refuse(f"the signature does not match the request: it was made by "
                              f"another key than {entry.key.fingerprint}, or the request was "
                              f"changed on the way")
            self._remember(auth["nonce"], entry.key.fingerprint, self.clock())
        except ServiceError as exc:
            self._refused(exc)
            raise
        self.accepted += 1

    def _refused(self, exc: ServiceError) -> None:
        self.refused += 1
        self._log_refusal(exc.message)

    def _screen(self, auth: Any) -> str:
        if auth is None:
            raise _refuse(f"the control service takes signed requests only, and this one is "
                          f"unsigned: {_HOW_TO_SIGN}")
        if not isinstance(auth, dict):
            raise _refuse("policy.auth must be a map with key, ts, nonce and sig")
        fingerprint, ts = auth.get("key"), auth.get("ts")
        nonce, signature = auth.get("nonce"), auth.get("sig")
        if not isinstance(fingerprint, str) or not FINGERPRINT.fullmatch(fingerprint):
            raise _refuse("policy.auth.key must be the signing key's fingerprint: SHA256: and "
                          "43 base64 characters, as cocaine keys show prints it")
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
            raise _refuse("policy.auth.ts must be the time of signing, in seconds since 1970")
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise _refuse(f"policy.auth.nonce must be {NONCE_BYTES} random bytes")
        if not isinstance(signature, bytes) or len(signature) != 64:
            raise _refuse("policy.auth.sig must be a 64-byte Ed25519 signature")
        now = self.clock()
        if abs(now - ts) > MAX_SKEW:
            raise _refuse(f"the request was signed {abs(now - ts):.0f} s "
                          f"{'before' if ts < now else 'after'} the node's time, more than "
                          f"{MAX_SKEW:g} s off: set the clock of the client's machine or of "
                          f"the node's right (NTP), then send it again")
        if ts < self.started - START_GRACE:
            raise _refuse(f"the request was signed {self.started - ts:.0f} s before this node "
                          f"started: a request from before a restart is refused, so it cannot "
                          f"be replayed to the new node; send it again")
        return fingerprint

    def _admit(self, fingerprint: str, entry: KeyEntry | None) -> KeyEntry:
        if entry is None:
            raise _refuse(f"the request is signed by key {fingerprint}, which this node does "
                          f"not authorize: have its operator run `cocaine keys authorize` with "
                          f"your public key (the .pub file next to your key)")
        if not entry.active:
            raise _refuse(f"the request is signed by key {fingerprint}, which was revoked on "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(entry.revoked))}"
                          f": sign with another key the node authorizes")
        return entry

    def _remember(self, nonce: bytes, fingerprint: str, now: float) -> None:
        nonces, per_key = self._nonces, self._per_key
        while nonces:
            oldest, (until, owner) = next(iter(nonces.items()))
            if until > now:
                break
            del nonces[oldest]
            left = per_key[owner] - 1
            if left:
                per_key[owner] = left
            else:
                del per_key[owner]
        if nonce in nonces:
            raise _refuse("the request's nonce was seen before: a replayed request is "
                          "refused. Send a new request (the CLI and Client make a fresh "
                          "nonce for each)")
        window = f"{2 * MAX_SKEW:g} s"
        if per_key.get(fingerprint, 0) >= MAX_NONCES_PER_KEY:
            raise ServiceError(Status.UNAVAILABLE, f"key {fingerprint} signed more than "
                               f"{MAX_NONCES_PER_KEY} requests in the last {window}; slow "
                               f"down and retry in a moment")
        if len(nonces) >= MAX_NONCES:
            raise ServiceError(Status.UNAVAILABLE, f"the node holds {MAX_NONCES} signed "
                               f"requests of the last {window}; retry in a moment")
        nonces[nonce] = (now + 2 * MAX_SKEW, fingerprint)
        per_key[fingerprint] = per_key.get(fingerprint, 0) + 1

    def info(self) -> dict[str, Any]:
        """Counts for ``cocaine info``."""
        return {"accepted": self.accepted, "refused": self.refused,
                "nonces": len(self._nonces)}

    def _log_refusal(self, message: str) -> None:
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more refused since the last line)" if self._unlogged else ""
        log.warning("refused a control request: %.300s%s", message, more)
        self._logged_at, self._unlogged = now, 0


def _refuse(message: str) -> ServiceError:
    return ServiceError(Status.UNAUTHORIZED, message)


def find_key(guard: ControlGuard, fingerprint: str) -> KeyEntry | None:
    """``guard.ring.find`` in a worker thread, any failure of the storage's turned into
    StorageUnavailable: a thread's own CancelledError would end the request's task silently,
    with no answer to the client."""
    try:
        return guard.ring.find(fingerprint)
    except CocaineError:
        raise
    except BaseException as exc:
        raise StorageUnavailable(f"the keys could not be read from the storage "
                                 f"({type(exc).__name__}: {exc}); retry in a moment") from None
