"""The cocaine-etcd plugin module: registers the ``etcd`` storage and discovery."""

from __future__ import annotations

from typing import Any

from cocaine_core import hookimpl


@hookimpl
def cocaine_register_storages(registry: Any) -> None:
    """Register the ``etcd`` storage (``--storage etcd://HOST:PORT[,HOST:PORT...]/PREFIX``)."""
    from cocaine_etcd.storage import EtcdStorage

    registry.add("etcd", EtcdStorage)


@hookimpl
def cocaine_register_discoveries(registry: Any) -> None:
    """Register the ``etcd`` discovery (nodes under leases in the node's etcd storage)."""
    from cocaine_etcd.discovery import EtcdDiscovery

    registry.add("etcd", EtcdDiscovery)
