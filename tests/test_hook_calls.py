"""How the plugin host calls hooks (``cocaine_core/plugins.py``): through pluggy, so its order
(last registered first, ``tryfirst``, ``trylast``) and its wrappers hold; each result credited
to its plugin; a failing plugin logged and skipped, or named in the ``PluginError`` that fails
the call."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from cocaine_core import hookimpl
from cocaine_core.appinfo import AppInfo
from cocaine_core.errors import PluginError
from cocaine_core.hookspecs import Registrar
from cocaine_core.plugins import PluginHost, PluginRecord
from tests.distributions import PLUGIN_VARIABLES, write_plugin

HOOK = "cocaine_app_info"


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> PluginHost:
    """A host of the built-in plugin alone; each test registers its own plugins inline."""
    for variable in PLUGIN_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("COCAINE_LOAD_PLUGINS", "")
    return PluginHost().load()


@pytest.fixture
def app(tmp_path: Path) -> AppInfo:
    """The app every ``cocaine_app_info`` call here describes."""
    return AppInfo(name="described", manifest=None, run_dir=tmp_path)  # type: ignore[arg-type]


def answering(name: str, calls: list[str], raises: bool = False, **options: Any) -> Any:
    """A plugin whose ``cocaine_app_info`` (marked with ``options``) notes ``name`` in
    ``calls`` and answers ``{"from": name}``, or raises when ``raises``."""

    @hookimpl(**options)
    def cocaine_app_info(app: AppInfo) -> dict[str, str]:
        calls.append(name)
        if raises:
            raise RuntimeError(f"{name} has no info today")
        return {"from": name, "app": app.name}

    return types.SimpleNamespace(cocaine_app_info=cocaine_app_info)


def register(host: PluginHost, name: str, plugin: Any) -> PluginRecord:
    """Register ``plugin`` inline as the distribution ``cocaine-<name>``; it must load."""
    record = host.register_inline(plugin, name, f"cocaine-{name}")
    assert record.loaded and not record.errors, record.errors
    return record


def answers(results: list[tuple[PluginRecord, Any]]) -> list[tuple[str, Any]]:
    """``call_each``'s results as (plugin name, ``from`` of the answer, or the exception)."""
    return [(record.name, result["from"] if isinstance(result, dict) else result)
            for record, result in results]


# -- order --------------------------------------------------------------------------------------


def test_plain_implementations_run_last_registered_first(host: PluginHost, app: AppInfo) -> None:
    calls: list[str] = []
    for name in ("one", "two", "three"):
        register(host, name, answering(name, calls))
    results = host.call_each(HOOK, app=app)
    assert calls == ["three", "two", "one"]
    assert answers(results) == [("three", "three"), ("two", "two"), ("one", "one")]


def test_a_tryfirst_implementation_runs_before_plain_ones_registered_before_it(
        host: PluginHost, app: AppInfo) -> None:
    calls: list[str] = []
    register(host, "early", answering("early", calls))
    register(host, "first", answering("first", calls, tryfirst=True))
    register(host, "late", answering("late", calls))
    results = host.call_each(HOOK, app=app)
    assert calls == ["first", "late", "early"]
    assert answers(results) == [("first", "first"), ("late", "late"), ("early", "early")]


def test_a_trylast_implementation_runs_last(host: PluginHost, app: AppInfo) -> None:
    calls: list[str] = []
    register(host, "a", answering("a", calls))
    register(host, "last", answering("last", calls, trylast=True))
    register(host, "b", answering("b", calls))
    host.call_each(HOOK, app=app)
    assert calls == ["b", "a", "last"]


# -- wrappers -----------------------------------------------------------------------------------


def test_a_wrapper_runs_around_the_others_and_sees_their_results(
        host: PluginHost, app: AppInfo) -> None:
    calls: list[str] = []
    seen: list[Any] = []

    @hookimpl(wrapper=True)
    def cocaine_app_info(app: AppInfo) -> Generator[None, Any, Any]:
        calls.append(f"wrapper before, for {app.name}")
        results = yield
        seen.append(list(results))
        calls.append("wrapper after")
        return results

    register(host, "wrapping", types.SimpleNamespace(cocaine_app_info=cocaine_app_info))
    register(host, "a", answering("a", calls))
    register(host, "b", answering("b", calls))
    results = host.call_each(HOOK, app=app)
    assert calls == ["wrapper before, for described", "b", "a", "wrapper after"]
    assert seen == [[{"from": "b", "app": "described"}, {"from": "a", "app": "described"}]]
    assert answers(results) == [("b", "b"), ("a", "a")]


