"""etcd unreachable: every method fails fast with a clear 503, and all works once it is back;
one member of three killed: reads and writes go on."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from cocaine_etcd.connection import TOTAL_TIMEOUT
from cocaine_etcd.storage import EtcdStorage
from cocaine_etcd.testing import EtcdCluster

from cocaine_core.errors import StorageUnavailable

CALLS: dict[str, Callable[[EtcdStorage], Any]] = {
    "put": lambda s: s.put("apps", "a", b"2"),
    "put code": lambda s: s.put("code", "a@1", b"code" * 1000),
    "get": lambda s: s.get("apps", "a"),
    "get code": lambda s: s.get("code", "a@1"),
    "exists": lambda s: s.exists("apps", "a"),
    "keys": lambda s: s.keys("apps"),
    "remove": lambda s: s.remove("apps", "a"),
    "remove code": lambda s: s.remove("code", "a@1"),
    "put_if_present": lambda s: s.put_if_present("apps", "a", b"3", [("code", "a@1")]),
}


def test_etcd_down_every_method_raises_unavailable_fast(etcd: EtcdCluster,
                                                         store: EtcdStorage) -> None:
    store.put("apps", "a", b"1")
    store.put("code", "a@1", b"old")
    etcd.kill(0)
    took = {}
    for name, call in CALLS.items():
        began = time.monotonic()
        with pytest.raises(StorageUnavailable) as info:
            call(store)
        took[name] = time.monotonic() - began
        message = str(info.value)
        assert info.value.code == 503
        assert "the app store is unavailable" in message and etcd.uri("t") in message
        assert f"{etcd.endpoints[0]} refused the connection" in message
        assert "retry it when etcd is back" in message
    print("StorageUnavailable after (s):", {k: round(v, 2) for k, v in took.items()})
    assert max(took.values()) < TOTAL_TIMEOUT + 1
    assert not store.available()

    etcd.restart(0)
    assert store.get("apps", "a") == b"1" and store.get("code", "a@1") == b"old"
    for call in CALLS.values():
        call(store)
    assert store.available()


def test_etcd_that_does_not_answer_times_out_in_bounds(etcd: EtcdCluster,
                                                       store: EtcdStorage) -> None:
    # A member that accepts connections but never answers (stopped, as by a hung host).
    member = etcd.members[0]
    assert member.pid is not None
    store.put("apps", "a", b"1")
    os.kill(member.pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        with pytest.raises(StorageUnavailable, match="did not answer within 2 s"):
            store.get("apps", "a")
        took = time.monotonic() - began
        print(f"StorageUnavailable from a silent member after {took:.2f} s")
        assert TOTAL_TIMEOUT - 0.5 < took < TOTAL_TIMEOUT + 1.5
    finally:
        os.kill(member.pid, signal.SIGCONT)
    assert store.get("apps", "a") == b"1"


@pytest.mark.parametrize("victim", ["leader", "follower"])
def test_one_of_three_members_killed(etcd3: EtcdCluster, victim: str) -> None:
    # The victim is listed first in the URI: the member the storage uses until it fails.
    probe = EtcdStorage(etcd3.uri("t"))
    try:
        leader = _leader(probe, etcd3)
    finally:
        probe.close()
    index = leader if victim == "leader" else (leader + 1) % 3
    order = [index] + [i for i in range(3) if i != index]
    store = EtcdStorage("etcd://" + ",".join(etcd3.endpoints[i] for i in order) + "/t")
    try:
        store.put("code", "a@1", b"x" * 2_500_000)
        store.put("apps", "a", b"1")
        etcd3.kill(index)
        began = time.monotonic()
        store.put("apps", "b", b"2")
        first = time.monotonic() - began
        began = time.monotonic()
        store.put("apps", "b", b"3")
        second = time.monotonic() - began
        print(f"killed the {victim}: first put {first:.3f} s, the next {second:.3f} s")
        assert first < 3.0 and second < 0.5
        assert store.get("code", "a@1") == b"x" * 2_500_000
        assert store.put_if_present("apps", "c", b"3", [("code", "a@1")])
        store.put("code", "b@1", b"y" * 1_500_000)
        store.remove("code", "a@1")
        assert store.keys("apps") == ["a", "b", "c"] and store.keys("code") == ["b@1"]
        assert store.available()
    finally:
        store.close()


def _leader(store: EtcdStorage, cluster: EtcdCluster) -> int:
    status = store.connection.call(lambda c: c.status(), "test")
    urls = status.leader.client_urls if status.leader is not None else []
    for i, endpoint in enumerate(cluster.endpoints):
        if any(endpoint in url for url in urls):
            return i
    pytest.fail(f"no member is the leader ({urls!r})")
