"""Plugin options on ``cocaine node`` and ``cocaine run`` (``plugin_options.py``): taken out
of the command line before typer parses it, so a plugin adds ``--metrics`` without the core
declaring it, and listed in those commands' ``--help``."""

from __future__ import annotations

from typing import Any

#: The commands that take plugin options.
COMMANDS = ("node", "run")
#: What the command line of this run gave, by option name (reset by every ``take``).
GIVEN: dict[str, str] = {}


def take(argv: list[str], names: list[str]) -> list[str]:
    """``argv`` without the plugin options ``names`` given to ``cocaine node`` or ``cocaine
    run`` (``--NAME VALUE`` or ``--NAME=VALUE``, before any ``--``), which go to ``GIVEN``.
    An option given without a value is left for typer to refuse."""
    GIVEN.clear()
    command = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), None)
    if command is None or argv[command] not in COMMANDS or not names:
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
        if flag in flags and equals:
            GIVEN[flags[flag]] = value
        elif arg in flags and index + 1 < len(rest):
            GIVEN[flags[arg]] = rest[index + 1]
            index += 1
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
