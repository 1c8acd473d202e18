"""Plugin options on ``cocaine node`` and ``cocaine run`` (``plugin_options.py``): taken out
of the command line before typer parses it, so a plugin adds ``--metrics`` without the core
declaring it, and listed in those commands' ``--help``."""

from __future__ import annotations

from typing import Any

from cocaine_core.errors import NodeError

#: The commands that take plugin options.
COMMANDS = ("node", "run")
#: What the command line of this run gave, by option name (reset by every ``take``).
GIVEN: dict[str, str] = {}


def take(argv: list[str], names: list[str], shipped: dict[str, str] | None = None) -> list[str]:
    """``argv`` without the plugin options ``names`` given to ``cocaine node`` or ``cocaine
    run`` (``--NAME VALUE`` or ``--NAME=VALUE``, before any ``--``), which go to ``GIVEN``.
    An option given without a value, or twice, is a ``NodeError`` saying so; so is one of
    ``shipped`` (name: the distribution that provides it) whose plugin is not installed."""
    GIVEN.clear()
    command = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), None)
    if command is None or argv[command] not in COMMANDS or not (names or shipped):
        return argv
    kept, rest = argv[:command + 1], argv[command + 1:]
    flags = {f"--{name}": name for name in names}
    index = 0
    while index < len(rest):
        arg = rest[index]
        if arg == "--":
            kept.extend(rest[index:])
            break
        flag, equals, value = arg.partition("=")
        missing = (shipped or {}).get(flag[2:]) if flag.startswith("--") else None
        if missing and flag not in flags:
            raise NodeError(f"{flag} is an option of {missing}, which is not installed or "
                            f"failed to load (see cocaine plugins); pip install {missing}")
        if flag in flags:
            if not equals:
                if index + 1 >= len(rest) or rest[index + 1].startswith("--"):
                    raise NodeError(f"{flag} needs a value (see cocaine {argv[command]} "
                                    f"--help)")
                value = rest[index + 1]
                index += 1
            if flags[flag] in GIVEN:
                raise NodeError(f"{flag} is given twice; give it once")
            GIVEN[flags[flag]] = value
        else:
            kept.append(arg)
        index += 1
    return kept


def epilog(options: dict[str, Any]) -> str | None:
    """The lines ``--help`` of those commands shows for the plugins' options, if any."""
    if not options:
        return None
    lines = [f"  --{name} {option.metavar}: {option.help}"
             for name, option in sorted(options.items())]
    return "\b\nOptions from plugins:\n" + "\n".join(lines)
