"""The template process: imports an app once, then forks every slave of that app.

It runs in a fresh interpreter started by the ``process`` backend (multiprocessing's ``spawn``
method), so it has no ZeroMQ context and no threads of the node, and it creates none of its own
before forking: forking it is safe, and a forked slave has the app already imported. It talks
to the node over a socket of msgpack frames (``pipe.py``), and never blocks on it: what the
node has not read yet waits in a bounded buffer, and while that buffer is full the template
takes no new fork requests (so it cannot deadlock with a node that is slow to read):

node → template: ``["configure", config]``, ``["fork", slave_id, ...]`` (one or more slaves,
forked back to back, each reported on its own), ``["exit"]``
template → node: ``["loaded"]`` or ``["failed", reason, code_fault]``,
``["forked", slave_id, pid]``, ``["fork-failed", slave_id, reason]``, ``["exited", pid, status]``

An isolated app's template confines itself (``trust/sandbox.py``: a mount namespace, the
app's own uid, ``no_new_privs``) after importing the runtime and before loading the app.

It is a child subreaper and takes every process its slaves start with it when it exits
(``orphans.py``): on ``exit``, on SIGTERM, and on the node's death, which the kernel tells it
as SIGTERM (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import signal
import socket
import sys
import time
import traceback
from typing import Any

from cocaine_core import fdwait
from cocaine_core.backends.orphans import become_subreaper, kill_descendants, reap_any
from cocaine_core.backends.pipe import FramedPipe
from cocaine_core.backends.process_setup import die_with_parent, reset_oom_score_adj
from cocaine_core.errors import AppLoadError
from cocaine_core.trust.sandbox import SandboxError, become_dumpable, confine

EXIT_LOAD_FAILED = 3  # the app's code could not be loaded: do not respawn blindly
#: How long the template waits for its configure message, and for the node to take what it
#: sent before it exits (seconds).
CONFIGURE_TIMEOUT = 60.0
#: What the template's pipe to the node may hold unread (bytes); past half of it, the
#: template takes no fork requests until the node reads.
OUTBOX = 2**20
#: Longest reason sent for a failed load (characters).
MAX_REASON = 8192


def _end(*_: Any) -> None:
    """Take every process below the template with it, then exit (SIGTERM's handler too)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    kill_descendants()
    os._exit(0)


def template_main(sock: socket.socket, node_pid: int) -> None:
    """Entry point of the template process (runs until the node says exit or goes away)."""
    become_subreaper()
    signal.signal(signal.SIGTERM, _end)
    die_with_parent(node_pid, signal.SIGTERM)  # catchable: the tree goes with the template
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the node's to handle
    pipe = FramedPipe(sock, max_out=OUTBOX)
    # What came with the configure (a fork the pool asked for while the node waited for the
    # load) is served once the app is loaded.
    early = _receive_first(pipe, CONFIGURE_TIMEOUT)
    if not early or early[0][0] != "configure":
        _end()
        return
    config: dict[str, Any] = early.pop(0)[1]
    try:
        runtime = importlib.import_module(config["runtime"])
        if config.get("isolation"):
            # Our runtime is imported (as root, so it can read itself); the app's code is not.
            confine(config["isolation"], config["root"])
            die_with_parent(node_pid, signal.SIGTERM)  # a change of uid cleared it
        app = runtime.load(config)
    except SandboxError as exc:
        # Not the code's fault, but no retry will mend it (the node's set-up will): the app
        # is refused (broken) at once, saying why and what to do.
        _fail(pipe, str(exc), True)
    except AppLoadError as exc:
        _fail(pipe, str(exc), exc.code_fault)
    except BaseException as exc:  # the app's own import may raise anything
        _fail(pipe, _describe(exc), True)
    sys.stdout.flush()
    sys.stderr.flush()
    # Keep the collector's hands off the imported objects: a collection in a forked slave
    # would write to every object's header and copy the pages the slaves share.
    gc.collect()
    gc.freeze()
    pipe.send(["loaded"])
    _serve_forks(pipe, config, runtime, app, early)


def _receive_first(pipe: FramedPipe, timeout: float) -> list[list[Any]]:
    """The first messages to arrive within ``timeout`` (all of them: a read may bring the
    configure and a fork request together); empty if none came or the pipe broke."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        fdwait.wait([pipe.fileno()], [], left)
        try:
            messages = pipe.receive()
        except (EOFError, OSError, ValueError):
            return []
        if messages:
            return [list(message) for message in messages]
    return []


def _fail(pipe: FramedPipe, reason: str, code_fault: bool) -> None:
    with contextlib.suppress(OSError):
        pipe.send(["failed", reason[:MAX_REASON], code_fault])
        deadline = time.monotonic() + CONFIGURE_TIMEOUT
        while not pipe.flush() and time.monotonic() < deadline:
            fdwait.wait([], [pipe.fileno()], 1.0)
    kill_descendants()  # what the import started
    os._exit(EXIT_LOAD_FAILED)


def _describe(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
    try:
        text = str(exc)
    except Exception:
        text = "(its message could not be read)"
    return f"{type(exc).__name__}: {text[:MAX_REASON]}{where}"


def _serve_forks(pipe: FramedPipe, config: dict[str, Any], runtime: Any, app: Any,
                 early: list[list[Any]]) -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    # Known before any fork: a child asking getppid() after the template died would get 1
    # (or a subreaper) and never notice it is an orphan.
    template_pid = os.getpid()
    messages: list[Any] = early
    while True:
        for message in messages:
            if message[0] == "fork":
                for slave_id in message[1:]:
                    _fork(pipe, config, runtime, app, str(slave_id), template_pid, children,
                          (wake_r, wake_w))
            elif message[0] == "exit":
                _end()
        messages = []
        # While the node has not taken half the outbox, take no fork request: each adds to it.
        reading = [wake_r] + ([pipe.fileno()] if pipe.pending < OUTBOX // 2 else [])
        writing = [pipe.fileno()] if pipe.pending else []
        ready, _ = fdwait.wait(reading, writing, 1.0)
        try:
            pipe.flush()
        except OSError:
            _end()  # the node is gone
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
            _reap(pipe, children)
        if pipe.fileno() not in ready:
            continue
        try:
            messages = pipe.receive()
        except (EOFError, OSError, ValueError):
            messages = [["exit"]]


def _fork(pipe: FramedPipe, config: dict[str, Any], runtime: Any, app: Any, slave_id: str,
          template_pid: int, children: set[int], wake: tuple[int, int]) -> None:
    try:
        pid = os.fork()
    except OSError as exc:  # e.g. a pids limit: report it, keep serving
        _tell(pipe, ["fork-failed", slave_id, f"fork failed: {exc.strerror}"])
        return
    if pid == 0:
        for fd in wake:
            os.close(fd)
        _become_slave(pipe, config, runtime, app, slave_id, template_pid)
    children.add(pid)
    _tell(pipe, ["forked", slave_id, pid])


def _tell(pipe: FramedPipe, message: list[Any]) -> None:
    try:
        pipe.send(message)
    except OSError:
        _end()  # the node stopped reading for a whole outbox, or is gone: give up the app


def _reap(pipe: FramedPipe, children: set[int]) -> None:
    # Orphans re-parented to us (we are a subreaper) are reaped too, and not reported.
    for pid, code in reap_any():
        if pid in children:
            children.discard(pid)
            _tell(pipe, ["exited", pid, code])


def _become_slave(pipe: FramedPipe, config: dict[str, Any], runtime: Any, app: Any,
                  slave_id: str, template_pid: int) -> None:
    """In the forked child: drop the template's duties and serve as a slave. Never returns."""
    code = 1
    try:
        if config.get("isolation"):
            become_dumpable()  # its own /proc files again, to set its oom_score_adj
        reset_oom_score_adj(config.get("slave_oom_score_adj"))
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        pipe.close()
        die_with_parent(template_pid)
        from cocaine_core.slave_channel import SlaveChannel

        channel = SlaveChannel(config["endpoint"], slave_id, parent_pid=template_pid)
        code = runtime.serve(app, channel)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