def test_an_old_style_hookwrapper_runs_and_sees_the_outcome(host: PluginHost,
                                                             app: AppInfo) -> None:
    calls: list[str] = []
    seen: list[Any] = []

    @hookimpl(hookwrapper=True)
    def cocaine_app_info(app: AppInfo) -> Generator[None, Any, Any]:
        calls.append("hookwrapper before")
        outcome = yield
        seen.append(outcome.get_result())

    register(host, "a", answering("a", calls))
    register(host, "old", types.SimpleNamespace(cocaine_app_info=cocaine_app_info))
    assert answers(host.call_each(HOOK, app=app)) == [("a", "a")]
    assert calls == ["hookwrapper before", "a"]
    assert seen == [[{"from": "a", "app": "described"}]]


def test_what_a_wrapper_drops_or_adds_is_what_the_core_gets(host: PluginHost,
                                                            app: AppInfo) -> None:
    calls: list[str] = []

    @hookimpl(wrapper=True)
    def cocaine_app_info(app: AppInfo) -> Generator[None, Any, Any]:
        results = yield
        return [r for r in results if r["from"] != "a"] + [{"from": "censor"}]

    register(host, "a", answering("a", calls))
    register(host, "b", answering("b", calls))
    register(host, "censor", types.SimpleNamespace(cocaine_app_info=cocaine_app_info))
    assert answers(host.call_each(HOOK, app=app)) == [("b", "b"), ("censor", "censor")]


def test_an_old_style_hookwrapper_forcing_a_result_is_credited_with_it(
        host: PluginHost, app: AppInfo) -> None:
    @hookimpl(hookwrapper=True)
    def cocaine_app_info(app: AppInfo) -> Generator[None, Any, Any]:
        outcome = yield
        outcome.force_result([*outcome.get_result(), {"from": "forcer"}])

    register(host, "a", answering("a", []))
    register(host, "forcer", types.SimpleNamespace(cocaine_app_info=cocaine_app_info))
    assert answers(host.call_each(HOOK, app=app)) == [("a", "a"), ("forcer", "forcer")]


# -- a plugin that raises -----------------------------------------------------------------------


