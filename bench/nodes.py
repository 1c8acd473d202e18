"""cocaine as a user runs it: ``cocaine run MANIFEST`` or ``cocaine node``, as own processes.

The bench talks to them only through their endpoint (the native protocol for load, the
control service for ``info`` and deploys), and stops them by PID with SIGTERM, which drains
them; their slaves never outlive them (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import json
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

from bench.loadgen import probe
from bench.processes import ProcessGroup, wait_for

ECHO_APP = """\
def echo(request):
    return request.data
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cocaine_command() -> str:
    """The ``cocaine`` script beside this interpreter (the venv's)."""
    return str(Path(sys.executable).with_name("cocaine"))


def write_app(folder: Path, code: str, tasks: dict[str, Any],
              engine: dict[str, Any] | None = None) -> Path:
    """Write ``app.py`` and a ``manifest.json`` serving ``tasks`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(textwrap.dedent(code))
    manifest = {"type": "python", "args": {"source": "app.py"}, "engine": engine or {},
                "tasks": tasks}
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    return path


class NodeBase:
    """What both ways of running cocaine share: the endpoint, control calls, the pid."""

    endpoint: str
    process: Any = None

    def control(self, method: str, timeout: float = 60.0, **args: Any) -> Any:
        """Call the node's control service (``info``, ``deploy``…)."""
        from cocaine_core.client import Client

        with Client(self.endpoint, wait=timeout) as client:
            return client.control(method, **args)

    def info(self, app: str | None = None) -> dict[str, Any]:
        """The node's ``info``, or one app's part of it."""
        info = self.control("info")
        return info["apps"][app] if app else info

    @property
    def pid(self) -> int:
        """The node's pid."""
        return int(self.process.pid)


class CocaineRun(NodeBase):
    """``cocaine run MANIFEST --listen ENDPOINT``: one app, as in development."""

    def __init__(self, group: ProcessGroup, manifest: Path, name: str = "bench",
                 log: Path | None = None) -> None:
        self.group = group
        self.manifest = manifest
        self.name = name
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.log = log or manifest.parent / "node.log"

    def start(self, event: str | None = "echo", timeout: float = 60.0) -> CocaineRun:
        """Start the node; return once ``event`` answers (or the app runs, if None) and the
        pool holds ``pool-min`` ready slaves."""
        self.process = self.group.start(
            [cocaine_command(), "run", str(self.manifest), "--name", self.name, "--listen",
             self.endpoint, "--log-level", "warning", "--log-format", "plain"], log=self.log)
        if event is not None:
            probe(self.endpoint, self.name, event, timeout=timeout)
        wait_for(self._settled, timeout, f"app {self.name} to have its warm slaves")
        return self

    def _settled(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"cocaine run exited with {self.process.returncode}; see "
                               f"{self.log}:\n{self.log.read_text()[-2000:]}")
        try:
            app = self.info(self.name)
        except Exception:
            return False
        pool = app["pool"]
        return app["state"] == "running" and pool["idle"] + pool["busy"] >= pool["min"]

    def stop(self) -> None:
        """SIGTERM (drains the app), then SIGKILL if it lingers."""
        if self.process is not None:
            self.group.stop(self.process)


class CocaineNode(NodeBase):
    """``cocaine node``: a production node with its own storage, apps deployed to it."""

    def __init__(self, group: ProcessGroup, folder: Path) -> None:
        self.group = group
        self.folder = folder
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.log = folder / "node.log"

    def start(self, timeout: float = 60.0) -> CocaineNode:
        """Start the node; return once it answers ``list``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = self.group.start(
            [cocaine_command(), "node", "--listen", self.endpoint, "--storage",
             f"files://{self.folder / 'storage'}", "--run-dir", str(self.folder / "run"),
             "--log-level", "warning", "--log-format", "plain"], log=self.log)

        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"cocaine node exited with {self.process.returncode}; see "
                                   f"{self.log}")
            try:
                self.control("list", timeout=0.5)
                return True
            except Exception:
                return False

        wait_for(answers, timeout, "cocaine node to answer")
        return self

    def deploy(self, manifest: Path, name: str) -> dict[str, Any]:
        """Pack and deploy an app (what ``cocaine app deploy`` does, without a new process)."""
        from cocaine_core import archive
        from cocaine_core.cli.app_cmd import pack_app

        data, code = pack_app(manifest)
        return self.control("deploy", timeout=120.0, name=name, manifest=data, archive=code,
                            sha256=archive.sha256(code))

    def stop(self) -> None:
        """SIGTERM (drains every app), then SIGKILL if it lingers."""
        if self.process is not None:
            self.group.stop(self.process, timeout=60.0)


def installed_drivers() -> set[str]:
    """The driver types ``cocaine plugins --json`` reports as registered."""
    import subprocess

    done = subprocess.run([cocaine_command(), "plugins", "--json"], capture_output=True,
                          timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"cocaine plugins --json failed: {done.stderr.decode()[-500:]}")
    names: set[str] = set()
    for plugin in json.loads(done.stdout):
        if plugin.get("loaded", True):
            names.update((plugin.get("types") or {}).get("drivers", []))
    return names
