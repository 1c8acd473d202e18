"""The manifest model (``cocaine_core/manifest.py``): defaults, spellings, and every problem."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cocaine_core.errors import ManifestError, Problem
from cocaine_core.jsontext import loads_lenient
from cocaine_core.manifest import (
    ENGINE_KEYS,
    TASK_KEYS,
    EngineConfig,
    Manifest,
    TaskConfig,
    app_name_for,
    load_manifest,
    parse_manifest,
)
from cocaine_core.plugins import PluginHost
from tests.distributions import PLUGIN_VARIABLES

ROOT = Path(__file__).resolve().parents[1]

#: The smallest valid manifest (its code, app.py, is written by the ``app_dir`` fixture).
MINIMAL: dict[str, Any] = {
    "type": "python",
    "args": {"source": "app.py"},
    "tasks": {"hello": {"type": "native-server"}},
}


@pytest.fixture(scope="module")
def host() -> PluginHost:
    """A plugin host with exactly the core, cocaine-python and cocaine-example-driver.

    Other distributions of this repository (timers, zmq, cgroups) are not loaded, whatever is
    installed, so the messages about the names they ship do not change as they grow.
    """
    with pytest.MonkeyPatch.context() as patch:
        for variable in PLUGIN_VARIABLES:
            patch.delenv(variable, raising=False)
        patch.setenv("COCAINE_LOAD_PLUGINS", "python,example")
        host = PluginHost().load()
    assert [r.name for r in host.records] == ["core", "example", "python"]
    assert all(r.loaded and not r.errors for r in host.records)
    return host


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``app.py`` and a package ``pkg/``, for ``args.source``."""
    folder = tmp_path_factory.mktemp("app")
    (folder / "app.py").write_text("def hello(request):\n    return b'hi'\n")
    (folder / "pkg").mkdir()
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "notes.txt").write_text("")
    (folder / "plain").mkdir()
    return folder


def parse(data: Any, app_dir: Path, host: PluginHost) -> Manifest:
    """Parse ``data`` as a manifest found in ``app_dir``."""
    return parse_manifest(data, root=app_dir, host=host)


def problems(data: Any, app_dir: Path, host: PluginHost) -> list[Problem]:
    """The problems of a manifest that must be bad."""
    with pytest.raises(ManifestError) as caught:
        parse(data, app_dir, host)
    return caught.value.problems


