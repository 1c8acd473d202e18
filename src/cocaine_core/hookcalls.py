"""One call of a hook through pluggy, and the guards that report to it.

Each plugin is registered with pluggy as a ``GuardedPlugin``: the same hook implementations,
each wrapped in a guard. A guard credits what its implementation returns to its plugin, in
the ``HookCall`` under way, and, when it raises, hands the exception to the call, which either
fails the whole call or logs it and lets the other plugins run: all within one pluggy call,
so pluggy's order (``tryfirst``, ``trylast``) and wrappers hold.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import pluggy

from cocaine_core.errors import PluginError
from cocaine_core.registry import PluginRecord, Registry


@attrs.define(eq=False)
class HookCall:
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


current_call: contextvars.ContextVar[HookCall | None] = contextvars.ContextVar(
    "cocaine_hook_call", default=None)


def guard(record: PluginRecord, hook_name: str,
           function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, a hook implementation of ``record``'s plugin, reporting to the call."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        call = current_call.get()
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


def guard_wrapper(record: PluginRecord, hook_name: str, function: Callable[..., Any],
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
        call = current_call.get()
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


class GuardedPlugin:
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
                guarded = guard_wrapper(record, hook_name, function,
                                         old_style=bool(opts.get("hookwrapper")))
            else:
                guarded = guard(record, hook_name, function)
            setattr(guarded, marker, opts)
            setattr(self, attr, guarded)

    def __repr__(self) -> str:
        return f"<plugin {self.cocaine_record.name!r}: {self.cocaine_plugin!r}>"


class HookRegistrar:
    """The ``Registrar`` a registration hook receives: notes each name with the plugin adding
    it; the host registers them all once the hook has run."""

    def __init__(self, registry: Registry, call: HookCall) -> None:
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
