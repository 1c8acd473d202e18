"""The app manifest: reading it, and the checks that explain a bad one (the model, with every
default, is in ``manifest_model``).

``load_manifest(path)`` reads a file; ``parse_manifest(data, root=...)`` checks a JSON value.
Both return a ``Manifest`` with every default filled in, or raise ``ManifestError`` listing
every problem at once, each by key path
(``engine.pool-limit: must be an integer from 1 to 1000, got 1000000000``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cocaine_core import schema
from cocaine_core.errors import ManifestError, NodeError, Problem, UnknownTypeError
from cocaine_core.jsontext import loads_lenient
from cocaine_core.manifest_model import (
    ENGINE_KEYS,
    MAX_TASKS,
    TASK_KEYS,
    TOP_KEYS,
    EngineConfig,
    Manifest,
    TaskConfig,
)
from cocaine_core.plugins import SHIPPED, PluginHost, get_host

__all__ = ["ENGINE_KEYS", "TASK_KEYS", "EngineConfig", "Manifest", "TaskConfig",
           "app_name_for", "check_app_name", "load_manifest", "parse_manifest"]

#: What an event may be called. Checked with ``fullmatch``: ``$`` would match before a
#: trailing newline.
EVENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")


#: What an app may be called: it names folders, sockets and cgroups, so nothing else
#: (``fullmatch``: ``"app\n"`` is no app name).
APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_app_name(name: object) -> str:
    """Return ``name`` if it is a plain app name, else ``NodeError`` saying what is allowed."""
    if not isinstance(name, str) or not APP_NAME.fullmatch(name) or ".." in name:
        raise NodeError(f"app name {name!r} is not allowed: use 1 to 64 letters, digits, "
                        f"'.', '_' or '-', starting with a letter or digit")
    return name


def app_name_for(path: Path) -> str:
    """The default app name for a manifest file: its stem, or its folder for manifest.json."""
    path = Path(path)
    if path.name == "manifest.json":
        return path.resolve().parent.name
    return path.stem


def load_manifest(path: str | Path, host: PluginHost | None = None) -> Manifest:
    """Read and check the manifest file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError([Problem("", f"no such file: {path}")], source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError([Problem("", f"cannot read {path}: {exc}")],
                            source=str(path)) from None
    data = loads_lenient(text, source=str(path))
    return parse_manifest(data, root=path.resolve().parent, path=path, host=host,
                          source=str(path))


def parse_manifest(data: Any, *, root: str | Path, path: Path | None = None,
                   host: PluginHost | None = None, source: str | None = None) -> Manifest:
    """Check a JSON value as a manifest; return the model or raise ``ManifestError``."""
    host = host or get_host()
    root = Path(root)
    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise ManifestError([Problem("", "a manifest must be a JSON object ({...}), got "
                                         f"{schema.show(data)}")], source=source)
    for key in data:
        if key not in TOP_KEYS:
            hint = schema.did_you_mean(str(key), TOP_KEYS) or (
                f"; accepted keys: {', '.join(TOP_KEYS)}")
            problems.append(Problem(str(key), f"unknown key{hint}"))

    language_name, args = _check_language(data, root, host, problems)
    engine = _check_engine(data.get("engine", {}), host, problems)
    tasks = _check_tasks(data, root, host, problems)
    if problems:
        raise ManifestError(problems, source=source)
    manifest = Manifest(type=language_name, args=args, engine=engine, tasks=tasks, root=root,
                        path=path)
    problems.extend(_plugin_problems(manifest, host))
    if problems:
        raise ManifestError(problems, source=source)
    return manifest


def _check_language(data: dict[str, Any], root: Path, host: PluginHost,
                    problems: list[Problem]) -> tuple[str, dict[str, Any]]:
    raw_type = data.get("type")
    raw_args = data.get("args", {})
    args: dict[str, Any] = {}
    if not isinstance(raw_args, dict):
        problems.append(Problem("args", f"must be an object, got {schema.show(raw_args)}"))
        raw_args = None
    if raw_type is None:
        problems.append(Problem("type", "is required: the app's language, e.g. \"python\""))
        return "", args
    if not isinstance(raw_type, str) or not raw_type:
        problems.append(Problem("type", f"must be a language name, got {schema.show(raw_type)}"))
        return "", args
    try:
        language = host.registry("languages").get(raw_type)
    except UnknownTypeError as exc:
        problems.append(Problem("type", str(exc)))
        return raw_type, args
    if raw_args is not None:
        try:
            args, arg_problems = language.check_args(raw_args, root)
        except Exception as exc:  # a plugin's bug must not look like the user's
            owner = host.registry("languages").owner(raw_type)
            arg_problems = [Problem("", f"language '{raw_type}' "
                                            f"({owner.distribution if owner else '?'}) failed "
                                            f"to check args: {type(exc).__name__}: {exc}")]
        for problem in arg_problems:
            problems.append(Problem(schema.join_path("args", problem.path), problem.message))
    return raw_type, args


def _check_engine(raw: Any, host: PluginHost, problems: list[Problem]) -> EngineConfig:
    if not isinstance(raw, dict):
        problems.append(Problem("engine", f"must be an object, got {schema.show(raw)}"))
        return EngineConfig()
    plugin_keys = [spec for _name, spec in host.registry("engine_keys").items()]
    shipped_elsewhere = [k for k in SHIPPED["engine_keys"] if k not in host.registry("engine_keys")]
    values, engine_problems = schema.check_keys(raw, (*ENGINE_KEYS, *plugin_keys), "engine",
                                                ignore=shipped_elsewhere)
    problems.extend(engine_problems)
    for key in shipped_elsewhere:
        if key in raw:
            provider = SHIPPED["engine_keys"][key]
            problems.append(Problem(f"engine.{key}", f"is provided by {provider}, which is not "
                                                     f"installed; pip install {provider}"))
    if isinstance(values.get("backend"), str):
        registry = host.registry("slave_backends")
        if values["backend"] not in registry:
            problems.append(Problem("engine.backend", registry.unknown_message(values["backend"])))
    if values.get("queue-limit") == 0 and values.get("pool-min") == 0:
        problems.append(Problem("engine.queue-limit",
                                "is 0 with engine.pool-min 0: the pool grows only when a job "
                                "waits, so every job would be refused; raise queue-limit or "
                                "keep warm slaves with pool-min"))
    pool_min, pool_limit = values.get("pool-min"), values.get("pool-limit")
    if isinstance(pool_min, int) and isinstance(pool_limit, int) and pool_min > pool_limit:
        problems.append(Problem("engine.pool-min",
                                f"is {pool_min}, above engine.pool-limit ({pool_limit}); "
                                "lower it or raise pool-limit"))
    core_names = {k.name for k in ENGINE_KEYS}
    known = {k.name.replace("-", "_"): values[k.name] for k in ENGINE_KEYS if k.name in values}
    extra = {name: value for name, value in values.items() if name not in core_names}
    return EngineConfig(**known, extra=extra)


def _check_tasks(data: dict[str, Any], root: Path, host: PluginHost,
                 problems: list[Problem]) -> dict[str, TaskConfig]:
    if "tasks" in data and "drivers" in data:
        problems.append(Problem("drivers", "give 'tasks' or the older 'drivers', not both"))
        return {}
    section = "drivers" if "drivers" in data and "tasks" not in data else "tasks"
    raw = data.get(section)
    if raw is None:
        problems.append(Problem("tasks", "is required: at least one task, e.g. "
                                         "{\"hello\": {\"type\": \"native-server\"}}"))
        return {}
    if not isinstance(raw, dict):
        problems.append(Problem(section, f"must be an object of tasks, got {schema.show(raw)}"))
        return {}
    if not raw:
        problems.append(Problem(section, "is empty: an app needs at least one task, e.g. "
                                         "{\"hello\": {\"type\": \"native-server\"}}"))
        return {}
    if len(raw) > MAX_TASKS:
        problems.append(Problem(section, f"has {len(raw)} tasks; an app may have at most "
                                         f"{MAX_TASKS} (each is a timer, socket or watch of "
                                         f"its own): split it into several apps"))
        return {}
    tasks: dict[str, TaskConfig] = {}
    for name, task_raw in raw.items():
        task = _check_task(section, name, task_raw, root, host, problems)
        if task is not None:
            tasks[name] = task
    return tasks


def _check_task(section: str, name: str, raw: Any, root: Path, host: PluginHost,
                problems: list[Problem]) -> TaskConfig | None:
    path = f"{section}.{name}"
    if not isinstance(raw, dict):
        problems.append(Problem(path, f"must be an object with a 'type', got {schema.show(raw)}"))
        return None
    driver_type = raw.get("type")
    if not isinstance(driver_type, str) or not driver_type:
        what = "is required: the task's driver" if driver_type is None else \
            f"must be a driver name, got {schema.show(driver_type)}"
        problems.append(Problem(f"{path}.type", what))
        return None
    try:
        driver = host.registry("drivers").get(driver_type)
    except UnknownTypeError as exc:
        problems.append(Problem(f"{path}.type", f"{exc}"))
        return None
    driver_keys = tuple(getattr(driver, "keys", ()))
    values, task_problems = schema.check_keys(raw, (*TASK_KEYS, *driver_keys), path)
    problems.extend(task_problems)
    event = values.get("emit") or name
    if not EVENT_NAME.fullmatch(event):
        where = f"{path}.emit" if values.get("emit") else path
        problems.append(Problem(where, f"event name {schema.show(event)} must start with a "
                                       "letter or '_' and hold only letters, digits and _.:-"))
    if task_problems:
        return None
    options = {k.name: values[k.name] for k in driver_keys}
    validate = getattr(driver, "validate", None)
    if validate is not None:
        try:
            extra = validate(options, root) or []
        except Exception as exc:
            extra = [Problem("", f"driver '{driver_type}' failed to check this task: "
                                 f"{type(exc).__name__}: {exc}")]
        for problem in extra:
            problems.append(Problem(schema.join_path(path, problem.path), problem.message))
    # A driver's own "retry" (manual-scheduler: seconds) wins over the task key of that name.
    retry = "retry" in options or values.get("retry", True)
    return TaskConfig(name=name, type=driver_type, event=event, timeout=values.get("timeout"),
                      options=options, retry=retry)


def _plugin_problems(manifest: Manifest, host: PluginHost) -> list[Problem]:
    problems: list[Problem] = []
    for record, result in host.call_each("cocaine_validate_manifest", manifest=manifest):
        if isinstance(result, Exception):
            problems.append(Problem("", f"plugin '{record.name}' ({record.distribution}) failed "
                                        f"to check the manifest: {type(result).__name__}: "
                                        f"{result}"))
            continue
        for item in result or []:
            problems.append(item if isinstance(item, Problem) else Problem("", str(item)))
    return problems
