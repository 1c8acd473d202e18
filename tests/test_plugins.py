"""The plugin host (``cocaine_core/plugins.py``) and ``cocaine plugins``, with real distributions.

Every plugin here is a real distribution: the installed ``cocaine-example-driver``, or one
written by ``tests/distributions.py`` into a folder put on ``sys.path`` (in this process) or on
``PYTHONPATH`` (for the ``cocaine`` command run as a subprocess).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cocaine_core import hookimpl, hookspecs
from cocaine_core.engine import AppState
from cocaine_core.errors import (
    DuplicateNameError,
    ManifestError,
    PluginError,
    UnknownTypeError,
)
from cocaine_core.manifest import parse_manifest
from cocaine_core.plugins import (
    KINDS,
    SHIPPED,
    PluginHost,
    PluginRecord,
    Registry,
    get_host,
    reset_host,
)
from cocaine_core.testing import write_app
from tests.distributions import PLUGIN_VARIABLES, run_cocaine, write_plugin

HOOK_NAMES = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
                    if name.startswith("cocaine_"))

BROKEN = """
import cocaine_no_such_dependency  # the plugin's own dependency is missing
"""

RAISES_WHILE_REGISTERING = """
from cocaine_core import hookimpl


@hookimpl
def cocaine_register_drivers(registry):
    raise RuntimeError("the driver registry is not what I expected")
"""

DUPLICATE_ONESHOT = """
from cocaine_core import hookimpl
from cocaine_core.drivers import Driver


class AnotherOneShot(Driver):
    pass


@hookimpl
def cocaine_register_drivers(registry):
    registry.add("oneshot", AnotherOneShot)
"""

DUPLICATE_NATIVE = DUPLICATE_ONESHOT.replace('"oneshot"', '"native-server"')

BAD_SIGNATURE = """
from cocaine_core import hookimpl


@hookimpl
def cocaine_register_drivers(registri):
    pass
"""

#: One of each registrable kind, a manifest check and a command: every registration hook.
EVERYTHING = """
from pathlib import Path

import typer

from cocaine_core import hookimpl
from cocaine_core.drivers import Driver
from cocaine_core.errors import Problem
from cocaine_core.schema import Key, positive_int


class Shell:
    runtime = "no_such_runtime_module"

    def check_args(self, args, root):
        problems = [Problem(str(k), "unknown key; shell takes only 'script'")
                    for k in args if k != "script"]
        return dict(args), problems


class Tick(Driver):
    keys = (Key("every", positive_int, 1, "ticks between jobs"),)


class ThreadBackend:
    pass


def memory_storage(uri):
    return {}


@hookimpl
def cocaine_register_languages(registry):
    registry.add("shell", Shell())


@hookimpl
def cocaine_register_drivers(registry):
    registry.add("tick", Tick)


@hookimpl
def cocaine_register_storages(registry):
    registry.add("memory", memory_storage)


@hookimpl
def cocaine_register_slave_backends(registry):
    registry.add("thread", ThreadBackend)


@hookimpl
def cocaine_register_engine_keys(registry):
    registry.add("x-quota", Key("x-quota", positive_int, 5, "jobs a minute"))


@hookimpl
def cocaine_validate_manifest(manifest):
    if manifest.engine.extra.get("x-quota", 0) > 100:
        return [Problem("engine.x-quota", "must be at most 100 with the free plan")]
    if "forbidden" in manifest.tasks:
        return ["tasks.forbidden is not allowed here"]
    return None


@hookimpl
def cocaine_register_commands(cli):
    @cli.command("hello-from-plugin")
    def hello(name: str = "world"):
        '''Say hello (a command added by a plugin).'''
        typer.echo(f"hello, {name}, from a plugin")
"""

RAISES_IN_HOOKS = """
from cocaine_core import hookimpl


@hookimpl
def cocaine_validate_manifest(manifest):
    raise KeyError("tasks")


@hookimpl
def cocaine_register_commands(cli):
    raise RuntimeError("no commands today")
"""

#: Records every lifecycle hook call; raises in the hooks named in ``RAISE_IN``.
OBSERVER = """
from cocaine_core import hookimpl

CALLS = []
RAISE_IN = set()


def _note(hook, **details):
    CALLS.append((hook, details))
    if hook in RAISE_IN:
        raise RuntimeError(f"the observer refuses {hook}")


@hookimpl
def cocaine_app_starting(app):
    _note("cocaine_app_starting", app=app.name)


@hookimpl
def cocaine_slave_spawned(app, slave):
    _note("cocaine_slave_spawned", app=app.name, pid=slave.pid, template=slave.template)


@hookimpl
def cocaine_slave_exited(app, slave, status):
    _note("cocaine_slave_exited", app=app.name, pid=slave.pid, status=status)
    return f"the observer saw {slave.pid} go"


@hookimpl
def cocaine_app_stopped(app):
    _note("cocaine_app_stopped", app=app.name)


@hookimpl
def cocaine_app_info(app):
    _note("cocaine_app_info", app=app.name)
    return {"calls": len(CALLS)}
