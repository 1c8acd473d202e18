"""``load(config)``: importing an app's source (a file or a package) and finding its handlers.

Each failure is an ``AppLoadError`` whose message says what is wrong and where, so the person
who deployed the app can fix it without reading the node's code.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cocaine_python.loader import load
from cocaine_python.request import Request

from cocaine_core.errors import AppLoadError


@pytest.fixture(autouse=True)
def _restore_import_state() -> Iterator[None]:
    """``load`` puts the app's folder on sys.path and the module in sys.modules, as it should
    in a template process; undo that here so each test imports afresh."""
    path, modules = list(sys.path), dict(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - set(modules):
        del sys.modules[name]


def write(folder: Path, files: dict[str, str]) -> None:
    """Write ``files`` (relative path → source) under ``folder``."""
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def config(root: Path, source: str, *events: str) -> dict[str, Any]:
    """What the process backend hands the runtime: the language args, root and events."""
    return {"args": {"source": source}, "root": str(root), "events": list(events)}


def test_a_source_file_gives_a_handler_per_event(tmp_path):
    write(tmp_path, {"app.py": '''
        def echo(request):
            return request.data

        class Shout:
            def __call__(self, request):
                return request.data.upper()

        shout = Shout()
        '''})
    app = load(config(tmp_path, "app.py", "echo", "shout"))
    assert set(app.handlers) == {"echo", "shout"}
    assert app.handlers["echo"](Request(b"hi", "echo")) == b"hi"
    assert app.handlers["shout"](Request(b"hi", "shout")) == b"HI"
    assert app.module.__file__ == str(tmp_path / "app.py")


def test_an_absolute_source_is_used_as_is(tmp_path):
    write(tmp_path / "code", {"app.py": "def echo(request):\n    return b'abs'\n"})
    app = load(config(tmp_path / "elsewhere", str(tmp_path / "code" / "app.py"), "echo"))
    assert app.handlers["echo"](Request(b"", "echo")) == b"abs"


def test_a_package_with_relative_imports(tmp_path):
    """A package folder is imported as a package: its own modules import relatively, and
    sibling modules of the folder are importable too."""
    write(tmp_path, {
        "shop/__init__.py": '''
            from .prices import price
            from helpers_beside import greet

            def quote(request):
                return f"{greet()}: {price(request.text())}"
            ''',
        "shop/prices.py": "def price(item):\n    return {'tea': 3}.get(item, 0)\n",
        "helpers_beside.py": "def greet():\n    return 'hello'\n",
    })
    app = load(config(tmp_path, "shop", "quote"))
    assert app.handlers["quote"](Request(b"tea", "quote")) == "hello: 3"


def test_a_missing_handler_names_it_and_what_the_module_defines(tmp_path):
    write(tmp_path, {"app.py": '''
        import json

        RATE = 3

        def echo(request):
            return request.data

        def helper():
            pass

        def _private(request):
            pass
        '''})
    with pytest.raises(AppLoadError) as error:
        load(config(tmp_path, "app.py", "echo", "ping", "RATE"))
    message = str(error.value)
    assert message == ("app.py has no handler 'ping', 'RATE' (a module-level callable named "
                       "after the event); it defines: echo, helper")


def test_a_module_without_functions_says_so(tmp_path):
    write(tmp_path, {"empty.py": "VALUE = 1\n"})
    with pytest.raises(AppLoadError, match=r"empty\.py has no handler 'ping' .*it defines: "
                                           r"\(no functions\)"):
        load(config(tmp_path, "empty.py", "ping"))


def test_a_syntax_error_names_the_file_and_line(tmp_path):
    write(tmp_path, {"app.py": "def echo(request):\n    return request.data\n\ndef broken(:\n"})
    with pytest.raises(AppLoadError) as error:
        load(config(tmp_path, "app.py", "echo"))
    message = str(error.value)
    assert message.startswith(f"syntax error in {tmp_path / 'app.py'}, line 4: ")


def test_a_syntax_error_in_a_package_module_names_that_module(tmp_path):
    write(tmp_path, {"pkg/__init__.py": "from .part import echo\n",
                     "pkg/part.py": "def echo(request)\n    return b''\n"})
    with pytest.raises(AppLoadError) as error:
        load(config(tmp_path, "pkg", "echo"))
    assert str(error.value).startswith(f"syntax error in {tmp_path / 'pkg' / 'part.py'}, "
                                       f"line 1: ")


def test_an_import_error_names_the_missing_module_and_the_line(tmp_path):
    write(tmp_path, {"app.py": "import os\nimport no_such_module_here\n\n"
                               "def echo(request):\n    return request.data\n"})
    with pytest.raises(AppLoadError) as error:
        load(config(tmp_path, "app.py", "echo"))
    assert str(error.value) == (
        f"importing app.py raised ModuleNotFoundError: No module named "
        f"'no_such_module_here' at {tmp_path / 'app.py'}:2")


def test_an_exception_at_import_names_where_in_the_app_it_was_raised(tmp_path):
    """The location is the app's own line, deepest first, not a line of the loader."""
    write(tmp_path, {"pkg/__init__.py": "from .settings import LIMIT\n",
                     "pkg/settings.py": "import os\n\nLIMIT = int('ten')\n"})
    with pytest.raises(AppLoadError) as error:
        load(config(tmp_path, "pkg", "echo"))
    assert str(error.value) == (
        f"importing pkg raised ValueError: invalid literal for int() with base 10: 'ten' "
        f"at {tmp_path / 'pkg' / 'settings.py'}:3")
