"""The manifest parser, fuzzed: whatever JSON value or engine/task map it is given,
``parse_manifest`` returns a ``Manifest`` or raises ``ManifestError`` listing problems by key
path; never any other exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cocaine_core.errors import ManifestError, Problem
from cocaine_core.manifest import Manifest, parse_manifest
from cocaine_core.manifest_model import ENGINE_KEYS, TASK_KEYS
from cocaine_core.plugins import get_host
from tests.fuzz.strategies import FUZZ, TEXT, json_values

HOST = get_host()
DRIVERS = {name: tuple(getattr(driver, "keys", ())) for name, driver in
           HOST.registry("drivers").items()}
ENGINE_NAMES = [k.name for k in ENGINE_KEYS] + [name for name, _ in
                                               HOST.registry("engine_keys").items()]
TOP = ["type", "args", "engine", "tasks", "drivers"]
VALUES = json_values()


@st.composite
def tasks(draw: st.DrawFn) -> dict[str, Any]:
    """A map of tasks: known driver types with their own keys and the common ones, with
    arbitrary values (and now and then an arbitrary value in place of a task)."""
    out: dict[str, Any] = {}
    for name in draw(st.lists(st.one_of(TEXT, st.sampled_from(["echo", "tick", "a.b:c-d"])),
                              max_size=3)):
        if draw(st.integers(0, 5)) == 0:
            out[name] = draw(VALUES)
            continue
        driver = draw(st.sampled_from(sorted(DRIVERS)))
        keys = [k.name for k in TASK_KEYS if k.name != "type"] + \
            [getattr(k, "name", str(k)) for k in DRIVERS[driver]]
        task: dict[str, Any] = {"type": draw(st.one_of(st.just(driver), VALUES))}
        for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
            task[key] = draw(VALUES)
        out[name] = task
    return out


@st.composite
def manifests(draw: st.DrawFn) -> dict[str, Any]:
    """A manifest-shaped map: each top key absent, plausible or arbitrary."""
    data: dict[str, Any] = {}
    if draw(st.booleans()):
        data["type"] = draw(st.one_of(st.just("python"), VALUES))
    if draw(st.booleans()):
        data["args"] = draw(st.one_of(
            st.fixed_dictionaries({"source": st.one_of(st.just("app.py"), TEXT)}), VALUES))
    if draw(st.booleans()):
        data["engine"] = draw(st.one_of(
            st.dictionaries(st.one_of(st.sampled_from(ENGINE_NAMES), TEXT), VALUES,
                            max_size=5), VALUES))
    section = draw(st.sampled_from(["tasks", "drivers", "both", "none"]))
    if section in ("tasks", "both"):
        data["tasks"] = draw(st.one_of(tasks(), VALUES))
    if section in ("drivers", "both"):
        data["drivers"] = draw(st.one_of(tasks(), VALUES))
    for key in draw(st.lists(TEXT, max_size=2)):
        data[key] = draw(VALUES)
    return data


def check(data: Any, root: Path) -> None:
    """The property: a Manifest, or ManifestError whose problems each name a key path."""
    try:
        manifest = parse_manifest(data, root=root)
    except ManifestError as exc:
        assert exc.problems, "a ManifestError lists its problems"
        for problem in exc.problems:
            assert isinstance(problem, Problem)
            assert isinstance(problem.path, str) and isinstance(problem.message, str)
            assert problem.message.strip(), f"an empty message at {problem.path!r}"
            if problem.path and isinstance(data, dict):
                keys = [*TOP, *map(str, data)]
                assert any(problem.path.startswith(key) for key in keys), (
                    f"problem path {problem.path!r} names no key of the manifest")
        return
    assert isinstance(manifest, Manifest)


@FUZZ
@given(data=VALUES)
def test_any_json_value_is_a_manifest_or_a_manifest_error(data: Any, tmp_path: Path) -> None:
    check(data, tmp_path)


@FUZZ
@given(data=manifests())
def test_any_engine_and_task_map_is_a_manifest_or_a_manifest_error(data: dict[str, Any],
                                                                    tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("def echo(request):\n    return request.data\n")
    check(data, tmp_path)
