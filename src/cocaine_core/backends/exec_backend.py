"""The ``process`` backend for ``exec`` apps: each slave is the app's own program, started
directly by the node (no Python template), through ``exec_launch.py``.

A template makes no sense for a program that is not Python: there is nothing to import once
and share. So each ``spawn`` starts ``python -I -S exec_launch.py`` with the command on a
pipe; the launcher asks for SIGKILL when the node dies, confines an isolated app (the same
sandbox as a template's), enters the app's folder and execs the program, which keeps the
launcher's pid. The node is the slave's parent: it learns of its exit through a pidfd on its
loop and reaps it, so a pid it signals is never one the kernel has handed to another process.

What the node does for Python slaves it does here too: heartbeats, timeouts, retries and the
pool are the engine's; every slave counts against ``--max-slaves``; its stdout and stderr go
to the node's log, tagged with the app; processes it starts carry the app's tree marker and
are killed when the app stops (``orphans.kill_marked``). Loading the code is a **trial
start** (``exec_trial.py``): one slave must reach *ready* before the app runs, so a program
that cannot start marks the app broken exactly as a Python import error does.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import marshal
import os
import signal
import subprocess
import sys
import uuid
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cocaine_core.appinfo import AppInfo
from cocaine_core.backends import BackendEvents, SlaveBackend
from cocaine_core.backends.oom import oom_score_adj, slave_oom_score_adj
from cocaine_core.backends.orphans import TREE_VARIABLE, kill_marked
from cocaine_core.backends.output import AppOutput
from cocaine_core.errors import AppLoadError
from cocaine_core.trust.app_users import app_environment, isolation_config

log = logging.getLogger("cocaine.backend")

LAUNCHER = str(Path(__file__).with_name("exec_launch.py"))
#: The variables every exec slave gets (docs/languages.md).
ENDPOINT_VARIABLE, SLAVE_ID_VARIABLE, APP_VARIABLE = (
    "COCAINE_ENDPOINT", "COCAINE_SLAVE_ID", "COCAINE_APP")
#: How long ``stop`` waits for killed slaves to be reaped (seconds).
REAP_TIMEOUT = 5.0
#: How often a slave's exit is looked for where the kernel has no pidfd (seconds).
POLL_EXIT = 0.1
#: Most slaves started within ``LAUNCH_PACE`` seconds; more wait their turn.
LAUNCH_BURST = 8
LAUNCH_PACE = 0.05
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class ExecBackend:
    """Starts an ``exec`` app's program once per slave, directly from the node."""

    def __init__(self, app: AppInfo, endpoint: str, runtime: str, events: BackendEvents, *,
                 startup_timeout: float = 10.0) -> None:
        self.app = app
        self.endpoint = endpoint
        self.runtime = runtime
        self.events = events
        self.startup_timeout = startup_timeout
        args = app.manifest.args
        self.command: list[str] = list(args.get("command") or [])
        self.root = str(app.root or app.manifest.root)
        #: Marks every process of this app's slaves (``orphans.TREE_VARIABLE``).
        self.tree = f"{os.getpid()}.{app.instance}.{uuid.uuid4().hex[:8]}"
        base = app_environment(os.environ) if app.user is not None else dict(os.environ)
        self.env: dict[str, str] = {**base, **dict(args.get("env") or {}),
                                    APP_VARIABLE: app.name, TREE_VARIABLE: self.tree}
        self.isolation: dict[str, Any] | None = None
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._pidfds: dict[str, int] = {}
        self._output: list[AppOutput] = []
        self._writers: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._oom_score_adj = slave_oom_score_adj(None, oom_score_adj())
        self._stopping = False
        #: Slaves asked for and not started yet; when the last starts were (loop time).
        self._waiting: deque[str] = deque()
        self._launched: deque[float] = deque()
        self._pump_handle: asyncio.TimerHandle | None = None

    @property
    def pids(self) -> dict[str, int]:
        """Live slaves' pids by slave id."""
        return {slave_id: process.pid for slave_id, process in self._processes.items()}

    async def start(self) -> None:
        """Get an isolated app's code ready for its user, and start one trial slave that must
        reach *ready* within ``startup_timeout``."""
        from cocaine_core.backends.exec_trial import trial_start

        self._loop = asyncio.get_running_loop()
        if not self.command:
            raise AppLoadError("its command is empty", code_fault=True)
        # The program is found, and run, as the app's user sees it, by the launcher: nothing
        # is made reachable for it beyond what the app reaches anyway (its code, the Python
        # installation), so a manifest cannot open a way into a folder the app may not read.
        self.isolation = await asyncio.to_thread(isolation_config, self.app, self.endpoint)
        for stream in ("stdout", "stderr"):
            reader, writer = os.pipe()
            self._writers.append(writer)
            self._output.append(AppOutput(self.app.name, stream, reader, self._loop))
        try:
            await trial_start(self, self.startup_timeout)
        except BaseException:
            await self.stop()
            raise

    def launch(self, slave_id: str, endpoint: str, *,
               output: tuple[int, int] | None = None) -> tuple[subprocess.Popen[bytes], int]:
        """Start the program as ``slave_id`` on ``endpoint`` (the trial's own, or the
        engine's), held before it runs until ``go(gate)``; its output goes to ``output`` or
        the app's log. Returns the process and the gate. Call it on the loop's thread: the
        kernel's death signal follows the thread that forked.

        :raises OSError: the fork failed (a limit).
        """
        spec = {"command": self.command, "root": self.root, "isolation": self.isolation,
                "oom_score_adj": self._oom_score_adj,
                "env": {**self.env, ENDPOINT_VARIABLE: endpoint, SLAVE_ID_VARIABLE: slave_id}}
        data = marshal.dumps(spec)
        data = len(data).to_bytes(4, "big") + data
        reader, gate = os.pipe()
        try:
            # Written whole before the launcher runs, so the pipe must hold it and the go
            # byte: never a blocking write (a user at its pipe quota gets 8 KiB pipes).
            os.set_blocking(gate, False)
            if len(data) >= 4096:
                with contextlib.suppress(OSError):
                    fcntl.fcntl(gate, F_SETPIPE_SZ, min(len(data) + 1, 2**20 + 8))
            if os.write(gate, data) < len(data):
                raise OSError(errno.ENOBUFS, f"its {len(data)}-byte start-up spec does not fit "
                                             f"the pipe to its launcher (the user's pipe quota, "
                                             f"fs.pipe-user-pages-soft?)")
            stdout, stderr = output or (self._writers[0], self._writers[1])
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", LAUNCHER, str(os.getpid())],
                stdin=reader, stdout=stdout, stderr=stderr, cwd="/",
                env={"PATH": os.defpath}, start_new_session=True)
        except BaseException:
            os.close(gate)
            raise
        finally:
            os.close(reader)
        return process, gate

    def go(self, gate: int) -> None:
        """Let a launched program run (its spawn hooks have confined it): now, or, while the
        pipe is full (the launcher has not read its spec yet), once it has room."""
        try:
            os.write(gate, b"g")
        except BlockingIOError:
            assert self._loop is not None
            self._loop.add_writer(gate, self._go_later, gate)
            return
        except OSError:
            pass  # it died meanwhile: its exit is heard
        os.close(gate)

    def _go_later(self, gate: int) -> None:
        assert self._loop is not None
        self._loop.remove_writer(gate)
        self.go(gate)

    def spawn(self, slave_id: str) -> None:
        """Start a slave named ``slave_id`` (refused past the node's ``--max-slaves``): at
        once, or, past ``LAUNCH_BURST`` starts within ``LAUNCH_PACE`` seconds, in turn."""
        if self._loop is None or self._stopping:
            raise AppLoadError("the app's program is not ready to start")
        if not self.app.slaves.take():
            self.events.spawn_failed(slave_id, self.app.slaves.refusal())
            return
        self._waiting.append(slave_id)
        self._pump()

    def _pump(self) -> None:
        """Start waiting slaves, at most ``LAUNCH_BURST`` per ``LAUNCH_PACE`` seconds: each
        start is a fork of the node and a program's start-up, and a ``pool-min`` of hundreds
        must neither hold the node's loop nor start them all in one go."""
        assert self._loop is not None
        self._pump_handle = None
        now = self._loop.time()
        while self._launched and now - self._launched[0] > LAUNCH_PACE:
            self._launched.popleft()
        while self._waiting and len(self._launched) < LAUNCH_BURST and not self._stopping:
            self._launched.append(now)
            self._start(self._waiting.popleft())
        if self._waiting and not self._stopping:
            self._pump_handle = self._loop.call_later(LAUNCH_PACE, self._pump)

    def _start(self, slave_id: str) -> None:
        assert self._loop is not None
        try:
            process, gate = self.launch(slave_id, self.endpoint)
        except OSError as exc:
            self.app.slaves.give()
            self.events.spawn_failed(slave_id, f"cannot start the program: {exc.strerror}")
            return
        self._processes[slave_id] = process
        try:
            pidfd = os.pidfd_open(process.pid)
        except OSError:
            pidfd = None  # a kernel before 5.3: its exit is found by polling (``_poll``)
        if pidfd is not None:
            self._pidfds[slave_id] = pidfd
            self._loop.add_reader(pidfd, self._on_exit, slave_id)
        else:
            self._loop.call_later(POLL_EXIT, self._poll, slave_id, process)
        try:
            self.events.slave_spawned(slave_id, process.pid)  # the spawn hooks confine it
        finally:
            self.go(gate)

    def _poll(self, slave_id: str, process: subprocess.Popen[bytes]) -> None:
        if self._processes.get(slave_id) is process:
            self._on_exit(slave_id)
            if slave_id in self._processes and self._loop is not None:
                self._loop.call_later(POLL_EXIT, self._poll, slave_id, process)

    def _on_exit(self, slave_id: str) -> None:
        process = self._processes.get(slave_id)
        if process is None or process.poll() is None:
            return
        # What it started in its own process group (it leads one) goes with it; a group id
        # is never another process's while a member lives.
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
        self._forget(slave_id)
        self.events.slave_exited(slave_id, process.returncode)

    def _forget(self, slave_id: str) -> None:
        self._processes.pop(slave_id, None)
        pidfd = self._pidfds.pop(slave_id, None)
        if pidfd is not None:
            assert self._loop is not None
            self._loop.remove_reader(pidfd)
            os.close(pidfd)
        self.app.slaves.give()

    def signal(self, slave_id: str, signum: int) -> None:
        """Send ``signum`` to a slave not yet reaped (so its pid is still its own); one still
        waiting its turn to start is dropped instead, and told as ended by ``signum``."""
        if slave_id in self._waiting and signum in (signal.SIGTERM, signal.SIGKILL):
            self._waiting.remove(slave_id)
            self.app.slaves.give()
            assert self._loop is not None
            self._loop.call_soon(self.events.slave_exited, slave_id, -signum)
            return
        process = self._processes.get(slave_id)
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)

    async def stop(self) -> None:
        """Kill every slave and what they started, reap them, and close the app's output."""
        self._stopping = True
        if self._pump_handle is not None:
            self._pump_handle.cancel()
        for _ in self._waiting:  # never started: nothing to report
            self.app.slaves.give()
        self._waiting.clear()
        for slave_id in list(self._processes):
            self.signal(slave_id, signal.SIGKILL)
        deadline = asyncio.get_running_loop().time() + REAP_TIMEOUT
        while self._processes and asyncio.get_running_loop().time() < deadline:
            for slave_id in list(self._processes):
                self._on_exit(slave_id)
            if self._processes:
                await asyncio.sleep(0.01)
        for slave_id in list(self._processes):
            log.error("app %s: slave %s did not die within %g s of SIGKILL", self.app.name,
                      slave_id, REAP_TIMEOUT)
            self._forget(slave_id)
        killed = await asyncio.to_thread(kill_marked, self.tree)
        if killed:
            log.warning("app %s: killed %d process(es) the app had started and left behind",
                        self.app.name, killed)
        for writer in self._writers:
            os.close(writer)
        self._writers.clear()
        for output in self._output:
            output.drain()
            output.close()
        self._output.clear()


def process_backend(app: AppInfo, endpoint: str, runtime: str, events: BackendEvents, *,
                    startup_timeout: float = 10.0) -> SlaveBackend:
    """The ``process`` backend: slaves forked from a template that imported the app, or, for
    a language whose runtime is ``exec``, the app's program started once per slave."""
    from cocaine_core.backends.process import ProcessBackend
    from cocaine_core.languages import EXEC_RUNTIME

    kind: type[SlaveBackend] = ExecBackend if runtime == EXEC_RUNTIME else ProcessBackend
    return kind(app, endpoint, runtime, events, startup_timeout=startup_timeout)


if TYPE_CHECKING:
    _follows_the_contract: type[SlaveBackend] = ExecBackend
