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

import contextvars
import functools
import importlib
import importlib.metadata
import inspect
import logging
import os
import threading
import traceback
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import attrs
import pluggy

from cocaine_core import __version__, hookspecs
from cocaine_core.errors import DuplicateNameError, PluginError, UnknownTypeError, join_names
from cocaine_core.hookspecs import Registrar

log = logging.getLogger("cocaine.plugins")

ENTRY_POINT_GROUP = "cocaine"
BUILTIN_MODULE = "cocaine_core.builtins"

#: The old name of ``cocaine_core.hookspecs.Registrar``, for plugins that annotate with it.
BoundRegistry = Registrar

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


# -- one hook call, and the guards that report to it --------------------------------------------


@attrs.define(eq=False)
class _HookCall:
    """One call of a hook through pluggy: what each plugin returned, and who is running."""

    hook_name: str
    #: Called with a failing plugin and its exception: raises to fail the call, or returns so
    #: the other plugins still run.
    on_error: Callable[[PluginRecord, Exception], None]
    results: list[tuple[PluginRecord, Any]] = attrs.field(factory=list)
    #: The plugin whose hook code runs now: registration credits names to it.
    running: PluginRecord | None = None

    @contextmanager
    def running_as(self, record: PluginRecord) -> Iterator[None]:
        """Mark ``record``'s plugin as the one running, for the ``with`` block."""
        outer, self.running = self.running, record
        try:
            yield
        finally:
            self.running = outer

    def failed(self, record: PluginRecord, exc: Exception) -> None:
        """``record``'s plugin raised: its result is the exception; then ``on_error``."""
        self.results.append((record, exc))
        self.on_error(record, exc)

    def replaced(self, record: PluginRecord, before: list[Any], after: list[Any]) -> None:
        """A wrapper of ``record`` changed the hook's results from ``before`` to ``after``: the
        results it dropped are dropped, the ones it added are credited to it."""
        added = list(after)
        passed = {id(value) for value in before}
        kept = []
        for owner, value in self.results:
            if id(value) in passed:
                index = next((i for i, new in enumerate(added) if new is value), None)
                if index is None:
                    continue
                del added[index]
            kept.append((owner, value))
        self.results = kept + [(record, value) for value in added]


def _as_list(result: Any) -> list[Any]:
    return list(result) if isinstance(result, list) else [] if result is None else [result]


_current_call: contextvars.ContextVar[_HookCall | None] = contextvars.ContextVar(
    "cocaine_hook_call", default=None)


def _guard(record: PluginRecord, hook_name: str,
           function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, a hook implementation of ``record``'s plugin, reporting to the call."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        call = _current_call.get()
        if call is None or call.hook_name != hook_name:  # called through pluggy directly
            return function(*args, **kwargs)
        try:
            with call.running_as(record):
                result = function(*args, **kwargs)
        except Exception as exc:
            call.failed(record, exc)
            return None
        call.results.append((record, result))
        return result

    return guarded


def _guard_wrapper(record: PluginRecord, hook_name: str, function: Callable[..., Any],
                   old_style: bool) -> Callable[..., Generator[None, Any, Any]]:
    """``function``, a wrapper (``wrapper=True``, or ``hookwrapper=True`` when ``old_style``)
    of ``record``'s plugin, reporting to the call. A wrapper that fails takes no part: the
    result passes through it unchanged."""

    def outcome(sent: Any) -> list[Any]:
        if not old_style:
            return _as_list(sent)
        try:
            return _as_list(sent.get_result())  # a pluggy Result
        except BaseException:
            return []

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Generator[None, Any, Any]:
        teardown = function(*args, **kwargs)
        call = _current_call.get()
        if call is None or call.hook_name != hook_name:  # called through pluggy directly
            return (yield from teardown)
        try:
            with call.running_as(record):
                next(teardown)
        except Exception as exc:
            if isinstance(exc, StopIteration):
                exc = RuntimeError(f"the wrapper {function.__qualname__} did not yield")
            call.failed(record, exc)
            return (yield)  # the result passes through
        try:
            sent = yield
        except BaseException as thrown:  # an inner implementation failed: let it see that
            try:
                with call.running_as(record):
                    teardown.throw(thrown)
            except StopIteration as stop:
                return stop.value
            except Exception as exc:
                if exc is thrown:
                    raise
                call.failed(record, exc)
            raise
        before = outcome(sent)
        try:
            with call.running_as(record):
                teardown.send(sent)
        except StopIteration as stop:
            after = outcome(sent if old_style else stop.value)
            if len(after) != len(before) or any(
                    a is not b for a, b in zip(after, before, strict=True)):
                call.replaced(record, before, after)
            return stop.value
        except Exception as exc:
            call.failed(record, exc)
            return sent
        teardown.close()
        call.failed(record, RuntimeError(f"the wrapper {function.__qualname__} yielded twice"))
        return sent

    return guarded


class _GuardedPlugin:
    """A plugin as pluggy sees it: the same hook implementations, each in a guard."""

    def __init__(self, plugin: Any, record: PluginRecord, pm: pluggy.PluginManager) -> None:
        self.cocaine_plugin = plugin
        self.cocaine_record = record
        marker = f"{pm.project_name}_impl"
        for attr in dir(plugin):
            opts = pm.parse_hookimpl_opts(plugin, attr)
            if opts is None:
                continue
            function = getattr(plugin, attr)
            hook_name = opts.get("specname") or attr
            wrapper = opts.get("wrapper") or opts.get("hookwrapper")
            if wrapper and not inspect.isgeneratorfunction(function):
                setattr(self, attr, function)  # pluggy refuses it, with its own message
                continue
            if wrapper:
                guarded = _guard_wrapper(record, hook_name, function,
                                         old_style=bool(opts.get("hookwrapper")))
            else:
                guarded = _guard(record, hook_name, function)
            setattr(guarded, marker, opts)
            setattr(self, attr, guarded)

    def __repr__(self) -> str:
        return f"<plugin {self.cocaine_record.name!r}: {self.cocaine_plugin!r}>"


class _HookRegistrar:
    """The ``Registrar`` a registration hook receives: notes each name with the plugin adding
    it; the host registers them all once the hook has run."""

    def __init__(self, registry: Registry, call: _HookCall) -> None:
        self._registry = registry
        self._call = call
        self.added: list[tuple[PluginRecord, str, Any]] = []

    def add(self, name: str, implementation: Any) -> None:
        """Register ``implementation`` under ``name``, for the plugin whose hook is running."""
        owner = self._call.running
        if owner is None:
            raise PluginError(f"{self._registry.label} '{name}' was added after "
                              f"{self._call.hook_name} returned; call registry.add() while "
                              f"the hook runs")
        self._registry.check_name(name, owner)
        self.added.append((owner, name, implementation))


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
            guarded = _GuardedPlugin(plugin, record, self.pm)
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
            call = _HookCall(hook_name, functools.partial(self._registration_failed, hook_name))
            registrar = _HookRegistrar(registry, call)
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
            return getattr(self.pm.hook, hook_name)  # type: ignore[no-any-return]
        others = [plugin for name, plugin in self.pm.list_name_plugin() if name != only]
        return self.pm.subset_hook_caller(hook_name, remove_plugins=others)

    @staticmethod
    def _call(hook: pluggy.HookCaller, call: _HookCall,
              **kwargs: Any) -> list[tuple[PluginRecord, Any]]:
        token = _current_call.set(call)
        try:
            hook(**kwargs)
        finally:
            _current_call.reset(token)
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

        return self._call(self._hook_caller(hook_name), _HookCall(hook_name, failed), **kwargs)


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
