"""The launcher of an ``exec`` slave: the few steps between the node's fork and the app's
program, then ``execve`` (the slave keeps this process's pid).

Run as ``python -I -S exec_launch.py NODE_PID`` (isolated mode, no site: it imports nothing
but the standard library and, by path, ``process_setup.py`` and ``trust/sandbox.py``; no
variable of the app's, such as ``PYTHONPATH`` or ``LD_PRELOAD``, reaches this interpreter,
which runs as root for an isolated app). What to run comes on standard input, a ``marshal``
dump (of plain data, from the node; faster to load than JSON, whose import alone costs more
than the rest of the launcher)::

    {"command": [...], "env": {...}, "root": "...", "isolation": {...} or None,
     "oom_score_adj": int or None}

It comes as a 4-byte big-endian length, then the dump; one more byte, ``g``, follows
once the node has run its spawn hooks (the cgroups plugin moves the process into the app's
group then), so nothing of the app's runs before it is confined. End of input instead: the
node gave it up, and it exits.

In order: read the spec, ask for SIGKILL when the node dies, wait for the go, put
``/dev/null`` on standard input, shed the node's protection from the OOM killer, confine an
isolated app (its own uid, mount namespace, ``no_new_privs``: ``trust/sandbox.py``), enter the
app's folder, and exec the command with ``env``. A failure says why on standard error (which
is the app's) and exits with 127, as a shell does for a program it cannot run.
"""

from __future__ import annotations

import marshal
import os
import sys

#: typing.TYPE_CHECKING without typing's import, which costs the launcher 18 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

#: Most bytes of spec the launcher reads.
MAX_SPEC = 1024 * 1024
#: The exit status when the program cannot be run.
CANNOT_RUN = 127
_HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name: str, path: str) -> ModuleType:
    """Run the module at ``path`` as ``name`` (our own file, read by root, never the app's)."""
    module = type(sys)(name)
    module.__file__ = path
    sys.modules[name] = module
    with open(path, "rb") as f:
        exec(compile(f.read(), path, "exec"), module.__dict__)
    return module


def _fail(message: str) -> None:
    sys.stderr.write(f"cocaine: {message}\n")
    sys.stderr.flush()
    os._exit(CANNOT_RUN)


def _read(size: int) -> bytes:
    data = b""
    while len(data) < size and (piece := os.read(0, min(size - len(data), 65536))):
        data += piece
    return data


def _read_spec() -> dict[str, Any]:
    header = _read(4)
    size = int.from_bytes(header, "big") if len(header) == 4 else -1
    if not 0 < size <= MAX_SPEC:
        raise ValueError(f"a spec of {size} bytes")
    spec = marshal.loads(_read(size))
    if not isinstance(spec, dict):
        raise ValueError("not a dict")
    return spec


def _wait_for_go() -> None:
    if _read(1) != b"g":
        os._exit(0)  # the node gave this slave up before it ran
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def main(argv: list[str]) -> None:
    """Prepare this process as the spec says, then become the app's program."""
    try:
        node_pid = int(argv[1])
        spec = _read_spec()
        command = [str(argument) for argument in spec["command"]]
        env = {str(name): str(value) for name, value in spec["env"].items()}
        root = str(spec["root"])
    except (IndexError, ValueError, KeyError, TypeError, AttributeError, EOFError) as exc:
        _fail(f"the exec launcher was started wrongly ({exc}); it is the node's to start")
        return
    setup = _load("cocaine_process_setup", os.path.join(_HERE, "process_setup.py"))
    setup.die_with_parent(node_pid)
    _wait_for_go()
    setup.reset_oom_score_adj(spec.get("oom_score_adj"))
    isolation = spec.get("isolation")
    if isolation:
        sandbox = _load("cocaine_sandbox", os.path.join(_HERE, os.pardir, "trust", "sandbox.py"))
        try:
            sandbox.confine(isolation, root)
        except sandbox.SandboxError as exc:
            _fail(str(exc))
        setup.die_with_parent(node_pid)  # a change of uid cleared it
        env.update({name: os.environ[name] for name in ("HOME", "USER", "LOGNAME")})
    else:
        try:
            os.chdir(root)
        except OSError as exc:
            _fail(f"cannot enter the app's folder {root}: {exc.strerror}")
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        where = (f" (on PATH {env.get('PATH', os.defpath)})" if "/" not in command[0] else
                 "" if command[0].startswith("/") else f" (in {root})")
        hint = (f"; the app runs as uid {os.getuid()}: the program, its interpreter and every "
                f"folder on their way must be open to that user (install it under /usr/local "
                f"or /opt, or ship it in the app's folder)" if isolation else "")
        _fail(f"cannot run {command[0]!r}{where}: {exc.strerror}{hint}")


if __name__ == "__main__":
    main(sys.argv)
