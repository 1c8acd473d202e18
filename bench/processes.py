"""Every process the bench starts, stopped by its PID whatever happens; and their memory.

Scenarios start nodes, brokers and workers through one ``ProcessGroup``; ``run.py`` stops the
group in a ``finally``, so an exception, a Ctrl-C or a failed scenario leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any


class ProcessGroup:
    """The processes one bench run started, each stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []
        #: Every pid ever started, for the JSON (the test checks none outlives the run).
        self.pids: list[int] = []

    def start(self, args: Sequence[str], *, log: Path | None = None,
              env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``args`` with stdout and stderr appended to ``log`` (or discarded)."""
        out: IO[bytes] | int = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        try:
            process = subprocess.Popen(list(args), stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        finally:
            if not isinstance(out, int):
                out.close()
        self.running.append(process)
        self.pids.append(process.pid)
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
        """SIGTERM ``process`` (by its PID), wait up to ``timeout``, then SIGKILL it."""
        try:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGKILL)
                    process.wait(5)
            return process.returncode
        finally:
            if process in self.running:
                self.running.remove(process)

    def stop_all(self) -> None:
        """Stop every process still running, the most recent first."""
        for process in reversed(list(self.running)):
            with contextlib.suppress(Exception):
                self.stop(process)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not count)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (VmRSS), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def uss_bytes(pid: int) -> int | None:
    """Unique set size of ``pid``: Private_Clean + Private_Dirty from smaps_rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None
    try:
        return sum(int(fields[k].split()[0]) * 1024 for k in ("Private_Clean", "Private_Dirty"))
    except (KeyError, ValueError):
        return None


class RssSampler:
    """Samples a process's RSS from a thread while a measurement runs; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_bytes(self.pid)
            if value is not None:
                self.samples.append(value)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak(self) -> int | None:
        """The largest RSS seen, in bytes."""
        return max(self.samples) if self.samples else None


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (those still running)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds used so far by ``pid``'s threads, in three parts: ``main user`` and ``main
    system`` (its main thread: Python and the system calls it makes) and ``ZeroMQ I/O`` (the
    threads libzmq starts, which move every message between the sockets and the kernel); any
    other thread counts under ``other``. Empty if the process is gone."""
    ticks = os.sysconf("SC_CLK_TCK")
    parts: dict[str, float] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return parts
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat", "rb") as f:
                head, _, rest = f.read().rpartition(b")")
        except OSError:
            continue
        fields = rest.split()
        user, system = int(fields[11]) / ticks, int(fields[12]) / ticks
        name = head.partition(b"(")[2]
        if int(task) == pid:
            parts["main user"] = parts.get("main user", 0.0) + user
            parts["main system"] = parts.get("main system", 0.0) + system
        else:
            key = "ZeroMQ I/O" if name.startswith(b"ZMQbg") else "other"
            parts[key] = parts.get(key, 0.0) + user + system
    return parts
