"""What the attacker probe of isolation found, each tried again on a real root node: an app's
module shadowing the standard library, a template (which runs the app's import) forging
messages to the node, a handler taking its template's pipe, the node's environment, and a
/tmp shared between apps."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest

from cocaine_core import archive
from cocaine_core.errors import ServiceError
from cocaine_core.testing import process_gone, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="isolation needs a node run as root")

LOW, HIGH = 61600, 61699

HANDLERS = """
import ctypes, json, os

def whoami(request):
    return json.dumps({"uid": os.geteuid(), "env": dict(os.environ)}).encode()

def steal(request):
    # pidfd_getfd of any of the template's first descriptors (its pipe to the node is one).
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(434, os.getppid(), 0)
    if pidfd < 0:
        return f"pidfd_open: errno {ctypes.get_errno()}".encode()
    errors = set()
    for fd in range(3, 32):
        if libc.syscall(438, pidfd, fd, 0) >= 0:
            return f"stolen fd {fd}".encode()
        errors.add(ctypes.get_errno())
    return f"pidfd_getfd: errno {sorted(errors)}".encode()


def fill(request):
    # As many files as it can make in its /tmp: the count is bounded, not the machine's.
    made = 0
    try:
        while made < 100_000:
            open(f"/tmp/f{made}", "w").close()
            made += 1
    except OSError as exc:
        return f"{made} {type(exc).__name__}".encode()
    return str(made).encode()

def escape(request):
    # A process that leaves its template's tree, and the marker in its environment.
    import subprocess
    return str(subprocess.Popen(["sleep", "300"], env={}, start_new_session=True).pid).encode()

def scratch(request):
    path, text = json.loads(request.data)
    if text is not None:
        with open(path, "w") as f:
            f.write(text)
    try:
        with open(path) as f:
            return f.read().encode()
    except OSError as exc:
        return type(exc).__name__.encode()
"""
TASKS = {name: {"type": "native-server"} for name in ("whoami", "steal", "scratch", "fill",
                                                        "escape")}


def deploy(node, name: str, files: dict[str, str], engine: dict | None = None) -> None:
    """Deploy a package app whose folder holds ``files``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member, text in files.items():
            info = tarfile.TarInfo(f"app/{member}")
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    code = buffer.getvalue()
    manifest = {"type": "python", "args": {"source": "app"}, "tasks": TASKS,
                "engine": engine or {}}
    with node.client() as client:
        client.control("deploy", name=name, manifest=manifest, archive=code,
                       sha256=archive.sha256(code))


def call(node, app: str, event: str, data: object = None) -> bytes:
    with node.client() as client:
        return client.call(app, event, json.dumps(data).encode())


@pytest.fixture
def node(node_process):
    return node_process("--app-uids", f"{LOW}-{HIGH}",
                        env={**os.environ, "SECRET_DB_PASSWORD": "hunter2",
                             "COCAINE_KEY": str(Path(os.environ["XDG_CONFIG_HOME"]) / "cocaine"
                                                / "id_ed25519")})


def test_an_app_module_named_like_the_standard_library_never_runs_as_root(
        node, tmp_path: Path) -> None:
    marks = tmp_path / "marks"  # root's alone: only a process running as root can write here
    marks.mkdir()
    shadow = (f"import os\nopen({str(marks / 'ran')!r}, 'a').write(str(os.geteuid()))\n"
              "raise ImportError('the app shadowed the standard library')\n")
    deploy(node, "shadow", {"__init__.py": HANDLERS, "socket.py": shadow, "json.py": shadow,
                            "signal.py": shadow})
    answer = json.loads(call(node, "shadow", "whoami"))
    assert LOW <= answer["uid"] <= HIGH
    assert not (marks / "ran").exists(), (marks / "ran").read_text()


def test_a_template_that_forges_messages_makes_the_node_signal_nothing_of_others(
        node, tmp_path: Path) -> None:
    victim = subprocess.Popen(["sleep", "300"])  # a process of root's, not the app's
    try:
        forge = (
            "import msgpack, os, struct, sys\n"
            "fd = int(sys.argv[1])\n"
            f"for message in (['forked', 'not-asked', {victim.pid}], ['exited', {victim.pid}, 0],"
            f" ['forked', 'x', 'notapid'], ['forked', 'x', {os.getpid()}]):\n"
            "    data = msgpack.packb(message)\n"
            "    os.write(fd, struct.pack('!I', len(data)) + data)\n")
        with pytest.raises(ServiceError, match="broke the protocol") as refused:
            deploy(node, "forger", {"__init__.py": forge + HANDLERS})
        assert refused.value.code == 400, refused.value
        log = node.log.read_text()
        assert "broke the protocol" in log, log[-3000:]
        assert victim.poll() is None, "the node killed a process that is not the app's"
        assert node.process.poll() is None
        with node.client() as client:  # the node serves on, and nothing of it is left
            assert "forger" not in client.control("list")
    finally:
        victim.kill()
        victim.wait()