def test_a_plugin_raising_is_logged_once_by_name_and_the_others_still_answer(
        host: PluginHost, app: AppInfo, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    seen: list[Any] = []

    @hookimpl(wrapper=True)
    def cocaine_app_info(app: AppInfo) -> Generator[None, Any, Any]:
        results = yield
        seen.append([r["from"] for r in results])
        return results

    register(host, "watch", types.SimpleNamespace(cocaine_app_info=cocaine_app_info))
    register(host, "a", answering("a", calls))
    register(host, "grumpy", answering("grumpy", calls, raises=True, tryfirst=True))
    register(host, "b", answering("b", calls))
    with caplog.at_level(logging.ERROR, logger="cocaine.plugins"):
        results = host.call_each(HOOK, app=app)
    assert calls == ["grumpy", "b", "a"]
    assert [name for name, _ in answers(results)] == ["grumpy", "b", "a"]
    failure = results[0][1]
    assert isinstance(failure, RuntimeError) and str(failure) == "grumpy has no info today"
    assert seen == [["b", "a"]], "the wrapper sees the answers, not the failure"
    logged = [r for r in caplog.records if r.name == "cocaine.plugins"]
    assert [r.getMessage() for r in logged] == [
        "plugin 'grumpy' (cocaine-grumpy) raised in cocaine_app_info"]
    assert logged[0].exc_info is not None and logged[0].exc_info[1] is failure


def test_in_raise_mode_the_first_failure_stops_the_call_naming_the_distribution(
        host: PluginHost, app: AppInfo) -> None:
    calls: list[str] = []
    thrown: list[BaseException] = []

    @hookimpl(wrapper=True)
    def cocaine_app_info(app: AppInfo) -> Generator[None, Any, Any]:
        try:
            return (yield)
        except Exception as exc:
            thrown.append(exc)
            raise

    register(host, "watch", types.SimpleNamespace(cocaine_app_info=cocaine_app_info))
    register(host, "patient", answering("patient", calls))
    register(host, "grumpy", answering("grumpy", calls, raises=True))
    with pytest.raises(PluginError) as caught:
        host.call_each(HOOK, raise_errors=True, app=app)
    assert str(caught.value) == "cocaine-grumpy (cocaine_app_info): grumpy has no info today"
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert calls == ["grumpy"], "pluggy calls the last registered first, and stops there"
    assert thrown == [caught.value], "the wrapper sees the failure, as pluggy documents"


#: What a failing wrapper's failure says, by where it fails.
WRAPPER_FAILURES = {
    "before": "broken before",
    "after": "broken after",
    "never": "the wrapper failing_wrapper.<locals>.cocaine_app_info did not yield",
}


def failing_wrapper(where: str) -> Any:
    """A plugin whose ``cocaine_app_info`` wrapper raises before or after it yields, or
    returns without yielding (``never``)."""

    @hookimpl(wrapper=True)
    def cocaine_app_info(app: AppInfo) -> Generator[None, Any, Any]:
        if where == "before":
            raise RuntimeError("broken before")
        if where == "never":
            return None
        yield
        raise RuntimeError("broken after")

    return types.SimpleNamespace(cocaine_app_info=cocaine_app_info)


@pytest.mark.parametrize("where", sorted(WRAPPER_FAILURES))
def test_a_failing_wrapper_is_isolated_like_any_plugin(
        host: PluginHost, app: AppInfo, caplog: pytest.LogCaptureFixture, where: str) -> None:
    register(host, "a", answering("a", []))
    register(host, "broken", failing_wrapper(where))
    with caplog.at_level(logging.ERROR, logger="cocaine.plugins"):
        results = host.call_each(HOOK, app=app)
    failure = ("broken", WRAPPER_FAILURES[where])
    # In the order it happened: a wrapper's set-up runs before the plain implementations.
    assert [(record.name, str(result) if isinstance(result, Exception) else result["from"])
            for record, result in results] == (
        [("a", "a"), failure] if where == "after" else [failure, ("a", "a")])
    assert "plugin 'broken' (cocaine-broken) raised in cocaine_app_info" in caplog.text
    with pytest.raises(PluginError) as caught:
        host.call_each(HOOK, raise_errors=True, app=app)
    assert str(caught.value) == f"cocaine-broken (cocaine_app_info): {WRAPPER_FAILURES[where]}"


def test_a_hook_called_through_pluggy_directly_behaves_as_pluggy_documents(
        host: PluginHost, app: AppInfo) -> None:
    register(host, "a", answering("a", []))
    register(host, "grumpy", answering("grumpy", [], raises=True))
    with pytest.raises(RuntimeError, match="grumpy has no info today"):
        host.pm.hook.cocaine_app_info(app=app)
    assert [p for _, p in host.pm.list_name_plugin()], "the plugins are registered with pluggy"


# -- registration through pluggy ----------------------------------------------------------------


def test_each_registration_hook_is_one_pluggy_call_crediting_each_name(
        host: PluginHost) -> None:
    calls: list[str] = []

    class Registering:
        """Registers from a wrapper (before and after the others) and from a tryfirst hook."""

        @hookimpl(wrapper=True)
        def cocaine_register_drivers(self, registry: Registrar) -> Generator[None, Any, Any]:
            calls.append("wrapper")
            registry.add("before-the-others", object)
            result = yield
            registry.add("after-the-others", object)
            return result

        @hookimpl(tryfirst=True)
        def cocaine_register_storages(self, registry: Registrar) -> None:
            assert isinstance(registry, Registrar)
            calls.append("storages")
            registry.add("memory", dict)

    record = register(host, "registering", Registering())
    assert calls == ["wrapper", "storages"]
    assert record.types == {"drivers": ["before-the-others", "after-the-others"],
                            "storages": ["memory"]}
    assert host.registry("drivers").owner("after-the-others") is record
    assert host.registry("storages").get("memory") is dict


def test_registering_inline_calls_that_plugin_alone(host: PluginHost) -> None:
    calls: list[str] = []

    def registering(name: str) -> Any:
        @hookimpl
        def cocaine_register_drivers(registry: Registrar) -> None:
            calls.append(name)
            registry.add(f"{name}-driver", object)

        return types.SimpleNamespace(cocaine_register_drivers=cocaine_register_drivers)

    register(host, "one", registering("one"))
    register(host, "two", registering("two"))
    assert calls == ["one", "two"]
    assert host.registry("drivers").owner("one-driver").name == "one"  # type: ignore[union-attr]


def test_a_registry_kept_after_the_hook_returned_refuses_names(host: PluginHost) -> None:
    kept: list[Registrar] = []

    @hookimpl
    def cocaine_register_drivers(registry: Registrar) -> None:
        kept.append(registry)

    register(host, "hoarder",
             types.SimpleNamespace(cocaine_register_drivers=cocaine_register_drivers))
    with pytest.raises(PluginError, match="driver 'late' was added after "
                                          "cocaine_register_drivers returned"):
        kept[0].add("late", object)
    assert "late" not in host.registry("drivers")


#: Registers ``shared`` from a wrapper, before any other plugin's hook runs.
EARLY_BIRD = """
from cocaine_core import hookimpl


@hookimpl(wrapper=True)
def cocaine_register_drivers(registry):
    registry.add("shared", "the early bird's")
    return (yield)
"""

#: Registers ``shared`` from a plain hook.
PLAIN = """
from cocaine_core import hookimpl


@hookimpl
def cocaine_register_drivers(registry):
    registry.add("shared", "the plain one's")
    registry.add("plain-only", "the plain one's")
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on ``sys.path`` for test distributions."""
    root = tmp_path / "site"
    root.mkdir()
    for variable in PLUGIN_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(root)):
            del sys.modules[name]


