"""``cocaine conformance -- COMMAND...``: check a worker program against the slave protocol."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from typing import Annotated, Any

import typer

#: Everything after the first word of COMMAND is the command's, options included.
CONTEXT = {"allow_interspersed_args": False, "ignore_unknown_options": True}


def conformance(
    command: Annotated[list[str] | None, typer.Argument(
        help="The worker to check and its arguments, after --, e.g. "
             "-- node workers/javascript/conformance.js", metavar="-- COMMAND...",
        show_default=False)] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the results as JSON: [{rule, status, detail}].")] = False,
    timeout: Annotated[float, typer.Option(
        min=1, max=600, help="Seconds the worker has to shake hands, get ready, and answer "
                             "each job (1 to 600).")] = 10.0,
) -> None:
    """Run a worker as the engine would and report each rule of the protocol it keeps or
    breaks (handshake, configure, heartbeats, echo, chunks in order, errors with codes,
    heartbeats during a long job, concurrency, flow, streamed body, headers, batch, terminate
    and exit). Exit 0 if none failed, 1 if one did, 2 for a usage error."""
    from cocaine_core.conformance import check, report

    if not command:
        _usage("give the worker's command after --, e.g. cocaine conformance -- python -m "
               "cocaine_python.worker app.py")
    assert command is not None
    _check_runnable(command[0])
    emit = (lambda result: None) if as_json else (lambda result: _print(report.line(result)))
    shown: list[str] = []
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        results = check(command, timeout, emit, shown.extend)
    except (FileNotFoundError, PermissionError) as exc:
        _usage(f"cannot run {command[0]!r}: {exc.strerror or exc}")
    finally:
        signal.signal(signal.SIGTERM, previous)
    failed = any(r.status == "fail" for r in results)
    if as_json:
        _print(report.as_json(results))
        if failed:
            typer.echo(report.output_tail(shown), err=True)
    else:
        if failed:
            _print(report.output_tail(shown))
        _print(report.summary(results))
    raise typer.Exit(1 if failed else 0)


def _check_runnable(program: str) -> None:
    if os.sep in program:
        if not os.path.isfile(program):
            _usage(f"the command {program!r} does not exist")
        if not os.access(program, os.X_OK):
            _usage(f"the command {program!r} is not executable (chmod +x it, or run it "
                   f"through its interpreter)")
    elif shutil.which(program) is None:
        _usage(f"the command {program!r} is not found on PATH")


def _usage(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _print(text: str) -> None:
    typer.echo(text)
    sys.stdout.flush()


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # the kit kills the worker on its way out
