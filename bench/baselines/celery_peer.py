"""Celery with a Redis broker and result backend, as a peer (in every full run; ``--no-peers``
skips it, and a ``--quick`` run has it only with ``--peers``).

Celery and the redis client are imported from the venv if they are there; if not, the bench
installs them into a private folder (``~/.cache/cocaine-bench/peers``, never into the venv)
with the venv's pip, or with ``uv pip`` when the venv has no pip (as a venv made by uv), or
with the pip wheel of the venv's ``ensurepip``, run from the wheel. A
``redis-server`` missing from PATH is installed with ``apt-get`` (as root, or with ``sudo -n``;
an ``apt-get update`` first if the package is not known yet). Whatever cannot be had, the
Celery rows are skipped with the reason: the bench never fails for want of them.

The worker runs ``--concurrency 2 --pool prefork`` (2 worker processes, like the others);
messages are msgpack (bytes pass as they are; pickle is refused to a root worker). The load is
the same closed loop, 100 tasks in flight: ``apply_async`` then ``AsyncResult.then``, with the
bench thread draining the result backend's pub/sub and sending a new task per result.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.loadgen import LoadResult
from bench.nodes import free_port
from bench.processes import wait_for
from bench.session import Bench

PEERS = Path.home() / ".cache" / "cocaine-bench" / "peers"
PACKAGES = ("celery", "redis")

TASKS = """\
import os

from celery import Celery