def variant(changes: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """MINIMAL with ``changes`` merged in (dotted keys reach into sections) and ``drop`` gone."""
    data = copy.deepcopy(MINIMAL)
    for dotted, value in changes.items():
        *parents, last = dotted.split("/")
        target = data
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    for key in drop:
        data.pop(key)
    return data


# -- valid manifests and their defaults ---------------------------------------------------------


def test_every_default_is_filled_in(app_dir: Path, host: PluginHost) -> None:
    manifest = parse(MINIMAL, app_dir, host)
    assert manifest.engine == EngineConfig(
        pool_limit=10, pool_min=0, queue_limit=100, grow_threshold=1, concurrency=1,
        heartbeat_timeout=30.0, startup_timeout=10.0, idle_timeout=600.0,
        termination_timeout=5.0, job_timeout=None, max_requests=0, max_rss=None,
        backend="process", extra={})
    assert manifest.tasks == {"hello": TaskConfig(name="hello", type="native-server",
                                                  event="hello", timeout=None, options={})}
    assert (manifest.type, manifest.args, manifest.root, manifest.path) == (
        "python", {"source": "app.py"}, app_dir, None)
    assert manifest.to_dict() == {
        "type": "python",
        "args": {"source": "app.py"},
        "engine": {"pool-limit": 10, "pool-min": 0, "queue-limit": 100, "grow-threshold": 1,
                   "concurrency": 1, "heartbeat-timeout": 30.0, "startup-timeout": 10.0,
                   "idle-timeout": 600.0, "termination-timeout": 5.0, "job-timeout": None,
                   "max-requests": 0, "max-rss": None, "backend": "process"},
        "tasks": {"hello": {"type": "native-server", "timeout": None}},
    }


def test_the_model_and_the_declared_keys_agree() -> None:
    defaults = EngineConfig()
    for key in ENGINE_KEYS:
        assert getattr(defaults, key.name.replace("-", "_")) == key.default, key.name
    assert {k.name for k in TASK_KEYS} == {"type", "emit", "timeout", "retry"}


def test_every_engine_key_is_read(app_dir: Path, host: PluginHost) -> None:
    engine = {"pool-limit": 20, "pool-min": 2, "queue-limit": 0, "grow-threshold": 3,
              "concurrency": 4, "heartbeat-timeout": 60, "startup-timeout": 2.5,
              "idle-timeout": 30, "termination-timeout": 0, "job-timeout": 12.5,
              "max-requests": 1000, "max-rss": 512 * 2**20, "backend": "process"}
    manifest = parse(variant({"engine": engine}), app_dir, host)
    assert manifest.engine.to_dict() == {k: (float(v) if isinstance(v, int) and k.endswith(
        "timeout") else v) for k, v in engine.items()}
    assert manifest.engine.pool_min == 2 and manifest.engine.job_timeout == 12.5


def test_suicide_timeout_is_the_old_name_of_idle_timeout(app_dir: Path,
                                                         host: PluginHost) -> None:
    manifest = parse(variant({"engine": {"suicide-timeout": 45}}), app_dir, host)
    assert manifest.engine.idle_timeout == 45.0
    assert "suicide-timeout" not in manifest.to_dict()["engine"]


def test_emit_names_the_event(app_dir: Path, host: PluginHost) -> None:
    manifest = parse(variant({"tasks": {
        "public": {"type": "native-server", "emit": "handle"},
        "private": {"type": "native-server", "emit": "handle", "timeout": 2},
        "zeta": {"type": "native-server"},
    }}), app_dir, host)
    assert manifest.tasks["public"].event == "handle"
    assert manifest.tasks["private"].timeout == 2.0
    assert manifest.events == ["handle", "zeta"]
    assert manifest.to_dict()["tasks"]["public"] == {"type": "native-server", "emit": "handle",
                                                     "timeout": None}


def test_the_older_drivers_spelling_is_accepted(app_dir: Path, host: PluginHost) -> None:
    old = variant({"drivers": {"tick": {"type": "native-server", "emit": "aggregate"}}},
                  drop=("tasks",))
    manifest = parse(old, app_dir, host)
    assert manifest.tasks == {"tick": TaskConfig(name="tick", type="native-server",
                                                 event="aggregate")}
    assert "drivers" not in manifest.to_dict() and "tick" in manifest.to_dict()["tasks"]


def test_problems_in_the_older_spelling_are_reported_under_drivers(app_dir: Path,
                                                                    host: PluginHost) -> None:
    old = variant({"drivers": {"tick": {"type": "native-server", "emit": 5}}}, drop=("tasks",))
    assert [p.path for p in problems(old, app_dir, host)] == ["drivers.tick.emit"]


def test_a_resolved_manifest_reads_back_as_itself(app_dir: Path, host: PluginHost) -> None:
    data = variant({"engine": {"pool-limit": 3, "suicide-timeout": 9},
                    "tasks": {"a": {"type": "oneshot", "times": 2, "emit": "b",
                                    "payload": "x"}}})
    manifest = parse(data, app_dir, host)
    assert parse(manifest.to_dict(), app_dir, host) == manifest
    assert parse(json.loads(json.dumps(manifest.to_dict())), app_dir, host) == manifest


def test_a_resolved_manifest_with_driver_defaults_reads_back(app_dir: Path,
                                                             host: PluginHost) -> None:
    manifest = parse(variant({"tasks": {"a": {"type": "oneshot"}}}), app_dir, host)
    assert parse(manifest.to_dict(), app_dir, host) == manifest


def test_a_package_folder_is_a_source(app_dir: Path, host: PluginHost) -> None:
    assert parse(variant({"args/source": "pkg"}), app_dir, host).args == {"source": "pkg"}
    assert parse(variant({"args/source": str(app_dir / "app.py")}), app_dir, host)


def test_the_example_app_manifest_is_valid(host: PluginHost) -> None:
    manifest = load_manifest(ROOT / "examples" / "hello" / "manifest.json", host=host)
    assert manifest.engine.pool_limit == 4
    assert set(manifest.tasks) == {"echo", "count", "fail"}
    assert manifest.path == ROOT / "examples" / "hello" / "manifest.json"


def test_load_manifest_resolves_source_from_the_manifest_folder(
        tmp_path: Path, host: PluginHost, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "deep" / "app"
    folder.mkdir(parents=True)
    (folder / "app.py").write_text("")
    (folder / "app.json").write_text('{"type": "python", "args": {"source": "app.py",},\n'
                                     ' "tasks": {"hello": {"type": "native-server",},},}\n')
    monkeypatch.chdir(tmp_path)
    manifest = load_manifest("deep/app/app.json", host=host)
    assert manifest.root == folder.resolve()
    assert manifest.path == Path("deep/app/app.json")


@pytest.mark.parametrize(("path", "name"), [
    ("examples/hello/manifest.json", "hello"),
    ("apps/billing.json", "billing"),
    ("worker.v2.json", "worker.v2"),
])
def test_app_name_for(path: str, name: str, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / path
    target.parent.mkdir(parents=True, exist_ok=True)
    assert app_name_for(Path(path)) == name


# -- every problem, by key path -----------------------------------------------------------------

TASK = {"type": "native-server"}

#: (id, manifest, the key path of the problem, words its message must hold)
MALFORMED: list[tuple[str, Any, str, str]] = [
    ("not-an-object", ["type", "python"], "", "a manifest must be a JSON object ({...}), got"),
    ("a-string", "python", "", "must be a JSON object"),
    ("no-type", variant({}, drop=("type",)), "type",
     'is required: the app\'s language, e.g. "python"'),
    ("type-not-a-string", variant({"type": 3}), "type", "must be a language name, got 3"),
    ("unknown-language", variant({"type": "cobol"}), "type",
     "unknown language 'cobol'; installed languages: 'exec', 'python'"),
    ("args-not-an-object", variant({"args": "app.py"}), "args",
     'must be an object, got "app.py"'),
    ("no-source", variant({"args": {}}), "args.source", "is required"),
    ("missing-source", variant({"args/source": "nope.py"}), "args.source", "does not exist"),
    ("source-not-py", variant({"args/source": "notes.txt"}), "args.source",
     "is not a .py file"),
    ("source-folder-not-a-package", variant({"args/source": "plain"}), "args.source",
     "is a folder without __init__.py"),
    ("source-not-a-string", variant({"args/source": ["app.py"]}), "args.source",
     "must be a path"),
    ("unknown-arg", variant({"args/sauce": "x"}), "args.sauce", "unknown key"),
    ("engine-not-an-object", variant({"engine": 5}), "engine", "must be an object, got 5"),
    ("pool-limit-word", variant({"engine/pool-limit": "ten"}), "engine.pool-limit",
     'must be an integer from 1 to 1000, got "ten"'),
    ("pool-limit-zero", variant({"engine/pool-limit": 0}), "engine.pool-limit",
     "must be an integer from 1 to 1000, got 0"),
    ("pool-limit-fraction", variant({"engine/pool-limit": 2.5}), "engine.pool-limit",
     "must be an integer from 1 to 1000, got 2.5"),
    ("pool-limit-boolean", variant({"engine/pool-limit": True}), "engine.pool-limit",
     "must be an integer from 1 to 1000, got true"),
    ("pool-min-negative", variant({"engine/pool-min": -1}), "engine.pool-min",
     "must be an integer from 0 to 1000, got -1"),
    ("pool-min-above-limit", variant({"engine": {"pool-min": 5, "pool-limit": 2}}),
     "engine.pool-min", "is 5, above engine.pool-limit (2)"),
    ("queue-limit-negative", variant({"engine/queue-limit": -5}), "engine.queue-limit",
     "must be an integer from 0 to 1000000, got -5"),
    ("grow-threshold-zero", variant({"engine/grow-threshold": 0}), "engine.grow-threshold",
     "must be an integer from 1 to 10000, got 0"),
    ("concurrency-string", variant({"engine/concurrency": "2"}), "engine.concurrency",
     'must be an integer from 1 to 1000, got "2"'),
    ("heartbeat-timeout-zero", variant({"engine/heartbeat-timeout": 0}),
     "engine.heartbeat-timeout",
     "must be a number of seconds from 0.1 to 86400 (1 day), got 0"),
    ("startup-timeout-negative", variant({"engine/startup-timeout": -1}),
     "engine.startup-timeout",
     "must be a number of seconds from 0.1 to 3600 (1 hour), got -1"),
    ("idle-timeout-word", variant({"engine/idle-timeout": "forever"}), "engine.idle-timeout",
     'must be a number of seconds from 0.1 to 604800 (7 days), got "forever"'),
    ("suicide-timeout-word", variant({"engine/suicide-timeout": "never"}),
     "engine.suicide-timeout",
     "must be a number of seconds from 0.1 to 604800 (7 days)"),
    ("termination-timeout-negative", variant({"engine/termination-timeout": -1}),
     "engine.termination-timeout",
     "must be a number of seconds from 0 to 600 (10 minutes), got -1"),
    ("job-timeout-zero", variant({"engine/job-timeout": 0}), "engine.job-timeout",
     "must be a number of seconds from 0.001 to 604800 (7 days), or null for none, got 0"),
    ("unknown-backend", variant({"engine/backend": "docker"}), "engine.backend",
     "unknown slave backend 'docker'; installed slave backends: 'process'"),
    ("backend-not-a-string", variant({"engine/backend": 5}), "engine.backend",
     "must be a non-empty string, got 5"),
    ("misspelled-engine-key", variant({"engine/pool-limt": 3}), "engine.pool-limt",
     "unknown key; did you mean 'pool-limit'?"),
    ("unknown-engine-key", variant({"engine/colour": "red"}), "engine.colour",
     "unknown key; accepted keys: backend, concurrency"),
    ("resource-limits-not-installed", variant({"engine/resource-limits": {}}),
     "engine.resource-limits", "is provided by cocaine-cgroups, which is not installed"),
    ("misspelled-top-key", variant({"taskz": {}}), "taskz",
     "unknown key; did you mean 'tasks'?"),
    ("unknown-top-key", variant({"version": 2}), "version",
     "unknown key; accepted keys: type, args, engine, tasks, drivers"),
    ("no-tasks", variant({}, drop=("tasks",)), "tasks", "is required: at least one task"),
    ("empty-tasks", variant({"tasks": {}}), "tasks",
     "is empty: an app needs at least one task"),
    ("tasks-a-list", variant({"tasks": [TASK]}), "tasks", "must be an object of tasks, got"),
    ("tasks-and-drivers", variant({"drivers": {"a": TASK}}), "drivers",
     "give 'tasks' or the older 'drivers', not both"),
    ("empty-drivers", variant({"drivers": {}}, drop=("tasks",)), "drivers", "is empty"),
    ("task-not-an-object", variant({"tasks/hello": "native-server"}), "tasks.hello",
     "must be an object with a 'type', got \"native-server\""),
    ("task-without-type", variant({"tasks/hello": {"emit": "x"}}), "tasks.hello.type",
     "is required: the task's driver"),
    ("task-type-not-a-string", variant({"tasks/hello": {"type": ["native-server"]}}),
     "tasks.hello.type", "must be a driver name"),
    ("unknown-driver", variant({"tasks/hello": {"type": "carrier-pigeon"}}), "tasks.hello.type",
     "unknown driver 'carrier-pigeon'; installed drivers: "),
    ("driver-of-a-missing-distribution", variant({"tasks/hello": {"type": "zeromq-server"}}),
     "tasks.hello.type", "driver 'zeromq-server' is provided by cocaine-zmq, which is not "
                         "installed"),
    ("misspelled-task-key", variant({"tasks/hello": {"type": "native-server", "emitt": "x"}}),
     "tasks.hello.emitt", "unknown key; did you mean 'emit'?"),
    ("emit-not-an-event-name", variant({"tasks/hello": {"type": "native-server",
                                                        "emit": "1st"}}),
     "tasks.hello.emit", 'event name "1st" must start with a letter'),
    ("emit-empty", variant({"tasks/hello": {"type": "native-server", "emit": ""}}),
     "tasks.hello.emit", 'must be a non-empty string, got ""'),
    ("task-name-not-an-event-name", variant({"tasks": {"say hello": TASK}}), "tasks.say hello",
     'event name "say hello" must start with a letter'),
    ("task-timeout-word", variant({"tasks/hello": {"type": "native-server",
                                                   "timeout": "soon"}}),
     "tasks.hello.timeout", 'must be a number of seconds from 0.001 to 604800 (7 days), or '
     'null for none, got "soon"'),
    ("oneshot-times-zero", variant({"tasks/hello": {"type": "oneshot", "times": 0}}),
     "tasks.hello.times", "must be a positive integer, got 0"),
    ("oneshot-too-many", variant({"tasks/hello": {"type": "oneshot", "times": 1001}}),
     "tasks.hello.times", "must be at most 1000"),
    ("oneshot-payload-number", variant({"tasks/hello": {"type": "oneshot", "payload": 5}}),
     "tasks.hello.payload", "must be a non-empty string, got 5"),
    ("oneshot-key-on-another-driver", variant({"tasks/hello": {"type": "native-server",
                                                               "times": 2}}),
     "tasks.hello.times", "unknown key"),
]


@pytest.mark.parametrize(("data", "path", "words"), [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_a_malformed_manifest_names_the_key_path(data: Any, path: str, words: str,
                                                 app_dir: Path, host: PluginHost) -> None:
    found = problems(data, app_dir, host)
    by_path = {p.path: p.message for p in found}
    assert path in by_path, f"no problem at {path!r}: {found}"
    assert words in by_path[path]
    with pytest.raises(ManifestError) as caught:
        parse(data, app_dir, host)
    shown = f"  - {path}: " if path else "  - "
    assert f"\n{shown}{by_path[path]}" in str(caught.value)


def test_there_are_enough_malformed_manifests() -> None:
    assert len(MALFORMED) >= 25
    assert len({m[0] for m in MALFORMED}) == len(MALFORMED)


def test_every_problem_is_reported_at_once(app_dir: Path, host: PluginHost) -> None:
    data = {
        "type": "python",
        "args": {"source": "nope.py"},
        "engine": {"pool-limit": "ten", "queue-limit": -1, "heartbeat-timout": 3},
        "tasks": {"a": {"type": "carrier-pigeon"}, "b": {"type": "native-server", "x": 1}},
        "extra": True,
    }
    with pytest.raises(ManifestError) as caught:
        parse(data, app_dir, host)
    paths = [p.path for p in caught.value.problems]
    assert sorted(paths) == sorted(["extra", "args.source", "engine.pool-limit",
                                    "engine.queue-limit", "engine.heartbeat-timout",
                                    "tasks.a.type", "tasks.b.x"])
    text = str(caught.value)
    assert text.startswith("7 problems with the manifest:\n  - ")
    assert len(text.splitlines()) == 8


def test_one_problem_is_one_problem(app_dir: Path, host: PluginHost) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(variant({"engine/pool-limit": "ten"}), root=app_dir, host=host,
                       source="app.json")
    assert str(caught.value) == ('1 problem with the manifest in app.json:\n'
                                 '  - engine.pool-limit: must be an integer from 1 to 1000, '
                                 'got "ten"')


# -- reading files ------------------------------------------------------------------------------


def test_a_missing_file(tmp_path: Path, host: PluginHost) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / "nope.json", host=host)
    assert caught.value.problems == [Problem("", f"no such file: {tmp_path / 'nope.json'}")]
    assert caught.value.source == str(tmp_path / "nope.json")


@pytest.mark.parametrize("make", ["folder", "not-utf8"])
def test_an_unreadable_file(tmp_path: Path, host: PluginHost, make: str) -> None:
    target = tmp_path / "app.json"
    if make == "folder":
        target.mkdir()
    else:
        target.write_bytes(b'{"type": "\xff"}')
    with pytest.raises(ManifestError) as caught:
        load_manifest(target, host=host)
    assert caught.value.problems[0].message.startswith(f"cannot read {target}: ")


def test_a_file_that_is_not_json(tmp_path: Path, host: PluginHost) -> None:
    target = tmp_path / "app.json"
    target.write_text('{\n  "type": "python",\n  "tasks" {}\n}\n')
    with pytest.raises(ManifestError) as caught:
        load_manifest(target, host=host)
    assert str(caught.value) == (f"1 problem with the manifest in {target}:\n  - not valid JSON "
                                 "at line 3, column 11: Expecting ':' delimiter")


def test_a_file_with_trailing_commas(tmp_path: Path, host: PluginHost, app_dir: Path) -> None:
    target = app_dir / "commas.json"
    target.write_text('{\n  "type": "python",\n  "args": {"source": "app.py",},\n'
                      '  "engine": {"pool-limit": 2,},\n'
                      '  "tasks": {"hello": {"type": "native-server",},},\n}\n')
    assert load_manifest(target, host=host).engine.pool_limit == 2


# -- any JSON value: a model or a ManifestError, never another exception ------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=12,
)
NUMBERS = st.integers(-3, 2000) | st.floats(-1, 1e6, allow_nan=False) | st.just(None)
ENGINE_NAMES = [k.name for k in ENGINE_KEYS] + ["suicide-timeout", "resource-limits", "x"]
TASK_OPTIONS = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["native-server", "oneshot", "zeromq-server", "nope", ""]) | JSON,
    "emit": st.sampled_from(["handle", "1bad", ""]) | JSON,
    "timeout": NUMBERS | JSON,
    "times": NUMBERS | JSON,
    "payload": st.text(max_size=5) | JSON,
    "interval": NUMBERS,
})
TASKS = st.dictionaries(st.sampled_from(["hello", "shot", "say hi", "", "a.b"]) | st.text(
    max_size=6), TASK_OPTIONS | JSON, max_size=3) | JSON
