"""The documentation keeps up with the code (the datasette way).

Every hook has a section in docs/hooks.md and a test module that implements it; every manifest
key is in docs/manifest.md with its default; the manifests the docs show as valid are; and the
plugin that docs/writing-plugins.md builds is built here, and its tests pass.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cocaine_core import hookspecs
from cocaine_core.manifest import ENGINE_KEYS, TASK_KEYS, TOP_KEYS, parse_manifest
from cocaine_core.plugins import PluginHost
from tests.distributions import PLUGIN_VARIABLES, clean_environment, write_distribution

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
THIS_FILE = Path(__file__).resolve()

HOOKS = [name for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
         if getattr(function, "cocaine_spec", None) is not None]
#: The hooks in the order hookspecs.py declares them.
HOOKS_IN_ORDER = sorted(HOOKS, key=lambda n: inspect.getsourcelines(getattr(hookspecs, n))[1])

#: A fenced block: its info string (language and attributes) and its text.
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def read(name: str) -> str:
    """A page of docs/."""
    return (DOCS / name).read_text(encoding="utf-8")


def hook_sections() -> list[str]:
    """The hooks docs/hooks.md has a heading for, in page order."""
    return re.findall(r"^#{2,4} `?(cocaine_\w+)`?\s*$", read("hooks.md"), re.MULTILINE)


def test_there_are_hooks() -> None:
    assert len(HOOKS) >= 12
    assert "cocaine_register_drivers" in HOOKS and "cocaine_slave_spawned" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_section_in_the_hooks_page(hook: str) -> None:
    assert hook in hook_sections(), f"docs/hooks.md has no section '### {hook}'"


def test_the_hooks_page_has_no_section_for_a_hook_that_does_not_exist() -> None:
    assert set(hook_sections()) <= set(HOOKS)
    assert len(hook_sections()) == len(set(hook_sections())), "a hook has two sections"


def test_the_hooks_page_follows_the_order_of_hookspecs() -> None:
    assert hook_sections() == HOOKS_IN_ORDER


def test_every_hook_section_shows_its_signature() -> None:
    text = read("hooks.md")
    for hook in HOOKS:
        assert re.search(rf"^def {hook}\(", text, re.MULTILINE), hook


def _test_files() -> list[Path]:
    files = [*ROOT.glob("tests/**/test_*.py"), *ROOT.glob("plugins/*/tests/**/test_*.py")]
    return [f for f in files if f.resolve() != THIS_FILE]


def _dotted(node: ast.expr) -> str:
    """``a.b.c`` for a name or an attribute chain; empty for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def hooks_implemented(source: str) -> set[str]:
    """The hooks a module's code implements: each function (at any depth) decorated with
    ``hookimpl`` or ``hookimpl(...)``, under its name or its ``specname``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            if _dotted(call.func if call else decorator).split(".")[-1] != "hookimpl":
                continue
            specname = [str(k.value.value) for k in (call.keywords if call else [])
                        if k.arg == "specname" and isinstance(k.value, ast.Constant)]
            found.add(specname[0] if specname else node.name)
    return found


@functools.cache
def _implemented_in_tests() -> dict[str, list[Path]]:
    """The test modules implementing each hook, by hook."""
    found: dict[str, list[Path]] = {}
    for path in _test_files():
        for hook in hooks_implemented(path.read_text(encoding="utf-8")):
            found.setdefault(hook, []).append(path)
    return found


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_implemented_in_a_test(hook: str) -> None:
    assert _implemented_in_tests().get(hook), (
        f"no test module under tests/ or plugins/*/tests defines a @hookimpl {hook}: write a "
        f"test that implements it and checks it is called with the arguments it documents")


def test_naming_a_hook_is_not_implementing_it() -> None:
    assert hooks_implemented('"""cocaine_app_info"""\ncocaine_app_info = 1\n') == set()
    assert hooks_implemented("def cocaine_app_info(app):\n    pass\n") == set()
    assert hooks_implemented(
        "@hookimpl\ndef cocaine_app_info(app): pass\n"
        "class P:\n    @cocaine_core.hookimpl(tryfirst=True)\n"
        "    def cocaine_slave_spawned(self, slave): pass\n"
        "@hookimpl(specname='cocaine_app_stopped')\ndef stopped(app): pass\n"
    ) == {"cocaine_app_info", "cocaine_slave_spawned", "cocaine_app_stopped"}


# -- docs/manifest.md ---------------------------------------------------------------------------


def _table_rows(text: str) -> dict[str, list[str]]:
    """The rows of every table on a page whose first cell is a `key`, by that key."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = re.match(r"^\| `([^`]+)` \|(.*)\|$", line)
        if match:
            rows.setdefault(match[1], [c.strip() for c in match[2].split("|")])
    return rows


@pytest.mark.parametrize("key", [*TOP_KEYS, *(k.name for k in ENGINE_KEYS),
                                 *(a for k in ENGINE_KEYS for a in k.aliases),
                                 *(k.name for k in TASK_KEYS)])
def test_every_manifest_key_is_documented(key: str) -> None:
    assert f"`{key}`" in read("manifest.md")


@pytest.mark.parametrize("key", ENGINE_KEYS, ids=lambda k: k.name)
def test_every_engine_key_has_its_default_in_the_table(key: Any) -> None:
    row = _table_rows(read("manifest.md")).get(key.name)
    assert row, f"docs/manifest.md has no table row for `{key.name}`"
    assert json.loads(row[0].strip("`")) == key.default
    assert row[1], "the row says what the key means"


