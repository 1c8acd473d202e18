"""The built-in plugin: cocaine-core's own types, registered like any third party's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cocaine_core import hookimpl

if TYPE_CHECKING:
    from cocaine_core.hookspecs import Registrar


@hookimpl
def cocaine_register_drivers(registry: Registrar) -> None:
    """Register ``native-server``, ``native-sink``, ``raw-server`` and ``filesystem-monitor``."""
    from cocaine_core.drivers.fs import FilesystemMonitor
    from cocaine_core.drivers.native import NativeServer
    from cocaine_core.drivers.raw import RawServer
    from cocaine_core.drivers.sink import NativeSinkDriver

    registry.add("native-server", NativeServer)
    registry.add("raw-server", RawServer)
    registry.add("native-sink", NativeSinkDriver)
    registry.add("filesystem-monitor", FilesystemMonitor)


@hookimpl
def cocaine_register_slave_backends(registry: Registrar) -> None:
    """Register the ``process`` backend (a template per app; for ``exec`` apps, each slave
    started directly)."""
    from cocaine_core.backends.exec_backend import process_backend

    registry.add("process", process_backend)


@hookimpl
def cocaine_register_languages(registry: Registrar) -> None:
    """Register ``exec``: programs in any language that speak the protocol themselves."""
    from cocaine_core.exec_language import ExecLanguage

    registry.add("exec", ExecLanguage())


@hookimpl
def cocaine_register_storages(registry: Registrar) -> None:
    """Register the ``files`` storage."""
    from cocaine_core.storages.files import FileStorage

    registry.add("files", FileStorage)


@hookimpl
def cocaine_register_discoveries(registry: Registrar) -> None:
    """Register the ``mdns`` (multicast DNS on the LAN) and ``static`` (``--peer``)
    discoveries."""
    from cocaine_core.cluster.static import StaticDiscovery

    registry.add("mdns", _mdns)  # zeroconf is imported only by a node that uses it
    registry.add("static", StaticDiscovery)


def _mdns(node: Any) -> Any:
    """The ``mdns`` discovery of ``node``."""
    from cocaine_core.cluster.mdns import MdnsDiscovery

    return MdnsDiscovery(node)