MANIFEST_LIKE = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["python", "cobol", ""]) | JSON,
    "args": st.fixed_dictionaries({}, optional={
        "source": st.sampled_from(["app.py", "pkg", "nope.py", "notes.txt", "plain", "", "."])
        | JSON}) | JSON,
    "engine": st.dictionaries(st.sampled_from(ENGINE_NAMES), NUMBERS | JSON, max_size=4) | JSON,
    "tasks": TASKS,
    "drivers": TASKS,
    "taks": JSON,
})


def check_any(value: Any, app_dir: Path, host: PluginHost) -> None:
    """``value`` gives a model that reads back as itself, or a ManifestError with problems."""
    try:
        manifest = parse_manifest(value, root=app_dir, host=host)
    except ManifestError as exc:
        assert exc.problems
        assert all(isinstance(p.path, str) and p.message for p in exc.problems)
        return
    assert isinstance(manifest, Manifest)
    assert parse_manifest(manifest.to_dict(), root=app_dir, host=host) == manifest


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.one_of(JSON, MANIFEST_LIKE))
def test_any_json_value_is_a_model_or_a_manifest_error(app_dir: Path, host: PluginHost,
                                                       value: Any) -> None:
    check_any(value, app_dir, host)


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(MANIFEST_LIKE)
def test_any_manifest_text_is_a_model_or_a_manifest_error(app_dir: Path, host: PluginHost,
                                                          value: Any) -> None:
    text = json.dumps(value, indent=2).replace("\n}", ",\n}") if value else "{}"
    check_any(loads_lenient(text), app_dir, host)


def test_a_huge_integer_is_a_problem(app_dir: Path, host: PluginHost) -> None:
    assert [p.path for p in problems(variant({"engine/pool-limit": 10**400}), app_dir,
                                     host)] == ["engine.pool-limit"]
