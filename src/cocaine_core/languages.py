"""What a language plugin provides: a check of ``args`` and a slave runtime module.

A language is registered with ``registry.add(name, language)`` in
``cocaine_register_languages``. The slave backend never imports the language object in slave
processes: it imports only ``language.runtime`` (a module path), which must define

- ``load(config: dict) -> object``: import the app (``config["args"]``, ``config["root"]``,
  ``config["events"]``); raise ``cocaine_core.errors.AppLoadError`` with a reason a person can
  act on when the code cannot be loaded or a handler is missing;
- ``serve(app: object, channel: cocaine_core.slave_channel.SlaveChannel) -> int``: answer
  invocations on the channel until told to terminate; return the exit code.

A language whose ``runtime`` is ``EXEC_RUNTIME`` (``"exec"``) names no module: its slaves are
programs, started from the checked ``args["command"]`` (a list: the program and its
arguments) with ``args["env"]`` added to their environment (see ``exec_language.py``). A
language plugin for, say, JavaScript may be a ``check_args`` that turns ``{"script":
"app.js"}`` into ``{"command": ["node", "app.js"]}`` with this runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from cocaine_core.errors import Problem

#: The runtime of a language whose slaves are programs of their own, not Python modules.
EXEC_RUNTIME = "exec"


class Language(Protocol):
    """A language: checks its manifest ``args`` and names its slave runtime module."""

    #: Import path of the module with ``load(config)`` and ``serve(app, channel)``.
    runtime: str

    def check_args(self, args: dict[str, Any], root: Path) -> tuple[dict[str, Any], list[Problem]]:
        """Check ``args`` (paths relative to ``root``); return them resolved, and problems."""
        ...