"""

ECHO_APP = """
def echo(request):
    return request.data
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on ``sys.path`` for test distributions; the plugin host reloads around it."""
    root = tmp_path / "site"
    root.mkdir()
    for variable in PLUGIN_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.syspath_prepend(str(root))
    reset_host()
    yield root
    reset_host()
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(root)):
            del sys.modules[name]


@pytest.fixture
def app_source(tmp_path: Path) -> Path:
    """A folder holding ``app.py``, for manifests to point at."""
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "app.py").write_text(ECHO_APP)
    return folder


def manifest_with(tasks: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A python manifest with ``tasks`` and its code in ``app.py``."""
    return {"type": "python", "args": {"source": "app.py"}, "tasks": tasks, **top}


def problems_of(data: dict[str, Any], root: Path, host: PluginHost | None = None) -> dict[str,
                                                                                        str]:
    """The problems of a manifest that must be bad, by key path."""
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, root=root, host=host)
    return {p.path: p.message for p in caught.value.problems}


def record(host: PluginHost, name: str) -> PluginRecord:
    """The record of the plugin ``name`` (which must be there)."""
    found = [r for r in host.records if r.name == name]
    assert found, f"no plugin '{name}' in {[r.name for r in host.records]}"
    return found[0]


def plugins_json(*pythonpath: Path, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """What ``cocaine plugins --json`` says, with ``pythonpath`` and ``env``."""
    result = run_cocaine("plugins", "--json", pythonpath=pythonpath, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- the hooks themselves -----------------------------------------------------------------------


@pytest.mark.parametrize("hook_name", HOOK_NAMES)
def test_every_hookspec_is_typed_and_documented(hook_name: str) -> None:
    spec = getattr(hookspecs, hook_name)
    assert getattr(spec, "cocaine_spec", None) is not None, "not marked with @hookspec"
    signature = inspect.signature(spec)
    assert signature.return_annotation is not inspect.Signature.empty
    doc = inspect.getdoc(spec) or ""
    assert doc.splitlines()[0].endswith("."), "the first line says what the hook is for"
    assert "Called" in doc, "the docstring says when the hook is called"
    assert ":returns:" in doc
    for name, parameter in signature.parameters.items():
        assert parameter.annotation is not inspect.Parameter.empty, name
        assert f":param {name}:" in doc


def test_the_registration_hooks_match_the_registries() -> None:
    registration = {h for h in HOOK_NAMES if h.startswith("cocaine_register_")}
    assert {hook for hook, _label in KINDS.values()} == registration - {
        "cocaine_register_commands"}
    assert set(SHIPPED) == set(KINDS)


def test_hookimpl_is_the_one_marker_a_plugin_needs() -> None:
    @hookimpl
    def cocaine_register_drivers(registry: Any) -> None:
        """Nothing."""

    assert cocaine_register_drivers.cocaine_impl == {
        "wrapper": False, "hookwrapper": False, "optionalhook": False, "tryfirst": False,
        "trylast": False, "specname": None}


# -- loading: lazy ------------------------------------------------------------------------------


def test_importing_cocaine_core_loads_no_plugin(tmp_path: Path) -> None:
    site = tmp_path / "site"
    marker = tmp_path / "the-plugin-was-imported"
    write_plugin(site, "cocaine-noisy", f"open({str(marker)!r}, 'w').close()\n")
    script = textwrap.dedent("""
        import json, sys
        import cocaine_core, cocaine_core.hookspecs, cocaine_core.plugins, cocaine_core.manifest
        import cocaine_core.schema, cocaine_core.node, cocaine_core.client, cocaine_core.cli
        import cocaine_core.engine, cocaine_core.drivers
        plugin_modules = ("cocaine_core.builtins", "cocaine_python", "cocaine_timers",
                          "cocaine_zmq", "cocaine_cgroups", "cocaine_http",
                          "cocaine_example_driver",
                          "cocaine_noisy")
        loaded = sorted(m for m in sys.modules if m.startswith(plugin_modules))
        print(json.dumps({"loaded": loaded, "host": cocaine_core.plugins._host is not None}))
        cocaine_core.plugins.get_host()
    """)
    env = {k: v for k, v in os.environ.items() if k not in PLUGIN_VARIABLES}
    env["PYTHONPATH"] = str(site)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"loaded": [], "host": False}
    # The same plugin does load on first use, so the check above could have failed.
    assert marker.exists()


def test_plugins_load_once_on_first_use(site: Path, app_source: Path) -> None:
    counter = site / "imports"
    write_plugin(site, "cocaine-counted", f"""
        with open({str(counter)!r}, "a") as f:
            f.write("imported\\n")
    """)
    assert not counter.exists()
    host = get_host()
    assert get_host() is host
    parse_manifest(manifest_with({"hello": {"type": "native-server"}}), root=app_source)
    assert counter.read_text() == "imported\n"
    reset_host()
    assert get_host() is not host
    assert record(get_host(), "counted").loaded


# -- the real third-party plugin ----------------------------------------------------------------


def test_the_example_distribution_is_a_loaded_plugin(site: Path) -> None:
    example = record(get_host(), "example")
    assert (example.distribution, example.version, example.module) == (
        "cocaine-example-driver", "0.1.0", "cocaine_example_driver.plugin")
    assert example.types == {"drivers": ["oneshot"], "node_options": ["example-greeting"]}
    assert example.loaded and example.errors == [] and example.traceback is None
    assert get_host().registry("drivers").owner("oneshot") is example


def test_the_example_driver_resolves_from_a_manifest(site: Path, app_source: Path) -> None:
    manifest = parse_manifest(manifest_with({"shot": {"type": "oneshot", "times": 3}}),
                              root=app_source)
    task = manifest.tasks["shot"]
    assert (task.type, task.event, task.options) == ("oneshot", "shot",
                                                     {"payload": "", "times": 3})
    assert manifest.to_dict()["tasks"]["shot"] == {"type": "oneshot", "timeout": None,
                                                   "payload": "", "times": 3}
    assert problems_of(manifest_with({"shot": {"type": "oneshot", "times": 1001}}),
                       app_source) == {"tasks.shot.times": "must be at most 1000"}
    assert problems_of(manifest_with({"shot": {"type": "oneshot", "time": 2}}),
                       app_source) == {"tasks.shot.time": "unknown key; did you mean 'times'?"}


def test_the_example_driver_runs_in_a_node(site: Path, cocaine_node: Any, tmp_path: Path) -> None:
    out = tmp_path / "shots.txt"
    manifest = write_app(tmp_path / "shooter", f"""
        def shot(request):
            with open({str(out)!r}, "a") as f:
                f.write(request.data.decode() + "\\n")
    """, {"shot": {"type": "oneshot", "payload": "bang", "times": 3}})
    cocaine_node.add_app("shooter", manifest)
    from cocaine_core.testing import wait_until

    wait_until(lambda: out.exists() and out.read_text().count("bang") == 3, timeout=60,
               message="three shots handled")
    assert cocaine_node.info("shooter")["tasks"]["shot"] == {"type": "oneshot", "event": "shot",
                                                            "fired": 3}
    cocaine_node.remove_app("shooter")


def test_cocaine_plugins_lists_the_example_distribution() -> None:
    result = run_cocaine("plugins")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "cocaine-example-driver" in line)
    for cell in ("example", "0.1.0", "cocaine_example_driver.plugin", "oneshot"):
        assert cell in row
    assert "cocaine-core" in result.stdout and "native-server" in result.stdout
    assert "example" not in result.stderr


