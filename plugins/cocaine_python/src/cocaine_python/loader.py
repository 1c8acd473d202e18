"""Importing an app's code and finding its handlers (runs in the template process)."""

from __future__ import annotations

import importlib.util
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from cocaine_core.errors import AppLoadError
from cocaine_python.plugin import resolve_source


class LoadedApp:
    """An imported app: its module and a handler per event."""

    def __init__(self, module: ModuleType, handlers: dict[str, Any]) -> None:
        self.module = module
        self.handlers = handlers


def load(config: dict[str, Any]) -> LoadedApp:
    """Import ``args.source`` and find a handler for every event; AppLoadError otherwise."""
    source = resolve_source(config["args"]["source"], config["root"])
    module = import_source(source)
    handlers: dict[str, Any] = {}
    missing: list[str] = []
    for event in config["events"]:
        handler = getattr(module, event, None)
        if handler is None or not callable(handler):
            missing.append(event)
        else:
            handlers[event] = handler
    if missing:
        defined = sorted(name for name, value in vars(module).items()
                         if callable(value) and not name.startswith("_")
                         and getattr(value, "__module__", None) == module.__name__)
        names = ", ".join(f"'{m}'" for m in missing)
        raise AppLoadError(f"{source.name} has no handler {names} (a module-level callable "
                           f"named after the event); it defines: "
                           f"{', '.join(defined) or '(no functions)'}")
    return LoadedApp(module, handlers)


def import_source(source: Path) -> ModuleType:
    """Import a .py file or a package folder as a fresh module named after it."""
    package = source.is_dir()
    entry = source / "__init__.py" if package else source
    name = re.sub(r"\W", "_", source.stem if not package else source.name) or "app"
    parent = str(source.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    spec = importlib.util.spec_from_file_location(
        name, entry, submodule_search_locations=[str(source)] if package else None)
    if spec is None or spec.loader is None:
        raise AppLoadError(f"cannot import {source}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise AppLoadError(f"syntax error in {exc.filename}, line {exc.lineno}: {exc.msg}") \
            from None
    except BaseException as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if f.filename.startswith(str(source.parent))]
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        raise AppLoadError(f"importing {source.name} raised {type(exc).__name__}: {exc}{where}") \
            from None
    return module
