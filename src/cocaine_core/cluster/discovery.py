"""Discovery: how a node makes itself known to the other nodes and learns of them.

A discovery is registered by name in ``cocaine_register_discoveries`` and picked with
``cocaine node --discovery NAME``. The node calls ``start`` once it listens, with its own
record, reads ``peers()`` whenever it needs the current view, and calls ``stop`` as it
leaves. A discovery never raises from ``peers``; one that loses its medium (an etcd outage)
keeps the last view it had and says so in ``info``.
"""

from __future__ import annotations

import json
import math
import re
import socket
import time
import uuid
from typing import Any, Protocol

import attrs

from cocaine_core.errors import NodeError

#: The most bytes a node record may take once encoded (it is read from the network).
MAX_RECORD = 16 * 1024


@attrs.frozen
class NodeRecord:
    """What a node says of itself: a unique id, its name, its endpoint and when it started;
    in a cluster (``--cluster NAME``) also the cluster's name and its ``link``: the endpoint
    its peers connect to (``--cluster-listen``; CurveZMQ with the cluster's key)."""

    id: str
    name: str
    endpoint: str
    started: float
    version: str = ""
    cluster: str = ""
    link: str = ""

    @classmethod
    def new(cls, name: str, endpoint: str, version: str = "", *, cluster: str = "",
            link: str = "") -> NodeRecord:
        """A record with a fresh id (unique across restarts and hosts of the same name)."""
        return cls(id=uuid.uuid4().hex[:16], name=name, endpoint=endpoint,
                   started=round(time.time(), 3), version=version, cluster=cluster, link=link)

    def to_json(self) -> bytes:
        """The record as published."""
        return json.dumps(attrs.asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> NodeRecord:
        """Read a published record; NodeError if it is not one."""
        if len(data) > MAX_RECORD:
            raise NodeError(f"a node record of {len(data)} bytes is over {MAX_RECORD}")
        try:
            fields = json.loads(data)
        except (ValueError, TypeError, RecursionError) as exc:
            raise NodeError(f"not a node record: {type(exc).__name__}") from None
        return cls.from_map(fields)

    @classmethod
    def from_map(cls, fields: Any) -> NodeRecord:
        """A record from its fields (read from the network); NodeError if it is not one."""
        try:
            if not isinstance(fields, dict):
                raise ValueError("not a map")
            record = cls(id=fields["id"], name=fields["name"], endpoint=fields["endpoint"],
                         started=fields["started"], version=fields.get("version", ""),
                         cluster=fields.get("cluster", ""), link=fields.get("link", ""))
        except (ValueError, TypeError, KeyError) as exc:
            raise NodeError(f"not a node record: {type(exc).__name__}") from None
        problem = _record_problem(record)
        if problem:
            raise NodeError(f"not a node record: {problem}")
        return record


#: What a node's id, name and endpoint may be in a record read from the network.
NODE_ID = re.compile(r"[0-9a-f]{8,64}")
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")
#: What a cluster may be called (``--cluster NAME``): a DNS label, so mDNS can carry it.
CLUSTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
ENDPOINT = re.compile(r"tcp://(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9][A-Za-z0-9_.-]{0,252}):"
                      r"[0-9]{1,5}")


def _record_problem(record: NodeRecord) -> str | None:
    """What makes ``record`` one no node could have published, if anything."""
    if not isinstance(record.id, str) or not NODE_ID.fullmatch(record.id):
        return "its id is not 8 to 64 hex digits"
    if not isinstance(record.name, str) or not NODE_NAME.fullmatch(record.name):
        return "its name is not a host name"
    if not isinstance(record.endpoint, str) or not _is_endpoint(record.endpoint):
        return "its endpoint is not tcp://HOST:PORT"
    if isinstance(record.started, bool) or not isinstance(record.started, int | float) or \
            not math.isfinite(record.started):
        return "its start time is not a time"
    if not isinstance(record.version, str) or len(record.version) > 64:
        return "its version is not a short text"
    if not isinstance(record.cluster, str) or (record.cluster and \
            not CLUSTER_NAME.fullmatch(record.cluster)):
        return "its cluster is not a cluster name"
    if not isinstance(record.link, str) or (record.link and not _is_endpoint(record.link)):
        return "its link is not tcp://HOST:PORT"
    return None


def _is_endpoint(endpoint: str) -> bool:
    return bool(ENDPOINT.fullmatch(endpoint)) and 0 < int(endpoint.rsplit(":", 1)[1]) < 65536


class Discovery(Protocol):
    """One way for a node to find its peers (see the module's docstring)."""

    async def start(self, me: NodeRecord) -> None:
        """Make this node known (it now listens at ``me.endpoint``) and begin following the
        others; raise ``NodeError`` if the node cannot join at all."""
        ...

    def peers(self) -> dict[str, NodeRecord]:
        """The other nodes known now, by id (never this node)."""
        ...

    def info(self) -> dict[str, Any]:
        """What ``cocaine info`` shows of the discovery: its name, state and peers."""
        ...

    async def stop(self) -> None:
        """Leave: others stop seeing this node at once where the medium allows."""
        ...


def advertised(listen: str) -> str:
    """The endpoint other nodes reach this one at: ``listen``, with a wildcard host
    (``*``, ``0.0.0.0``, ``::``) replaced by this host's address: its first interface's
    non-loopback IPv4 address, else what its host name resolves to."""
    scheme, sep, rest = listen.partition("://")
    host, colon, port = rest.rpartition(":")
    if scheme != "tcp" or not sep or host not in ("*", "0.0.0.0", "[::]", "::"):
        return listen
    address = _lan_address()
    if address is None:
        try:
            address = socket.gethostbyname(socket.gethostname())
        except OSError:
            address = "127.0.0.1"
    return f"tcp://{address}{colon}{port}"


def _lan_address() -> str | None:
    """The first non-loopback IPv4 address of this host's interfaces, if any."""
    try:
        import ifaddr
    except ImportError:
        return None
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                return ip.ip
    return None


def open_discovery(name: str, node: Any) -> Discovery:
    """The discovery ``name`` for ``node`` (the plugin that registered it builds it)."""
    from cocaine_core.plugins import get_host

    factory = get_host().registry("discoveries").get(name, where=f"--discovery {name!r}")
    discovery: Discovery = factory(node)
    return discovery
