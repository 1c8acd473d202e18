"""The ``python`` language's manifest checks: ``args.source``."""

from __future__ import annotations

from cocaine_python.plugin import PythonLanguage, resolve_source


def problems(args, root):
    _, found = PythonLanguage().check_args(args, root)
    return [(problem.path, problem.message) for problem in found]


def test_a_file_or_a_package_is_accepted(tmp_path):
    (tmp_path / "app.py").write_text("")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    assert problems({"source": "app.py"}, tmp_path) == []
    assert problems({"source": "pkg"}, tmp_path) == []
    assert problems({"source": str(tmp_path / "app.py")}, tmp_path / "elsewhere") == []


def test_each_problem_says_what_to_do(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("")
    assert problems({}, tmp_path) == [
        ("source", "is required: the app's .py file or package folder, relative to the "
                   "manifest")]
    assert problems({"source": 3, "extra": 1}, tmp_path) == [
        ("extra", "unknown key; the python language takes only 'source'"),
        ("source", "must be a path, got 3")]
    assert problems({"source": "missing.py"}, tmp_path) == [
        ("source", f"{tmp_path / 'missing.py'} does not exist")]
    assert problems({"source": "folder"}, tmp_path) == [
        ("source", f"{tmp_path / 'folder'} is a folder without __init__.py; point at a .py "
                   f"file or a package")]
    assert problems({"source": "notes.txt"}, tmp_path) == [
        ("source", f"{tmp_path / 'notes.txt'} is not a .py file")]


def test_relative_sources_resolve_from_the_root(tmp_path):
    assert resolve_source("sub/../app.py", tmp_path) == (tmp_path / "app.py").resolve()
    assert resolve_source("/abs/app.py", tmp_path) == resolve_source("/abs/app.py", "/else")
