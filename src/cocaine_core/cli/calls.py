"""``cocaine call`` and ``cocaine info``: talk to a running node."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from cocaine_core.cli.options import KeyOption, NodeOption, ServerKeyOption, WaitOption, client
from cocaine_core.errors import CocaineError, ServiceError
from cocaine_core.protocol import CONTROL_APP, DEFAULT_ENDPOINT

if TYPE_CHECKING:
    from cocaine_core.client_upload import StreamedRequest


def call(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="The app, or @node for the "
                                                                "node's control service.")],
    event: Annotated[str, typer.Argument(help="The event (handler) to call; for @node, the "
                                              "method: list, info, app-info…")],
    data: Annotated[str | None, typer.Argument(
        help="The request body; '-' streams stdin to the handler as it comes (in pieces, "
             "never held whole: request.stream reads it). For @node, the arguments as a "
             "JSON object ('-': read whole from stdin).")] = None,
    node: NodeOption = DEFAULT_ENDPOINT,
    timeout: Annotated[float | None, typer.Option(help="Most seconds the job may run.")] = None,
    deadline: Annotated[float | None, typer.Option(
        help="Seconds from now by which the job must start (default: --wait, as nobody "
             "waits for it after that).")] = None,
    urgent: Annotated[bool, typer.Option("--urgent", help="Jump the queue.")] = False,
    no_retry: Annotated[bool, typer.Option(
        "--no-retry", help="Never run the job twice: if its slave dies, fail (500) rather "
                           "than run it again on another slave.")] = False,
    wait: Annotated[float, typer.Option(
        "--wait", help="Most seconds to wait for each part of the answer (at least --timeout "
                       "+ 5). If nothing listens at the endpoint, says so at once.")] = 60.0,
    key: KeyOption = None,
    server_key: ServerKeyOption = None,
) -> None:
    """Call APP's EVENT and print the answer's chunks as they arrive; @node's answers as JSON.

    On a terminal the answer ends with a newline even when it has none of its own.
    """
    streamed = data == "-" and app_name != CONTROL_APP
    body = sys.stdin.buffer.read() if data == "-" and not streamed else (data or "").encode()
    if app_name == CONTROL_APP:
        body = _control_arguments(body)
    if timeout is not None:
        wait = max(wait, timeout + 5)
    out = _Answer(sys.stdout.buffer)
    with client(node, wait, key, server_key, control=app_name == CONTROL_APP) as node_client:
        try:
            if streamed:
                with node_client.open(app_name, event, timeout=timeout, deadline=deadline,
                                      urgent=urgent, retry=not no_retry) as request:
                    _send_stdin(request, out)
            else:
                chunks = node_client.stream(app_name, event, body, timeout=timeout,
                                            deadline=deadline, urgent=urgent,
                                            retry=not no_retry)
                if app_name == CONTROL_APP:
                    out.write(_control_answer(b"".join(chunks)))
                else:
                    for chunk in chunks:
                        out.write(chunk)
        except ServiceError:
            out.end_line()  # so that the error starts a line of its own
            raise
    out.end_line()


#: Most bytes of stdin read at once for a streamed body (a piece the client sends).
STDIN_PIECE = 256 * 2**10


def _send_stdin(request: StreamedRequest, out: _Answer) -> None:
    """Stream stdin into ``request`` as it comes, printing the answer as it comes too (a
    handler may answer as it reads); stop reading once the answer has ended. A thread reads
    stdin into a queue of at most ``STDIN_QUEUED`` pieces, so the answer is read while stdin
    has nothing to give (an interactive pipe)."""
    import queue
    import threading

    pieces: queue.Queue[bytes | OSError] = queue.Queue(maxsize=STDIN_QUEUED)
    threading.Thread(target=_read_stdin, args=(pieces,), daemon=True,
                     name="cocaine-call-stdin").start()
    request.answer_to = out.write
    while not request.done:
        try:
            piece = pieces.get(timeout=IDLE)
        except queue.Empty:  # stdin gives nothing for now: send what is gathered (an
            request.flush()  # interactive pipe), and print the answer so far
            continue
        if isinstance(piece, OSError):  # never taken for the end: the body would be cut
            raise CocaineError(f"cannot read stdin: {piece.strerror or piece}; the request "
                               f"was cancelled")
        if not piece:
            break
        request.write(piece)
    request.end()
    for chunk in request:
        out.write(chunk)


#: Pieces of stdin read ahead of the request (at most 4 x STDIN_PIECE bytes held).
STDIN_QUEUED = 4
#: Seconds stdin may give nothing before what is gathered is sent and the answer looked at.
IDLE = 0.02


def _read_stdin(pieces: Any) -> None:
    """Read stdin in pieces of at most ``STDIN_PIECE`` bytes, as they come, into ``pieces``;
    an empty piece at the end, or the ``OSError`` that stopped it."""
    import os

    stdin = sys.stdin.buffer
    try:
        fd: int | None = stdin.fileno()
    except (OSError, ValueError):  # not a file (a test's stand-in)
        fd = None
    while True:
        try:
            piece = stdin.read(STDIN_PIECE) if fd is None else os.read(fd, STDIN_PIECE)
        except OSError as exc:
            pieces.put(exc)
            return
        pieces.put(piece)
        if not piece:
            return


class _Answer:
    """An answer written to stdout as it comes; on a terminal, the last line is ended."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.terminal = stream.isatty()
        self.open_line = False

    def write(self, chunk: bytes) -> None:
        """Write and flush ``chunk`` (a stream's parts show as they arrive)."""
        if chunk:
            self.stream.write(chunk)
            self.stream.flush()
            self.open_line = not chunk.endswith(b"\n")

    def end_line(self) -> None:
        """On a terminal, end a line the answer left open (else the prompt would follow it);
        piped, the bytes stay exactly as the app sent them."""
        if self.terminal and self.open_line:
            self.stream.write(b"\n")
            self.stream.flush()
            self.open_line = False


def _control_arguments(body: bytes) -> bytes:
    """The JSON object given to a ``@node`` method, as the msgpack map it takes."""
    import msgpack

    try:
        args = json.loads(body) if body.strip() else {}
    except ValueError:
        args = None
    if not isinstance(args, dict):
        raise typer.BadParameter("@node takes its arguments as a JSON object, e.g. "
                                 "'{\"name\": \"hello\"}'", param_hint="DATA")
    return msgpack.packb(args, use_bin_type=True)


def _control_answer(answer: bytes) -> bytes:
    """A ``@node`` answer (msgpack) as indented JSON."""
    import msgpack

    value = msgpack.unpackb(answer, raw=False) if answer else None
    return (json.dumps(value, indent=2, ensure_ascii=False, default=_jsonable) + "\n").encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    raise TypeError(f"{type(value).__name__} is not JSON")


def info(
    node: NodeOption = DEFAULT_ENDPOINT,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    wait: WaitOption = 10.0,
    key: KeyOption = None,
    server_key: ServerKeyOption = None,
) -> None:
    """Show the node's apps: pools, queues, jobs, latencies, memory and tasks."""
    from cocaine_core.cli import views

    with client(node, wait, key, server_key) as node_client:
        data = node_client.control("info")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo("\n".join(views.node_lines(data, views.width())))
