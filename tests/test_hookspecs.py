"""Every hook of ``cocaine_core/hookspecs.py`` is called, with the arguments its spec documents.

Each hook has an implementation here, registered inline (``inline_plugin``) into the process's
plugin host, and the slave lifecycle hooks are watched in a real node, with real slave
processes; ``cocaine_register_commands`` is implemented by this module itself, which the real
``cocaine`` command loads as a plugin. tests/test_docs.py checks that every hook is implemented
in some test module.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import signal
import subprocess
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer

from cocaine_core import hookimpl, hookspecs
from cocaine_core.appinfo import AppInfo, SlaveInfo
from cocaine_core.cluster.discovery import NodeRecord, open_discovery
from cocaine_core.drivers import Driver
from cocaine_core.errors import ManifestError, Problem
from cocaine_core.hookspecs import Registrar
from cocaine_core.manifest import Manifest, parse_manifest
from cocaine_core.plugin_options import PluginOption, parse_given
from cocaine_core.plugins import KINDS, get_host
from cocaine_core.schema import Key, positive_int
from cocaine_core.storages import open_storage
from cocaine_core.testing import wait_until
from tests.distributions import run_cocaine, write_distribution

ROOT = Path(__file__).resolve().parents[1]

ECHO_APP = """
def echo(request):
    return request.data
