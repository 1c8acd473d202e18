"""Options plugins add to ``cocaine node`` and ``cocaine run`` (``cocaine_register_node_options``):
``--metrics HOST:PORT`` comes from ``cocaine-prometheus`` this way, not from the core.

A plugin registers a ``PluginOption`` under a name; the two commands then accept ``--NAME
VALUE`` (and the node's config file the key ``NAME``), parse the value with the option's
``parse`` (a ``ValueError`` is a usage error naming the option), and hand the values given to
the plugins as ``NodeView.options``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs

from cocaine_core.errors import NodeError

#: What an option's name may be: lower-case words joined by '-'.
OPTION_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
#: Names the core's own options of ``cocaine node`` and ``cocaine run`` use (and ``help``).
RESERVED = frozenset((
    "listen", "storage", "run-dir", "port-range", "log-format", "log-level", "name",
    "max-upload", "max-unpacked", "max-archive-members", "max-uploads", "upload-space",
    "upload-idle", "deploy-timeout", "max-slaves", "max-message", "client-backlog", "app-uids",
    "curve", "no-curve", "client-keys", "discovery", "cluster", "cluster-key",
    "cluster-listen", "peer", "events", "config", "reload", "help", "debug"))


@attrs.frozen
class PluginOption:
    """An option a plugin adds to ``cocaine node`` and ``cocaine run``."""

    #: One line for ``--help``.
    help: str
    #: What the value looks like in ``--help`` (``HOST:PORT``).
    metavar: str = "VALUE"
    #: Turns the text given into the value the plugin gets; raises ValueError saying what
    #: is wrong and what a good value looks like.
    parse: Callable[[str], Any] = str


def registered() -> dict[str, PluginOption]:
    """The options the installed plugins add, by name (``--NAME``)."""
    from cocaine_core.plugins import get_host

    options = dict(get_host().registry("node_options").items())
    for name, option in options.items():
        if not OPTION_NAME.fullmatch(name) or not isinstance(option, PluginOption):
            raise NodeError(f"a plugin registered the node option {name!r} wrongly: a name "
                            f"of lower-case words joined by '-', and a "
                            f"cocaine_core.plugin_options.PluginOption")
        if name in RESERVED:
            owner = get_host().registry("node_options").owner(name)
            raise NodeError(f"{owner.distribution if owner else 'a plugin'} registers the "
                            f"node option --{name}, which the core's own option of that "
                            f"name takes; the plugin must choose another name")
    return options


def parse_given(given: dict[str, Any]) -> dict[str, Any]:
    """The values given (by name; None: not given), each parsed by its option; NodeError
    naming the option and what is wrong with its value."""
    options = registered()
    parsed: dict[str, Any] = {}
    for name, text in given.items():
        if text is None:
            continue
        option = options.get(name)
        if option is None:
            raise NodeError(f"no installed plugin adds the option --{name}")
        if not isinstance(text, str):
            raise NodeError(f"'{name}' in the config file must be a text, like the value of "
                            f"--{name} {option.metavar}; got {text!r}")
        try:
            parsed[name] = option.parse(text)
        except ValueError as exc:
            raise NodeError(f"--{name} {text or repr(text)}: {exc}") from None
    return parsed
