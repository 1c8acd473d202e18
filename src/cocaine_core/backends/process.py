"""The ``process`` slave backend: slaves forked from a per-app template process.

Why not plain ``fork`` from the node: the node runs ZeroMQ I/O threads, and a forked copy of a
threaded process inherits locks held by threads that do not exist in the child. So the node
starts one *template* per app as a fresh interpreter (what multiprocessing calls the ``spawn``
start method; we exec it with ``subprocess`` so the node's ``__main__`` is not imported again)
and talks to it over a socket of msgpack frames (``pipe.py``) that the node's loop reads and
writes without ever blocking; at most ``FORKS_IN_FLIGHT`` forks are asked for at a time
(those the pool wants together go in one message), and every slave counts against the node's
``--max-slaves`` (``appinfo.SlaveBudget``). The template has no threads and no ZeroMQ
context; it imports the app once, then ``fork()``s each slave, which starts with the app
already imported (a few milliseconds instead of an interpreter start plus imports) and shares
the template's memory pages until it writes to them.

Slaves never outlive the node: each slave asks the kernel for SIGKILL when the template dies
(``PR_SET_PDEATHSIG``), the template for SIGTERM when the node dies, on which it kills every
process below it (``orphans.py``), and the slave's heartbeat thread also exits when its parent
changes. The template's stdout and stderr, which every process of the app inherits, are pipes
the node reads into its log, tagged with the app (``output.py``). The OOM killer takes the
template last (``oom.py``). An isolated app's template (``AppInfo.user``) is started as root
too, and drops to the app's user before it loads the app (``trust/sandbox.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from cocaine_core.appinfo import AppInfo, SlaveInfo
from cocaine_core.backends import BackendEvents, SlaveBackend, template_messages
from cocaine_core.backends.census import TEMPLATE_MODULE, node_processes
from cocaine_core.backends.oom import (
    SLAVE_OOM_SCORE_STEP,
    TEMPLATE_OOM_SCORE_ADJ,
    oom_score_adj,
    protect_from_oom_killer,
    slave_oom_score_adj,
)
from cocaine_core.backends.orphans import KILL_TIMEOUT, TREE_VARIABLE, kill_marked
from cocaine_core.backends.output import AppOutput
from cocaine_core.backends.pipe import FramedPipe
from cocaine_core.errors import AppLoadError
from cocaine_core.plugins import get_host
from cocaine_core.trust.app_users import app_environment, isolation_config

log = logging.getLogger("cocaine.backend")

#: Fork requests sent to a template and not yet answered, at most; more wait in the node.
FORKS_IN_FLIGHT = 8
#: What the node's side of a template's pipe may hold unsent (bytes).
OUTBOX = 2**20
#: Seconds the node waits for a template whose pipe closed to exit before it kills it.
REAP_WAIT = 0.1


class ProcessBackend:
    """Starts an app's template process and forks slaves from it on request."""

    def __init__(self, app: AppInfo, endpoint: str, runtime: str, events: BackendEvents, *,
                 startup_timeout: float = 10.0) -> None:
        self.app = app
        self.endpoint = endpoint
        self.runtime = runtime
        self.events = events
        self.startup_timeout = startup_timeout
        self.template: subprocess.Popen[bytes] | None = None
        self.template_info: SlaveInfo | None = None
        self._pipe: FramedPipe | None = None
        self._pids: dict[str, int] = {}
        self._ids: dict[int, str] = {}
        #: Forks asked for and not yet sent, sent and not yet answered; slaves counted in
        #: the node's budget (``app.slaves``).
        self._waiting: deque[str] = deque()
        self._in_flight: set[str] = set()
        self._counted: set[str] = set()
        self._output: list[AppOutput] = []
        #: Marks every process below this template (``orphans.TREE_VARIABLE``).
        self.tree = f"{os.getpid()}.{app.instance}.{uuid.uuid4().hex[:8]}"
        self._loaded: asyncio.Future[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._slave_oom_score_adj = 0
        #: The uid an isolated app runs as (None: the node's).
        self._uid = app.user.uid if app.user is not None else None
        self._isolation: dict[str, Any] | None = None

    async def start(self) -> None:
        """Start the template and wait until it has imported the app (or failed to)."""
        self._loop = asyncio.get_running_loop()
        # An isolated app's code and socket are handed to its user before its template runs.
        self._isolation = await asyncio.to_thread(isolation_config, self.app, self.endpoint)
        ours, theirs = socket.socketpair()
        try:
            # -P and, isolated, "/" as the working folder: nothing of the app's folder is
            # on sys.path (an app's socket.py must not be imported by the template as root).
            isolated = self._isolation is not None
            self.template = subprocess.Popen(
                [sys.executable, "-P", "-m", TEMPLATE_MODULE,
                 str(theirs.fileno()), str(os.getpid())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env={**(app_environment(os.environ) if isolated else os.environ),
                     TREE_VARIABLE: self.tree},
                cwd="/" if isolated else str(self.app.root or self.app.manifest.root),
            )
        finally:
            theirs.close()
        assert self.template.stdout is not None and self.template.stderr is not None
        for stream, pipe in (("stdout", self.template.stdout), ("stderr", self.template.stderr)):
            self._output.append(AppOutput(self.app.name, stream, os.dup(pipe.fileno()),
                                          self._loop))
            pipe.close()
        protect_from_oom_killer(self.template.pid)
        self._slave_oom_score_adj = slave_oom_score_adj(oom_score_adj(self.template.pid),
                                                        oom_score_adj())
        self._pipe = FramedPipe(ours, max_out=OUTBOX)
        self.template_info = SlaveInfo(id=f"{self.app.name}/template", pid=self.template.pid,
                                       template=True)
        self._loaded = self._loop.create_future()
        self._loop.add_reader(self._pipe.fileno(), self._on_readable)
        try:
            get_host().call_each("cocaine_slave_spawned", raise_errors=True, app=self.app,
                                 slave=self.template_info)
        except Exception:
            await self.stop()
            raise  # a plugin's refusal fails the start with its message; it is not the code
        self._send(["configure", self._config()])
        try:
            # Shielded: a timeout must leave the future to _on_template_exit, not cancel it.
            result = await asyncio.wait_for(asyncio.shield(self._loaded), self.startup_timeout)
        except TimeoutError:
            await self.stop()
            raise AppLoadError(f"the app did not finish importing within "
                               f"{self.startup_timeout:g} s (engine.startup-timeout)",
                               code_fault=False) from None
        if result[0] == "failed":
            await self.stop()
            raise AppLoadError(str(result[1]),
                               code_fault=bool(result[2]) if len(result) > 2 else True)

    def _config(self) -> dict[str, Any]:
        manifest = self.app.manifest
        return {
            "app": self.app.name,
            "runtime": self.runtime,
            "endpoint": self.endpoint,
            "args": manifest.args,
            "root": str(self.app.root or manifest.root),
            "events": manifest.events,
            # What a slave sets its own to at once, so it does not keep the template's.
            "slave_oom_score_adj": self._slave_oom_score_adj,
            # The user it runs as and what it may reach (trust/sandbox.py); None: as we do.
            "isolation": self._isolation,
        }

    def spawn(self, slave_id: str) -> None:
        """Ask the template to fork a slave named ``slave_id`` (see ``spawn_many``)."""
        self.spawn_many([slave_id])

    def spawn_many(self, slave_ids: list[str]) -> None:
        """Ask the template to fork these slaves, in one message, back to back: at once while
        fewer than ``FORKS_IN_FLIGHT`` forks await their answer, the rest as they are
        answered. One past ``--max-slaves`` is refused through ``events.spawn_failed``."""
        if self._pipe is None or self._stopping:
            raise AppLoadError("the template process is not running")
        for slave_id in slave_ids:
            if self.app.slaves.take():
                self._counted.add(slave_id)
                self._waiting.append(slave_id)
            else:
                self.events.spawn_failed(slave_id, self.app.slaves.refusal())
        self._send_forks()

    def _send_forks(self) -> None:
        room = min(FORKS_IN_FLIGHT - len(self._in_flight), len(self._waiting))
        batch = [self._waiting.popleft() for _ in range(room)] if self._pipe else []
        if batch:
            self._in_flight.update(batch)
            self._send(["fork", *batch])

    def _send(self, message: list[Any]) -> None:
        """Send to the template without blocking; what it has not read yet is written from
        the loop as it reads. A template that reads nothing for a whole buffer is lost."""
        if self._pipe is None:
            return
        try:
            self._pipe.send(message)
        except OSError as exc:
            log.error("app %s: the template process does not read its pipe (%s); killing it",
                      self.app.name, exc)
            self._kill_template()
            return
        if self._pipe.pending:
            assert self._loop is not None
            self._loop.add_writer(self._pipe.fileno(), self._on_writable)

    def _on_writable(self) -> None:
        assert self._loop is not None
        if self._pipe is None:
            return
        try:
            done = self._pipe.flush()
        except OSError:
            done = True  # the template is gone: the reader hears it
        if done:
            self._loop.remove_writer(self._pipe.fileno())

    def _uncount(self, slave_id: str) -> None:
        if slave_id in self._counted:
            self._counted.discard(slave_id)
            self.app.slaves.give()

    def signal(self, slave_id: str, signum: int) -> None:
        """Send ``signum`` to a live slave (only while its pid is still the app's)."""
        pid = self._pids.get(slave_id)
        if pid is not None:
            self._kill(pid, signum)

    def _kill(self, pid: int, signum: int) -> None:
        template = self.template.pid if self.template is not None else -1
        if template_messages.owned(pid, template, self._uid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _on_readable(self) -> None:
        assert self._pipe is not None
        try:
            messages = self._pipe.receive()
        except (EOFError, OSError):
            self._on_template_exit()
            return
        except ValueError as exc:  # not a frame of ours: as bad as a bad message
            self._broke_protocol(template_messages.BadMessage(f"a damaged frame: {exc}"))
            return
        for message in messages:
            try:
                self._handle(message)
            except template_messages.BadMessage as exc:
                self._broke_protocol(exc)
                return
            if self._pipe is None:
                return

    def _broke_protocol(self, exc: template_messages.BadMessage) -> None:
        """The template (which runs the app's code) sent what it must not: kill it; while
        it loads, that is the code's fault (the app is refused, never retried blindly)."""
        log.error("app %s: its template process broke the protocol (%s); killing it",
                  self.app.name, exc)
        if self._loaded is not None and not self._loaded.done():
            self._loaded.set_result(["failed", f"its template process broke the protocol: "
                                               f"{exc}", True])
        self._kill_template()
        if self._pipe is not None:
            self._on_template_exit()

    def _handle(self, message: Any) -> None:
        kind, fields = template_messages.check(message)
        if kind in ("loaded", "failed"):
            if self._loaded is not None and not self._loaded.done():
                self._loaded.set_result([kind, *fields])
        elif kind == "forked":
            slave_id, pid = fields
            template = self.template.pid if self.template is not None else -1
            if template_messages.child_of(pid, template, self._uid) is False:
                raise template_messages.BadMessage(f"it reported pid {pid} as slave "
                                                   f"{slave_id!r:.80}, a process that is not "
                                                   f"its child")
            if slave_id not in self._in_flight or pid in self._ids:
                raise template_messages.BadMessage(f"it reported slave {slave_id!r:.80} "
                                                   f"(pid {pid}), which it was not asked for")
            self._in_flight.discard(slave_id)
            self._pids[slave_id] = pid
            self._ids[pid] = slave_id
            self._send_forks()
            self.events.slave_spawned(slave_id, pid)
        elif kind == "fork-failed":
            slave_id, reason = fields
            if slave_id not in self._in_flight:
                raise template_messages.BadMessage(f"it reported a failed fork of slave "
                                                   f"{slave_id!r:.80}, not asked for")
            self._in_flight.discard(slave_id)
            self._uncount(slave_id)
            self._send_forks()
            self.events.spawn_failed(slave_id, reason)
        elif kind == "exited":
            pid, status = fields
            slave_id = self._ids.pop(pid, None)
            if slave_id is not None:
                self._pids.pop(slave_id, None)
                self._uncount(slave_id)
                self.events.slave_exited(slave_id, status)

    def _kill_template(self) -> None:
        if self.template is not None:
            with contextlib.suppress(ProcessLookupError):
                self.template.kill()

    def _on_template_exit(self) -> None:
        if self._pipe is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._pipe.fileno())
        self._loop.remove_writer(self._pipe.fileno())
        self._pipe.close()
        self._pipe = None
        status = self._reap_template()
        # What the template left behind (it was SIGKILLed), and its output so far.
        killed = kill_marked(self.tree)
        if killed:
            log.warning("app %s: killed %d process(es) the app had started and left behind",
                        self.app.name, killed)
        for output in self._output:
            output.drain()
            output.close()
        was_loaded = (self._loaded is not None and self._loaded.done()
                      and not self._loaded.cancelled() and self._loaded.result()[0] == "loaded")
        if self._loaded is not None and not self._loaded.done():
            # Killed (by the OOM killer, an operator): the moment's fault, not the code's.
            how = (f"was killed by signal {-status}" if status < 0 else
                   f"exited with status {status}")
            self._loaded.set_result(["failed", f"the template process {how} before it had "
                                               f"loaded the app", status > 0])
        if was_loaded and not self._stopping:
            # Said first, so that the engine neither spawns from, nor dispatches to, what
            # died with the template while its slaves' exits are reported below.
            log.error("app %s: the template process died (status %s)", self.app.name, status)
            self.events.backend_lost(status)
        self._waiting.clear()  # forks never made or never answered: uncounted below
        self._in_flight.clear()
        # Its slaves die with it (PR_SET_PDEATHSIG); nobody will report them: we do.
        for slave_id in list(self._pids):
            pid = self._pids.pop(slave_id)
            self._ids.pop(pid, None)
            self._uncount(slave_id)
            self._kill(pid, signal.SIGKILL)
            self.events.slave_exited(slave_id, -signal.SIGKILL)
        for slave_id in list(self._counted):
            self._uncount(slave_id)
        self._notify_template_exit(status)

    def _reap_template(self) -> int:
        # Its pipe closed: it exits, or is made to (the app's code may hold it up).
        assert self.template is not None
        try:
            return self.template.wait(timeout=REAP_WAIT)
        except subprocess.TimeoutExpired:
            self.template.kill()
            return self.template.wait()

    def _notify_template_exit(self, status: int) -> None:
        if self.template_info is not None:
            get_host().call_each("cocaine_slave_exited", app=self.app, slave=self.template_info,
                                 status=status)
            self.template_info = None

    async def stop(self) -> None:
        """Kill every slave and the template (which takes every process the app started
        with it); wait until the template is reaped."""
        self._stopping = True
        for slave_id in list(self._pids):
            self.signal(slave_id, signal.SIGKILL)
        self._send(["exit"])
        if self.template is not None:
            # The template kills its tree, bounded by orphans.KILL_TIMEOUT, before it exits;
            # one busy importing the app reads no message, but hears SIGTERM.
            for tick in range(int((KILL_TIMEOUT + 1.5) / 0.02)):
                if self.template.poll() is not None:
                    break
                if tick == 25:
                    with contextlib.suppress(ProcessLookupError):
                        self.template.terminate()
                await asyncio.sleep(0.02)
            else:
                self.template.kill()
        if self._pipe is not None:
            self._on_template_exit()
        elif self.template is not None:
            self._reap_template()
            self._notify_template_exit(self.template.returncode or 0)
        for output in self._output:
            output.close()


__all__ = ["SLAVE_OOM_SCORE_STEP", "TEMPLATE_MODULE", "TEMPLATE_OOM_SCORE_ADJ", "ProcessBackend",
           "node_processes", "oom_score_adj", "protect_from_oom_killer", "slave_oom_score_adj"]

if TYPE_CHECKING:
    _follows_the_contract: type[SlaveBackend] = ProcessBackend
