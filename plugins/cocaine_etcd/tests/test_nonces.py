"""claim_nonce: a nonce taken through one node is refused through every other, for its ttl,
under a few shared leases."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from cocaine_etcd.connection import TOTAL_TIMEOUT
from cocaine_etcd.storage import EtcdStorage
from cocaine_etcd.testing import EtcdCluster

from cocaine_core.errors import StorageError, StorageUnavailable
from cocaine_core.storages import NonceStorage

from .conftest import raw_keys, wait_until


@pytest.fixture
def other(etcd: EtcdCluster) -> Iterator[EtcdStorage]:
    """A second storage on the same etcd and prefix (another node)."""
    storage = EtcdStorage(etcd.uri("t"))
    try:
        yield storage
    finally:
        storage.close()


def test_a_nonce_is_taken_once_across_storages(store: EtcdStorage, other: EtcdStorage) -> None:
    assert isinstance(store, NonceStorage)
    nonce = os.urandom(16)
    assert store.claim_nonce(nonce, 60) is True
    assert other.claim_nonce(nonce, 60) is False
    assert store.claim_nonce(nonce, 60) is False
    assert other.claim_nonce(os.urandom(32), 60) is True
    assert raw_keys(store, b"/t/nonces/").keys() >= {b"/t/nonces/" + nonce.hex().encode()}
    with pytest.raises(StorageError, match="reserved"):
        store.keys("nonces")


def test_an_expired_nonce_can_be_taken_again(store: EtcdStorage, other: EtcdStorage) -> None:
    store.nonce_window = 1.0  # the lease lives ttl + 1 s (60 s in use)
    nonce = os.urandom(20)
    began = time.monotonic()
    assert store.claim_nonce(nonce, 2)
    assert not other.claim_nonce(nonce, 2)
    wait_until(lambda: other.claim_nonce(nonce, 2), 2 + 1 + 8, "the nonce expired")
    took = time.monotonic() - began
    print(f"a nonce of ttl 2 s was free again after {took:.2f} s")
    assert took >= 2.0  # never before its ttl


def test_a_lease_gone_early_is_granted_again(store: EtcdStorage, other: EtcdStorage) -> None:
    nonce = os.urandom(20)
    assert store.claim_nonce(nonce, 5)
    lease_id = store._nonce_leases[5][1]
    store.connection.call(lambda c: c.revoke_lease(lease_id), "test")  # as if etcd lost it
    assert other.claim_nonce(nonce, 5)  # its key went with the lease
    assert store.claim_nonce(os.urandom(20), 5)  # a new lease for the window
    assert store._nonce_leases[5][1] != lease_id
    assert not store.claim_nonce(nonce, 5)


def test_many_claims_share_few_leases(store: EtcdStorage) -> None:
    began = time.monotonic()
    assert all(store.claim_nonce(os.urandom(16), 30) for _ in range(200))
    print(f"200 claims took {time.monotonic() - began:.2f} s")
    found = store.connection.call(lambda c: c.get_prefix(b"/t/nonces/", keys_only=True), "test")
    leases = {kv.lease for kv in found}
    assert len(list(found)) == 200 and len(leases) == 1 and 0 not in leases
    lease_id = next(iter(leases))
    info = store.connection.call(lambda c: c.get_lease_info(lease_id), "test")
    assert 30 < info.grantedTTL <= 30 + 61  # ttl + the window


@pytest.mark.parametrize("nonce", [b"short", b"x" * 65, "a string of forty characters, not bytes"])
def test_a_bad_nonce_is_refused(store: EtcdStorage, nonce: bytes) -> None:
    with pytest.raises(StorageError, match="a nonce is 16 to 64 bytes"):
        store.claim_nonce(nonce, 10)


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), 10**6])
def test_a_bad_ttl_is_refused(store: EtcdStorage, ttl: float) -> None:
    with pytest.raises(StorageError, match="ttl"):
        store.claim_nonce(os.urandom(16), ttl)


def test_claim_without_etcd_is_unavailable(etcd: EtcdCluster, store: EtcdStorage) -> None:
    assert store.claim_nonce(os.urandom(16), 10)  # a lease is held for ttl 10
    etcd.kill(0)
    began = time.monotonic()
    with pytest.raises(StorageUnavailable, match="could not be reached to take a nonce"):
        store.claim_nonce(os.urandom(16), 10)
    with pytest.raises(StorageUnavailable, match="could not be reached to grant a nonce lease"):
        store.claim_nonce(os.urandom(16), 20)
    assert time.monotonic() - began < 2 * TOTAL_TIMEOUT
