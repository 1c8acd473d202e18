"""The etcd storage URI: ``etcd://[USER@]HOST[:PORT][,HOST[:PORT]...]/PREFIX``.

Every member of the etcd cluster may be listed (the storage moves to the next one when one
cannot be reached); the port is 2379 when omitted. ``PREFIX`` is where this cluster's data
lives (several cocaine clusters can share one etcd). A user name makes the storage log in
with etcd's authentication; its password comes from ``$COCAINE_ETCD_PASSWORD``, never from
the URI (which is shown in logs, ``cocaine info`` and process listings).
"""

from __future__ import annotations

import os
import re

import attrs

from cocaine_core.errors import StorageError

DEFAULT_PORT = 2379
#: The most members a URI may list (etcd clusters have 1 to 7; 16 leaves room).
MAX_ENDPOINTS = 16
#: The most characters of a prefix (keys are prefix + namespace + key: well under etcd's
#: 1.5 MiB request limit, but short keys keep every request small).
MAX_PREFIX = 128
PASSWORD_ENV = "COCAINE_ETCD_PASSWORD"

_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]+$")
#: The folders a storage keeps under its prefix: no prefix may continue into one of them.
RESERVED_SEGMENTS = ("apps", "code", "chunks", "keys", "curve", "cluster", "nodes", "nonces")
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                   r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_USER = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_EXAMPLE = "etcd://127.0.0.1:2379/cocaine or etcd://10.0.0.1:2379,10.0.0.2:2379/cocaine"


@attrs.frozen
class EtcdURI:
    """A parsed etcd storage URI."""

    uri: str
    endpoints: tuple[tuple[str, int], ...]
    prefix: str  # "/name" or "/a/b": no trailing slash
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)

    def endpoint_names(self) -> list[str]:
        """Every endpoint as ``host:port``."""
        return [f"{host}:{port}" for host, port in self.endpoints]


def _fail(uri: str, what: str) -> StorageError:
    return StorageError(f"bad etcd storage URI {uri!r}: {what}; e.g. {_EXAMPLE}")


def _endpoint(uri: str, text: str) -> tuple[str, int]:
    if text.startswith("["):
        raise _fail(uri, f"IPv6 addresses ({text!r}) are not supported; use a host name")
    host, colon, port_text = text.partition(":")
    if not host:
        raise _fail(uri, f"endpoint {text!r} has no host")
    if not _HOST.fullmatch(host) or len(host) > 253:
        raise _fail(uri, f"{host!r} is not a host name or IPv4 address")
    if not colon:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise _fail(uri, f"the port of {text!r} is not a number from 1 to 65535")
    return host, int(port_text)


def _prefix(uri: str, path: str) -> str:
    segments = path.strip("/").split("/")
    if path.strip("/") == "":
        raise _fail(uri, "it names no prefix (the path after the hosts, where the data lives)")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise _fail(uri, f"prefix segment {segment!r} is not letters, digits, '_', '.', "
                             "'-' (segments are separated by single '/')")
    for segment in segments[1:]:
        if segment in RESERVED_SEGMENTS:
            raise _fail(uri, f"prefix segment {segment!r} is where a cluster on the shorter "
                             f"prefix keeps its {segment}: a cluster nested there would have "
                             f"its data read and removed by that one; choose another name "
                             f"(names taken below the first segment: "
                             f"{', '.join(RESERVED_SEGMENTS)})")
    prefix = "/" + "/".join(segments)
    if len(prefix) > MAX_PREFIX:
        raise _fail(uri, f"the prefix is {len(prefix)} characters, over {MAX_PREFIX}")
    return prefix


def parse_uri(uri: str, environ: dict[str, str] | None = None) -> EtcdURI:
    """Parse ``uri`` (see the module's docstring); StorageError naming what is wrong."""
    environ = dict(os.environ) if environ is None else environ
    scheme, sep, rest = uri.partition("://")
    if scheme != "etcd" or not sep:
        raise _fail(uri, "it does not start with etcd://")
    if "?" in rest or "#" in rest:
        raise _fail(uri, "query strings and fragments are not supported (TLS is not: "
                         "reach etcd over a private network or a local tunnel)")
    authority, slash, path = rest.partition("/")
    if not slash:
        raise _fail(uri, "it names no prefix (the path after the hosts, where the data lives)")
    username = password = None
    if "@" in authority:
        user, _, authority = authority.rpartition("@")
        if ":" in user:
            raise _fail(uri, f"a password does not go in the URI (it would show in logs and "
                             f"process listings); put it in ${PASSWORD_ENV}")
        if not _USER.fullmatch(user):
            raise _fail(uri, f"user name {user!r} is not 1 to 64 letters, digits, '_.-'")
        password = environ.get(PASSWORD_ENV)
        if not password:
            raise _fail(uri, f"it names user {user!r}, but ${PASSWORD_ENV} (the password) "
                             "is not set")
        username = user
    if not authority:
        raise _fail(uri, "it names no host")
    texts = authority.split(",")
    if len(texts) > MAX_ENDPOINTS:
        raise _fail(uri, f"it lists {len(texts)} endpoints, over {MAX_ENDPOINTS}")
    endpoints = tuple(_endpoint(uri, t) for t in texts)
    if len(set(endpoints)) != len(endpoints):
        raise _fail(uri, "it lists an endpoint twice")
    return EtcdURI(uri=uri, endpoints=endpoints, prefix=_prefix(uri, path),
                   username=username, password=password)