@pytest.fixture(scope="module")
def host() -> PluginHost:
    """The core and cocaine-python only: what the docs' checked examples may use."""
    with pytest.MonkeyPatch.context() as patch:
        for variable in PLUGIN_VARIABLES:
            patch.delenv(variable, raising=False)
        patch.setenv("COCAINE_LOAD_PLUGINS", "python")
        return PluginHost().load()


def checked_examples() -> list[str]:
    """The JSON blocks of docs/manifest.md and languages.md marked ``<!-- checked -->``: valid
    manifests."""
    return re.findall(r"^<!-- checked -->\n```json\n(.*?)^```$",
                      read("manifest.md") + read("languages.md"),
                      re.DOTALL | re.MULTILINE)


def test_the_manifest_page_has_checked_examples() -> None:
    assert len(checked_examples()) >= 4


@pytest.mark.parametrize("index", range(len(checked_examples())))
def test_the_manifest_page_examples_are_valid(index: int, tmp_path: Path,
                                              host: PluginHost) -> None:
    from cocaine_core.jsontext import loads_lenient

    (tmp_path / "app.py").write_text("")
    parse_manifest(loads_lenient(checked_examples()[index]), root=tmp_path, host=host)


def test_the_resolved_manifest_shown_is_what_check_prints(tmp_path: Path,
                                                          host: PluginHost) -> None:
    from cocaine_core.jsontext import loads_lenient

    text = read("manifest.md")
    section = text[text.index("## The resolved manifest"):]
    shown = json.loads(FENCE.search(section)[2])
    (tmp_path / "app.py").write_text("")
    manifest = parse_manifest(loads_lenient(checked_examples()[0]), root=tmp_path, host=host)
    assert manifest.to_dict() == shown


def test_the_problems_shown_are_what_check_prints(tmp_path: Path, host: PluginHost) -> None:
    from cocaine_core.errors import ManifestError

    (tmp_path / "app.py").write_text("")
    data = {"type": "python", "args": {"source": "app.py"},
            "engine": {"pool-limit": "ten", "queue-limt": 5}, "tasks": {}}
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, root=tmp_path, host=host, source="app.json")
    assert f"$ cocaine manifest check app.json\n{caught.value}\n" in read("manifest.md")


# -- links --------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_relative_links_lead_somewhere(page: str) -> None:
    text = FENCE.sub("", read(page))
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (DOCS / target).exists(), f"{page} links to {target}, which does not exist"


def test_the_index_links_the_foundation_pages() -> None:
    index = read("index.md")
    for page in ("manifest.md", "hooks.md", "writing-plugins.md"):
        assert f"]({page})" in index, f"docs/index.md does not link {page}"


# -- docs/writing-plugins.md: the plugin it builds works ----------------------------------------


def plugin_files() -> dict[str, str]:
    """The files docs/writing-plugins.md shows, by their ``title``."""
    files = {}
    for info, body in FENCE.findall(read("writing-plugins.md")):
        title = re.search(r'title="([^"]+)"', info)
        if title:
            files[title[1]] = body
    return files


def test_the_plugin_page_shows_a_whole_distribution() -> None:
    files = plugin_files()
    assert {"pyproject.toml", "README.md", "src/cocaine_udp/__init__.py",
            "src/cocaine_udp/plugin.py", "src/cocaine_udp/driver.py", "tests/conftest.py",
            "tests/test_udp.py"} <= set(files)
    project = tomllib.loads(files["pyproject.toml"])["project"]
    module = project["entry-points"]["cocaine"]["udp"]
    assert f"src/{module.replace('.', '/')}.py" in files
    assert "cocaine-core" in project["dependencies"][0]


def test_the_plugin_page_builds_a_plugin_whose_tests_pass(tmp_path: Path) -> None:
    files = plugin_files()
    project_dir = tmp_path / "cocaine-udp"
    for name, text in files.items():
        path = project_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    project = tomllib.loads(files["pyproject.toml"])["project"]
    # "Install" it the way pip would leave it: its metadata and entry points on the path.
    site = tmp_path / "site"
    write_distribution(site, project["name"], {}, project["entry-points"]["cocaine"],
                       project["version"])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project_dir, capture_output=True, text=True, timeout=300, check=False,
        env=clean_environment([site, project_dir / "src"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b3 passed\b", result.stdout), result.stdout


def test_the_plugin_page_code_is_ruff_clean(tmp_path: Path) -> None:
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed in this environment")
    for name, text in plugin_files().items():
        if name.endswith(".py"):
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    result = subprocess.run([str(ruff), "check", "--config", str(ROOT / "pyproject.toml"),
                             str(tmp_path)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
