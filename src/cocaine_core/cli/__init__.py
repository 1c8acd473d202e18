"""The ``cocaine`` command line: one module per group of commands, errors made readable.

Commands are registered once, when this module is imported; plugins' commands once, at the
first ``main()``. A domain error (``CocaineError``) becomes one clear message on stderr and
exit code 1; the traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import functools
import sys
from typing import Annotated

import typer

from cocaine_core.cli import (
    app_cmd,
    calls,
    cluster_cmd,
    conformance_cmd,
    events_cmd,
    keys_cmd,
    manifest_cmd,
    node_cmd,
    plugin_flags,
    plugins_cmd,
    run_cmd,
    top_cmd,
)
from cocaine_core.errors import CocaineError, ServiceError

app = typer.Typer(
    rich_markup_mode=None,
    name="cocaine",
    help="Your personal App Engine: apps as a JSON manifest plus code.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: What the root callback read from the command line (reset by every ``main()``).
_given = {"debug": False}
#: A plugin failure that is fatal (``COCAINE_STRICT_PLUGINS``), met while adding plugins'
#: commands: raised once the command line is parsed, so that ``--debug`` applies to it.
_fatal: list[CocaineError] = []


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    _given["debug"] = debug
    if _fatal:
        raise _fatal[0]


app.command("run")(run_cmd.run)
app.command("node")(node_cmd.node)
app.add_typer(app_cmd.app_app, name="app")
app.command("call")(calls.call)
app.command("info")(calls.info)
app.command("events")(events_cmd.events)
app.command("top")(top_cmd.top)
app.command("plugins")(plugins_cmd.plugins)
app.add_typer(manifest_cmd.manifest_app, name="manifest")
app.add_typer(keys_cmd.keys_app, name="keys")
app.add_typer(cluster_cmd.cluster_app, name="cluster")
app.command("conformance", context_settings=conformance_cmd.CONTEXT)(conformance_cmd.conformance)


@functools.cache
def _add_plugin_commands() -> None:
    from cocaine_core.plugins import get_host

    try:
        get_host().call_each("cocaine_register_commands", cli=app)
    except CocaineError as exc:
        _fatal.append(exc)


def _take_plugin_options(argv: list[str]) -> list[str]:
    """Plugin options (``--metrics``) out of ``argv`` into ``plugin_flags.GIVEN``, and listed
    in the ``--help`` of the commands that take them."""
    from cocaine_core.plugin_options import registered

    try:
        options = registered()
    except CocaineError as exc:
        _fatal.append(exc)
        return argv
    for command in app.registered_commands:
        if command.name in plugin_flags.COMMANDS:
            command.epilog = plugin_flags.epilog(options)
    from cocaine_core.registry import SHIPPED

    return plugin_flags.take(argv, list(options), SHIPPED["node_options"])


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    _given["debug"] = False
    try:
        _add_plugin_commands()
        args = _take_plugin_options(list(sys.argv[1:] if argv is None else argv))
        code = app(args=args, standalone_mode=False)
    except CocaineError as exc:
        if _given["debug"]:
            raise
        # An error answer (or a node that is not there) shows its code: "error 404: …".
        typer.echo(f"error {exc.code}: {exc.message}" if isinstance(exc, ServiceError)
                   else f"error: {exc}", err=True)
        return 1
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # click's usage errors (typer may vendor click: duck-type them)
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            return exit_code
        raise
    if code == 130:  # typer's answer to Ctrl-C
        _end_interrupted_line()
    return code if isinstance(code, int) else 0


def _end_interrupted_line() -> None:
    # The terminal echoed ^C where the cursor was; a Python program that exits (rather than
    # dies of SIGINT) gets no newline from the shell, so the prompt would follow the ^C.
    if sys.stderr.isatty():
        sys.stderr.write("\n")
        sys.stderr.flush()
