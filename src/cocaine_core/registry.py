"""What plugins registered: one ``Registry`` per kind of name (drivers, languages…), and a
``PluginRecord`` per plugin saying where it comes from, what it added and what failed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs

from cocaine_core.errors import DuplicateNameError, PluginError, UnknownTypeError, join_names

#: The registries, by kind: the hook that fills each, and how a name of that kind is called.
KINDS: dict[str, tuple[str, str]] = {
    "languages": ("cocaine_register_languages", "language"),
    "drivers": ("cocaine_register_drivers", "driver"),
    "storages": ("cocaine_register_storages", "storage"),
    "slave_backends": ("cocaine_register_slave_backends", "slave backend"),
    "engine_keys": ("cocaine_register_engine_keys", "engine key"),
    "discoveries": ("cocaine_register_discoveries", "discovery"),
    "node_options": ("cocaine_register_node_options", "node option"),
}

#: Names this project ships, by kind, and the distribution that provides each.
SHIPPED: dict[str, dict[str, str]] = {
    "languages": {"python": "cocaine-python"},
    "drivers": {
        "native-server": "cocaine-core",
        "filesystem-monitor": "cocaine-core",
        "recurring-timer": "cocaine-timers",
        "drifting-timer": "cocaine-timers",
        "cron": "cocaine-timers",
        "manual-scheduler": "cocaine-timers",
        "zeromq-server": "cocaine-zmq",
        "zeromq-sink": "cocaine-zmq",
        "zeromq-subscriber": "cocaine-zmq",
        "http-server": "cocaine-http",
    },
    "storages": {"files": "cocaine-core", "etcd": "cocaine-etcd"},
    "slave_backends": {"process": "cocaine-core"},
    "engine_keys": {"resource-limits": "cocaine-cgroups"},
    "discoveries": {"etcd": "cocaine-etcd"},
    "node_options": {"metrics": "cocaine-prometheus"},
}


@attrs.define
class PluginRecord:
    """What the host knows of one plugin: where it comes from, what it added, what failed."""

    name: str
    distribution: str
    version: str
    module: str
    types: dict[str, list[str]] = attrs.field(factory=dict)
    errors: list[str] = attrs.field(factory=list)
    traceback: str | None = None
    loaded: bool = False

    def as_dict(self) -> dict[str, Any]:
        """This record as JSON-able data (for ``cocaine plugins --json``)."""
        return attrs.asdict(self)


class Registry:
    """Names of one kind (drivers, languages…) and their implementations.

    Plugins never see it: their registration hooks receive a ``Registrar``, and the host adds
    what they registered here, recording who registered what.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.label = KINDS[kind][1]
        self._entries: dict[str, tuple[Any, PluginRecord]] = {}

    def check_name(self, name: object, owner: PluginRecord) -> None:
        """Refuse a name that is not a non-empty string with ``PluginError``."""
        if not isinstance(name, str) or not name:
            raise PluginError(f"{owner.distribution}: a {self.label} name must be a non-empty "
                              f"string, got {name!r}")

    def add(self, name: str, implementation: Any, owner: PluginRecord) -> None:
        """Register ``name``; a name already taken raises ``DuplicateNameError``."""
        self.check_name(name, owner)
        if name in self._entries:
            first = self._entries[name][1]
            raise DuplicateNameError(
                f"{self.label} '{name}' is registered by both {first.distribution} "
                f"(plugin '{first.name}') and {owner.distribution} (plugin '{owner.name}'); "
                f"uninstall one, or disable one with COCAINE_DISABLE_PLUGINS={owner.name}"
            )
        self._entries[name] = (implementation, owner)
        owner.types.setdefault(self.kind, []).append(name)

    def get(self, name: str, where: str = "") -> Any:
        """The implementation of ``name``, or ``UnknownTypeError`` saying what to install."""
        entry = self._entries.get(name)
        if entry is not None:
            return entry[0]
        raise UnknownTypeError(self.unknown_message(name, where))

    def unknown_message(self, name: str, where: str = "") -> str:
        """Explain an unknown name: who ships it, or what is installed."""
        prefix = f"{where}: " if where else ""
        provider = SHIPPED.get(self.kind, {}).get(name)
        plural = self.label[:-1] + "ies" if self.label.endswith("y") else self.label + "s"
        installed = f"installed {plural}: {join_names(self.names())}"
        if provider:
            return (f"{prefix}{self.label} '{name}' is provided by {provider}, which is not "
                    f"installed or failed to load (see 'cocaine plugins'); "
                    f"pip install {provider}. {installed}")
        return f"{prefix}unknown {self.label} '{name}'; {installed}"

    def discard(self, name: str) -> None:
        """Forget ``name`` (when its plugin is unregistered)."""
        self._entries.pop(name, None)

    def owner(self, name: str) -> PluginRecord | None:
        """The plugin that registered ``name``, if any."""
        entry = self._entries.get(name)
        return entry[1] if entry else None

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(name, implementation)`` pairs, sorted by name."""
        for name in self.names():
            yield name, self._entries[name][0]

    def __contains__(self, name: object) -> bool:
        return name in self._entries
