"""The launcher of an ``exec`` slave: the few steps between the node's fork and the app's
program, then ``execve`` (the slave keeps this process's pid).

Run as ``python -I -S exec_launch.py NODE_PID`` (isolated mode, no site: it imports nothing
but the standard library and, by path, ``process_setup.py`` and ``trust/sandbox.py``; no
variable of the app's, such as ``PYTHONPATH`` or ``LD_PRELOAD``, reaches this interpreter,
which runs as root for an isolated app). What to run comes as JSON on standard input::

    {"command": [...], "env": {...}, "root": "...", "isolation": {...} or null,
     "oom_score_adj": int or null}

In order: read that, put ``/dev/null`` on standard input, ask for SIGKILL when the node dies,
shed the node's protection from the OOM killer, confine an isolated app (its own uid, mount
namespace, ``no_new_privs``: ``trust/sandbox.py``), enter the app's folder, and exec the
command with ``env``. A failure says why on standard error (which is the app's) and exits
with 127, as a shell does for a program it cannot run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
from types import ModuleType
from typing import Any

#: Most bytes of JSON the launcher reads.
MAX_SPEC = 1024 * 1024
#: The exit status when the program cannot be run.
CANNOT_RUN = 127
_HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _fail(message: str) -> None:
    sys.stderr.write(f"cocaine: {message}\n")
    sys.stderr.flush()
    os._exit(CANNOT_RUN)


def _read_spec() -> dict[str, Any]:
    data = b""
    while len(data) <= MAX_SPEC and (piece := os.read(0, 65536)):
        data += piece
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    spec = json.loads(data)
    if not isinstance(spec, dict):
        raise ValueError("not an object")
    return spec


def main(argv: list[str]) -> None:
    """Prepare this process as the spec says, then become the app's program."""
    try:
        node_pid = int(argv[1])
        spec = _read_spec()
        command = [str(argument) for argument in spec["command"]]
        env = {str(name): str(value) for name, value in spec["env"].items()}
        root = str(spec["root"])
    except (IndexError, ValueError, KeyError, TypeError, AttributeError) as exc:
        _fail(f"the exec launcher was started wrongly ({exc}); it is the node's to start")
        return
    setup = _load("cocaine_process_setup", os.path.join(_HERE, "process_setup.py"))
    setup.die_with_parent(node_pid, signal.SIGKILL)
    setup.reset_oom_score_adj(spec.get("oom_score_adj"))
    isolation = spec.get("isolation")
    if isolation:
        sandbox = _load("cocaine_sandbox", os.path.join(_HERE, os.pardir, "trust", "sandbox.py"))
        try:
            sandbox.confine(isolation, root)
        except sandbox.SandboxError as exc:
            _fail(str(exc))
        setup.die_with_parent(node_pid, signal.SIGKILL)  # a change of uid cleared it
        env.update({name: os.environ[name] for name in ("HOME", "USER", "LOGNAME")})
    else:
        try:
            os.chdir(root)
        except OSError as exc:
            _fail(f"cannot enter the app's folder {root}: {exc.strerror}")
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        where = env.get("PATH", os.defpath) if "/" not in command[0] else root
        _fail(f"cannot run {command[0]!r} (from {where}): {exc.strerror}")


if __name__ == "__main__":
    main(sys.argv)
