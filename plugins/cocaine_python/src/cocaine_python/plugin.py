"""Registers the ``python`` language."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cocaine_core import hookimpl
from cocaine_core.errors import Problem


class PythonLanguage:
    """Python apps: ``args.source`` is a ``.py`` file or a package folder."""

    runtime = "cocaine_python.runtime"

    def check_args(self, args: dict[str, Any], root: Path) -> tuple[dict[str, Any],
                                                                    list[Problem]]:
        """Check ``args.source`` (required; relative to the manifest's folder)."""
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
            if not path.exists():
                problems.append(Problem("source", f"{path} does not exist"))
            elif path.is_dir() and not (path / "__init__.py").is_file():
                problems.append(Problem("source", f"{path} is a folder without __init__.py; "
                                                  "point at a .py file or a package"))
            elif path.is_file() and path.suffix != ".py":
                problems.append(Problem("source", f"{path} is not a .py file"))
        return dict(args), problems


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
