"""The trial start of an ``exec`` app: what importing the code is for a Python app.

Before the app runs, one slave is started on an endpoint of its own and must shake hands,
take its CONFIGURE and send its first heartbeat (*ready*) within ``startup_timeout``; it is
then told to terminate. A program that exits first, or answers the configure with an ERROR,
is the code's fault (``AppLoadError(code_fault=True)``, with the exit status and the last
lines it wrote), so an app whose program cannot start is marked broken after the same
attempts as one whose import fails, and tried again later, never respawned in a loop. A
program killed by a signal, or one that takes too long, is the moment's fault, as for Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import zmq

from cocaine_core import protocol
from cocaine_core.appinfo import SlaveInfo
from cocaine_core.errors import AppLoadError
from cocaine_core.errortext import printable
from cocaine_core.plugins import get_host
from cocaine_core.protocol import Code
from cocaine_core.trust.app_users import grant_socket

if TYPE_CHECKING:
    from cocaine_core.backends.exec_backend import ExecBackend

app_log = logging.getLogger("cocaine.app")

#: Most bytes of the trial's output kept, to quote the end of it in a failure.
OUTPUT_TAIL = 4096
#: The largest message taken from the trial slave.
TRIAL_MAX_MESSAGE = 2**20
#: How long a ready trial slave has to exit once told to, before SIGKILL (seconds).
EXIT_WAIT = 2.0
POLL = 0.01
#: A line of a program's output that says what went wrong.
_TELLING = re.compile(r"error|cannot|can't|not found|no such|denied|fatal|fail", re.IGNORECASE)
#: Most messages from the trial slave read between two turns of the node's loop.
MESSAGES_PER_TICK = 64


async def trial_start(backend: ExecBackend, timeout: float) -> None:
    """Start ``backend``'s program once and see it reach *ready*.

    :raises AppLoadError: it exited, failed, or timed out first.
    """
    path = Path(backend.app.run_dir) / f"t.{uuid.uuid4().hex[:8]}"
    endpoint = f"ipc://{path}"
    slave_id = f"{backend.app.name}.trial"
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, TRIAL_MAX_MESSAGE)
    if not backend.app.slaves.take():  # the trial is a slave too, while it lasts
        sock.close(linger=0)
        raise AppLoadError(backend.app.slaves.refusal(), code_fault=False)
    reader, writer = os.pipe()
    os.set_blocking(reader, False)
    process: subprocess.Popen[bytes] | None = None
    info: SlaveInfo | None = None
    failure: AppLoadError | None = None
    ready = False
    explanations: list[str] = []
    tail = bytearray()
    try:
        sock.bind(endpoint)
        if backend.isolation is not None:
            grant_socket(path, backend.isolation["gid"])
            backend.isolation["reach"].append(str(path))
        try:
            process, gate = backend.launch(slave_id, endpoint, output=(writer, writer))
        except OSError as exc:
            raise AppLoadError(f"cannot start its program: {exc.strerror}",
                               code_fault=False) from None
        finally:
            os.close(writer)
            writer = -1
        info = SlaveInfo(id=f"{backend.app.name}/trial", pid=process.pid)
        try:
            # Confined (cgroups) before it runs, as every slave is.
            get_host().call_each("cocaine_slave_spawned", raise_errors=True, app=backend.app,
                                 slave=info)
        except Exception as exc:
            os.close(gate)
            raise AppLoadError(f"a plugin refused its program: {exc}",
                               code_fault=False) from None
        backend.go(gate)
        try:
            await _converse(backend, sock, slave_id, process, reader, tail, timeout)
            ready = True
        except AppLoadError as exc:
            failure = exc
    finally:
        if writer >= 0:
            os.close(writer)
        os.close(reader)
        sock.close(linger=0)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if backend.isolation is not None and str(path) in backend.isolation["reach"]:
            backend.isolation["reach"].remove(str(path))
        if process is not None:
            await _end(process, EXIT_WAIT if ready else 0.0)  # only a ready one is waited for
            if info is not None:
                # A plugin may know why it ended (the cgroups plugin: out of memory).
                explanations = [str(result) for _plugin, result in get_host().call_each(
                    "cocaine_slave_exited", app=backend.app, slave=info,
                    status=process.returncode) if isinstance(result, str) and result]
        backend.app.slaves.give()
    if failure is not None:
        why = f" ({'; '.join(explanations)})" if explanations else ""
        raise AppLoadError(f"{failure}{why}", code_fault=failure.code_fault)


async def _converse(backend: ExecBackend, sock: zmq.Socket[bytes], slave_id: str,
                    process: subprocess.Popen[bytes], reader: int, tail: bytearray,
                    timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    configured = False
    while loop.time() < deadline:
        _read_output(reader, tail)
        for _ in range(MESSAGES_PER_TICK):  # a flood must not hold the node's loop
            if not sock.poll(0):
                break
            frames = sock.recv_multipart()
            if frames[0] != slave_id.encode() or len(frames) < 2:
                continue  # not the trial's (nobody else knows the endpoint)
            try:
                fields = protocol.unpack(frames[1])
            except Exception:
                raise AppLoadError(f"its program sent a message that is not msgpack at "
                                   f"start-up{_quote(tail, backend)}",
                                   code_fault=True) from None
            code = fields[0] if fields else None
            if code == Code.HANDSHAKE and not configured:
                sock.send_multipart([frames[0], protocol.pack(Code.CONFIGURE, _settings(backend))])
                configured = True
            elif code == Code.HEARTBEAT and configured:
                sock.send_multipart([frames[0], protocol.pack(Code.TERMINATE,
                                                              "the trial start is over")])
                return
            elif code == Code.ERROR:
                message = str(fields[3]) if len(fields) > 3 else "no reason given"
                raise AppLoadError(f"its program could not start: {printable(message)[:2000]}",
                                   code_fault=True)
        status = process.poll()
        if status is not None:
            _read_output(reader, tail)
            how = (f"was killed by signal {-status}" if status < 0 else
                   f"exited with status {status}")
            stage = ("before it was ready (after its handshake)" if configured else
                     "before its handshake")
            raise AppLoadError(f"its program {how} {stage}{_quote(tail, backend)}",
                               code_fault=status > 0)
        await asyncio.sleep(POLL)
    stage = ("did not send its first heartbeat after CONFIGURE" if configured else
             "did not shake hands")
    raise AppLoadError(f"its program {stage} within {timeout:g} s (engine.startup-timeout); "
                       f"is it a cocaine worker (docs/languages.md)?{_quote(tail, backend)}",
                       code_fault=False)


def _settings(backend: ExecBackend) -> dict[str, object]:
    config = backend.app.manifest.engine
    return {"app": backend.app.name, "concurrency": config.concurrency,
            "heartbeat_interval": max(0.05, min(5.0, config.heartbeat_timeout / 5)),
            "credit": 8, "max_message": TRIAL_MAX_MESSAGE}


def _read_output(reader: int, tail: bytearray) -> None:
    with contextlib.suppress(BlockingIOError, OSError):
        while piece := os.read(reader, 65536):
            tail += piece
            del tail[:-OUTPUT_TAIL]


def _quote(tail: bytearray, backend: ExecBackend) -> str:
    """What the program wrote, for its load failure: the line that tells (the last naming an
    error), with a hint where one is known; every line goes to the node's log, as written."""
    lines = [line.rstrip() for line in bytes(tail).decode("utf-8", "replace").splitlines()
             if line.strip()]
    if not lines:
        return ""
    for line in lines[-40:]:
        app_log.error("[%s] %s", backend.app.name, printable(line)[:1000])
    telling = next((line for line in reversed(lines) if _TELLING.search(line)), lines[-1])
    text = printable(telling.strip())[:300]
    more = f" ({len(lines) - 1} more line(s) in the node's log)" if len(lines) > 1 else ""
    hint = ""
    if "Cannot find module" in text and not (Path(backend.root) / "node_modules").exists():
        hint = "; the app's folder has no node_modules: run npm ci (or npm install) there first"
    elif "Exec format error" in text:
        hint = "; a script needs a #! line naming its interpreter"
    return f"; it wrote: {text}{more}{hint}"


async def _end(process: subprocess.Popen[bytes], wait: float) -> None:
    """Wait up to ``wait`` seconds for the trial slave to exit, then make it; reap it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while process.poll() is None and loop.time() < deadline:
        await asyncio.sleep(POLL)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait)