def test_the_first_plugin_loaded_keeps_a_name_whatever_order_pluggy_calls_in(
        site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "aa-plain" loads first; pluggy calls "zz-early"'s wrapper first, and it adds the name
    # first: the first loaded keeps it all the same, and the other fails naming both.
    write_plugin(site, "cocaine-plain", PLAIN, entry_point="aa-plain")
    write_plugin(site, "cocaine-early", EARLY_BIRD, entry_point="zz-early")
    monkeypatch.setenv("COCAINE_LOAD_PLUGINS", "aa-plain,zz-early")
    host = PluginHost().load()
    drivers = host.registry("drivers")
    assert drivers.get("shared") == "the plain one's"
    assert drivers.owner("shared").name == "aa-plain"  # type: ignore[union-attr]
    assert drivers.owner("plain-only").name == "aa-plain"  # type: ignore[union-attr]
    early = host.record("zz-early")
    assert early is not None and early.types == {}
    assert early.errors == [
        "driver 'shared' is registered by both cocaine-plain (plugin 'aa-plain') and "
        "cocaine-early (plugin 'zz-early'); uninstall one, or disable one with "
        "COCAINE_DISABLE_PLUGINS=zz-early"]


def test_a_duplicate_between_inline_plugins_names_both(host: PluginHost) -> None:
    def adding(name: str, **options: Any) -> Callable[..., None]:
        @hookimpl(**options)
        def cocaine_register_languages(registry: Registrar) -> None:
            registry.add(name, object())

        return cocaine_register_languages

    register(host, "lua", types.SimpleNamespace(cocaine_register_languages=adding("lua")))
    moon = host.register_inline(types.SimpleNamespace(
        cocaine_register_languages=adding("lua", tryfirst=True)), "moon", "cocaine-moonscript")
    assert moon.errors == [
        "language 'lua' is registered by both cocaine-lua (plugin 'lua') and cocaine-moonscript "
        "(plugin 'moon'); uninstall one, or disable one with COCAINE_DISABLE_PLUGINS=moon"]
    assert host.registry("languages").owner("lua").name == "lua"  # type: ignore[union-attr]