"""

#: A module that imports the hook specs must be able to import them first: they import none of
#: the modules that import them, not even for type checking.
IMPORTERS_OF_HOOKSPECS = ("cocaine_core.plugins", "cocaine_core.manifest", "cocaine_core.engine",
                          "cocaine_core.node", "cocaine_core.builtins", "cocaine_core.cli")


def importer(module: str) -> bool:
    """Whether ``module`` is (inside) one of ``IMPORTERS_OF_HOOKSPECS``."""
    return module in IMPORTERS_OF_HOOKSPECS or module.startswith(
        tuple(f"{name}." for name in IMPORTERS_OF_HOOKSPECS))


# -- the module itself --------------------------------------------------------------------------


def test_importing_the_hookspecs_loads_neither_the_host_nor_the_manifest() -> None:
    script = ("import json, sys, cocaine_core.hookspecs; "
              "print(json.dumps(sorted(m for m in sys.modules if m.startswith('cocaine_core'))))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert "cocaine_core.hookspecs" in loaded
    assert [m for m in loaded if importer(m)] == []


def test_the_hookspecs_import_only_leaf_modules_even_for_type_checking() -> None:
    tree = ast.parse(Path(hookspecs.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert {m for m in imported if m.startswith("cocaine_core")} <= {
        "cocaine_core.appinfo", "cocaine_core.errors", "cocaine_core.events",
        "cocaine_core.manifest_model", "cocaine_core.node_view"}


def test_the_types_hooks_name_are_leaves_that_never_load_the_host() -> None:
    script = ("import json, sys, cocaine_core.appinfo, cocaine_core.manifest_model, "
              "cocaine_core.events, cocaine_core.node_view; "
              "print(json.dumps(sorted(m for m in sys.modules if m.startswith('cocaine_core'))))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)
    assert [m for m in json.loads(result.stdout) if importer(m)] == []


@pytest.mark.parametrize("hook", [hook for hook, _label in KINDS.values()])
def test_the_registration_hooks_take_a_registrar(hook: str) -> None:
    assert typing.get_type_hints(getattr(hookspecs, hook)) == {"registry": Registrar,
                                                               "return": type(None)}


# -- registration -------------------------------------------------------------------------------


class Shell:
    """A language: ``args`` is ``{"script": ...}``."""

    runtime = "no_such_runtime_module"

    def check_args(self, args: dict[str, Any], root: Path) -> tuple[dict[str, Any],
                                                                    list[Problem]]:
        """Only ``script`` is known."""
        return dict(args), [Problem(k, "unknown key") for k in args if k != "script"]


class Tick(Driver):
    """A driver with one key of its own."""

    keys = (Key("every", positive_int, 1, "ticks between jobs"),)


class ThreadBackend:
    """A slave backend that is only named here, never run."""


def memory_storage(uri: str) -> dict[str, Any]:
    """A storage factory: the URI it was opened with."""
    return {"uri": uri}


class LonelyDiscovery:
    """A discovery that never finds anyone."""

    def __init__(self, node: Any) -> None:
        self.node = node

    async def start(self, me: NodeRecord) -> None:
        self.me = me

    def peers(self) -> dict[str, NodeRecord]:
        return {}

    def info(self) -> dict[str, Any]:
        return {"discovery": "test-lonely", "peers": {}}

    async def stop(self) -> None:
        return None


class Registering:
    """Registers one name of each kind, noting the object each hook received."""

    def __init__(self) -> None:
        self.received: dict[str, list[Any]] = {}

    def _note(self, hook: str, registry: Any) -> None:
        self.received.setdefault(hook, []).append(registry)

    @hookimpl
    def cocaine_register_languages(self, registry: Registrar) -> None:
        self._note("cocaine_register_languages", registry)
        registry.add("test-shell", Shell())

    @hookimpl
    def cocaine_register_drivers(self, registry: Registrar) -> None:
        self._note("cocaine_register_drivers", registry)
        registry.add("test-tick", Tick)

    @hookimpl
    def cocaine_register_storages(self, registry: Registrar) -> None:
        self._note("cocaine_register_storages", registry)
        registry.add("test-memory", memory_storage)

    @hookimpl
    def cocaine_register_slave_backends(self, registry: Registrar) -> None:
        self._note("cocaine_register_slave_backends", registry)
        registry.add("test-thread", ThreadBackend)

    @hookimpl
    def cocaine_register_engine_keys(self, registry: Registrar) -> None:
        self._note("cocaine_register_engine_keys", registry)
        registry.add("x-test-quota", Key("x-test-quota", positive_int, 5, "jobs a minute"))

    @hookimpl
    def cocaine_register_discoveries(self, registry: Registrar) -> None:
        self._note("cocaine_register_discoveries", registry)
        registry.add("test-lonely", LonelyDiscovery)

    @hookimpl
    def cocaine_register_node_options(self, registry: Registrar) -> None:
        self._note("cocaine_register_node_options", registry)
        registry.add("test-option", PluginOption(help="a test's option", parse=int))


def test_each_registration_hook_is_called_once_with_a_registrar(
        inline_plugin: Callable[..., Any], tmp_path: Path) -> None:
    plugin = Registering()
    record = inline_plugin(plugin, name="registering", distribution="cocaine-registering")
    assert sorted(plugin.received) == sorted(hook for hook, _label in KINDS.values())
    for hook, registries in plugin.received.items():
        assert len(registries) == 1, hook
        assert isinstance(registries[0], Registrar), hook
    assert record.types == {"languages": ["test-shell"], "drivers": ["test-tick"],
                            "storages": ["test-memory"], "slave_backends": ["test-thread"],
                            "engine_keys": ["x-test-quota"], "discoveries": ["test-lonely"],
                            "node_options": ["test-option"]}
    for kind, names in record.types.items():
        assert get_host().registry(kind).owner(names[0]) is record
    # What they registered is what the core now uses.
    assert open_storage("test-memory:///somewhere") == {"uri": "test-memory:///somewhere"}
    (tmp_path / "run.sh").write_text("echo hi\n")
    manifest = parse_manifest({"type": "test-shell", "args": {"script": "run.sh"},
                               "engine": {"backend": "test-thread"},
                               "tasks": {"tick": {"type": "test-tick"}}}, root=tmp_path)
    assert (manifest.type, manifest.engine.backend) == ("test-shell", "test-thread")
    assert manifest.engine.extra["x-test-quota"] == 5
    assert manifest.tasks["tick"].options == {"every": 1}
    discovery = open_discovery("test-lonely", node=None)
    assert isinstance(discovery, LonelyDiscovery) and discovery.peers() == {}
    assert parse_given({"test-option": "7"}) == {"test-option": 7}


# -- manifest -----------------------------------------------------------------------------------


class Validating:
    """Refuses a task named ``forbidden``; notes each manifest it is given."""

    def __init__(self) -> None:
        self.manifests: list[Any] = []

    @hookimpl
    def cocaine_validate_manifest(self, manifest: Manifest) -> list[Problem | str] | None:
        self.manifests.append(manifest)
        if "forbidden" in manifest.tasks:
            return [Problem("tasks.forbidden", "is not allowed here"), "and a plain remark"]
        return None


def test_cocaine_validate_manifest_gets_the_checked_manifest(
        inline_plugin: Callable[..., Any], tmp_path: Path) -> None:
    plugin = Validating()
    inline_plugin(plugin, name="validating")
    (tmp_path / "app.py").write_text(ECHO_APP)
    data: dict[str, Any] = {"type": "python", "args": {"source": "app.py"},
            "tasks": {"echo": {"type": "native-server"}}}
    manifest = parse_manifest(data, root=tmp_path)
    assert plugin.manifests == [manifest]
    assert isinstance(manifest, Manifest) and manifest.engine.pool_limit == 10
    data["tasks"]["forbidden"] = {"type": "native-server"}
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, root=tmp_path)
    assert [(p.path, p.message) for p in caught.value.problems] == [
        ("tasks.forbidden", "is not allowed here"), ("", "and a plain remark")]
    assert len(plugin.manifests) == 2 and "forbidden" in plugin.manifests[1].tasks


# -- slave lifecycle, in a real node ------------------------------------------------------------


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Lifecycle:
    """Notes every lifecycle hook call: the hook, the app, and what it was told of the slave."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, AppInfo, dict[str, Any]]] = []

    def hooks(self) -> list[str]:
        """The hooks called so far, in order."""
        return [hook for hook, _app, _details in self.calls]

    def of(self, hook: str) -> list[dict[str, Any]]:
        """What each call of ``hook`` was told (with its ``app``)."""
        return [{"app": app, **details} for name, app, details in self.calls if name == hook]

    @hookimpl
    def cocaine_app_starting(self, app: AppInfo) -> None:
        self.calls.append(("cocaine_app_starting", app, {}))

    @hookimpl
    def cocaine_slave_spawned(self, app: AppInfo, slave: SlaveInfo) -> None:
        self.calls.append(("cocaine_slave_spawned", app, {
            "slave": slave, "pid": slave.pid, "template": slave.template,
            "alive": alive(slave.pid)}))

    @hookimpl
    def cocaine_slave_exited(self, app: AppInfo, slave: SlaveInfo, status: int) -> str:
        self.calls.append(("cocaine_slave_exited", app, {"pid": slave.pid, "status": status,
                                                         "template": slave.template}))
        return f"the lifecycle plugin saw {slave.pid} end"

    @hookimpl
    def cocaine_app_stopped(self, app: AppInfo) -> None:
        self.calls.append(("cocaine_app_stopped", app, {}))

    @hookimpl
    def cocaine_app_info(self, app: AppInfo) -> dict[str, Any]:
        self.calls.append(("cocaine_app_info", app, {}))
        return {"instance": app.instance}


