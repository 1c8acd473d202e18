"""The etcd storage against a real etcd: values, chunked code, transactions."""

from __future__ import annotations

import os
import time

import pytest
from cocaine_etcd.chunks import CHUNK_SIZE, sha256
from cocaine_etcd.storage import EtcdStorage
from cocaine_etcd.testing import EtcdCluster

from cocaine_core.errors import StorageError
from cocaine_core.storages import Closable, ConditionalStorage, WatchedStorage, open_storage

from .conftest import raw_keys


@pytest.mark.parametrize("namespace", ["apps", "code", "keys", "curve"])
def test_round_trip_in_each_namespace(store: EtcdStorage, namespace: str) -> None:
    assert store.keys(namespace) == []
    with pytest.raises(KeyError):
        store.get(namespace, "b@1")
    assert not store.exists(namespace, "b@1")
    store.put(namespace, "b@1", b"two")
    store.put(namespace, "a", b"\x00one\xff")
    store.put(namespace, "b@1", b"three")
    assert store.get(namespace, "a") == b"\x00one\xff"
    assert store.get(namespace, "b@1") == b"three"
    assert store.exists(namespace, "a") and not store.exists(namespace, "b")
    assert store.keys(namespace) == ["a", "b@1"]
    store.remove(namespace, "a")
    store.remove(namespace, "a")  # absent: no error
    assert store.keys(namespace) == ["b@1"]
    assert not store.exists(namespace, "a")


def test_layout_under_the_prefix(store: EtcdStorage) -> None:
    store.put("apps", "echo", b"{}")
    store.put("code", "echo@1", b"code")
    assert set(raw_keys(store, b"/t/")) == {
        b"/t/apps/echo", b"/t/code/echo@1", f"/t/chunks/{sha256(b'code')}".encode()}


def test_opened_by_scheme_with_every_capability(etcd: EtcdCluster) -> None:
    storage = open_storage(etcd.uri("x"))
    try:
        assert isinstance(storage, EtcdStorage)
        assert isinstance(storage, WatchedStorage) and isinstance(storage, ConditionalStorage)
        assert isinstance(storage, Closable) and storage.available()
    finally:
        storage.close()  # type: ignore[attr-defined]
    storage.close()  # type: ignore[attr-defined]  # idempotent


def test_bad_names_and_big_values_are_refused(store: EtcdStorage) -> None:
    with pytest.raises(StorageError, match="bad storage key"):
        store.put("apps", "../x", b"")
    with pytest.raises(StorageError, match="reserved"):
        store.keys("chunks")
    with pytest.raises(StorageError, match="at most 1 MiB"):
        store.put("apps", "big", b"x" * (CHUNK_SIZE + 1))


def test_five_mib_of_code_is_chunked_and_read_back(store: EtcdStorage) -> None:
    code = os.urandom(5 * CHUNK_SIZE + 12345)
    began = time.monotonic()
    store.put("code", "big@1", code)
    put = time.monotonic() - began
    chunks = raw_keys(store, b"/t/chunks/")
    assert len(chunks) == 6
    assert raw_keys(store, b"/t/code/") == {b"/t/code/big@1": raw_keys(store, b"/t/code/")[
        b"/t/code/big@1"]}
    began = time.monotonic()
    assert store.get("code", "big@1") == code
    print(f"5 MiB code: put {put:.2f} s, get {time.monotonic() - began:.2f} s")
    assert store.keys("code") == ["big@1"]

    # The same code again (another key, or the same) writes no new chunk.
    store.put("code", "again@1", code)
    store.put("code", "big@1", code)
    assert raw_keys(store, b"/t/chunks/") == chunks


def test_removed_code_leaves_only_shared_chunks(store: EtcdStorage) -> None:
    shared = os.urandom(CHUNK_SIZE)
    first, second = shared + b"first", shared + b"second"
    store.put("code", "a@1", first)
    store.put("code", "b@1", second)
    assert len(raw_keys(store, b"/t/chunks/")) == 3
    store.remove("code", "a@1")
    assert set(raw_keys(store, b"/t/chunks/")) == {
        f"/t/chunks/{sha256(shared)}".encode(), f"/t/chunks/{sha256(b'second')}".encode()}
    assert store.get("code", "b@1") == second
    store.remove("code", "b@1")
    assert raw_keys(store, b"/t/chunks/") == {}
    assert raw_keys(store, b"/t/") == {}


def test_a_damaged_chunk_is_reported(store: EtcdStorage) -> None:
    store.put("code", "a@1", b"A" * (CHUNK_SIZE + 10))
    chunk = f"/t/chunks/{sha256(b'A' * CHUNK_SIZE)}".encode()
    store.connection.call(lambda c: c.put(chunk, b"B" * CHUNK_SIZE), "test")
    with pytest.raises(StorageError, match=r"damaged.*deploy the app again"):
        store.get("code", "a@1")
    store.connection.call(lambda c: c.delete(chunk), "test")
    with pytest.raises(StorageError, match="incomplete"):
        store.get("code", "a@1")
    store.connection.call(lambda c: c.put(b"/t/code/a@1", b"not json"), "test")
    with pytest.raises(StorageError, match="index of code 'a@1' in etcd is damaged"):
        store.get("code", "a@1")


def test_a_swept_chunk_is_written_again_before_the_index(store: EtcdStorage) -> None:
    # A sweep between "chunk is there" and the publishing transaction: the transaction's
    # check fails and the put writes the chunk again, so the index never names a lost chunk.
    value = b"C" * 100
    chunk = f"/t/chunks/{sha256(value)}".encode()
    store.connection.call(lambda c: c.put(chunk, value), "test")
    published = store.code._publish
    attempts: list[bool] = []

    async def sweep_first(key: str, digests: list[str], index: bytes) -> bool:
        if not attempts:  # the sweep, right before the first publishing transaction
            await store.connection.run(lambda c: c.delete(chunk), "test")
        attempts.append(await published(key, digests, index))
        return attempts[-1]

    store.code._publish = sweep_first  # type: ignore[method-assign]
    store.put("code", "c@1", value)
    assert attempts == [False, True]
    assert store.get("code", "c@1") == value


def test_put_if_present_writes_only_with_its_requirement(store: EtcdStorage) -> None:
    assert not store.put_if_present("apps", "echo", b"v1", [("code", "echo@1")])
    assert not store.exists("apps", "echo")
    store.put("code", "echo@1", b"code")
    assert store.put_if_present("apps", "echo", b"v1", [("code", "echo@1")])
    assert store.get("apps", "echo") == b"v1"
    assert not store.put_if_present("apps", "echo", b"v2",
                                    [("code", "echo@1"), ("keys", "nobody")])
    assert store.get("apps", "echo") == b"v1"
