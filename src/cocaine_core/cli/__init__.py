"""The ``cocaine`` command line: one module per group of commands, errors made readable.

A domain error (``CocaineError``) becomes one clear message on stderr and exit code 1; the
traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cocaine_core.errors import CocaineError

app = typer.Typer(
    name="cocaine",
    help="Your personal App Engine: apps as a JSON manifest plus code.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_state = {"debug": False}


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    _state["debug"] = debug


def debug_enabled() -> bool:
    """Whether ``--debug`` was given."""
    return _state["debug"]


def _build() -> typer.Typer:
    from cocaine_core.cli import app_cmd, calls, manifest_cmd, node_cmd, plugins_cmd, run_cmd

    run_cmd.register(app)
    node_cmd.register(app)
    app_cmd.register(app)
    calls.register(app)
    plugins_cmd.register(app)
    manifest_cmd.register(app)
    from cocaine_core.plugins import get_host

    get_host().call_each("cocaine_register_commands", cli=app)
    return app


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        _build()
        code = app(args=argv, standalone_mode=False)
    except CocaineError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # click's usage errors (typer may vendor click: duck-type them)
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            return code
        raise
    return code if isinstance(code, int) else 0
