"""The ``process`` slave backend: slaves forked from a per-app template process.

Why not plain ``fork`` from the node: the node runs ZeroMQ I/O threads, and a forked copy of a
threaded process inherits locks held by threads that do not exist in the child. So the node
starts one *template* per app as a fresh interpreter (what multiprocessing calls the ``spawn``
start method; we exec it with ``subprocess`` so the node's ``__main__`` is not imported again)
and talks to it over a ``multiprocessing.connection`` pipe. The template has no threads and no
ZeroMQ context; it imports the app once, then ``fork()``s each slave, which starts with the
app already imported (a few milliseconds instead of an interpreter start plus imports) and
shares the template's memory pages until it writes to them.

Slaves never outlive the node: the template and each slave ask the kernel for SIGKILL when
their parent dies (``PR_SET_PDEATHSIG``), and the slave's heartbeat thread also exits when its
parent changes.

The template is the last process of its app the kernel's OOM killer takes, since losing it
costs every slave: the node lowers its ``oom_score_adj`` as soon as it starts (which takes
CAP_SYS_RESOURCE, which root in a container often lacks: without it the score is left as it
is), and each slave sets its own, as soon as it is forked, above the template's (raising
needs no privilege), so slaves never inherit the protection.
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
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from cocaine_core.appinfo import AppInfo, SlaveInfo
from cocaine_core.backends import BackendEvents, SlaveBackend
from cocaine_core.errors import AppLoadError
from cocaine_core.plugins import get_host

log = logging.getLogger("cocaine.backend")

#: The module a template process runs (``python -m``): it names our processes in ``ps``.
TEMPLATE_MODULE = "cocaine_core.backends.template_entry"

#: The template's ``oom_score_adj``: the kernel's OOM killer takes it only once no other
#: process of its group is left to take (its score is less than 0.1% of the memory it may
#: use). Not -1000, which the killer never takes: a template whose import alone passes the
#: app's memory limit would then stall its group instead of failing the load.
TEMPLATE_OOM_SCORE_ADJ = -999
#: How far above the template's ``oom_score_adj`` a slave's is, at least: each point counts
#: as 0.1% of the memory the group may use, so a slave goes first unless the template is
#: bigger than it by a tenth of the limit (it never is: a slave maps the template's pages).
SLAVE_OOM_SCORE_STEP = 100


def oom_score_adj(pid: int | None = None) -> int | None:
    """Process ``pid``'s ``oom_score_adj`` (this process's by default); None if unknown."""
    try:
        with open(f"/proc/{pid or 'self'}/oom_score_adj") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def protect_from_oom_killer(pid: int) -> bool:
    """Set process ``pid``'s ``oom_score_adj`` to ``TEMPLATE_OOM_SCORE_ADJ``; False if that
    takes a privilege (CAP_SYS_RESOURCE) this process lacks, or the process is gone."""
    current = oom_score_adj(pid)
    if current is None:
        return False
    if current == TEMPLATE_OOM_SCORE_ADJ:
        return True
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(TEMPLATE_OOM_SCORE_ADJ))
    except OSError as exc:
        log.debug("cannot lower the oom_score_adj of the template %d: %s; it keeps %d",
                  pid, exc.strerror or exc, current)
        return False
    return True


def slave_oom_score_adj(template: int | None, node: int | None) -> int:
    """The ``oom_score_adj`` a slave sets its own to: at least 0, at least the node's, and
    ``SLAVE_OOM_SCORE_STEP`` above the template's (which the node may have lowered)."""
    return min(1000, max(0, node or 0, (template or 0) + SLAVE_OOM_SCORE_STEP))


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
        self._conn: Connection | None = None
        self._pids: dict[str, int] = {}
        self._ids: dict[int, str] = {}
        self._loaded: asyncio.Future[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._slave_oom_score_adj = 0

    @property
    def pids(self) -> dict[str, int]:
        """Live slaves' pids by slave id."""
        return dict(self._pids)

    async def start(self) -> None:
        """Start the template and wait until it has imported the app (or failed to)."""
        self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        try:
            self.template = subprocess.Popen(
                [sys.executable, "-m", TEMPLATE_MODULE,
                 str(theirs.fileno()), str(os.getpid())],
                pass_fds=[theirs.fileno()],
                cwd=str(self.app.root or self.app.manifest.root),
            )
        finally:
            theirs.close()
        protect_from_oom_killer(self.template.pid)
        self._slave_oom_score_adj = slave_oom_score_adj(oom_score_adj(self.template.pid),
                                                        oom_score_adj())
        self._conn = Connection(ours.detach())
        self.template_info = SlaveInfo(id=f"{self.app.name}/template", pid=self.template.pid,
                                       template=True)
        self._loaded = self._loop.create_future()
        self._loop.add_reader(self._conn.fileno(), self._on_readable)
        try:
            get_host().call_each("cocaine_slave_spawned", raise_errors=True, app=self.app,
                                 slave=self.template_info)
        except Exception:
            await self.stop()
            raise  # a plugin's refusal fails the start with its message; it is not the code
        self._conn.send(("configure", self._config()))
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
            raise AppLoadError(result[1], code_fault=result[2] if len(result) > 2 else True)

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
        }

    def spawn(self, slave_id: str) -> None:
        """Ask the template to fork a slave named ``slave_id``."""
        if self._conn is None or self._stopping:
            raise AppLoadError("the template process is not running")
        self._conn.send(("fork", slave_id))

    def signal(self, slave_id: str, signum: int) -> None:
        """Send ``signum`` to a live slave."""
        pid = self._pids.get(slave_id)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _on_readable(self) -> None:
        assert self._conn is not None
        try:
            while self._conn.poll():
                self._handle(self._conn.recv())
        except (EOFError, OSError):
            self._on_template_exit()

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind in ("loaded", "failed"):
            if self._loaded is not None and not self._loaded.done():
                self._loaded.set_result(message)
        elif kind == "forked":
            _, slave_id, pid = message
            self._pids[slave_id] = pid
            self._ids[pid] = slave_id
            self.events.slave_spawned(slave_id, pid)
        elif kind == "fork-failed":
            _, slave_id, reason = message
            self.events.spawn_failed(slave_id, reason)
        elif kind == "exited":
            _, pid, status = message
            slave_id = self._ids.pop(pid, None)
            if slave_id is not None:
                self._pids.pop(slave_id, None)
                self.events.slave_exited(slave_id, status)

    def _on_template_exit(self) -> None:
        if self._conn is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._conn.fileno())
        self._conn.close()
        self._conn = None
        status = self._reap_template()
        was_loaded = (self._loaded is not None and self._loaded.done()
                      and not self._loaded.cancelled() and self._loaded.result()[0] == "loaded")
        if self._loaded is not None and not self._loaded.done():
            # Killed (by the OOM killer, an operator): the moment's fault, not the code's.
            how = (f"was killed by signal {-status}" if status < 0 else
                   f"exited with status {status}")
            self._loaded.set_result(("failed", f"the template process {how} before it had "
                                               f"loaded the app", status > 0))
        if was_loaded and not self._stopping:
            # Said first, so that the engine neither spawns from, nor dispatches to, what
            # died with the template while its slaves' exits are reported below.
            log.error("app %s: the template process died (status %s)", self.app.name, status)
            self.events.backend_lost(status)
        # Its slaves die with it (PR_SET_PDEATHSIG); nobody will report them: we do.
        for slave_id in list(self._pids):
            pid = self._pids.pop(slave_id)
            self._ids.pop(pid, None)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.events.slave_exited(slave_id, -signal.SIGKILL)
        self._notify_template_exit(status)

    def _reap_template(self) -> int:
        assert self.template is not None
        try:
            code = self.template.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.template.kill()
            code = self.template.wait()
        return code

    def _notify_template_exit(self, status: int) -> None:
        if self.template_info is not None:
            get_host().call_each("cocaine_slave_exited", app=self.app, slave=self.template_info,
                                 status=status)
            self.template_info = None

    async def stop(self) -> None:
        """Kill every slave and the template; wait until the template is reaped."""
        self._stopping = True
        for slave_id in list(self._pids):
            self.signal(slave_id, signal.SIGKILL)
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(("exit",))
        if self.template is not None:
            for _ in range(100):
                if self.template.poll() is not None:
                    break
                await asyncio.sleep(0.02)
            else:
                self.template.kill()
        if self._conn is not None:
            self._on_template_exit()
        elif self.template is not None:
            self._reap_template()
            self._notify_template_exit(self.template.returncode or 0)



def node_processes(node_pid: int) -> dict[int, int]:
    """Live templates and slaves that the node in process ``node_pid`` started (found by the
    command line a template is started with, which its forked slaves share), each with its
    parent's pid; zombies left out. For tests, benchmarks and operators' checks."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if (TEMPLATE_MODULE.encode() in args and args[-2:-1] == [str(node_pid).encode()]
                and fields[0] != b"Z"):
            found[int(entry)] = int(fields[1])
    return found

if TYPE_CHECKING:
    _follows_the_contract: type[SlaveBackend] = ProcessBackend
