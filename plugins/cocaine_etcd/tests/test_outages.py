"""Outages of a three-member etcd seen by a storage that watches: no quorum gives every caller a
503 in bounds (never a cancelled request), the watch reports the outage once and does not
flap, and a watch on a hung member leaves it within seconds."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from cocaine_etcd.connection import TOTAL_TIMEOUT
from cocaine_etcd.storage import EtcdStorage
from cocaine_etcd.testing import EtcdCluster
from cocaine_etcd.watching import CHECK_EVERY

from cocaine_core.errors import StorageUnavailable
from cocaine_core.storages import Change

from .conftest import wait_until
from .test_faults import CALLS


class Seen:
    """What a watch reported, with the time of each report."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, Change]] = []
        self.lock = threading.Lock()

    def __call__(self, change: Change) -> None:
        with self.lock:
            self.changes.append((time.monotonic(), change))

    def nones(self, since: float = 0.0) -> int:
        with self.lock:
            return sum(1 for t, c in self.changes if c is None and t >= since)

    def has(self, change: Change) -> bool:
        with self.lock:
            return any(c == change for _, c in self.changes)


@pytest.fixture
def watched(etcd3: EtcdCluster) -> Iterator[tuple[EtcdStorage, Seen]]:
    """A storage on all three members of ``etcd3`` with a watch on apps and code running."""
    storage = EtcdStorage(etcd3.uri("t"))
    seen = Seen()
    stop = storage.watch(["apps", "code"], seen)
    try:
        wait_until(lambda: seen.nones() == 1, 10, "the watch is live")
        yield storage, seen
    finally:
        stop()
        storage.close()


def test_no_quorum_every_method_503_in_bounds_from_many_threads(
        etcd3: EtcdCluster, watched: tuple[EtcdStorage, Seen]) -> None:
    storage, _ = watched
    storage.put("apps", "a", b"1")
    storage.put("code", "a@1", b"old")
    index, _ = storage.connection.current()
    for i in [i for i in range(3) if i != index][:2]:  # the watch stays on a quorum-less member
        etcd3.kill(i)

    def attempt(name: str) -> tuple[str, float, BaseException | None]:
        began = time.monotonic()
        try:
            CALLS[name](storage)
        except BaseException as exc:  # a CancelledError must be seen, too
            return name, time.monotonic() - began, exc
        return name, time.monotonic() - began, None

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(attempt, list(CALLS) * 2))
    print("no quorum, 503 after (s):", {n: round(t, 2) for n, t, _ in results})
    for name, took, exc in results:
        assert isinstance(exc, StorageUnavailable), (name, exc)
        assert "the app store is unavailable" in str(exc)
        assert took < TOTAL_TIMEOUT + 2.0, (name, took)
    assert not storage.available()


def test_no_quorum_outage_is_one_quiet_episode(
        etcd3: EtcdCluster, watched: tuple[EtcdStorage, Seen],
        caplog: pytest.LogCaptureFixture) -> None:
    storage, seen = watched
    caplog.set_level(logging.INFO, logger="cocaine.etcd")
    index, _ = storage.connection.current()
    killed = [i for i in range(3) if i != index][:2]
    for i in killed:
        etcd3.kill(i)
    began = time.monotonic()
    wait_until(lambda: not storage.available(), CHECK_EVERY + 4, "the watch noticed")
    noticed = time.monotonic() - began
    while time.monotonic() - began < 10:  # ~10 s without a quorum
        assert not storage.available(), "a quorum-less member was taken for a live one"
        time.sleep(0.1)
    during = [r for r in caplog.records if r.name == "cocaine.etcd" and r.levelno >= logging.INFO]
    assert seen.nones(since=began) == 0, "changed(None) while nothing could be read"
    for i in killed:
        etcd3.restart(i, wait=False)
    for i in killed:
        etcd3.members[i].wait_healthy()
    back = time.monotonic()
    writer = EtcdStorage(etcd3.uri("t"))
    try:
        wait_until(lambda: _try_put(writer), 10, "etcd writable again")
        wait_until(lambda: seen.has(("apps", "after")), 10, "the watch follows again")
    finally:
        writer.close()
    time.sleep(CHECK_EVERY)  # a flapping watch would report again meanwhile
    lines = [r for r in caplog.records if r.name == "cocaine.etcd" and r.levelno >= logging.INFO]
    print(f"outage noticed after {noticed:.2f} s; log lines during it: {len(during)}, in all: "
          f"{len(lines)}: {[r.getMessage()[:80] for r in lines]}")
    assert len(during) <= 2 and len(lines) <= 3
    assert seen.nones(since=back) <= 1
    assert storage.available()


def _try_put(storage: EtcdStorage) -> bool:
    try:
        storage.put("apps", "after", b"1")
    except StorageUnavailable:
        return False
    return True


def test_a_watch_leaves_a_hung_member(etcd3: EtcdCluster,
                                      watched: tuple[EtcdStorage, Seen]) -> None:
    storage, seen = watched
    index, _ = storage.connection.current()
    others = [e for i, e in enumerate(etcd3.endpoints) if i != index]
    writer = EtcdStorage(f"etcd://{','.join(others)}/t")
    pid = etcd3.members[index].pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        hung = time.monotonic()
        wait_until(lambda: _try_put(writer), 10, "the other two members serve")
        wait_until(lambda: seen.has(("apps", "after")), 10, "the event arrived")
        took = time.monotonic() - hung
        print(f"a watch on a hung member delivered after {took:.2f} s")
        assert took < 7.0
        assert storage.connection.current()[0] != index
    finally:
        os.kill(pid, signal.SIGCONT)
        writer.close()
