"""Watches: every write and removal by anyone, in order, through outages."""

from __future__ import annotations

import threading

import pytest
from cocaine_etcd.storage import EtcdStorage
from cocaine_etcd.testing import EtcdCluster

from cocaine_core.storages import Change

from .conftest import wait_until


class Recorder:
    """Collects what a watch reports, and checks it is never called concurrently."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self._inside = threading.Lock()

    def __call__(self, change: Change) -> None:
        assert self._inside.acquire(blocking=False), "changed was called concurrently"
        try:
            self.changes.append(change)
        finally:
            self._inside.release()

    def after_last_none(self) -> list[Change]:
        """The changes since the watch last (re)started."""
        last = len(self.changes) - 1 - self.changes[::-1].index(None)
        return self.changes[last + 1:]


def test_writes_and_removals_by_others_in_order(etcd: EtcdCluster, store: EtcdStorage) -> None:
    other = EtcdStorage(etcd.uri("t"))
    seen = Recorder()
    stop = store.watch(["apps", "code"], seen)
    try:
        wait_until(lambda: seen.changes == [None], 5, "the watch started")
        other.put("apps", "a", b"1")
        other.put("code", "a@1", b"x" * 3_000_000)
        other.put("apps", "b", b"2")
        other.remove("apps", "a")
        other.put("keys", "k", b"not watched")
        other.connection.call(lambda c: c.put(b"/t/apps/not a key", b""), "hand-written")
        other.remove("code", "a@1")
        store.put("apps", "c", b"mine too")
        expected = [("apps", "a"), ("code", "a@1"), ("apps", "b"), ("apps", "a"),
                    ("code", "a@1"), ("apps", "c")]
        wait_until(lambda: len(seen.changes) >= 1 + len(expected), 5, "every change seen")
        assert seen.changes == [None, *expected]
    finally:
        stop()
        other.close()
    store.put("apps", "after", b"stop")
    other_count = len(seen.changes)
    assert store.get("apps", "after") == b"stop" and len(seen.changes) == other_count


def test_a_blocking_reader_may_use_the_storage(store: EtcdStorage) -> None:
    values: list[bytes] = []

    def changed(change: Change) -> None:
        if change is not None:
            values.append(store.get(*change))  # a storage call from the watch's thread

    started = threading.Event()
    stop = store.watch(["apps"], lambda change: started.set() if change is None
                       else changed(change))
    try:
        assert started.wait(5), "the watch started"
        store.put("apps", "a", b"1")
        wait_until(lambda: values == [b"1"], 5, "the reader read the value")
    finally:
        stop()


def test_resumes_with_nothing_lost_when_its_member_dies(etcd3: EtcdCluster) -> None:
    # The watch follows member 0 (the first of the URI); writes go through member 2 while
    # member 0 is down; the watch moves to another member and resumes where it was.
    watched = EtcdStorage(etcd3.uri("t"))
    writer = EtcdStorage(f"etcd://{etcd3.endpoints[2]}/t")
    seen = Recorder()
    stop = watched.watch(["apps"], seen)
    try:
        wait_until(lambda: seen.changes == [None], 5, "the watch started")
        writer.put("apps", "before", b"1")
        wait_until(lambda: ("apps", "before") in seen.changes, 5, "the first write seen")
        etcd3.kill(0)
        for i in range(5):
            writer.put("apps", f"during{i}", b"x")
        writer.remove("apps", "before")
        expected = [*[("apps", f"during{i}") for i in range(5)], ("apps", "before")]
        wait_until(lambda: seen.changes.count(None) >= 2
                   and seen.after_last_none() == expected, 10,
                   "the watch resumed on another member with every write made meanwhile")
        assert seen.changes[:2] == [None, ("apps", "before")]
        etcd3.restart(0)
        writer.put("apps", "after", b"y")
        wait_until(lambda: seen.changes[-1] == ("apps", "after"), 5, "still following")
        assert [c for c in seen.changes if c is not None] == [
            ("apps", "before"), *expected, ("apps", "after")]
    finally:
        stop()
        watched.close()
        writer.close()


def test_resumes_after_the_whole_etcd_restarts(etcd: EtcdCluster, store: EtcdStorage) -> None:
    seen = Recorder()
    stop = store.watch(["apps"], seen)
    try:
        wait_until(lambda: seen.changes == [None], 5, "the watch started")
        etcd.stop(0)
        wait_until(lambda: not store.available(), 5, "the watch noticed etcd is gone")
        etcd.restart(0)
        wait_until(lambda: seen.changes.count(None) == 2, 10, "the watch resumed")
        assert store.available()
        store.put("apps", "back", b"1")
        wait_until(lambda: seen.changes[-1] == ("apps", "back"), 5, "following again")
    finally:
        stop()


def test_compacted_history_starts_over_from_now(etcd: EtcdCluster, store: EtcdStorage,
                                                caplog: pytest.LogCaptureFixture) -> None:
    seen = Recorder()
    store.put("apps", "a", b"0")
    stop = store.watch(["apps"], seen)
    try:
        wait_until(lambda: seen.changes == [None], 5, "the watch started")
        for i in range(3):
            store.put("apps", "a", str(i).encode())
        head = store.connection.call(lambda c: c.get_prefix(b"/t/"), "test").header.revision
        store.connection.call(lambda c: c.compact(head, physical=True), "test")
        etcd.kill(0)
        wait_until(lambda: not store.available(), 5, "the watch noticed")
        # While it is cut, its position goes back to revisions compacted away (as if it had
        # been cut long before the compaction).
        stop.__self__.next_revision = {"apps": 2}  # type: ignore[attr-defined]
        etcd.restart(0)
        wait_until(lambda: "were compacted" in caplog.text, 10, "the compaction noticed")
        wait_until(lambda: seen.changes.count(None) >= 2, 5, "restarted from now")
        writes = iter(range(100))

        def written_and_seen() -> bool:
            store.put("apps", f"z{next(writes)}", b"1")
            return any(c is not None and c[1].startswith("z") for c in seen.changes)

        wait_until(written_and_seen, 5, "following from now")
    finally:
        stop()


def test_a_watch_outlives_its_connection_dropped_under_it(store: EtcdStorage) -> None:
    seen = Recorder()
    stop = store.watch(["apps"], seen)
    try:
        wait_until(lambda: seen.changes == [None], 5, "the watch started")
        for i in range(5):  # requests found the member failing and dropped its connection
            store.connection.submit(store.connection.failed(0)).result(timeout=5)
            store.put("apps", f"k{i}", b"1")
        wait_until(lambda: all(("apps", f"k{i}") in seen.changes for i in range(5)), 10,
                   "every write seen, the watch following again")
        store.put("apps", "last", b"1")
        wait_until(lambda: ("apps", "last") in seen.changes, 5, "still following")
    finally:
        stop()