def test_a_handler_cannot_take_its_template_s_pipe_to_the_node(node) -> None:
    deploy(node, "thief", {"__init__.py": HANDLERS})
    answer = call(node, "thief", "steal").decode()
    assert answer.startswith(("pidfd_getfd: errno [1]", "pidfd_open")), answer


def test_an_app_gets_no_secret_of_the_node_s_environment(node) -> None:
    deploy(node, "env", {"__init__.py": HANDLERS})
    env = json.loads(call(node, "env", "whoami"))["env"]
    for name in ("SECRET_DB_PASSWORD", "COCAINE_KEY", "XDG_CONFIG_HOME"):
        assert name not in env, name
    assert env["PATH"] and env["HOME"] == "/tmp"


def test_each_app_has_a_tmp_of_its_own(node) -> None:
    deploy(node, "writer", {"__init__.py": HANDLERS})
    deploy(node, "reader", {"__init__.py": HANDLERS})
    assert call(node, "writer", "scratch", ["/tmp/left-behind", "private"]) == b"private"
    assert call(node, "reader", "scratch", ["/tmp/left-behind", None]) == b"FileNotFoundError"
    for folder in ("/dev/shm", "/run/lock", "/var/tmp"):
        assert call(node, "reader", "scratch", [f"{folder}/left", "x"]) == b"x"
        assert call(node, "writer", "scratch", [f"{folder}/left", None]) == \
            b"FileNotFoundError"
    assert not Path("/tmp/left-behind").exists()
    home = call(node, "writer", "scratch", ["/tmp/.cache-probe", "home"])  # HOME is /tmp
    assert home == b"home"


def test_an_app_s_scratch_folder_holds_a_bounded_number_of_files(node) -> None:
    deploy(node, "filler", {"__init__.py": HANDLERS})
    made, error = call(node, "filler", "fill").decode().split()
    assert int(made) <= 16_384 and error == "OSError", (made, error)


def test_a_process_that_left_its_app_s_tree_is_stopped_with_the_app(node) -> None:
    # Its import keeps the template from taking its tree with it when it exits.
    keep = ("import sys\n"
            "sys.modules['cocaine_core.backends.template'].kill_descendants = lambda *a: 0\n")
    deploy(node, "leaver", {"__init__.py": keep + HANDLERS})
    deploy(node, "stays", {"__init__.py": HANDLERS})
    pid = int(call(node, "leaver", "escape"))
    stays = int(call(node, "stays", "escape"))
    try:
        assert not process_gone(pid)
        with node.client() as client:
            client.control("remove", name="leaver")
        wait_until(lambda: process_gone(pid), timeout=10, message="the escaped process to end")
        assert not process_gone(stays), "another app's process was killed"
    finally:
        for victim in (pid, stays):
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)


FORK_FORGER = """
import sys
_template = sys.modules["cocaine_core.backends.template"]

def _fork(pipe, config, runtime, app, slave_id, template_pid, children, wake):
    # A real slave id the node asked for, with the pid of a process that is not the app's.
    _template._tell(pipe, ["forked", slave_id, VICTIM])

_template._fork = _fork
"""


def test_a_slave_pid_that_is_not_the_template_s_child_never_reaches_the_hooks(node) -> None:
    victim = subprocess.Popen(["sleep", "300"])
    groups = Path(f"/proc/{victim.pid}/cgroup").read_text()
    try:
        deploy(node, "forker", {"__init__.py": FORK_FORGER.replace("VICTIM", str(victim.pid))
                                + HANDLERS},
               engine={"resource-limits": {"pids": {"pids.max": 64}}})
        with node.client(wait=5) as client, contextlib.suppress(ServiceError):
            client.call("forker", "whoami", b"")  # the first fork: forged
        wait_until(lambda: "is not its child" in node.log.read_text(), timeout=20,
                   message="the forged fork to be refused")
        assert Path(f"/proc/{victim.pid}/cgroup").read_text() == groups, "moved"
        with node.client() as client:
            client.control("remove", name="forker")
        assert victim.poll() is None and node.process.poll() is None
    finally:
        victim.kill()
        victim.wait()
