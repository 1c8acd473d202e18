"""The plugin host: loads plugins from the ``cocaine`` entry-point group, lazily and guarded.

Nothing is loaded at import time. The first call to ``get_host()`` loads the built-in plugin
(``cocaine_core.builtins``) and then every entry point, each under a guard: a plugin that fails
to import, fails pluggy's validation or raises while registering is recorded with its error and
the others keep working, unless ``COCAINE_STRICT_PLUGINS=1``.

Every hook is called through pluggy (``pm.hook.NAME``), so its order (last registered first,
``tryfirst``/``trylast``) and its wrappers hold. Each plugin is registered through a guard
that wraps its hook implementations: the guard credits what each returns to its plugin and,
when one raises, either fails the call with ``PluginError`` naming the plugin or logs it and
lets the others run, all within the one pluggy call.

Environment:

- ``COCAINE_LOAD_PLUGINS``: comma-separated allow-list of entry-point or distribution names;
  set and empty, no entry-point plugin loads (the rescue when one breaks start-up).
- ``COCAINE_DISABLE_PLUGINS``: comma-separated block-list, same names.
- ``COCAINE_STRICT_PLUGINS=1``: any plugin failure raises ``PluginError``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import os
import threading
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pluggy

from cocaine_core import __version__, hookspecs
from cocaine_core.errors import DuplicateNameError, PluginError
from cocaine_core.hookcalls import GuardedPlugin, HookCall, HookRegistrar, current_call
from cocaine_core.hookspecs import Registrar
from cocaine_core.registry import KINDS, SHIPPED, PluginRecord, Registry

__all__ = ["KINDS", "SHIPPED", "BoundRegistry", "PluginHost", "PluginRecord", "Registry",
           "get_host", "reset_host"]

log = logging.getLogger("cocaine.plugins")

ENTRY_POINT_GROUP = "cocaine"
BUILTIN_MODULE = "cocaine_core.builtins"

#: The old name of ``cocaine_core.hookspecs.Registrar``, for plugins that annotate with it.
BoundRegistry = Registrar

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
            plugin = load()
            taken = [name for name, other in self.pm.list_name_plugin()
                     if getattr(other, "cocaine_plugin", None) is plugin]
            if taken:
                raise ValueError(f"{plugin!r} is already registered as plugin '{taken[0]}'")
            guarded = GuardedPlugin(plugin, record, self.pm)
            self.pm.register(guarded, name=record.name)
        except Exception as exc:
            self._fail(record, exc, prefix="failed to load: ")
            return
        unknown = sorted(caller.name for caller in self.pm.get_hookcallers(guarded) or []
                         if caller.spec is None)
        if unknown:
            self.pm.unregister(guarded)
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
        embedding). Its registration hooks run at once, for it alone; failures are recorded
        like any plugin's."""
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
        """Call each registration hook once, through pluggy (on the plugin ``only`` alone, if
        given). What the plugins added is registered after each call in the order the plugins
        loaded, so of two plugins adding one name the first loaded keeps it, whatever order
        pluggy called them in."""
        rank = {record.name: index for index, record in enumerate(self.records)
                if record.loaded}
        for kind, (hook_name, _label) in KINDS.items():
            registry = self.registries[kind]
            call = HookCall(hook_name, functools.partial(self._registration_failed, hook_name))
            registrar = HookRegistrar(registry, call)
            self._call(self._hook_caller(hook_name, only), call, registry=registrar)
            refused: set[str] = set()
            for owner, name, implementation in sorted(registrar.added,
                                                      key=lambda added: rank[added[0].name]):
                if owner.name in refused:
                    continue
                try:
                    registry.add(name, implementation, owner)
                except DuplicateNameError as exc:
                    refused.add(owner.name)  # as if it had raised at once: its next names too
                    self._fail(owner, exc)

    def _registration_failed(self, hook_name: str, record: PluginRecord,
                             exc: Exception) -> None:
        self._fail(record, exc, prefix=f"{hook_name} raised ")

    def _hook_caller(self, hook_name: str, only: str | None = None) -> pluggy.HookCaller:
        """The hook ``hook_name``, on every plugin or on the plugin ``only``."""
        if only is None:
            return getattr(self.pm.hook, hook_name)
        others = [plugin for name, plugin in self.pm.list_name_plugin() if name != only]
        return self.pm.subset_hook_caller(hook_name, remove_plugins=others)

    @staticmethod
    def _call(hook: pluggy.HookCaller, call: HookCall,
              **kwargs: Any) -> list[tuple[PluginRecord, Any]]:
        token = current_call.set(call)
        try:
            hook(**kwargs)
        finally:
            current_call.reset(token)
        return call.results

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
        """Call ``hook_name`` once through pluggy, and return each plugin's result with its
        record, in the order pluggy called them (a wrapper's changes to the result included).

        With ``raise_errors`` the first exception stops the call and is raised as
        ``PluginError`` naming the plugin's distribution and the hook; without it, it is
        logged, the other plugins still run, and it is returned in place of the result.
        """

        def failed(record: PluginRecord, exc: Exception) -> None:
            if raise_errors:
                raise PluginError(f"{record.distribution} ({hook_name}): {exc}") from exc
            log.error("plugin '%s' (%s) raised in %s", record.name, record.distribution,
                      hook_name, exc_info=exc)

        return self._call(self._hook_caller(hook_name), HookCall(hook_name, failed), **kwargs)


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
