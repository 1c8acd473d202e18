"""The template process: imports an app once, then forks every slave of that app.

It runs in a fresh interpreter started by the ``process`` backend (multiprocessing's ``spawn``
method), so it has no ZeroMQ context and no threads of the node, and it creates none of its own
before forking: forking it is safe, and a forked slave has the app already imported. It talks
to the node over a multiprocessing pipe:

node → template: ``("configure", config)``, ``("fork", slave_id)``, ``("exit",)``
template → node: ``("loaded",)`` or ``("failed", reason)``, ``("forked", slave_id, pid)``,
``("fork-failed", slave_id, reason)``, ``("exited", pid, status)``
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import os
import select
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from cocaine_core.errors import AppLoadError

EXIT_LOAD_FAILED = 3  # the app's code could not be loaded: do not respawn blindly
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies; exit if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the heartbeat thread's parent check still covers it
    if os.getppid() != parent_pid:
        os._exit(70)


def reset_oom_score_adj(value: int | None) -> None:
    """Set this process's ``oom_score_adj`` to ``value`` (None: leave it). A slave does so
    first thing, so that it does not keep the template's protection from the OOM killer;
    raising it needs no privilege."""
    if value is None:
        return
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError:
        pass  # not Linux, or no /proc: there was no protection to shed either


def template_main(conn: Connection, node_pid: int) -> None:
    """Entry point of the template process (runs until the node says exit or goes away)."""
    die_with_parent(node_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the node's to handle
    message = conn.recv()
    if message[0] != "configure":
        os._exit(2)
    config: dict[str, Any] = message[1]
    try:
        runtime = importlib.import_module(config["runtime"])
        app = runtime.load(config)
    except AppLoadError as exc:
        conn.send(("failed", str(exc)))
        os._exit(EXIT_LOAD_FAILED)
    except BaseException as exc:  # the app's own import may raise anything
        conn.send(("failed", _describe(exc)))
        os._exit(EXIT_LOAD_FAILED)
    sys.stdout.flush()
    sys.stderr.flush()
    # Keep the collector's hands off the imported objects: a collection in a forked slave
    # would write to every object's header and copy the pages the slaves share.
    gc.collect()
    gc.freeze()
    conn.send(("loaded",))
    _serve_forks(conn, config, runtime, app)


def _describe(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _serve_forks(conn: Connection, config: dict[str, Any], runtime: Any, app: Any) -> None:
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    # Known before any fork: a child asking getppid() after the template died would get 1
    # (or a subreaper) and never notice it is an orphan.
    template_pid = os.getpid()
    while True:
        try:
            ready, _, _ = select.select([conn.fileno(), wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
            _reap(conn, children)
        if conn.fileno() in ready:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = ("exit",)
            if message[0] == "fork":
                try:
                    pid = os.fork()
                except OSError as exc:  # e.g. a pids limit: report it, keep serving
                    conn.send(("fork-failed", message[1], f"fork failed: {exc.strerror}"))
                    continue
                if pid == 0:
                    os.close(wake_r)
                    os.close(wake_w)
                    _become_slave(conn, config, runtime, app, message[1], template_pid)
                children.add(pid)
                conn.send(("forked", message[1], pid))
            elif message[0] == "exit":
                for pid in children:
                    _kill(pid)
                os._exit(0)


def _reap(conn: Connection, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        try:
            conn.send(("exited", pid, code))
        except OSError:
            return


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _become_slave(conn: Connection, config: dict[str, Any], runtime: Any, app: Any,
                  slave_id: str, template_pid: int) -> None:
    """In the forked child: drop the template's duties and serve as a slave. Never returns."""
    code = 1
    try:
        reset_oom_score_adj(config.get("slave_oom_score_adj"))
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        conn.close()
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
