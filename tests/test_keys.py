"""Keys, the key ring and the node's signature check, one class at a time (the node's own
path is in test_signed_control.py)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cocaine_core.errors import ServiceError, StorageUnavailable, TrustError
from cocaine_core.storages.files import FileStorage
from cocaine_core.trust import signatures
from cocaine_core.trust.keyring import KeyRing
from cocaine_core.trust.keys import (
    Signer,
    digest_of_fingerprint,
    generate,
    load_or_create,
    parse_public,
    read_public,
    resolve_signer,
)
from cocaine_core.trust.signatures import MAX_SKEW, ControlGuard

#: A key ssh-keygen made, and the fingerprint ssh-keygen -l printed for it.
SSH_PUB = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKl/L9sOFIo6Kl4x6SVAacjyAHzfibx+RRreK0b3TqSg "
           "vector")
SSH_FINGERPRINT = "SHA256:3F3Mk3sTHGhvDLmQso5aojrSKVx9cIYyGdJrAOCEgPs"


def test_a_fingerprint_is_the_one_ssh_keygen_prints() -> None:
    key = parse_public(SSH_PUB)
    assert key.fingerprint == SSH_FINGERPRINT
    assert key.comment == "vector"
    assert key.openssh() == SSH_PUB
    assert digest_of_fingerprint(SSH_FINGERPRINT) == key.digest
    assert digest_of_fingerprint(SSH_FINGERPRINT.removeprefix("SHA256:")) == key.digest


def test_a_made_key_is_private_to_its_user_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "id_ed25519"
    made = generate(path, comment="me@here")
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    loaded = Signer.load(path)
    assert loaded.fingerprint == made.fingerprint and loaded.public.comment == "me@here"
    assert read_public(f"{path}.pub") == made.public == read_public(str(path))
    with pytest.raises(TrustError, match=r"already exists.*--force"):
        generate(path)
    assert generate(path, force=True).fingerprint != made.fingerprint


def test_many_processes_making_the_same_key_at_once_end_with_one(tmp_path: Path) -> None:
    path = tmp_path / "id_ed25519"
    results: list[str] = []

    def make() -> None:
        results.append(load_or_create(path)[0].fingerprint)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1 and results[0] == Signer.load(path).fingerprint


def test_keys_cocaine_cannot_use_are_refused_with_what_to_do(tmp_path: Path) -> None:
    path = generate(tmp_path / "loose").path
    assert path is not None
    os.chmod(path, 0o644)
    with pytest.raises(TrustError, match="chmod 600"):
        Signer.load(path)
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = tmp_path / "rsa"
    pem.write_bytes(other.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.OpenSSH,
                                        serialization.NoEncryption()))
    os.chmod(pem, 0o600)
    with pytest.raises(TrustError, match=r"of type RSA.*Ed25519"):
        Signer.load(pem)
    locked = tmp_path / "locked"
    key = generate(tmp_path / "plain").key
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"pw")))
    os.chmod(locked, 0o600)
    with pytest.raises(TrustError, match="passphrase"):
        Signer.load(locked)
    with pytest.raises(TrustError, match=r"no private key.*cocaine keys generate"):
        Signer.load(tmp_path / "missing")
    with pytest.raises(TrustError, match="not an Ed25519 public key"):
        read_public("ssh-rsa AAAA nope")
    with pytest.raises(TrustError, match="damaged"):
        parse_public("ssh-ed25519 !!!")
    with pytest.raises(TrustError, match="not a key fingerprint"):
        digest_of_fingerprint("SHA256:short")


def test_a_client_signs_with_the_default_key_only_if_there_is_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COCAINE_KEY", str(tmp_path / "none"))
    assert resolve_signer(None) is None
    made = generate(tmp_path / "none")
    assert resolve_signer(None).fingerprint == made.fingerprint  # type: ignore[union-attr]
    assert resolve_signer(False) is None
    assert resolve_signer(made) is made


def test_the_ring_authorizes_revokes_and_keeps_revoked_keys_listed(tmp_path: Path) -> None:
    storage = FileStorage(f"files://{tmp_path / 'store'}")
    ring = KeyRing(storage)
    assert ring.empty()
    key = parse_public(SSH_PUB)
    ring.authorize(key)
    assert not ring.empty()
    found = KeyRing(storage).find(SSH_FINGERPRINT)  # another node sharing the storage
    assert found is not None and found.active and found.key == key
    revoked = ring.revoke(SSH_FINGERPRINT)
    assert not revoked.active and not KeyRing(storage).find(SSH_FINGERPRINT).active  # type: ignore[union-attr]
    assert not ring.empty()  # a revoked key still counts: no owner key comes back
    assert ring.authorize(key).active
    with pytest.raises(TrustError, match=r"no key .* is known"):
        ring.revoke("SHA256:" + "A" * 43)
    assert ring.find("garbage") is None
    # A damaged entry, or one stored under another key's name, is no key.
    storage.put("keys", key.digest.hex(), b"{not json")
    assert ring.find(SSH_FINGERPRINT) is None
    other = generate(tmp_path / "other").public
    entry = json.dumps({"key": other.openssh(), "added": 1}).encode()
    storage.put("keys", key.digest.hex(), entry)
    assert ring.find(SSH_FINGERPRINT) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def guarded(tmp_path: Path) -> tuple[ControlGuard, Signer, Clock]:
    signer = generate(tmp_path / "k")
    ring = KeyRing(None)
    ring.authorize(signer.public)
    clock = Clock()
    return ControlGuard(ring, clock), signer, clock


def signed_at(signer: Signer, clock: Clock, method: str, body: bytes,
              monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr("cocaine_core.trust.keys.time.time", lambda: clock.now)
    return signer.sign(method, body)


def test_the_guard_takes_a_good_request_once(guarded, monkeypatch) -> None:
    guard, signer, clock = guarded
    auth = signed_at(signer, clock, "deploy", b"body", monkeypatch)
    assert guard.check("deploy", b"body", auth) == signer.fingerprint
    with pytest.raises(ServiceError, match="nonce") as again:
        guard.check("deploy", b"body", auth)
    assert again.value.code == 401
    assert guard.info() == {"accepted": 1, "refused": 1, "nonces": 1}


@pytest.mark.parametrize("offset, ok", [(MAX_SKEW - 1, True), (-(MAX_SKEW - 1), True),
                                        (MAX_SKEW + 1, False), (-(MAX_SKEW + 1), False)])
def test_the_guard_takes_only_requests_within_the_skew(guarded, monkeypatch, offset: float,
                                                       ok: bool) -> None:
    guard, signer, clock = guarded
    auth = signed_at(signer, clock, "list", b"", monkeypatch)
    clock.now += offset
    if ok:
        guard.check("list", b"", auth)
    else:
        with pytest.raises(ServiceError, match="clock") as refused:
            guard.check("list", b"", auth)
        assert refused.value.code == 401


@pytest.mark.parametrize("auth, words", [
    (None, "unsigned"), ("x", "must be a map"), ({"key": 1}, "fingerprint"),
    ({"key": "SHA256:" + "A" * 42 + "\nINFO forged"}, "43 base64"),
    ({"key": SSH_FINGERPRINT, "ts": "now"}, "time of signing"),
    ({"key": SSH_FINGERPRINT, "ts": 1.0, "nonce": b"short"}, "16 random bytes"),
    ({"key": SSH_FINGERPRINT, "ts": 1.0, "nonce": b"n" * 16, "sig": b"s"}, "64-byte"),
])
def test_a_malformed_auth_is_a_401_naming_the_field(guarded, auth, words: str) -> None:
    guard = guarded[0]
    with pytest.raises(ServiceError, match=words) as refused:
        guard.check("list", b"", auth)
    assert refused.value.code == 401


def test_a_request_signed_before_the_node_started_is_refused(guarded, monkeypatch) -> None:
    guard, signer, clock = guarded
    before = signed_at(signer, clock, "list", b"", monkeypatch)
    restarted = ControlGuard(guard.ring, clock)  # a node restarted: it saw no nonce
    clock.now += 5
    restarted.started = clock.now
    with pytest.raises(ServiceError, match="before this node started") as refused:
        restarted.check("list", b"", before)
    assert refused.value.code == 401
    restarted.check("list", b"", signed_at(signer, clock, "list", b"", monkeypatch))


def test_a_key_that_floods_the_node_holds_back_only_itself(guarded, monkeypatch,
                                                          tmp_path: Path) -> None:
    guard, signer, clock = guarded
    other = generate(tmp_path / "other")
    guard.ring.authorize(other.public)
    monkeypatch.setattr(signatures, "MAX_NONCES_PER_KEY", 2)
    for _ in range(2):
        guard.check("list", b"", signed_at(signer, clock, "list", b"", monkeypatch))
    with pytest.raises(ServiceError, match=r"slow down") as held:
        guard.check("list", b"", signed_at(signer, clock, "list", b"", monkeypatch))
    assert held.value.code == 503
    assert guard.check("list", b"", signed_at(other, clock, "list", b"", monkeypatch))
    clock.now += 2 * MAX_SKEW + 1
    guard.check("list", b"", signed_at(signer, clock, "list", b"", monkeypatch))


def test_nonces_age_out_and_their_number_is_bounded(guarded, monkeypatch) -> None:
    guard, signer, clock = guarded
    monkeypatch.setattr(signatures, "MAX_NONCES", 3)
    for _ in range(3):
        guard.check("list", b"", signed_at(signer, clock, "list", b"", monkeypatch))
    with pytest.raises(ServiceError) as full:
        guard.check("list", b"", signed_at(signer, clock, "list", b"", monkeypatch))
    assert full.value.code == 503
    clock.now += 2 * MAX_SKEW + 1  # the old ones could no longer be replayed: forgotten
    guard.check("list", b"", signed_at(signer, clock, "list", b"", monkeypatch))
    assert guard.info()["nonces"] == 1


def test_a_caching_ring_past_its_bound_still_finds_every_key(tmp_path, monkeypatch) -> None:
    from cocaine_core.trust import keyring as keyring_module

    monkeypatch.setattr(keyring_module, "MAX_KEYS", 3)
    storage = FileStorage(f"files://{tmp_path / 'store'}")
    ring = KeyRing(storage, cache=True)
    keys = [generate(tmp_path / f"k{i}" / "id", comment=f"k{i}").public for i in range(5)]
    for key in keys:
        ring.authorize(key)
    # Only three entries fit the mirror; the others are read, never refused.
    assert all(ring.find(key.fingerprint) is not None for key in keys)
    ring.revoke(keys[4].fingerprint)
    assert not ring.find(keys[4].fingerprint).active
    ring.forget()  # the store said anything may have changed; a churn of names
    for i in range(10):
        ring.forget(f"{i:064x}")
    assert all(ring.find(key.fingerprint) is not None for key in keys)


class _OutOfReach(FileStorage):
    """A files storage that can be made unreachable, as etcd in an outage (one class's
    unit test: the etcd tests cover the real outage)."""

    down = False

    def keys(self, namespace: str) -> list[str]:
        if self.down:
            raise StorageUnavailable("the app store is unavailable (test)")
        return super().keys(namespace)

    def get(self, namespace: str, key: str) -> bytes | None:
        if self.down:
            raise StorageUnavailable("the app store is unavailable (test)")
        return super().get(namespace, key)


def test_a_caching_ring_answers_from_the_keys_last_read_while_the_storage_is_out_of_reach(
        tmp_path: Path) -> None:
    storage = _OutOfReach(f"files://{tmp_path / 'store'}")
    ring = KeyRing(storage, cache=True)
    kept, revoked = (generate(tmp_path / name / "id", comment=name).public
                     for name in ("kept", "revoked"))
    ring.authorize(kept)
    ring.authorize(revoked)
    assert ring.find(kept.fingerprint) is not None  # the mirror is read
    storage.down = True
    ring.forget()  # a watch that lost the store says anything may have changed
    ring.forget(revoked.digest.hex())  # and this one did, before the store went away
    entry = ring.find(kept.fingerprint)
    assert entry is not None and entry.active  # control goes on through an outage
    with pytest.raises(StorageUnavailable):  # what changed is not guessed
        ring.find(revoked.fingerprint)
    storage.down = False
    assert ring.find(revoked.fingerprint) is not None  # read again once it is back


def test_a_caching_ring_that_never_read_its_keys_says_the_storage_is_out_of_reach(
        tmp_path: Path) -> None:
    storage = _OutOfReach(f"files://{tmp_path / 'store'}")
    KeyRing(storage).authorize(generate(tmp_path / "k" / "id", comment="k").public)
    ring = KeyRing(storage, cache=True)
    storage.down = True
    with pytest.raises(StorageUnavailable):
        ring.find(generate(tmp_path / "other" / "id", comment="o").public.fingerprint)
