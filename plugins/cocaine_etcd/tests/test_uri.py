"""Parsing of etcd storage URIs: what is accepted, and a clear error for what is not."""

from __future__ import annotations

import pytest
from cocaine_etcd.uri import PASSWORD_ENV, parse_uri

from cocaine_core.errors import StorageError


def test_endpoints_prefix_and_default_port() -> None:
    parsed = parse_uri("etcd://10.0.0.1:2379,etcd-b,etcd-c.lan:12379/apps/prod/", environ={})
    assert parsed.endpoints == (("10.0.0.1", 2379), ("etcd-b", 2379), ("etcd-c.lan", 12379))
    assert parsed.prefix == "/apps/prod"
    assert parsed.username is None and parsed.password is None


def test_user_takes_the_password_from_the_environment() -> None:
    parsed = parse_uri("etcd://cocaine@h:1/p", environ={PASSWORD_ENV: "s3cret"})
    assert (parsed.username, parsed.password) == ("cocaine", "s3cret")
    assert "s3cret" not in repr(parsed)
    with pytest.raises(StorageError, match=PASSWORD_ENV):
        parse_uri("etcd://cocaine@h:1/p", environ={})


@pytest.mark.parametrize(("uri", "message"), [
    ("files:///x", "does not start with etcd://"),
    ("etcd:///p", "names no host"),
    ("etcd://h:0/p", "not a number from 1 to 65535"),
    ("etcd://h:65536/p", "not a number from 1 to 65535"),
    ("etcd://h:x/p", "not a number from 1 to 65535"),
    ("etcd://:2379/p", "has no host"),
    ("etcd://h,,k/p", "has no host"),
    ("etcd://h:1", "names no prefix"),
    ("etcd://h:1/", "names no prefix"),
    ("etcd://h:1/a//b", "prefix segment ''"),
    ("etcd://h:1/a b", "prefix segment 'a b'"),
    ("etcd://h:1/a/../b", "prefix segment '..'"),
    ("etcd://h:1/p?tls=1", "query strings"),
    ("etcd://u:pw@h:1/p", "does not go in the URI"),
    ("etcd://h_x:1/p", "not a host name"),
    ("etcd://h:1,h:1/p", "endpoint twice"),
    ("etcd://" + ",".join(f"h{i}" for i in range(17)) + "/p", "17 endpoints, over 16"),
    ("etcd://h/" + "a" * 200, "over 128"),
])
def test_bad_uris_say_what_is_wrong(uri: str, message: str) -> None:
    with pytest.raises(StorageError, match="bad etcd storage URI") as info:
        parse_uri(uri, environ={})
    assert message in str(info.value)
    assert "e.g. etcd://" in str(info.value)
