"""etcd with authentication: a user from the URI, the password from the environment."""

from __future__ import annotations

import subprocess

import pytest
from cocaine_etcd.storage import EtcdStorage
from cocaine_etcd.testing import EtcdCluster
from cocaine_etcd.uri import PASSWORD_ENV

from cocaine_core.errors import StorageError
from cocaine_core.storages import Change

from .conftest import wait_until


def _etcdctl(cluster: EtcdCluster, *args: str) -> None:
    subprocess.run(["etcdctl", "--endpoints", cluster.endpoints[0], "--user", "root:rootpw",
                    *args], check=True, capture_output=True, timeout=20)


def test_a_user_with_a_password_from_the_environment(etcd: EtcdCluster,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = etcd.endpoints[0]
    subprocess.run(["etcdctl", "--endpoints", endpoint, "user", "add", "root:rootpw"],
                   check=True, capture_output=True, timeout=20)
    _etcdctl(etcd, "user", "add", "cocaine:s3cret")
    _etcdctl(etcd, "role", "add", "apps")
    _etcdctl(etcd, "role", "grant-permission", "apps", "--prefix=true", "readwrite", "/t/")
    _etcdctl(etcd, "user", "grant-role", "cocaine", "apps")
    _etcdctl(etcd, "auth", "enable")

    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    store = EtcdStorage(f"etcd://cocaine@{endpoint}/t")
    seen: list[Change] = []
    stop = store.watch(["code"], seen.append)
    try:
        wait_until(lambda: seen == [None], 5, "the watch started")
        store.put("code", "a@1", b"code" * 300_000)
        wait_until(lambda: seen == [None, ("code", "a@1")], 5, "the watch saw the put")
        assert store.get("code", "a@1") == b"code" * 300_000
        assert store.keys("code") == ["a@1"]
    finally:
        stop()
        store.close()

    outside = EtcdStorage(f"etcd://cocaine@{endpoint}/other")
    try:
        with pytest.raises(StorageError, match="permission denied; grant the user"):
            outside.put("apps", "a", b"1")
    finally:
        outside.close()

    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    wrong = EtcdStorage(f"etcd://cocaine@{endpoint}/t")
    try:
        with pytest.raises(StorageError, match=f"authentication failed.*{PASSWORD_ENV}"):
            wrong.get("apps", "a")
    finally:
        wrong.close()

    anonymous = EtcdStorage(f"etcd://{endpoint}/t")
    try:
        with pytest.raises(StorageError, match="refused to read apps/a") as info:
            anonymous.get("apps", "a")
        print(info.value)
    finally:
        anonymous.close()
