"""The plugin host: loads plugins from the ``cocaine`` entry-point group, lazily and guarded.

Nothing is loaded at import time. The first call to ``get_host()`` loads the built-in plugin
(``cocaine_core.builtins``) and then every entry point, each under a guard: a plugin that fails
to import, fails pluggy's validation or raises while registering is recorded with its error and
the others keep working, unless ``COCAINE_STRICT_PLUGINS=1``.

Environment:

- ``COCAINE_LOAD_PLUGINS``: comma-separated allow-list of entry-point or distribution names;
  set and empty, no entry-point plugin loads (the rescue when one breaks start-up).
- ``COCAINE_DISABLE_PLUGINS``: comma-separated block-list, same names.
- ``COCAINE_STRICT_PLUGINS=1``: any plugin failure raises ``PluginError``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import threading
import traceback
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import attrs
import pluggy

from cocaine_core import __version__, hookspecs
from cocaine_core.errors import DuplicateNameError, PluginError, UnknownTypeError, join_names

log = logging.getLogger("cocaine.plugins")

ENTRY_POINT_GROUP = "cocaine"
BUILTIN_MODULE = "cocaine_core.builtins"

#: The registries, by kind: the hook that fills each, and how a name of that kind is called.
KINDS: dict[str, tuple[str, str]] = {
    "languages": ("cocaine_register_languages", "language"),
    "drivers": ("cocaine_register_drivers", "driver"),
    "storages": ("cocaine_register_storages", "storage"),
    "slave_backends": ("cocaine_register_slave_backends", "slave backend"),
    "engine_keys": ("cocaine_register_engine_keys", "engine key"),
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
    },
    "storages": {"files": "cocaine-core"},
    "slave_backends": {"process": "cocaine-core"},
    "engine_keys": {"resource-limits": "cocaine-cgroups"},
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

    Plugins receive a view bound to themselves (``BoundRegistry``) whose ``add(name, impl)``
    records who registered what.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.label = KINDS[kind][1]
        self._entries: dict[str, tuple[Any, PluginRecord]] = {}

    def add(self, name: str, implementation: Any, owner: PluginRecord) -> None:
        """Register ``name``; a name already taken raises ``DuplicateNameError``."""
        if not isinstance(name, str) or not name:
            raise PluginError(f"{owner.distribution}: a {self.label} name must be a non-empty "
                              f"string, got {name!r}")
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
        installed = f"installed {self.label}s: {join_names(self.names())}"
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


@attrs.frozen
class BoundRegistry:
    """The registry handed to one plugin's registration hook: ``add`` records the owner."""

    _registry: Registry
    _owner: PluginRecord

    def add(self, name: str, implementation: Any) -> None:
        """Register ``implementation`` under ``name``."""
        self._registry.add(name, implementation, self._owner)


def _env_names(variable: str) -> set[str] | None:
    raw = os.environ.get(variable)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _strict() -> bool:
    return os.environ.get("COCAINE_STRICT_PLUGINS", "") not in ("", "0", "false", "no")


