"""Test helpers for cocaine and for plugin authors: a node on a free port, apps in temp folders.

Use it from a ``conftest.py``::

    pytest_plugins = ["cocaine_core.testing"]

    def test_echo(cocaine_node, make_app):
        manifest = make_app("def echo(request):\\n    return request.data\\n",
                            tasks={"echo": {"type": "native-server"}})
        cocaine_node.add_app("hello", manifest)
        with cocaine_node.client() as client:
            assert client.call("hello", "echo", b"hi") == b"hi"

``cocaine_node`` runs a real ``Node`` (real slave processes, real sockets) on an asyncio loop
in a background thread, and stops it, with every process it started, after the test.

Keys: a node takes control requests signed by a key it authorizes, and authorizes its user's
key at its first start. So that a test run never makes or uses the keys in your home, the
plugin points ``XDG_CONFIG_HOME`` at a folder of the run's own (removed after it) and unsets
``COCAINE_KEY``: the nodes the tests start authorize that folder's key, and the CLI and
clients sign with it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cocaine_core.client import Client
from cocaine_core.engine import Engine
from cocaine_core.errors import ServiceError
from cocaine_core.manifest import Manifest, load_manifest
from cocaine_core.node import Node

T = TypeVar("T")


_RUN_CONFIG: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """Give the test run a key folder of its own (see the module's docstring)."""
    import os
    import tempfile

    folder = tempfile.mkdtemp(prefix="cocaine-test-config-")
    _RUN_CONFIG.append(folder)
    os.environ["XDG_CONFIG_HOME"] = folder
    os.environ.pop("COCAINE_KEY", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the run's key folder."""
    import shutil

    for folder in _RUN_CONFIG:
        shutil.rmtree(folder, ignore_errors=True)
    _RUN_CONFIG.clear()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def leftover_slaves(node_pid: int | None = None) -> list[int]:
    """Pids of template and slave processes started by the node in process ``node_pid``
    (default: this process) that are still alive (zombies excluded)."""
    import os

    from cocaine_core.backends.process import node_processes

    return sorted(node_processes(node_pid or os.getpid()))


def call_or_error(endpoint: str, app: str, event: str, data: Any = None,
                  **policy: Any) -> bytes | ServiceError:
    """Call ``app``'s ``event`` with a client of its own (safe from any thread); return the
    answer, or the ``ServiceError`` instead of raising it."""
    with Client(endpoint, wait=60) as client:
        try:
            return client.call(app, event, data, **policy)
        except ServiceError as exc:
            return exc


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` no longer runs (gone, or a zombie awaiting its parent)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message}")
        time.sleep(interval)


class RunningNode:
    """A ``Node`` on its own asyncio loop in a background thread."""

    def __init__(self, listen: str | None = None, run_dir: Path | None = None,
                 name: str | None = None) -> None:
        self.endpoint = listen or f"tcp://127.0.0.1:{free_port()}"
        self.loop = asyncio.new_event_loop()
        self.node = Node(listen=self.endpoint, run_dir=run_dir, name=name)
        self._thread = threading.Thread(target=self.loop.run_forever, name="cocaine-node",
                                        daemon=True)

    def start(self) -> RunningNode:
        """Start the loop thread and bind the node."""
        self._thread.start()
        self.run(self.node.start)
        return self

    def run(self, function: Callable[..., Coroutine[Any, Any, T]], *args: Any,
            timeout: float = 60.0) -> T:
        """Run ``await function(*args)`` on the node's loop and return its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(function(*args), self.loop)
        return future.result(timeout)

    def call_soon(self, function: Callable[[], T], timeout: float = 10.0) -> T:
        """Run a plain function on the node's loop (to read engine state safely)."""
        async def wrapper() -> T:
            return function()
        return self.run(wrapper, timeout=timeout)

    def add_app(self, name: str, manifest: Manifest | str | Path) -> Engine:
        """Start an app from a manifest (a path or a checked ``Manifest``)."""
        if not isinstance(manifest, Manifest):
            manifest = load_manifest(manifest)
        return self.run(self.node.add_app, name, manifest)

    def remove_app(self, name: str) -> None:
        """Stop an app, draining it."""
        self.run(self.node.remove_app, name)

    def engine(self, name: str) -> Engine:
        """The engine of a running app."""
        return self.node.apps[name]

    def info(self, name: str | None = None) -> dict[str, Any]:
        """The node's info, or one app's."""
        info = self.call_soon(self.node.info)
        return info["apps"][name] if name else info

    def client(self, wait: float | None = 30.0) -> Client:
        """A blocking client of this node (close it, or use it in ``with``)."""
        return Client(self.endpoint, wait=wait)

    def stop(self) -> None:
        """Drain every app, close the node, stop the loop thread (once: a second call does
        nothing)."""
        if self.loop.is_closed():
            return
        try:
            if self._thread.is_alive():
                self.run(self.node.stop, timeout=120)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()


class NodeProcess:
    """A real ``cocaine node`` process on a free port, with its own storage and run folder."""

    def __init__(self, folder: Path, *extra: str, listen: str | None = None,
                 env: dict[str, str] | None = None, wrapper: tuple[str, ...] = (),
                 storage_uri: str | None = None) -> None:
        """``storage_uri``: the node's ``--storage`` (default: ``files://`` in ``folder``)."""
        self.folder = folder
        #: A command the node runs under (e.g. ``setpriv ...``), if any.
        self.wrapper = wrapper
        #: The node's environment (None: this process's).
        self.env = env
        self.endpoint = listen or f"tcp://127.0.0.1:{free_port()}"
        self.storage = folder / "storage"
        self._storage_uri = storage_uri
        self.run_dir = Path("/tmp") / f"cocaine-node-{free_port()}"
        self.extra = extra
        self.log = folder / "node.log"
        self.process: Any = None

    def start(self, timeout: float = 30.0) -> NodeProcess:
        """Start the node and wait until it answers."""
        return self.spawn().wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> NodeProcess:
        """Wait until the node (spawned) answers, with the apps in its storage started."""
        def answers() -> bool:
            assert self.process.poll() is None, f"the node exited:\n{self.log.read_text()}"
            with Client(self.endpoint, wait=0.5) as client:
                try:
                    info = client.control("info")  # apps from storage started:
                    return not info["busy"] and not info["loading"]
                except ServiceError as exc:
                    return exc.code == 401  # it answers, but not to this run's key
                except Exception:
                    return False

        wait_until(answers, timeout=timeout, message="the node to answer")
        return self

    def spawn(self) -> NodeProcess:
        """Start the node's process, without waiting for it to answer."""
        import subprocess
        import sys

        cocaine = str(Path(sys.executable).with_name("cocaine"))
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.log, "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            [*self.wrapper, cocaine, "node", "--listen", self.endpoint, "--storage",
             self.storage_uri, "--run-dir", str(self.run_dir), "--log-format", "plain",
             *self.extra], stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        return self

    @property
    def storage_uri(self) -> str:
        """The node's ``--storage``: the URI given, else ``files://`` at ``storage``."""
        return self._storage_uri or f"files://{self.storage}"

    def client(self, wait: float | None = 60.0) -> Client:
        """A blocking client of this node."""
        return Client(self.endpoint, wait=wait)

    def answer(self, app: str, event: str, data: bytes = b"") -> bytes | None:
        """What ``app`` answers to ``event`` here, or None if it fails (not served here)."""
        try:
            with Client(self.endpoint, wait=5) as client:
                return client.call(app, event, data)
        except ServiceError:
            return None

    def apps(self) -> list[str]:
        """The names of the apps this node runs."""
        with Client(self.endpoint, wait=20) as client:
            return sorted(client.control("list"))

    def cli(self, *args: str, check: bool = True, cwd: Path | None = None,
            input: bytes | None = None, env: dict[str, str] | None = None) -> Any:
        """Run ``cocaine ARGS --node ENDPOINT`` (in ``env``, if given); returns the
        CompletedProcess."""
        import subprocess
        import sys

        cocaine = str(Path(sys.executable).with_name("cocaine"))
        result = subprocess.run([cocaine, *args, "--node", self.endpoint], cwd=cwd,
                                capture_output=True, input=input, timeout=120, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"cocaine {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout.decode()}{result.stderr.decode()}")
        return result

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM the node and wait for it; return its exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.terminate()
        try:
            return self.process.wait(timeout)
        except Exception:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        """SIGKILL the node."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def write_app(folder: Path, code: str, tasks: dict[str, Any], engine: dict[str, Any] | None = None,
              filename: str = "app.py", extra: dict[str, Any] | None = None) -> Path:
    """Write ``code`` and a manifest serving ``tasks`` into ``folder``; return the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / filename).write_text(textwrap.dedent(code))
    manifest = {"type": "python", "args": {"source": filename}, "engine": engine or {},
                "tasks": tasks, **(extra or {})}
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2))
    return path


@pytest.fixture
def cocaine_node(tmp_path: Path) -> Iterator[RunningNode]:
    """A running node on a free port; stopped (every app drained) after the test."""
    run_dir = Path("/tmp") / f"cocaine-test-{free_port()}"  # short: ipc paths have a limit
    node = RunningNode(run_dir=run_dir).start()
    try:
        yield node
    finally:
        node.stop()
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def node_process(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """A factory of real ``cocaine node`` processes, each killed after the test."""
    import shutil

    started: list[NodeProcess] = []

    def factory(*extra: str, folder: Path | None = None, listen: str | None = None,
                start: bool = True, env: dict[str, str] | None = None,
                storage_uri: str | None = None) -> NodeProcess:
        node = NodeProcess(folder or tmp_path / f"node{len(started)}", *extra, listen=listen,
                           env=env, storage_uri=storage_uri)
        started.append(node)
        return node.start() if start else node

    yield factory
    for node in started:
        node.kill()
        shutil.rmtree(node.run_dir, ignore_errors=True)


@pytest.fixture
def inline_plugin() -> Iterator[Callable[..., Any]]:
    """Register a plugin for one test: ``inline_plugin(obj_or_module, name="mine")``.

    The object's hook implementations (``@hookimpl`` functions or methods) take effect at once,
    in this process (the node of ``cocaine_node`` sees them); it is unregistered after the test.
    """
    from cocaine_core.plugins import get_host

    names: list[str] = []

    def register(plugin: Any, name: str = "inline", distribution: str = "(inline)") -> Any:
        record = get_host().register_inline(plugin, name, distribution)
        if record.errors:
            raise AssertionError(f"plugin '{name}' failed: {'; '.join(record.errors)}")
        names.append(name)
        return record

    yield register
    for name in names:
        get_host().unregister_inline(name)


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Path]:
    """A factory: ``make_app(code, tasks=..., engine=...)`` writes an app, returns its manifest."""
    counter = iter(range(1_000_000))

    def factory(code: str, tasks: dict[str, Any] | None = None,
                engine: dict[str, Any] | None = None, name: str | None = None,
                **kwargs: Any) -> Path:
        folder = tmp_path / (name or f"app{next(counter)}")
        return write_app(folder, code, tasks or {"echo": {"type": "native-server"}}, engine,
                         **kwargs)

    return factory