@pytest.fixture
def lifecycle(inline_plugin: Callable[..., Any]) -> Lifecycle:
    """The ``Lifecycle`` plugin, registered as ``lifecycle``."""
    plugin = Lifecycle()
    inline_plugin(plugin, name="lifecycle", distribution="cocaine-lifecycle")
    return plugin


def test_cocaine_app_starting_gets_the_app_before_any_process_exists(
        lifecycle: Lifecycle, cocaine_node: Any, make_app: Callable[..., Path]) -> None:
    cocaine_node.add_app("watched", make_app(ECHO_APP))
    assert lifecycle.hooks()[0] == "cocaine_app_starting"
    [call] = lifecycle.of("cocaine_app_starting")
    app = call["app"]
    assert isinstance(app, AppInfo) and app.name == "watched"
    assert isinstance(app.manifest, Manifest) and "echo" in app.manifest.tasks
    assert isinstance(app.run_dir, Path) and app.instance
    cocaine_node.remove_app("watched")


def test_cocaine_slave_spawned_gets_each_live_process_template_first(
        lifecycle: Lifecycle, cocaine_node: Any, make_app: Callable[..., Path]) -> None:
    cocaine_node.add_app("watched", make_app(ECHO_APP))
    with cocaine_node.client() as client:
        assert client.call("watched", "echo", b"hi") == b"hi"
    spawned = lifecycle.of("cocaine_slave_spawned")
    assert spawned[0]["template"] is True, "the template process passes through it first"
    assert [s for s in spawned if not s["template"]], "and the slave that served the call"
    for call in spawned:
        assert isinstance(call["slave"], SlaveInfo) and call["slave"].id
        assert call["pid"] > 0 and call["alive"], "the process exists when the hook runs"
        assert call["app"].name == "watched"
    cocaine_node.remove_app("watched")


