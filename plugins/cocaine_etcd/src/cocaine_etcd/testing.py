"""Real etcd members for tests: ``EtcdCluster(folder, size=1 | 3)``.

Each member is an ``etcd`` process on free 127.0.0.1 ports (client and peer), with its data
folder and its log file in ``folder``, and elections fast enough for tests. ``start()``
returns once every member answers a real request (etcd's ``/health``, a quorum read);
``kill``, ``stop`` and ``restart`` act on one member by its PID; ``stop_all()`` kills every
process the cluster started. Used by this distribution's tests and by the cluster tests::

    cluster = EtcdCluster(tmp_path, size=3)
    cluster.start()
    storage = EtcdStorage(cluster.uri("cocaine"))
    cluster.kill(0)
    ...
    cluster.stop_all()

The members die with the process that started them (``PR_SET_PDEATHSIG`` through
util-linux's ``setpriv``, when it is installed), so a test run that is itself killed leaves
no etcd behind. Start them from the test's own thread: the signal follows the thread that
started them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

#: Heartbeat and election timeout (ms) of the test members: a leader is elected in about
#: half a second after one is lost (etcd's defaults, 100 and 1000, double that).
HEARTBEAT_MS = 50
ELECTION_MS = 500
#: Seconds a member may take to answer its first health check (a busy 2-core machine).
START_TIMEOUT = 20.0
#: Seconds a member may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 5.0

MISSING = ("etcd is not installed (no 'etcd' on PATH): the cocaine-etcd tests run real etcd "
           "members. Install Debian's etcd-server package (`apt-get install etcd-server`; "
           "scripts/test, the repo's test command, installs it), or put etcd's release "
           "binary on PATH, or set COCAINE_ETCD_BINARY to its path.")


class EtcdMissing(RuntimeError):
    """The ``etcd`` binary is not installed: the tests cannot run (they fail, not skip)."""


def etcd_binary() -> str:
    """The path of the ``etcd`` binary (``$COCAINE_ETCD_BINARY``, PATH, /usr/bin); EtcdMissing
    if there is none."""
    configured = os.environ.get("COCAINE_ETCD_BINARY")
    if configured:
        if os.access(configured, os.X_OK):
            return configured
        raise EtcdMissing(f"COCAINE_ETCD_BINARY={configured!r} is not an executable file. "
                          + MISSING)
    found = shutil.which("etcd") or next(
        (p for p in ("/usr/bin/etcd", "/usr/sbin/etcd", "/usr/local/bin/etcd")
         if os.access(p, os.X_OK)), None)
    if found is None:
        raise EtcdMissing(MISSING)
    return found


#: The ports this process handed out: the kernel may offer a port again once it is free,
#: and two members given the same one make etcd refuse the cluster ("duplicate url").
_given: set[int] = set()


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nobody listens on right now, never one this process
    handed out before."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _given:
            _given.add(port)
            return port
    raise RuntimeError("no free 127.0.0.1 port this process has not handed out already")


def _die_with_parent() -> list[str]:
    # setpriv (util-linux) sets PR_SET_PDEATHSIG, then execs etcd (same PID). Not a
    # preexec_fn: Python code between fork and exec in a process running gRPC's threads
    # can crash the child.
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


class EtcdMember:
    """One etcd process: its name, ports, data folder and log (see the module's docstring)."""

    def __init__(self, folder: Path, name: str, binary: str) -> None:
        self.name = name
        self.binary = binary
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = folder / f"{name}.data"
        self.log_path = folder / f"{name}.log"
        self.initial_cluster = ""
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT``, the member's client endpoint."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        """The member's peer URL (for ``--initial-cluster``)."""
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        """The PID of the running process, or None."""
        return self.process.pid if self.running else None  # type: ignore[union-attr]

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        """The command line that starts this member."""
        client = f"http://{self.endpoint}"
        return [self.binary, "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", self.initial_cluster,
                "--initial-cluster-state", "new", "--initial-cluster-token", "cocaine-test",
                "--heartbeat-interval", str(HEARTBEAT_MS),
                "--election-timeout", str(ELECTION_MS),
                "--listen-metrics-urls", "", "--enable-pprof=false"]

    def spawn(self) -> None:
        """Start the process (same ports and data folder every time); does not wait."""
        if self.running:
            return
        self._close_log()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open while it runs
        self.process = subprocess.Popen(_die_with_parent() + self.command(),
                                        stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT)

    def healthy(self, timeout: float = 1.0) -> bool:
        """Whether the member answers ``/health`` with true (it has a leader: a quorum)."""
        url = f"http://{self.endpoint}/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                return bool(json.loads(answer.read()).get("health") in ("true", True))
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Return once the member is healthy; RuntimeError (with its log's tail) after
        ``timeout`` seconds or if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"etcd member {self.name} exited "
                                   f"(code {self.process and self.process.poll()}):\n"
                                   + self.log_tail())
            if self.healthy(timeout=1.0):
                return
            time.sleep(0.05)
        raise RuntimeError(f"etcd member {self.name} at {self.endpoint} was not healthy "
                           f"within {timeout:.0f} s:\n" + self.log_tail())

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the member's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, signum: int, timeout: float = STOP_TIMEOUT) -> None:
        """Send ``signum`` to the process by PID and wait for it to exit (SIGKILL after
        ``timeout`` seconds)."""
        process = self.process
        if process is None or process.poll() is not None:
            self._close_log()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class EtcdCluster:
    """``size`` etcd members (1 or 3) forming one cluster, data and logs in ``folder``."""

    def __init__(self, folder: Path | str, size: int = 1) -> None:
        if size not in (1, 3, 5):
            raise ValueError(f"an etcd test cluster has 1, 3 or 5 members, not {size}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        binary = etcd_binary()
        self.members = [EtcdMember(self.folder, f"m{i}", binary) for i in range(size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.initial_cluster = initial

    def __enter__(self) -> EtcdCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    @property
    def endpoints(self) -> list[str]:
        """Every member's ``127.0.0.1:PORT``, in order."""
        return [m.endpoint for m in self.members]

    def uri(self, prefix: str = "cocaine") -> str:
        """The storage URI naming every member: ``etcd://H:P1,H:P2,.../prefix``."""
        return f"etcd://{','.join(self.endpoints)}/{prefix.strip('/')}"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start every member and return once each is healthy (bounded by ``timeout``)."""
        try:
            for member in self.members:
                member.spawn()
            deadline = time.monotonic() + timeout
            for member in self.members:
                member.wait_healthy(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop_all()
            raise

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` by PID and wait for it to exit."""
        self.members[i].signal(signal.SIGKILL)

    def stop(self, i: int) -> None:
        """SIGTERM member ``i`` by PID and wait for it to exit (killed after 5 s)."""
        self.members[i].signal(signal.SIGTERM)

    def restart(self, i: int, wait: bool = True, timeout: float = START_TIMEOUT) -> None:
        """Start member ``i`` again (stopped first if it runs), same ports and data; with
        ``wait``, return once it is healthy (which needs a quorum of members running)."""
        member = self.members[i]
        member.signal(signal.SIGTERM)
        member.spawn()
        if wait:
            member.wait_healthy(timeout)

    def stop_all(self) -> None:
        """Kill every member this cluster started (by PID) and wait for each to exit."""
        for member in self.members:
            member.signal(signal.SIGKILL)

    close = stop_all
