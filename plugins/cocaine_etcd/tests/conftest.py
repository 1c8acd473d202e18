"""Fixtures of the cocaine-etcd tests: real etcd members on free ports, data in tmp_path.

``etcd`` is one member, ``etcd3`` three; both are ``cocaine_etcd.testing.EtcdCluster``
objects, started, and killed by PID after the test. A machine without etcd fails these
tests (it does not skip them) with a message saying how to install it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
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
