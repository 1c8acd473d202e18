"""The cocaine-etcd plugin module: registers the ``etcd`` storage and discovery."""

from __future__ import annotations

from typing import Any

from cocaine_core import hookimpl


@hookimpl
def cocaine_register_storages(registry: Any) -> None:
    """Register the ``etcd`` storage (``--storage etcd://HOST:PORT[,HOST:PORT...]/PREFIX``).

    The factories import the etcd client (grpc) only when called: every ``cocaine`` command
    loads this plugin, few of them open an etcd store."""
    registry.add("etcd", etcd_storage)


@hookimpl
def cocaine_register_discoveries(registry: Any) -> None:
    """Register the ``etcd`` discovery (nodes under leases in the node's etcd storage)."""
    registry.add("etcd", etcd_discovery)


def etcd_storage(uri: str) -> Any:
    """The ``EtcdStorage`` at ``uri``."""
    from cocaine_etcd.storage import EtcdStorage

    return EtcdStorage(uri)


def etcd_discovery(node: Any) -> Any:
    """The ``EtcdDiscovery`` of ``node``."""
    from cocaine_etcd.discovery import EtcdDiscovery

    return EtcdDiscovery(node)
