"""The ``exec`` language: an app whose slaves are any program that speaks the engine ↔ slave
protocol (docs/protocol.md), written in any language.

``"type": "exec", "args": {"command": ["node", "app.js"], "env": {"NAME": "value"}}``. The
slave backend starts ``command`` once per slave in the app's folder, with ``env`` added to its
environment and ``COCAINE_ENDPOINT``, ``COCAINE_SLAVE_ID`` and ``COCAINE_APP`` set; no shell
is involved (give ``["sh", "-c", "..."]`` for one).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from cocaine_core.errors import Problem
from cocaine_core.languages import EXEC_RUNTIME
from cocaine_core.paths import deployed_root

#: Most arguments in ``command``, longest argument, and most bytes of them all.
MAX_ARGUMENTS = 256
MAX_ARGUMENT = 4096
MAX_COMMAND_BYTES = 64 * 1024
#: Most variables in ``env``, longest value, and most bytes of them all.
MAX_VARIABLES = 256
MAX_VALUE = 32 * 1024
MAX_ENV_BYTES = 64 * 1024
#: What the engine sets itself; ``env`` may not.
RESERVED_PREFIX = "COCAINE_"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ProgramError(Exception):
    """A command's program cannot be found or run; the message says why and what to do."""


class ExecLanguage:
    """Programs that speak the protocol themselves: ``args.command`` and ``args.env``."""

    runtime = EXEC_RUNTIME

    def check_args(self, args: dict[str, Any], root: Path) -> tuple[dict[str, Any],
                                                                    list[Problem]]:
        """Check ``args.command`` (required: a list of strings, the program first; a
        program with a ``/`` is relative to the manifest's folder, one without is looked up
        on ``PATH``) and ``args.env`` (optional: names to strings)."""
        problems: list[Problem] = []
        for key in args:
            if key not in ("command", "env"):
                problems.append(Problem(str(key), "unknown key; the exec language takes "
                                                  "'command' and 'env'"))
        problems += _check_command(args.get("command"), root, args.get("env"))
        problems += _check_env(args.get("env", {}))
        return dict(args), problems


def _check_command(command: object, root: Path, env: object) -> list[Problem]:
    if command is None:
        return [Problem("command", 'is required: the program and its arguments, as a list, '
                                   'e.g. ["node", "app.js"]')]
    if isinstance(command, str):
        return [Problem("command", f'must be a list of strings, not one string (no shell '
                                   f'splits it): e.g. {json.dumps(command.split())[:200]}, '
                                   f'or ["sh", "-c", ...] for a shell')]
    if not isinstance(command, list) or not command:
        return [Problem("command", f"must be a non-empty list of strings, got {command!r:.200}")]
    if len(command) > MAX_ARGUMENTS:
        return [Problem("command", f"has {len(command)} arguments; at most {MAX_ARGUMENTS}")]
    problems: list[Problem] = []
    for index, argument in enumerate(command):
        if not isinstance(argument, str):
            problems.append(Problem(f"command[{index}]", f"must be a string, got "
                                                         f"{argument!r:.200}"))
        elif "\0" in argument or len(argument) > MAX_ARGUMENT:
            problems.append(Problem(f"command[{index}]", f"must hold no NUL character and at "
                                                         f"most {MAX_ARGUMENT} characters"))
    if problems:
        return problems
    if sum(len(argument.encode()) + 1 for argument in command) > MAX_COMMAND_BYTES:
        return [Problem("command", f"is longer than {MAX_COMMAND_BYTES} bytes in all")]
    program = command[0]
    if not program:
        return [Problem("command[0]", "is empty: name the program to run")]
    if program.startswith("~"):
        return [Problem("command[0]", f"{program!r}: ~ is not expanded (no shell runs the "
                                      f"command); give the path, relative to the manifest "
                                      f"or absolute")]
    relative = "/" in program and not os.path.isabs(program)
    if deployed_root(root) and not relative:
        # A node's own program (absolute, or on PATH) is found, and run, by the app's user
        # when it starts: the node, root maybe, says nothing here of what it can see.
        return []
    given = env.get("PATH") if isinstance(env, dict) else None
    search = given if isinstance(given, str) else os.environ.get("PATH", os.defpath)
    try:
        found = find_program(program, root, search)
    except ProgramError as exc:
        return [Problem("command[0]", str(exc))]
    if relative and deployed_root(root) and not _within(found, root):
        return [Problem("command[0]", f"{program!r} leads out of the app's uploaded code; "
                                      f"name a program inside the archive (relative to the "
                                      f"manifest), an absolute path, or one on PATH")]
    return []


def _check_env(env: object) -> list[Problem]:
    if not isinstance(env, dict):
        return [Problem("env", f"must be an object of names to strings, got {env!r:.200}")]
    if len(env) > MAX_VARIABLES:
        return [Problem("env", f"has {len(env)} variables; at most {MAX_VARIABLES}")]
    problems: list[Problem] = []
    total = 0
    for name, value in env.items():
        where = f"env.{name:.80}"
        if not _NAME.fullmatch(name):
            problems.append(Problem(where, "is not a variable name (letters, digits and _, "
                                           "not starting with a digit)"))
        elif name.startswith(RESERVED_PREFIX):
            problems.append(Problem(where, f"names that start with {RESERVED_PREFIX} are "
                                           f"the engine's own; choose another name"))
        elif not isinstance(value, str):
            problems.append(Problem(where, f"must be a string, got {value!r:.200}"))
        elif "\0" in value or len(value) > MAX_VALUE:
            problems.append(Problem(where, f"must hold no NUL character and at most "
                                           f"{MAX_VALUE} characters"))
        else:
            total += len(name.encode()) + len(value.encode()) + 2
    if total > MAX_ENV_BYTES:
        problems.append(Problem("env", f"is longer than {MAX_ENV_BYTES} bytes in all"))
    return problems


def find_program(name: str, root: Path | str, search: str) -> str:
    """The program ``name`` runs: with a ``/``, that path (relative to ``root``); without,
    the first executable file of that name in the ``search`` path (``PATH``; a relative
    folder in it is relative to ``root``, where the program starts).

    :raises ProgramError: it does not exist, is not a file, or is not executable.
    """
    if "/" in name:
        path = Path(name)
        path = path if path.is_absolute() else Path(root) / path
        return _runnable(os.path.realpath(path), name)
    folders = [folder for folder in search.split(os.pathsep) if folder]
    for folder in folders:
        # A relative folder on PATH is the app's: the program starts in its folder.
        candidate = os.path.join(root, folder, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.realpath(candidate)
    return _runnable_on_path(name, folders)


def _runnable(path: str, name: str) -> str:
    if not os.path.exists(path):
        raise ProgramError(f"{name!r} leads to {path}, which does not exist (build or add "
                           f"it first)")
    if not os.path.isfile(path):
        raise ProgramError(f"{name!r} leads to {path}, which is not a file")
    if not os.access(path, os.X_OK):
        raise ProgramError(f"{name!r} leads to {path}, which is not executable "
                           f"(chmod +x it, or run it through its interpreter: "
                           f'["python3", "{name}"])')
    return path


def _runnable_on_path(name: str, folders: list[str]) -> str:
    shown = ":".join(folders)[:400]
    raise ProgramError(f"no program {name!r} on PATH ({shown}): install it, or give its "
                       f"path (relative to the manifest)")


def _within(path: str, root: Path) -> bool:
    real_root = os.path.realpath(root)
    return path == real_root or path.startswith(real_root.rstrip("/") + "/")
