"""The test harness itself: members start, answer, die by PID and come back."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cocaine_etcd.testing import EtcdCluster, EtcdMissing


def test_one_member_starts_and_is_killed_by_pid(etcd: EtcdCluster) -> None:
    member = etcd.members[0]
    pid = member.pid
    assert pid is not None and member.healthy()
    assert etcd.uri("/apps/") == f"etcd://127.0.0.1:{member.client_port}/apps"
    etcd.kill(0)
    assert not member.running and not member.healthy(timeout=0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    etcd.restart(0)
    assert member.healthy()


def test_three_members_keep_a_quorum_with_one_down(etcd3: EtcdCluster) -> None:
    assert etcd3.uri("x").count(",") == 2
    etcd3.stop(1)
    deadline = time.monotonic() + 10
    while not etcd3.members[0].healthy() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert etcd3.members[0].healthy() and etcd3.members[2].healthy()
    etcd3.restart(1)
    assert etcd3.members[1].healthy()


def test_missing_binary_fails_with_how_to_install(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COCAINE_ETCD_BINARY", str(tmp_path / "nothing"))
    with pytest.raises(EtcdMissing, match="apt-get install etcd-server"):
        EtcdCluster(tmp_path)
