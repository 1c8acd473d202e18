"""Registers the ``python`` language."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cocaine_core import hookimpl
from cocaine_core.errors import Problem
from cocaine_core.paths import deployed_root


class PythonLanguage:
    """Python apps: ``args.source`` is a ``.py`` file or a package folder."""

    runtime = "cocaine_python.runtime"

    def check_args(self, args: dict[str, Any], root: Path) -> tuple[dict[str, Any],
                                                                    list[Problem]]:
        """Check ``args.source`` (required; relative to the manifest's folder). A deployed
        app's (``root`` is its unpacked code on a node) must stay inside that code."""
        problems: list[Problem] = []
        for key in args:
            if key != "source":
                problems.append(Problem(str(key), "unknown key; the python language takes "
                                                  "only 'source'"))
        source = args.get("source")
        if source is None:
            problems.append(Problem("source", "is required: the app's .py file or package "
                                              "folder, relative to the manifest"))
        elif not isinstance(source, str) or not source:
            problems.append(Problem("source", f"must be a path, got {source!r}"))
        else:
            path = resolve_source(source, root)
            if deployed_root(root) and not _within(path, Path(root)):
                problems.append(Problem("source", f"{source!r} leads to {path}, outside the "
                                                  "app's uploaded code; a deployed app loads "
                                                  "only its own code: give a path inside "
                                                  "the archive, relative to the manifest"))
            elif not path.exists():
                problems.append(Problem("source", f"{path} does not exist"))
            elif path.is_dir() and not (path / "__init__.py").is_file():
                problems.append(Problem("source", f"{path} is a folder without __init__.py; "
                                                  "point at a .py file or a package"))
            elif path.is_file() and path.suffix != ".py":
                problems.append(Problem("source", f"{path} is not a .py file"))
        return dict(args), problems


def _within(path: Path, root: Path) -> bool:
    real_root = root.resolve()
    real_path = path.resolve()
    return real_path == real_root or real_root in real_path.parents


def resolve_source(source: str, root: Path | str) -> Path:
    """Where ``args.source`` points: absolute, or relative to ``root``."""
    try:
        path = Path(source).expanduser()
    except RuntimeError:  # ~unknownuser
        path = Path(source)
    return path if path.is_absolute() else (Path(root) / path).resolve()


@hookimpl
def cocaine_register_languages(registry: Any) -> None:
    """Register ``python``."""
    registry.add("python", PythonLanguage())