app = Celery("bench", broker=os.environ["BENCH_REDIS"], backend=os.environ["BENCH_REDIS"])
app.conf.update(task_serializer="msgpack", result_serializer="msgpack",
                accept_content=["msgpack"], worker_prefetch_multiplier=16,
                worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task(name="echo")
def echo(data):
    return data
"""


def _importable() -> bool:
    try:
        for name in PACKAGES:
            importlib.import_module(name)
    except ImportError:
        return False
    return True


def unavailable(bench: Bench) -> str | None:
    """Why Celery cannot run here (None: it can); installs the packages if it may."""
    if shutil.which("redis-server") is None:
        bench.say("  installing redis-server (apt-get)")
        failed = install_redis()
        if failed:
            return failed
    if str(PEERS) not in sys.path and PEERS.is_dir():
        sys.path.append(str(PEERS))  # after the venv's own packages, which win
    if _importable():
        return None
    bench.say(f"  installing celery and redis into {PEERS} (not into the venv)")
    failed = install(PACKAGES, PEERS)
    if failed:
        return failed
    if str(PEERS) not in sys.path:
        sys.path.append(str(PEERS))
    importlib.invalidate_caches()
    return None if _importable() else "celery or redis still cannot be imported"


def install_redis() -> str | None:
    """Install Debian's ``redis-server`` with apt-get (as root, or with ``sudo -n``); None when
    it is on PATH afterwards, else why not."""
    apt = shutil.which("apt-get")
    if apt is None:
        return "redis-server is not on PATH, and there is no apt-get to install it"
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if prefix and shutil.which("sudo") is None:
        return "redis-server is not on PATH (as root: apt-get install redis-server)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, apt, "install", "-y", "-q", "redis-server"]
    try:
        for commands in ([install], [[*prefix, apt, "update", "-q"], install]):
            if all(subprocess.run(c, capture_output=True, timeout=600, env=env).returncode == 0
                   for c in commands) and shutil.which("redis-server"):
                return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"redis-server is not on PATH and could not be installed: {exc}"
    return "redis-server is not on PATH and apt-get could not install it"


def install_command(packages: Sequence[str], target: Path,
                    python: str = sys.executable) -> list[str] | str:
    """The command that installs ``packages`` into ``target`` for ``python``: its own pip if it
    has one, else ``uv pip`` (a venv made by uv has no pip), else the pip wheel its standard
    library carries for ``ensurepip``, run from the wheel (the venv stays without pip); or,
    when none is there, what to install by hand."""
    try:
        has_pip = subprocess.run([python, "-c", "import pip"], capture_output=True,
                                 timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        has_pip = False
    if has_pip:
        return [python, "-m", "pip", "install", "--quiet", "--target", str(target), *packages]
    uv = shutil.which("uv")
    if uv is not None:
        return [uv, "pip", "install", "--quiet", "--python", python, "--target", str(target),
                *packages]
    wheel = bundled_pip(python)
    if wheel is not None:
        return [python, f"{wheel}/pip", "install", "--quiet", "--target", str(target), *packages]
    names = " ".join(packages)
    return (f"cannot install {names}: {python} has no pip (a venv made by uv or with "
            f"--without-pip) and uv is not on PATH; install them into the venv "
            f"(uv pip install {names}, or python -m ensurepip then python -m pip install "
            f"{names})")


def bundled_pip(python: str) -> str | None:
    """The pip wheel in ``python``'s ``ensurepip`` (None: it has none, as Debian's python3
    without python3-venv); pip runs from a wheel as it is (``python PIP.whl/pip install``)."""
    script = ("import ensurepip, glob, os\n"
              "found = glob.glob(os.path.join(os.path.dirname(ensurepip.__file__), '_bundled', "
              "'pip-*.whl'))\n"
              "print(sorted(found)[-1] if found else '')")
    try:
        done = subprocess.run([python, "-c", script], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    wheel = done.stdout.decode(errors="replace").strip()
    return wheel if done.returncode == 0 and wheel and os.path.isfile(wheel) else None


def install(packages: Sequence[str], target: Path, python: str = sys.executable) -> str | None:
    """Install ``packages`` into ``target`` (see ``install_command``); None when done, else
    why not."""
    command = install_command(packages, target, python)
    if isinstance(command, str):
        return command
    try:
        done = subprocess.run(command, capture_output=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not install {' and '.join(packages)}: {exc}"
    if done.returncode != 0:
        return (f"could not install {' and '.join(packages)} ({Path(command[0]).name}): "
                f"{done.stderr.decode(errors='replace')[-300:].strip()}")
    return None


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Celery's pool processes)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    if int(f.read().rsplit(b")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


class CeleryBaseline:
    """A Redis server and a Celery worker (prefork, 2 processes), and the closed-loop load."""

    label = "Celery (Redis)"

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.folder = bench.subfolder("celery")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.redis: Any = None
        self.worker: Any = None
        self.tasks: Any = None

    def start(self) -> CeleryBaseline:
        """Start Redis and the worker; return once a task has made the round trip."""
        group, log = self.bench.group, self.folder / "celery.log"
        self.redis = group.start(["redis-server", "--port", str(self.port), "--bind",
                                  "127.0.0.1", "--save", "", "--appendonly", "no"], log=log)
        (self.folder / "bench_celery_tasks.py").write_text(textwrap.dedent(TASKS))
        os.environ["BENCH_REDIS"] = self.url
        path = os.pathsep.join([str(self.folder), *(p for p in sys.path if p)])
        env = {**os.environ, "PYTHONPATH": path}
        self.worker = group.start([self.bench.python, "-m", "celery", "-A", "bench_celery_tasks",
                                   "worker", "--concurrency", "2", "--pool", "prefork",
                                   "--loglevel", "warning", "--without-gossip",
                                   "--without-mingle", "--without-heartbeat"],
                                  log=log, env=env, cwd=self.folder)
        sys.path.insert(0, str(self.folder))
        try:
            self.tasks = importlib.import_module("bench_celery_tasks")
        finally:
            sys.path.remove(str(self.folder))
        wait_for(lambda: len(_children(self.worker.pid)) >= 2, 60, "Celery's pool processes")
        self.tasks.echo.delay(b"warm").get(timeout=60)
        return self

    def cpu_pids(self) -> list[int]:
        """The worker's main process (the consumer), its pool processes, and Redis."""
        return [self.worker.pid, *_children(self.worker.pid), self.redis.pid]

    def run(self, payload: bytes, inflight: int, seconds: float, warmup: float) -> LoadResult:
        """One measurement: ``inflight`` tasks out at all times."""
        echo = self.tasks.echo
        consumer = self.tasks.app.backend.result_consumer
        finished: queue.SimpleQueue[tuple[float, Any]] = queue.SimpleQueue()
        clock = time.perf_counter
        latencies: array[float] = array("d")
        outstanding: dict[str, Any] = {}
        done = wrong = answered = 0
        start = clock()
        window_start, end = start + warmup, start + warmup + seconds

        def send() -> None:
            result = echo.apply_async((payload,))
            t0 = clock()
            outstanding[result.id] = result
            result.then(lambda r, t0=t0: finished.put((t0, r)))

        for _ in range(inflight):
            send()
        deadline = end + 60
        while outstanding:
            if clock() > deadline:
                raise TimeoutError(f"Celery left {len(outstanding)} tasks unanswered")
            with contextlib.suppress(TimeoutError, OSError):
                consumer.drain_events(timeout=0.05)
            while True:
                try:
                    t0, result = finished.get_nowait()
                except queue.Empty:
                    break
                outstanding.pop(result.id, None)
                answered += 1
                now = clock()
                if window_start <= now <= end:
                    if result.successful() and result.result == payload:
                        done += 1
                        latencies.append(now - t0)
                    else:
                        wrong += 1
                if now < end:
                    send()
        return LoadResult(done=done, seconds=seconds, latencies=latencies, wrong=wrong,
                          answered=answered)

    def stop(self) -> None:
        """SIGKILL the pool processes and the worker (a warm shutdown waits for the
        prefetched tasks), then stop Redis."""
        if self.worker is not None and self.worker.poll() is None:
            for pid in _children(self.worker.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.worker.pid, signal.SIGKILL)
            self.bench.group.stop(self.worker, timeout=5)
        if self.redis is not None:
            self.bench.group.stop(self.redis, timeout=5)