def test_cocaine_plugins_json_lists_the_example_distribution() -> None:
    records = {r["name"]: r for r in plugins_json()}
    assert records["example"] == {
        "name": "example", "distribution": "cocaine-example-driver", "version": "0.1.0",
        "module": "cocaine_example_driver.plugin",
        "types": {"drivers": ["oneshot"], "node_options": ["example-greeting"]},
        "errors": [], "traceback": None, "loaded": True}
    assert "native-server" in records["core"]["types"]["drivers"]
    assert records["core"]["types"]["slave_backends"] == ["process"]
    assert records["python"]["types"] == {"languages": ["python"]}


# -- every registration hook, through a real plugin ---------------------------------------------


def test_a_plugin_registers_one_of_each_kind(site: Path, app_source: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(site, "cocaine-everything", EVERYTHING)
    monkeypatch.setenv("COCAINE_LOAD_PLUGINS", "everything")
    host = get_host()
    everything = record(host, "everything")
    assert everything.types == {"languages": ["shell"], "drivers": ["tick"],
                                "storages": ["memory"], "slave_backends": ["thread"],
                                "engine_keys": ["x-quota"]}
    assert host.registry("storages").get("memory")("memory://") == {}
    (app_source / "run.sh").write_text("echo hi\n")
    manifest = parse_manifest({"type": "shell", "args": {"script": "run.sh"},
                               "engine": {"backend": "thread"},
                               "tasks": {"tick": {"type": "tick"}}}, root=app_source)
    assert manifest.type == "shell"
    assert manifest.engine.backend == "thread"
    assert manifest.engine.extra == {"x-quota": 5}
    assert manifest.engine.to_dict()["x-quota"] == 5
    assert manifest.tasks["tick"].options == {"every": 1}


def test_a_plugin_engine_key_is_checked_by_the_core(site: Path, app_source: Path) -> None:
    write_plugin(site, "cocaine-everything", EVERYTHING)
    tasks = {"hello": {"type": "native-server"}}
    assert problems_of(manifest_with(tasks, engine={"x-quota": "lots"}), app_source) == {
        "engine.x-quota": 'must be a positive integer, got "lots"'}
    assert problems_of(manifest_with(tasks, engine={"x-quot": 3}), app_source) == {
        "engine.x-quot": "unknown key; did you mean 'x-quota'?"}


def test_a_plugin_language_reports_its_args_by_key_path(site: Path, app_source: Path) -> None:
    write_plugin(site, "cocaine-everything", EVERYTHING)
    assert problems_of({"type": "shell", "args": {"scrip": "x"},
                        "tasks": {"a": {"type": "tick"}}}, app_source) == {
        "args.scrip": "unknown key; shell takes only 'script'"}


def test_cocaine_validate_manifest_problems_are_reported_with_the_core_s(
        site: Path, app_source: Path) -> None:
    write_plugin(site, "cocaine-everything", EVERYTHING)
    tasks = {"hello": {"type": "native-server"}}
    assert problems_of(manifest_with(tasks, engine={"x-quota": 101}), app_source) == {
        "engine.x-quota": "must be at most 100 with the free plan"}
    assert problems_of(manifest_with({"forbidden": {"type": "native-server"}}), app_source) == {
        "": "tasks.forbidden is not allowed here"}
    assert parse_manifest(manifest_with(tasks, engine={"x-quota": 100}), root=app_source)


def test_cocaine_register_commands_adds_a_command(tmp_path: Path) -> None:
    write_plugin(tmp_path, "cocaine-everything", EVERYTHING)
    result = run_cocaine("hello-from-plugin", "--name", "you", pythonpath=[tmp_path])
    assert (result.returncode, result.stdout) == (0, "hello, you, from a plugin\n"), result.stderr
    assert "hello-from-plugin" in run_cocaine("--help", pythonpath=[tmp_path]).stdout


def test_cocaine_plugins_shows_what_a_plugin_registers(tmp_path: Path) -> None:
    write_plugin(tmp_path, "cocaine-everything", EVERYTHING, version="2.5.0")
    records = {r["name"]: r for r in plugins_json(tmp_path)}
    assert records["everything"]["distribution"] == "cocaine-everything"
    assert records["everything"]["version"] == "2.5.0"
    assert records["everything"]["types"]["engine_keys"] == ["x-quota"]
    table = run_cocaine("plugins", pythonpath=[tmp_path]).stdout
    for line in ("languages: shell", "drivers: tick", "storages: memory",
                 "slave backends: thread", "engine keys: x-quota"):
        assert line in table


# -- a plugin that fails to import --------------------------------------------------------------


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_work(
        site: Path, app_source: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_plugin(site, "cocaine-broken", BROKEN, version="0.3.0")
    with caplog.at_level(logging.ERROR, logger="cocaine.plugins"):
        host = get_host()
    broken = record(host, "broken")
    assert (broken.distribution, broken.version, broken.loaded) == ("cocaine-broken", "0.3.0",
                                                                    False)
    assert broken.errors == ["failed to load: ModuleNotFoundError: No module named "
                             "'cocaine_no_such_dependency'"]
    assert "Traceback" in broken.traceback and "import cocaine_no_such_dependency" in \
        broken.traceback
    assert broken.types == {}
    assert ("plugin 'broken' (cocaine-broken): failed to load: ModuleNotFoundError"
            in caplog.text)
    # The others are all there.
    assert record(host, "example").loaded and record(host, "python").loaded
    assert parse_manifest(manifest_with({"shot": {"type": "oneshot"}}), root=app_source)


def test_cocaine_plugins_reports_a_broken_plugin(tmp_path: Path) -> None:
    write_plugin(tmp_path, "cocaine-broken", BROKEN)
    result = run_cocaine("plugins", pythonpath=[tmp_path])
    assert result.returncode == 0
    row = next(line for line in result.stdout.splitlines() if "cocaine-broken" in line)
    assert "failed to load: ModuleNotFoundError" in row
    assert "cocaine-example-driver" in result.stdout
    assert "plugin 'broken' (cocaine-broken): failed to load" in result.stderr
    assert "Some plugins failed; the others work." in result.stderr
    assert "COCAINE_DISABLE_PLUGINS" in result.stderr
    records = {r["name"]: r for r in plugins_json(tmp_path)}
    assert records["broken"]["loaded"] is False
    assert records["broken"]["errors"] == [
        "failed to load: ModuleNotFoundError: No module named 'cocaine_no_such_dependency'"]
    assert "import cocaine_no_such_dependency" in records["broken"]["traceback"]
    assert records["example"]["loaded"] is True


def test_the_cli_works_with_a_broken_plugin_installed(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_plugin(site, "cocaine-broken", BROKEN)
    app = tmp_path / "app"
    manifest = write_app(app, ECHO_APP, {"shot": {"type": "oneshot"}})
    result = run_cocaine("manifest", "check", str(manifest), pythonpath=[site])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tasks"]["shot"]["type"] == "oneshot"


def test_a_hook_with_a_wrong_signature_is_refused_at_load(site: Path) -> None:
    write_plugin(site, "cocaine-misspelled", BAD_SIGNATURE)
    misspelled = record(get_host(), "misspelled")
    assert not misspelled.loaded
    assert misspelled.errors[0].startswith("failed to load: PluginValidationError")
    assert "registri" in misspelled.errors[0]
    assert record(get_host(), "example").loaded


MISSPELLED_HOOK = """
from cocaine_core import hookimpl


@hookimpl
def cocaine_register_driver(registry):
    registry.add("never-registered", object)
"""

EXPLODING_LANGUAGE = """
from cocaine_core import hookimpl


class Explosive:
    runtime = "no_such_runtime_module"

    def check_args(self, args, root):
        raise RuntimeError("boom")


@hookimpl
def cocaine_register_languages(registry):
    registry.add("explosive", Explosive())
"""


def test_a_misspelled_hook_name_is_reported(site: Path) -> None:
    write_plugin(site, "cocaine-typo", MISSPELLED_HOOK)
    typo = record(get_host(), "typo")
    assert typo.errors and "cocaine_register_driver" in typo.errors[0]


def test_a_language_that_raises_while_checking_args_is_a_problem(site: Path,
                                                                 app_source: Path) -> None:
    write_plugin(site, "cocaine-explosive", EXPLODING_LANGUAGE)
    found = problems_of({"type": "explosive", "tasks": {"a": {"type": "native-server"}}},
                        app_source)
    assert list(found.values()) == ["language 'explosive' (cocaine-explosive) failed to check "
                                    "args: RuntimeError: boom"]


def test_a_language_that_raises_while_checking_args_is_reported_at_args(
        site: Path, app_source: Path) -> None:
    write_plugin(site, "cocaine-explosive", EXPLODING_LANGUAGE)
    found = problems_of({"type": "explosive", "tasks": {"a": {"type": "native-server"}}},
                        app_source)
    assert list(found) == ["args"]


# -- a plugin that registers a name already taken -----------------------------------------------


def test_a_duplicate_name_names_both_distributions(site: Path, app_source: Path) -> None:
    write_plugin(site, "cocaine-duplicate", DUPLICATE_ONESHOT, entry_point="zz-duplicate")
    host = get_host()
    failed = [r for r in host.records if r.errors]
    assert len(failed) == 1 and failed[0].name in {"example", "zz-duplicate"}
    message = failed[0].errors[0]
    assert message.startswith("driver 'oneshot' is registered by both ")
    assert "cocaine-example-driver (plugin 'example')" in message
    assert "cocaine-duplicate (plugin 'zz-duplicate')" in message
    assert message.endswith(f"; uninstall one, or disable one with "
                            f"COCAINE_DISABLE_PLUGINS={failed[0].name}")
    assert failed[0].types == {}
    # One registration stands, and everything works.
    assert host.registry("drivers").owner("oneshot").name in {"example", "zz-duplicate"}
    assert parse_manifest(manifest_with({"shot": {"type": "oneshot"}}), root=app_source)


def test_the_first_plugin_to_load_keeps_a_duplicate_name(site: Path) -> None:
    # Entry points load in name order, after the built-in plugin: "zz-duplicate" loads after
    # "example", so it is the one refused.
    write_plugin(site, "cocaine-duplicate", DUPLICATE_ONESHOT, entry_point="zz-duplicate")
    host = get_host()
    assert record(host, "zz-duplicate").errors == [
        "driver 'oneshot' is registered by both cocaine-example-driver (plugin 'example') and "
        "cocaine-duplicate (plugin 'zz-duplicate'); uninstall one, or disable one with "
        "COCAINE_DISABLE_PLUGINS=zz-duplicate"]
    assert host.registry("drivers").owner("oneshot").distribution == "cocaine-example-driver"
    assert record(host, "example").errors == []


def test_a_duplicate_of_a_built_in_name_names_cocaine_core(site: Path) -> None:
    write_plugin(site, "cocaine-impostor", DUPLICATE_NATIVE)
    failed = [r for r in get_host().records if r.errors]
    assert len(failed) == 1
    assert failed[0].errors[0].startswith("driver 'native-server' is registered by both ")
    assert "cocaine-core (plugin 'core')" in failed[0].errors[0]
    assert "cocaine-impostor (plugin 'impostor')" in failed[0].errors[0]


def test_a_plugin_cannot_take_a_built_in_name(site: Path) -> None:
    write_plugin(site, "cocaine-impostor", DUPLICATE_NATIVE)
    assert record(get_host(), "core").errors == []
    assert get_host().registry("drivers").owner("native-server").distribution == "cocaine-core"


def test_cocaine_plugins_reports_a_duplicate(tmp_path: Path) -> None:
    write_plugin(tmp_path, "cocaine-duplicate", DUPLICATE_ONESHOT, entry_point="zz-duplicate")
    failed = [r for r in plugins_json(tmp_path) if r["errors"]]
    assert len(failed) == 1
    assert "cocaine-example-driver" in failed[0]["errors"][0]
    assert "cocaine-duplicate" in failed[0]["errors"][0]
    result = run_cocaine("plugins", pythonpath=[tmp_path])
    assert "driver 'oneshot' is registered by both" in result.stdout
    assert "Some plugins failed" in result.stderr


def test_two_plugins_with_one_entry_point_name(site: Path) -> None:
    write_plugin(site, "cocaine-other-example", "", entry_point="example")
    host = get_host()
    examples = [r for r in host.records if r.name == "example"]
    assert {r.distribution for r in examples} == {"cocaine-example-driver",
                                                  "cocaine-other-example"}
    kept, refused = sorted(examples, key=lambda r: bool(r.errors))
    assert kept.loaded and not kept.errors
    assert refused.errors == [f"plugin name 'example' of {refused.distribution} is already "
                              f"taken by {kept.distribution}; one of them must be renamed"]
    assert not refused.loaded and record(host, "python").loaded


# -- a plugin that raises in a hook -------------------------------------------------------------


def test_a_plugin_raising_while_registering_is_reported(site: Path, app_source: Path) -> None:
    write_plugin(site, "cocaine-raiser", RAISES_WHILE_REGISTERING)
    raiser = record(get_host(), "raiser")
    assert raiser.errors == ["cocaine_register_drivers raised RuntimeError: the driver registry "
                             "is not what I expected"]
    assert "RuntimeError" in raiser.traceback
    assert parse_manifest(manifest_with({"shot": {"type": "oneshot"}}), root=app_source)


def test_a_plugin_raising_in_cocaine_validate_manifest_is_a_problem_not_a_crash(
        site: Path, app_source: Path) -> None:
    write_plugin(site, "cocaine-grumpy", RAISES_IN_HOOKS)
    assert problems_of(manifest_with({"hello": {"type": "native-server"}}), app_source) == {
        "": "plugin 'grumpy' (cocaine-grumpy) failed to check the manifest: KeyError: 'tasks'"}


def test_a_plugin_raising_in_cocaine_register_commands_leaves_the_cli_working(
        tmp_path: Path) -> None:
    write_plugin(tmp_path, "cocaine-grumpy", RAISES_IN_HOOKS)
    result = run_cocaine("plugins", "--json", pythonpath=[tmp_path])
    assert result.returncode == 0
    assert "grumpy" in {r["name"] for r in json.loads(result.stdout)}
    assert "plugin 'grumpy' (cocaine-grumpy) raised in cocaine_register_commands" in \
        result.stderr


def test_call_each_returns_or_raises_a_plugin_s_exception(
        site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(site, "cocaine-grumpy", RAISES_IN_HOOKS)
    monkeypatch.setenv("COCAINE_LOAD_PLUGINS", "grumpy")
    reset_host()
    results = {r.name: result for r, result in get_host().call_each(
        "cocaine_validate_manifest", manifest=None)}
    assert isinstance(results["grumpy"], KeyError)
    with pytest.raises(PluginError, match=r"^cocaine-grumpy \(cocaine_validate_manifest\): "
                                          r"'tasks'$"):
        get_host().call_each("cocaine_validate_manifest", raise_errors=True, manifest=None)


# -- the lifecycle hooks, in a real node --------------------------------------------------------


@pytest.fixture
def observer(site: Path) -> Any:
    """The ``cocaine-observer`` plugin module, loaded into a fresh plugin host."""
    module_name = write_plugin(site, "cocaine-observer", OBSERVER)
    assert record(get_host(), "observer").loaded
    return sys.modules[module_name]


def test_the_lifecycle_hooks_are_called_in_order(observer: Any, cocaine_node: Any,
                                                 make_app: Any,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    from cocaine_core.testing import wait_until

    engine = cocaine_node.add_app("observed", make_app(ECHO_APP))
    with cocaine_node.client() as client:
        assert client.call("observed", "echo", b"hi") == b"hi"
    hooks = [hook for hook, _details in observer.CALLS]
    assert hooks[:2] == ["cocaine_app_starting", "cocaine_slave_spawned"]
    template = observer.CALLS[1][1]
    assert template["template"] is True and template["app"] == "observed"
    slaves = [d for h, d in observer.CALLS if h == "cocaine_slave_spawned" and not d["template"]]
    assert slaves, "a slave was spawned for the call"
    info = cocaine_node.info("observed")
    assert info["observer"]["calls"] >= 3
    # A slave that dies unexpectedly: cocaine_slave_exited's answer explains it in the log.
    pid = slaves[0]["pid"]
    with caplog.at_level(logging.WARNING, logger="cocaine"):
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: any(h == "cocaine_slave_exited" and d["pid"] == pid
                               for h, d in observer.CALLS), timeout=30,
                   message="cocaine_slave_exited for the killed slave")
        wait_until(lambda: f"the observer saw {pid} go" in caplog.text, timeout=30,
                   message="the explanation in the log")
    exited = next(d for h, d in observer.CALLS if h == "cocaine_slave_exited" and d["pid"] == pid)
    assert exited["status"] == -signal.SIGKILL
    assert engine.state is AppState.RUNNING
    cocaine_node.remove_app("observed")
    hooks = [hook for hook, _details in observer.CALLS]
    assert hooks[-1] == "cocaine_app_stopped"
    assert any(h == "cocaine_slave_exited" and d["pid"] == template["pid"]
               for h, d in observer.CALLS), "the template's end is observed too"


def test_a_plugin_refusing_an_app_start_fails_only_that_start(observer: Any, cocaine_node: Any,
                                                              make_app: Any) -> None:
    observer.RAISE_IN.add("cocaine_app_starting")
    manifest = make_app(ECHO_APP)
    with pytest.raises(PluginError, match=r"cocaine-observer \(cocaine_app_starting\): the "
                                          r"observer refuses cocaine_app_starting"):
        cocaine_node.add_app("refused", manifest)
    assert "refused" not in cocaine_node.node.apps
    # What the plugin may have half made can be cleaned up: the app is reported stopped.
    assert [h for h, _ in observer.CALLS] == ["cocaine_app_starting", "cocaine_app_stopped"]
    observer.RAISE_IN.clear()
    cocaine_node.add_app("refused", manifest)
    with cocaine_node.client() as client:
        assert client.call("refused", "echo", b"now") == b"now"
    cocaine_node.remove_app("refused")


def test_a_plugin_refusing_the_first_spawn_fails_the_start_with_its_message(
        observer: Any, cocaine_node: Any, make_app: Any) -> None:
    observer.RAISE_IN.add("cocaine_slave_spawned")
    with pytest.raises(PluginError) as error:
        cocaine_node.add_app("confined", make_app(ECHO_APP))
    assert "the observer refuses cocaine_slave_spawned" in str(error.value)
    assert "cocaine-observer" in str(error.value)
    assert "confined" not in cocaine_node.node.apps


def test_plugins_raising_in_observing_hooks_leave_the_app_working(
        observer: Any, cocaine_node: Any, make_app: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    observer.RAISE_IN.update({"cocaine_app_info", "cocaine_slave_exited", "cocaine_app_stopped"})
    with caplog.at_level(logging.ERROR, logger="cocaine.plugins"):
        cocaine_node.add_app("observed", make_app(ECHO_APP))
        with cocaine_node.client() as client:
            assert client.call("observed", "echo", b"hi") == b"hi"
        info = cocaine_node.info("observed")
        assert "observer" not in info and info["state"] == "running"
        cocaine_node.remove_app("observed")
    assert "observed" not in cocaine_node.node.apps
    assert "plugin 'observer' (cocaine-observer) raised in cocaine_app_info" in caplog.text
    assert "raised in cocaine_app_stopped" in caplog.text
    assert "raised in cocaine_slave_exited" in caplog.text


# -- COCAINE_LOAD_PLUGINS, COCAINE_DISABLE_PLUGINS, COCAINE_STRICT_PLUGINS ----------------------


def loaded_names() -> set[str]:
    """The plugins of a freshly loaded host."""
    reset_host()
    return {r.name for r in get_host().records}


def test_an_empty_allow_list_loads_no_plugin(site: Path, app_source: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(site, "cocaine-broken", BROKEN)
    monkeypatch.setenv("COCAINE_LOAD_PLUGINS", "")
    assert loaded_names() == {"core"}
    assert problems_of(manifest_with({"hello": {"type": "native-server"}}), app_source) == {
        "type": "language 'python' is provided by cocaine-python, which is not installed or "
                "failed to load (see 'cocaine plugins'); pip install cocaine-python. "
                "installed languages: 'exec'"}


@pytest.mark.parametrize("allow", ["example", "cocaine-example-driver", " example , ",
                                   "example,cocaine-no-such-plugin"])
def test_the_allow_list_takes_entry_point_or_distribution_names(
        site: Path, monkeypatch: pytest.MonkeyPatch, allow: str) -> None:
    monkeypatch.setenv("COCAINE_LOAD_PLUGINS", allow)
    assert loaded_names() == {"core", "example"}


def test_the_block_list_skips_a_plugin(site: Path, app_source: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COCAINE_DISABLE_PLUGINS", "example")
    names = loaded_names()
    assert "example" not in names and {"core", "python"} <= names
    message = problems_of(manifest_with({"shot": {"type": "oneshot"}}), app_source)[
        "tasks.shot.type"]
    assert message.startswith("unknown driver 'oneshot'; installed drivers: ")
    assert "'native-server'" in message


def test_the_block_list_takes_distribution_names_and_wins(
        site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COCAINE_LOAD_PLUGINS", "example,python")
    monkeypatch.setenv("COCAINE_DISABLE_PLUGINS", "cocaine-example-driver")
    assert loaded_names() == {"core", "python"}


def test_the_block_list_rescues_from_a_broken_plugin(tmp_path: Path) -> None:
    write_plugin(tmp_path, "cocaine-broken", BROKEN)
    result = run_cocaine("plugins", pythonpath=[tmp_path],
                         env={"COCAINE_DISABLE_PLUGINS": "broken"})
    assert result.returncode == 0
    assert "cocaine-broken" not in result.stdout
    assert "broken" not in result.stderr


def test_the_allow_list_from_the_command_line(tmp_path: Path) -> None:
    write_plugin(tmp_path, "cocaine-broken", BROKEN)
    records = plugins_json(tmp_path, env={"COCAINE_LOAD_PLUGINS": ""})
    assert [r["name"] for r in records] == ["core"]
    records = plugins_json(tmp_path, env={"COCAINE_LOAD_PLUGINS": "python"})
    assert [r["name"] for r in records] == ["core", "python"]


@pytest.mark.parametrize(("task_type", "provider", "entry_point"), [
    ("zeromq-server", "cocaine-zmq", "zmq"),
    ("zeromq-sink", "cocaine-zmq", "zmq"),
    ("http-server", "cocaine-http", "http"),
    ("recurring-timer", "cocaine-timers", "timers"),
    ("cron", "cocaine-timers", "timers"),
])
def test_a_type_shipped_by_a_missing_distribution_names_it(
        site: Path, app_source: Path, monkeypatch: pytest.MonkeyPatch, task_type: str,
        provider: str, entry_point: str) -> None:
    monkeypatch.setenv("COCAINE_DISABLE_PLUGINS", f"{entry_point},{provider}")
    message = problems_of(manifest_with({"x": {"type": task_type}}), app_source)["tasks.x.type"]
    assert message.startswith(f"driver '{task_type}' is provided by {provider}, which is not "
                              f"installed or failed to load")
    assert f"pip install {provider}" in message
    assert "installed drivers: " in message and "'native-server'" in message


def test_an_engine_key_shipped_by_a_missing_distribution_names_it(
        site: Path, app_source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COCAINE_DISABLE_PLUGINS", "cgroups,cocaine-cgroups")
    data = manifest_with({"x": {"type": "native-server"}},
                         engine={"resource-limits": {"memory": {"memory.max": "64M"}}})
    assert problems_of(data, app_source) == {
        "engine.resource-limits": "is provided by cocaine-cgroups, which is not installed; "
                                  "pip install cocaine-cgroups"}


def test_strict_mode_makes_a_broken_plugin_fatal(site: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(site, "cocaine-broken", BROKEN)
    monkeypatch.setenv("COCAINE_STRICT_PLUGINS", "1")
    reset_host()
    with pytest.raises(PluginError) as caught:
        get_host()
    assert str(caught.value) == (
        "plugin 'broken' (cocaine-broken): failed to load: ModuleNotFoundError: No module named "
        "'cocaine_no_such_dependency' (COCAINE_STRICT_PLUGINS is set, so this is fatal)")
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
    # No half-loaded host is kept: without strict mode the next use loads normally.
    monkeypatch.delenv("COCAINE_STRICT_PLUGINS")
    assert not record(get_host(), "broken").loaded
    assert record(get_host(), "example").loaded


def test_strict_mode_makes_a_duplicate_fatal(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_plugin(site, "cocaine-duplicate", DUPLICATE_ONESHOT, entry_point="zz-duplicate")
    monkeypatch.setenv("COCAINE_STRICT_PLUGINS", "1")
    reset_host()
    with pytest.raises(PluginError, match="driver 'oneshot' is registered by both ") as caught:
        get_host()
    assert isinstance(caught.value.__cause__, DuplicateNameError)


@pytest.mark.parametrize("value", ["0", "", "false", "no"])
def test_strict_mode_off_values(site: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    write_plugin(site, "cocaine-broken", BROKEN)
    monkeypatch.setenv("COCAINE_STRICT_PLUGINS", value)
    assert "broken" in loaded_names()


def test_strict_mode_with_healthy_plugins_loads_them(site: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COCAINE_STRICT_PLUGINS", "1")
    monkeypatch.setenv("COCAINE_LOAD_PLUGINS", "example,python")
    assert loaded_names() == {"core", "example", "python"}


def test_strict_mode_on_the_command_line(tmp_path: Path) -> None:
    write_plugin(tmp_path, "cocaine-broken", BROKEN)
    result = run_cocaine("plugins", pythonpath=[tmp_path], env={"COCAINE_STRICT_PLUGINS": "1"})
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.endswith(
        "error: plugin 'broken' (cocaine-broken): failed to load: ModuleNotFoundError: No "
        "module named 'cocaine_no_such_dependency' (COCAINE_STRICT_PLUGINS is set, so this is "
        "fatal)\n")
    assert "Traceback" not in result.stderr
    debug = run_cocaine("--debug", "plugins", pythonpath=[tmp_path],
                        env={"COCAINE_STRICT_PLUGINS": "1"})
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "cocaine_core.errors.PluginError" in debug.stderr


# -- the registry -------------------------------------------------------------------------------


def owner(name: str, distribution: str) -> PluginRecord:
    """A plugin record, for registry tests."""
    return PluginRecord(name, distribution, "1.0", f"{name}.plugin")


def test_registry_add_get_owner_names() -> None:
    registry = Registry("drivers")
    first = owner("first", "cocaine-first")
    registry.add("b-driver", "B", first)
    registry.add("a-driver", "A", first)
    assert registry.get("a-driver") == "A"
    assert registry.owner("b-driver") is first and registry.owner("c-driver") is None
    assert registry.names() == ["a-driver", "b-driver"]
    assert list(registry.items()) == [("a-driver", "A"), ("b-driver", "B")]
    assert "a-driver" in registry and "c-driver" not in registry
    assert first.types == {"drivers": ["b-driver", "a-driver"]}


def test_registry_refuses_a_duplicate_naming_both() -> None:
    registry = Registry("languages")
    registry.add("lua", object(), owner("lua", "cocaine-lua"))
    with pytest.raises(DuplicateNameError) as caught:
        registry.add("lua", object(), owner("moon", "cocaine-moonscript"))
    assert str(caught.value) == (
        "language 'lua' is registered by both cocaine-lua (plugin 'lua') and cocaine-moonscript "
        "(plugin 'moon'); uninstall one, or disable one with COCAINE_DISABLE_PLUGINS=moon")


@pytest.mark.parametrize("name", ["", None, 3])
def test_registry_refuses_a_name_that_is_not_a_string(name: Any) -> None:
    with pytest.raises(PluginError, match="cocaine-bad: a storage name must be a non-empty "
                                          "string"):
        Registry("storages").add(name, object(), owner("bad", "cocaine-bad"))


def test_registry_unknown_names() -> None:
    registry = Registry("slave_backends")
    registry.add("process", object(), owner("core", "cocaine-core"))
    with pytest.raises(UnknownTypeError) as caught:
        registry.get("docker", "engine.backend")
    assert str(caught.value) == ("engine.backend: unknown slave backend 'docker'; installed "
                                 "slave backends: 'process'")
    drivers = Registry("drivers")
    assert drivers.unknown_message("cron") == (
        "driver 'cron' is provided by cocaine-timers, which is not installed or failed to "
        "load (see 'cocaine plugins'); pip install cocaine-timers. installed drivers: (none)")


def test_bound_registry_is_the_old_name_of_the_registrar() -> None:
    # Plugins written before the rename annotate their registration hooks with it.
    from cocaine_core.hookspecs import Registrar
    from cocaine_core.plugins import BoundRegistry

    assert BoundRegistry is Registrar


def test_bound_registry_records_the_owner(site: Path) -> None:
    host = get_host()
    assert host.record("example").types["drivers"] == ["oneshot"]
    assert host.record("no-such-plugin") is None
    assert host.registry("languages").owner("python").distribution == "cocaine-python"