def test_cocaine_slave_exited_gets_the_status_and_explains_the_end(
        lifecycle: Lifecycle, cocaine_node: Any, make_app: Callable[..., Path],
        caplog: pytest.LogCaptureFixture) -> None:
    cocaine_node.add_app("watched", make_app(ECHO_APP))
    with cocaine_node.client() as client:
        assert client.call("watched", "echo", b"hi") == b"hi"
    pid = next(s["pid"] for s in lifecycle.of("cocaine_slave_spawned") if not s["template"])
    with caplog.at_level(logging.WARNING, logger="cocaine"):
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: any(e["pid"] == pid for e in lifecycle.of("cocaine_slave_exited")),
                   timeout=30, message="cocaine_slave_exited for the killed slave")
        wait_until(lambda: f"the lifecycle plugin saw {pid} end" in caplog.text, timeout=30,
                   message="the plugin's explanation in the log")
    exited = next(e for e in lifecycle.of("cocaine_slave_exited") if e["pid"] == pid)
    assert exited["status"] == -signal.SIGKILL and exited["template"] is False
    assert exited["app"].name == "watched"
    cocaine_node.remove_app("watched")


def test_cocaine_app_info_adds_a_section_under_the_plugin_name(
        lifecycle: Lifecycle, cocaine_node: Any, make_app: Callable[..., Path]) -> None:
    cocaine_node.add_app("watched", make_app(ECHO_APP))
    info = cocaine_node.info("watched")
    [call] = lifecycle.of("cocaine_app_info")
    assert call["app"].name == "watched"
    assert info["lifecycle"] == {"instance": call["app"].instance}
    cocaine_node.remove_app("watched")


def test_cocaine_app_stopped_is_the_last_call_for_an_app(
        lifecycle: Lifecycle, cocaine_node: Any, make_app: Callable[..., Path]) -> None:
    cocaine_node.add_app("watched", make_app(ECHO_APP))
    [starting] = lifecycle.of("cocaine_app_starting")
    cocaine_node.remove_app("watched")
    assert lifecycle.hooks()[-1] == "cocaine_app_stopped"
    [stopped] = lifecycle.of("cocaine_app_stopped")
    assert stopped["app"].instance == starting["app"].instance
    template = lifecycle.of("cocaine_slave_spawned")[0]["pid"]
    assert template in [e["pid"] for e in lifecycle.of("cocaine_slave_exited")]
    assert not alive(template)


# -- CLI ----------------------------------------------------------------------------------------


@hookimpl
def cocaine_register_commands(cli: typer.Typer) -> None:
    """This module is a plugin too (the only hook it implements at its top level), so that the
    real ``cocaine`` command loads it: it adds ``hello-from-a-test``, which tells what it was
    given."""

    @cli.command("hello-from-a-test")
    def hello(name: str = "world") -> None:
        """Say hello (a command added by a test's plugin)."""
        typer.echo(f"hello, {name}, from the {type(cli).__name__} named {cli.info.name!r}")


def test_cocaine_register_commands_gets_the_root_cli(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_distribution(site, "cocaine-hookspecs-test", {},
                       {"hookspecs-test": "tests.test_hookspecs"})
    result = run_cocaine("hello-from-a-test", "--name", "you", pythonpath=[site, ROOT])
    assert (result.returncode, result.stdout) == (
        0, "hello, you, from the Typer named 'cocaine'\n"), result.stderr
    listed = run_cocaine("--help", pythonpath=[site, ROOT])
    assert "hello-from-a-test" in listed.stdout
