"""Fixtures of the cocaine-etcd tests: real etcd members on free ports, data in tmp_path.

``etcd`` is one member, ``etcd3`` three; both are ``cocaine_etcd.testing.EtcdCluster``
objects, started, and killed by PID after the test. A machine without etcd fails these
tests (it does not skip them) with a message saying how to install it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cocaine_etcd.storage import EtcdStorage
from cocaine_etcd.testing import EtcdCluster, EtcdMissing


def _cluster(folder: Path, size: int) -> EtcdCluster:
    try:
        cluster = EtcdCluster(folder, size=size)
    except EtcdMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    cluster.start()
    return cluster


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    """One etcd member, started; killed after the test."""
    cluster = _cluster(tmp_path / "etcd", 1)
    try:
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture
def etcd3(tmp_path: Path) -> Iterator[EtcdCluster]:
    """Three etcd members forming one cluster, started; killed after the test."""
    cluster = _cluster(tmp_path / "etcd3", 3)
    try:
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture
def store(etcd: EtcdCluster) -> Iterator[EtcdStorage]:
    """An EtcdStorage on the one-member ``etcd``, prefix /t; closed after the test."""
    storage = EtcdStorage(etcd.uri("t"))
    try:
        yield storage
    finally:
        storage.close()


def raw_keys(storage: EtcdStorage, prefix: bytes) -> dict[bytes, int]:
    """Every etcd key under ``prefix`` (as the storage's client sees it) with its
    mod revision: what the storage wrote, read around its API."""
    found = storage.connection.call(lambda c: c.get_prefix(prefix, keys_only=True), "test")
    return {kv.key: kv.mod_revision for kv in found}


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Return once ``condition()`` is true; fail after ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.02)