class PluginHost:
    """The loaded plugins, their registries, and calls into their hooks."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("cocaine")
        self.pm.add_hookspecs(hookspecs)
        self.records: list[PluginRecord] = []
        self.registries = {kind: Registry(kind) for kind in KINDS}
        self._by_name: dict[str, PluginRecord] = {}

    # -- loading ------------------------------------------------------------------------------

    def load(self) -> PluginHost:
        """Load the built-in plugin and every allowed entry point, then run registration."""
        builtin = PluginRecord("core", "cocaine-core", __version__, BUILTIN_MODULE)
        self._register(builtin, lambda: importlib.import_module(BUILTIN_MODULE))
        allow = _env_names("COCAINE_LOAD_PLUGINS")
        deny = _env_names("COCAINE_DISABLE_PLUGINS") or set()
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                         key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            names = {ep.name, dist}
            if (allow is not None and not names & allow) or names & deny:
                continue
            if ep.name in self._by_name:
                record = PluginRecord(ep.name, dist, version, ep.value)
                self._fail(record, PluginError(
                    f"plugin name '{ep.name}' of {dist} is already taken by "
                    f"{self._by_name[ep.name].distribution}; one of them must be renamed"))
                self.records.append(record)
                continue
            self._register(PluginRecord(ep.name, dist, version, ep.value), ep.load)
        self._run_registration()
        return self

    def _register(self, record: PluginRecord, load: Callable[[], ModuleType]) -> None:
        self.records.append(record)
        try:
            module = load()
            self.pm.register(module, name=record.name)
        except Exception as exc:
            self._fail(record, exc, prefix="failed to load: ")
            return
        unknown = sorted(caller.name for caller in self.pm.get_hookcallers(module) or []
                         if caller.spec is None)
        if unknown:
            self.pm.unregister(module)
            self._fail(record, PluginError(
                f"{', '.join(unknown)} {'is not a hook' if len(unknown) == 1 else 'are not hooks'}"
                f" of cocaine (misspelt?); the hooks are listed in docs/hooks.md"))
            return
        record.loaded = True
        self._by_name[record.name] = record

    def _fail(self, record: PluginRecord, exc: BaseException, prefix: str = "") -> None:
        message = f"{prefix}{type(exc).__name__}: {exc}" if prefix else str(exc)
        record.errors.append(message)
        record.traceback = "".join(traceback.format_exception(exc))
        log.error("plugin '%s' (%s): %s", record.name, record.distribution, message)
        if _strict():
            raise PluginError(
                f"plugin '{record.name}' ({record.distribution}): {message} "
                f"(COCAINE_STRICT_PLUGINS is set, so this is fatal)"
            ) from exc

    def register_inline(self, plugin: Any, name: str,
                        distribution: str = "(inline)") -> PluginRecord:
        """Register an object or module as a plugin now, as if it had been installed (tests,
        embedding). Its registration hooks run at once; failures are recorded like any
        plugin's."""
        record = PluginRecord(name, distribution, "0", getattr(plugin, "__name__", repr(plugin)))
        self._register(record, lambda: plugin)
        if record.loaded:
            self._run_registration(only=name)
        return record

    def unregister_inline(self, name: str) -> None:
        """Remove a plugin added with ``register_inline`` and every name it registered."""
        record = self._by_name.pop(name, None)
        if record is None:
            return
        self.pm.unregister(name=name)
        self.records.remove(record)
        for kind, names in record.types.items():
            for type_name in names:
                self.registries[kind].discard(type_name)

    def _run_registration(self, only: str | None = None) -> None:
        for kind, (hook_name, _label) in KINDS.items():
            registry = self.registries[kind]
            for impl in self._impls(hook_name):
                if only is not None and impl.plugin_name != only:
                    continue
                record = self._by_name[impl.plugin_name]
                try:
                    impl.function(registry=BoundRegistry(registry, record))
                except Exception as exc:
                    self._fail(record, exc, prefix=f"{hook_name} raised " if not isinstance(
                        exc, DuplicateNameError) else "")

    def _impls(self, hook_name: str) -> list[pluggy.HookImpl]:
        # In registration order: the built-in plugin first, then entry points by name.
        return list(getattr(self.pm.hook, hook_name).get_hookimpls())

    # -- lookups --------------------------------------------------------------------------------

    def registry(self, kind: str) -> Registry:
        """The registry of ``kind`` (``drivers``, ``languages``, ``storages``…)."""
        return self.registries[kind]

    def record(self, plugin_name: str) -> PluginRecord | None:
        """The record of a loaded plugin by its entry-point name."""
        return self._by_name.get(plugin_name)

    # -- calling hooks ----------------------------------------------------------------------------

    def call_each(self, hook_name: str, *, raise_errors: bool = False,
                  **kwargs: Any) -> list[tuple[PluginRecord, Any]]:
        """Call ``hook_name`` on every plugin, one at a time, and return their results.

        With ``raise_errors`` an exception is raised as ``PluginError`` naming the plugin;
        without it, it is logged and returned in place of the result.
        """
        results: list[tuple[PluginRecord, Any]] = []
        for impl in self._impls(hook_name):
            record = self._by_name[impl.plugin_name]
            args = {name: kwargs[name] for name in impl.argnames if name in kwargs}
            try:
                results.append((record, impl.function(**args)))
            except Exception as exc:
                if raise_errors:
                    raise PluginError(f"{record.distribution} ({hook_name}): {exc}") from exc
                log.exception("plugin '%s' (%s) raised in %s", record.name,
                              record.distribution, hook_name)
                results.append((record, exc))
        return results


_host: PluginHost | None = None
_lock = threading.Lock()


def get_host() -> PluginHost:
    """The process's plugin host, loaded on first use."""
    global _host
    with _lock:
        if _host is None:
            _host = PluginHost().load()
        return _host


def reset_host() -> None:
    """Forget the loaded plugins, so the next ``get_host()`` loads them again (tests, reload)."""
    global _host
    with _lock:
        _host = None
