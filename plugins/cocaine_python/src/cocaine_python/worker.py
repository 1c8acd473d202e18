"""Run a cocaine-python app module as an ``exec`` worker.

``python -m cocaine_python.worker SOURCE [--events a,b,...]`` serves the app in SOURCE (a .py
file or a package folder, relative to the working folder) as one slave, the way a program in
any language does under the ``exec`` language: it reads ``COCAINE_ENDPOINT``,
``COCAINE_SLAVE_ID`` and ``COCAINE_APP``, shakes hands with the engine there and answers its
jobs until TERMINATE. Events default to every public function (or callable) the module
defines. Exit codes: 0 after TERMINATE, 2 for a usage error (a variable missing), 3 when the
app does not load (the engine is told why, with an ERROR of the slave's start).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from cocaine_core.errors import AppLoadError
from cocaine_core.errortext import MESSAGE_LIMIT, TRACEBACK_LIMIT, cut
from cocaine_core.protocol import Status
from cocaine_core.slave_channel import SlaveChannel
from cocaine_python.loader import LoadedApp, load

#: The variables the engine sets for an exec worker.
VARIABLES = ("COCAINE_ENDPOINT", "COCAINE_SLAVE_ID", "COCAINE_APP")
EXIT_USAGE = 2
EXIT_LOAD_FAILED = 3


def main(argv: list[str] | None = None) -> int:
    """Serve the app named on the command line; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m cocaine_python.worker",
        description="Serve a cocaine-python app module as an exec worker (it reads "
                    "COCAINE_ENDPOINT, COCAINE_SLAVE_ID and COCAINE_APP).")
    parser.add_argument("source", help="the app's .py file or package folder, relative to "
                                       "the working folder")
    parser.add_argument("--events", help="the events to serve, comma-separated (default: "
                                         "every public function the module defines)")
    args = parser.parse_args(argv)
    missing = [name for name in VARIABLES if not os.environ.get(name)]
    if missing:
        print(f"cocaine_python.worker: {', '.join(missing)} not set; this program is started "
              f"by a cocaine node for an app of type \"exec\" (or by cocaine conformance), "
              f"which sets {', '.join(VARIABLES)}", file=sys.stderr)
        return EXIT_USAGE
    events = _events(args.events)
    if events == []:
        print("cocaine_python.worker: --events names no event; give names separated by "
              "commas, e.g. --events echo,stream", file=sys.stderr)
        return EXIT_USAGE
    endpoint, slave_id = os.environ["COCAINE_ENDPOINT"], os.environ["COCAINE_SLAVE_ID"]
    try:
        app = load_app(args.source, events)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        reason = str(exc) if isinstance(exc, AppLoadError) else _describe(exc)
        print(f"cocaine_python.worker: the app did not load: {reason}", file=sys.stderr)
        _report_load_failure(endpoint, slave_id, reason, _traceback(exc))
        return EXIT_LOAD_FAILED
    from cocaine_python.runtime import serve

    channel = SlaveChannel(endpoint, slave_id, parent_pid=os.getppid())
    try:
        return serve(app, channel)
    except SystemExit as exc:  # told to terminate before it was configured (a spare)
        return exc.code if isinstance(exc.code, int) else 0
    finally:
        channel.close()


def _events(given: str | None) -> list[str] | None:
    if given is None:
        return None
    return [name.strip() for name in given.split(",") if name.strip()]


def load_app(source: str, events: list[str] | None) -> LoadedApp:
    """Load ``source`` (relative to the working folder) with handlers for ``events``, or for
    every public callable its module defines when ``events`` is None; AppLoadError if not."""
    app = load({"args": {"source": source}, "root": Path.cwd(), "events": events or []})
    if events is None:
        module = app.module
        app.handlers = {name: value for name, value in vars(module).items()
                        if callable(value) and not name.startswith("_")
                        and getattr(value, "__module__", None) == module.__name__}
        if not app.handlers:
            raise AppLoadError(f"{source} defines no public function to serve as a handler "
                               f"(a module-level function named after its event)")
    return app


def _report_load_failure(endpoint: str, slave_id: str, reason: str, trace: str) -> None:
    """Tell the engine the slave could not start (docs/protocol.md: answer the CONFIGURE
    with [7, nil, 500, reason, traceback])."""
    channel = SlaveChannel(endpoint, slave_id, parent_pid=os.getppid())
    try:
        channel.handshake()
        channel.error(None, Status.SERVER_ERROR, cut(reason, MESSAGE_LIMIT), trace)
    except SystemExit:  # told to terminate instead of configured: nothing to report
        pass
    finally:
        channel.close()


def _describe(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except BaseException:
        return type(exc).__name__


def _traceback(exc: BaseException) -> str:
    if isinstance(exc, AppLoadError):
        return ""  # its message already says where
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return cut(text, TRACEBACK_LIMIT, keep_end=True)


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # as a forked slave does: nothing at the interpreter's exit may hold it
