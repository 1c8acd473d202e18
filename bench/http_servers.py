"""The three servers of the bench's ``http`` scenario, each with 2 worker processes, as
processes of their own on 127.0.0.1: uvicorn (``--workers 2``, the httptools parser, through
``bench/http_uvicorn.py``, which gives its workers TCP_NODELAY as a single uvicorn has),
gunicorn (``-w 2``, sync workers) and cocaine (``cocaine run`` of an app with an
``http-server`` task, pool-limit 2, pool-min 2, concurrency 1).

Each is started through the bench's process group and stopped by its PID (SIGTERM, then
SIGKILL); a worker that outlives its parent is killed by its own PID. ``pids()`` is the server's
process tree (its main process first), whose CPU time the scenario charges to it.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path

from bench import systems
from bench.http_apps import COCAINE_APP
from bench.nodes import CocaineRun, free_port, write_app
from bench.processes import alive, wait_for
from bench.session import Bench

ROOT = Path(__file__).resolve().parents[1]
#: cocaine's engine for the app: 2 warm slaves, one request each (as the issue sets).
ENGINE = {**systems.ECHO_ENGINE, "concurrency": 1}
START_TIMEOUT = 60.0
#: The Python packages each baseline needs, and how to get them.
NEEDS = {"uvicorn": ("uvicorn", "httptools"), "gunicorn": ("gunicorn",)}


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if it is gone: with the pid, it
    names one process (a pid may be reused once its process has exited)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def missing_packages(kind: str) -> str | None:
    """Why baseline ``kind`` cannot run here (a package not installed), or None."""
    absent = [name for name in NEEDS[kind] if importlib.util.find_spec(name) is None]
    if not absent:
        return None
    return (f"skipped: {', '.join(absent)} not installed (.venv/bin/pip install "
            f"{' '.join(NEEDS[kind])}; requirements-dev.txt has them)")


def post(port: int, body: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """POST ``body`` to ``http://127.0.0.1:PORT/``; (status, answer body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/", body=body,
                           headers={"Content-Type": "application/octet-stream"})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def check_echo(port: int, size: int) -> str | None:
    """None when a POST of ``size`` bytes comes back 200 with the same bytes, else what
    came back."""
    body = os.urandom(size // 2).hex().encode()[:size].ljust(size, b"x")
    try:
        status, answer = post(port, body)
    except OSError as exc:
        return f"POST of {size} bytes failed: {exc}"
    if status != 200 or answer != body:
        return f"POST of {size} bytes: status {status}, {len(answer)} bytes back"
    return None


class HttpServer:
    """One server of the scenario: started, its process tree, stopped."""

    def __init__(self, bench: Bench, kind: str) -> None:
        self.bench = bench
        self.kind = kind
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.node: CocaineRun | None = None
        self.log = bench.subfolder(f"http-{kind}") / "server.log"
        #: Every process seen in the tree, by pid: its start time.
        self.seen: dict[int, int | None] = {}
        #: What ran, for the JSON (versions, parser, event loop).
        self.description = ""

    @property
    def pid(self) -> int:
        """The server's main process (uvicorn's supervisor, gunicorn's arbiter, the node)."""
        if self.node is not None:
            return self.node.pid
        assert self.process is not None, "the server is not started"
        return self.process.pid

    def pids(self) -> list[int]:
        """The main process, then every process below it."""
        tree = [self.pid, *descendants(self.pid)]
        for pid in tree:
            self.seen.setdefault(pid, start_time(pid))
        return tree

    def command(self) -> list[str]:
        """The baseline's command line."""
        python, listen = self.bench.python, f"127.0.0.1:{self.port}"
        if self.kind == "uvicorn":
            return [python, "-m", "bench.http_uvicorn", "bench.http_apps:asgi_echo",
                    "--app-dir", str(ROOT),
                    "--host", "127.0.0.1", "--port", str(self.port), "--workers", "2",
                    "--http", "httptools", "--lifespan", "off", "--no-access-log",
                    "--log-level", "warning"]
        return [python, "-m", "gunicorn", "--workers", "2", "--worker-class", "sync",
                "--bind", listen, "--chdir", str(ROOT), "--log-level", "warning",
                "bench.http_apps:wsgi_echo"]

    def start(self) -> HttpServer:
        """Start the server; return once it echoes and has its 2 workers."""
        self.bench.say(f"  starting {self.kind} on 127.0.0.1:{self.port}")
        if self.kind == "cocaine":
            manifest = write_app(self.log.parent, COCAINE_APP,
                                 {"echo": {"type": "http-server",
                                           "listen": f"127.0.0.1:{self.port}"}}, ENGINE)
            self.node = CocaineRun(self.bench.group, manifest, log=self.log)
            self.node.start(event=None, timeout=START_TIMEOUT)
        else:
            self.process = self.bench.group.start(self.command(), log=self.log, cwd=ROOT)
        wait_for(self._ready, START_TIMEOUT, f"{self.kind} to answer on 127.0.0.1:{self.port}",
                 interval=0.1)
        self.description = self._describe()
        return self

    def _ready(self) -> bool:
        process = self.node.process if self.node is not None else self.process
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{self.kind} exited with {process.returncode}; see {self.log}:"
                               f"\n{self.log.read_text(errors='replace')[-2000:]}")
        if check_echo(self.port, 100) is not None:
            return False
        return self.kind == "cocaine" or len(descendants(self.pid)) >= 2

    def _describe(self) -> str:
        from importlib.metadata import version

        if self.kind == "uvicorn":
            loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
            return (f"uvicorn {version('uvicorn')}, --workers 2, --http httptools "
                    f"{version('httptools')}, loop auto ({loop}), listener with IPPROTO_TCP "
                    f"(TCP_NODELAY: bench/http_uvicorn.py)")
        if self.kind == "gunicorn":
            return f"gunicorn {version('gunicorn')}, -w 2, sync workers"
        return (f"cocaine {version('cocaine-core')} run, http-server (cocaine-http "
                f"{version('cocaine-http')}), pool-limit 2, pool-min 2, concurrency 1")

    def stop(self) -> None:
        """Stop the main process by its PID; then any process of its tree still running."""
        with contextlib.suppress(OSError):
            self.pids()
        if self.node is not None:
            self.node.stop()
        elif self.process is not None:
            self.bench.group.stop(self.process)
        def still(pid: int) -> bool:
            return alive(pid) and start_time(pid) == self.seen[pid]

        leftovers = [p for p in self.seen if p != self.pid and still(p)]
        deadline = time.monotonic() + 5.0
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.05)
            leftovers = [p for p in leftovers if still(p)]
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
