"""The ``exec`` language (issue 17): slaves that are programs of their own, started directly by
the node, with the same supervision as Python slaves. The worker is ``workers/raw_worker.py``,
written from docs/protocol.md alone in plain pyzmq, run as a program."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from cocaine_core import archive, hookimpl
from cocaine_core.backends.census import node_processes
from cocaine_core.client import Client
from cocaine_core.errors import CocaineError, ServiceError
from cocaine_core.exec_language import ExecLanguage
from cocaine_core.manifest import load_manifest
from cocaine_core.testing import free_port, process_gone, wait_until

WORKER = Path(__file__).with_name("workers") / "raw_worker.py"


def exec_app(folder: Path, env: dict[str, str] | None = None, engine: dict[str, Any] | None = None,
             tasks: tuple[str, ...] = ("echo", "env", "whoami", "sleep", "hang", "exit", "spawn"),
             command: list[str] | None = None) -> Path:
    """Write an exec app running the raw worker; return its manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "raw_worker.py").write_text(WORKER.read_text())
    manifest = {"type": "exec",
                "args": {"command": command or [sys.executable, "raw_worker.py"],
                         "env": env or {}},
                "engine": engine or {},
                "tasks": {name: {"type": "native-server"} for name in tasks}}
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def call(node: Any, app: str, event: str, data: bytes = b"", **policy: Any) -> bytes:
    with node.client() as client:
        return client.call(app, event, data, **policy)


# -- the manifest ------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "expected"), [
    ({}, "command: is required"),
    ({"command": "node app.js"}, "must be a list of strings, not one string"),
    ({"command": []}, "must be a non-empty list"),
    ({"command": ["no-such-program-here"]}, "no program 'no-such-program-here' on PATH"),
    ({"command": ["./missing"]}, "does not exist (build or add it first)"),
    ({"command": ["./data.txt"]}, "is not executable (chmod +x it"),
    ({"command": ["sh", 3]}, "command[1]: must be a string"),
    ({"command": ["sh"], "env": {"COCAINE_APP": "x"}}, "are the engine's own"),
    ({"command": ["sh"], "env": {"1BAD": "x"}}, "is not a variable name"),
    ({"command": ["sh"], "env": {"A": 1}}, "env.A: must be a string"),
    ({"command": ["sh"], "shell": True}, "shell: unknown key"),
    ({"command": ["~/bin/app"]}, "~ is not expanded"),
    ({"command": ["app"], "env": {"PATH": "/nowhere"}}, "no program 'app' on PATH (/nowhere)"),
])
def test_bad_exec_args_are_named(tmp_path, args, expected):
    (tmp_path / "data.txt").write_text("not a program\n")
    _, problems = ExecLanguage().check_args(args, tmp_path)
    assert any(expected in str(problem) for problem in problems), problems


def test_a_good_manifest_checks_and_keeps_its_args(tmp_path):
    manifest = load_manifest(exec_app(tmp_path / "a", env={"GREETING": "hi"}))
    assert manifest.type == "exec"
    assert manifest.args["command"] == [sys.executable, "raw_worker.py"]
    assert manifest.args["env"] == {"GREETING": "hi"}


# -- running ----------------------------------------------------------------------------------

def test_exec_slaves_answer_are_the_nodes_children_and_see_their_variables(cocaine_node,
                                                                           tmp_path):
    cocaine_node.add_app("raw", exec_app(tmp_path / "raw", env={"GREETING": "hi"}))
    assert call(cocaine_node, "raw", "echo", b"\x00\xffbinary") == b"\x00\xffbinary"
    assert call(cocaine_node, "raw", "env", b"GREETING") == b"hi"
    assert call(cocaine_node, "raw", "env", b"COCAINE_APP") == b"raw"
    assert call(cocaine_node, "raw", "env", b"COCAINE_ENDPOINT").startswith(b"ipc://")
    _uid, ppid, cwd, session = call(cocaine_node, "raw", "whoami").decode().split()
    # Started directly by the node (no template), in the app's folder, in a session of its
    # own (a Ctrl-C at the node's terminal is the node's to handle, not the slaves').
    assert int(ppid) == os.getpid()
    assert Path(cwd) == (tmp_path / "raw").resolve()
    assert int(session) != os.getsid(0)
    slaves = node_processes(os.getpid())
    assert slaves and set(slaves.values()) == {os.getpid()}
    assert cocaine_node.info("raw")["state"] == "running"


def test_a_program_that_cannot_start_breaks_the_app_saying_why(cocaine_node, tmp_path):
    engine = cocaine_node.add_app("dies", exec_app(tmp_path / "dies",
                                                   env={"RAW_WORKER_START": "exit"}))
    wait_until(lambda: engine.state.value == "broken", timeout=30, message="a broken app")
    reason = cocaine_node.info("dies")["broken"]
    assert "exited with status 1" in reason and "cannot open its database" in reason
    with pytest.raises(ServiceError) as caught:
        call(cocaine_node, "dies", "echo")
    assert caught.value.code == 503 and "broken" in str(caught.value)


def test_an_error_at_configure_breaks_the_app_with_its_message(cocaine_node, tmp_path):
    engine = cocaine_node.add_app("nolicence", exec_app(tmp_path / "nl",
                                                        env={"RAW_WORKER_START": "error"}))
    wait_until(lambda: engine.state.value == "broken", timeout=30, message="a broken app")
    assert "no licence file" in cocaine_node.info("nolicence")["broken"]


def test_a_program_that_never_shakes_hands_times_out(cocaine_node, tmp_path):
    engine = cocaine_node.add_app("silent", exec_app(
        tmp_path / "silent", env={"RAW_WORKER_START": "silent"},
        engine={"startup-timeout": 0.5}))
    wait_until(lambda: engine.loader.last_failure, timeout=30, message="a failed start")
    assert "did not shake hands within 0.5 s" in engine.loader.last_failure
    wait_until(lambda: not node_processes(os.getpid()), timeout=10,
               message="the silent trial slave to be killed")


def test_heartbeats_timeouts_and_retries_apply_to_exec_slaves(cocaine_node, tmp_path):
    engine = cocaine_node.add_app("sup", exec_app(
        tmp_path / "sup", engine={"heartbeat-timeout": 1, "pool-limit": 2}))
    # A slave that stops beating is killed for silence; its job fails with 500.
    with pytest.raises(ServiceError) as caught:
        call(cocaine_node, "sup", "hang")
    assert caught.value.code == 500
    # A job past its timeout is 504, and its slave replaced.
    with pytest.raises(ServiceError) as caught:
        call(cocaine_node, "sup", "sleep", b"30", timeout=0.5)
    assert caught.value.code == 504
    # A slave that dies mid-job: the job (nothing sent yet) is retried once on another, which
    # dies too: 500. With retry off, it is not retried.
    marks = tmp_path / "marks"
    with pytest.raises(ServiceError) as caught:
        call(cocaine_node, "sup", "exit", str(marks).encode())
    assert caught.value.code == 500
    assert len(set(marks.read_text().split())) == 2
    marks.unlink()
    with pytest.raises(ServiceError):
        call(cocaine_node, "sup", "exit", str(marks).encode(), retry=False)
    assert len(marks.read_text().split()) == 1
    assert call(cocaine_node, "sup", "echo", b"still") == b"still"
    assert engine.state.value == "running"


def test_a_killed_slaves_orphans_die_with_the_app(cocaine_node, tmp_path):
    cocaine_node.add_app("orph", exec_app(tmp_path / "orph", engine={"pool-limit": 1},
                                          tasks=("echo", "daemon")))
    orphan = int(call(cocaine_node, "orph", "daemon"))  # out of the slave's group
    [slave] = node_processes(os.getpid())
    os.kill(slave, signal.SIGKILL)
    wait_until(lambda: call(cocaine_node, "orph", "echo", b"x") == b"x", timeout=20,
               message="a replacement slave")
    assert not process_gone(orphan)
    cocaine_node.remove_app("orph")
    wait_until(lambda: process_gone(orphan), timeout=10, message="the orphan to be killed")
    assert not node_processes(os.getpid())


def test_exec_slaves_die_with_a_node_killed_9(tmp_path, node_process):
    node = node_process()
    try:
        manifest = exec_app(tmp_path / "app", engine={"pool-min": 2, "pool-limit": 2})
        node.cli("app", "deploy", str(manifest), "--name", "raw")
        assert node.answer("raw", "echo", b"hi") == b"hi"
        slaves = wait_until(lambda: len(node_processes(node.process.pid)) == 2
                            and node_processes(node.process.pid), timeout=20,
                            message="two slaves")
        node.kill()
        node.process.wait()
        wait_until(lambda: all(process_gone(pid) for pid in slaves), timeout=10,
                   message="the slaves to die with the node")
    finally:
        node.kill()


@pytest.mark.skipif(os.geteuid() != 0, reason="isolation needs a node run as root")
def test_an_isolated_exec_app_runs_as_its_own_user_and_cannot_read_storage(tmp_path,
                                                                          node_process):
    node = node_process("--app-uids", "61600-61699")
    try:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            text = WORKER.read_bytes()
            info = tarfile.TarInfo("raw_worker.py")
            info.size, info.mode = len(text), 0o644
            tar.addfile(info, io.BytesIO(text))
        code = buffer.getvalue()
        manifest = {"type": "exec", "args": {"command": [sys.executable, "raw_worker.py"]},
                    "tasks": {name: {"type": "native-server"} for name in ("whoami", "env")}}
        with node.client() as client:
            client.control("deploy", name="iso", manifest=manifest, archive=code,
                           sha256=archive.sha256(code))
        uid, ppid, _cwd, _ = node.answer("iso", "whoami").decode().split()
        assert 61600 <= int(uid) <= 61699
        assert int(ppid) == node.process.pid
        assert node.answer("iso", "env", b"COCAINE_KEY") == b"<unset>"
        pid = next(iter(node_processes(node.process.pid)))
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        assert status["NoNewPrivs"].strip() == "1"
        assert status["CapEff"].strip() == "0000000000000000"
        # The storage folder is covered in its mount namespace.
        root = f"/proc/{pid}/root{node.storage}"
        assert not os.listdir(root) if os.path.isdir(root) else True
    finally:
        node.stop()


class Refuser:
    """Refuses every spawn of one app, recording whom it saw (and whether it had run yet)."""

    def __init__(self, app: str, marks: Path) -> None:
        self.app, self.marks, self.seen = app, marks, []

    @hookimpl
    def cocaine_slave_spawned(self, app, slave):
        if app.name == self.app:
            self.seen.append((slave.id, self.marks.exists()))
            raise CocaineError("no room for this app here")


def test_a_program_runs_only_once_its_spawn_hooks_passed(cocaine_node, inline_plugin, tmp_path):
    folder = tmp_path / "held"
    manifest = exec_app(folder, command=["./start.sh"])
    start = folder / "start.sh"
    start.write_text(f"#!/bin/sh\necho $$ >> ran.txt\nexec {sys.executable} raw_worker.py\n")
    start.chmod(0o755)
    plugin = Refuser("held", folder / "ran.txt")
    inline_plugin(plugin, name="refuser")
    engine = cocaine_node.add_app("held", manifest)
    wait_until(lambda: engine.loader.last_failure, timeout=30, message="a refused start")
    assert "a plugin refused its program" in engine.loader.last_failure
    assert "no room for this app here" in engine.loader.last_failure
    assert plugin.seen and plugin.seen[0] == ("held/trial", False)
    # The refused launcher was reaped before the failure was told: it never ran the program.
    assert not (folder / "ran.txt").exists()


def test_a_python_app_runs_as_a_program_through_cocaine_python_worker(cocaine_node, tmp_path):
    folder = tmp_path / "pyexec"
    folder.mkdir()
    (folder / "app.py").write_text("import os\n\ndef echo(request):\n    return request.data\n\n"
                                   "def parent(request):\n    return str(os.getppid())\n")
    manifest = {"type": "exec",
                "args": {"command": [sys.executable, "-m", "cocaine_python.worker", "app.py"]},
                "tasks": {"echo": {"type": "native-server"}, "parent": {"type": "native-server"}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    cocaine_node.add_app("pyexec", folder / "manifest.json")
    assert call(cocaine_node, "pyexec", "echo", b"as a program") == b"as a program"
    assert int(call(cocaine_node, "pyexec", "parent")) == os.getpid()  # no template between


def test_a_python_program_that_does_not_load_breaks_the_app_with_its_reason(cocaine_node,
                                                                             tmp_path):
    folder = tmp_path / "pybad"
    folder.mkdir()
    (folder / "app.py").write_text("import no_such_module_here\n")
    manifest = {"type": "exec",
                "args": {"command": [sys.executable, "-m", "cocaine_python.worker", "app.py",
                                     "--events", "echo"]},
                "tasks": {"echo": {"type": "native-server"}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    engine = cocaine_node.add_app("pybad", folder / "manifest.json")
    wait_until(lambda: engine.state.value == "broken", timeout=60, message="a broken app")
    assert "no_such_module_here" in cocaine_node.info("pybad")["broken"]


def test_a_spawn_storm_of_exec_slaves_keeps_the_node_answering(tmp_path, node_process):
    node = node_process("--max-slaves", "40")
    manifest = exec_app(tmp_path / "storm", engine={"pool-limit": 1000, "pool-min": 1000})
    node.cli("app", "deploy", str(manifest), "--name", "storm")
    pid = node.process.pid
    slowest, most = 0.0, 0
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        began = time.monotonic()
        with node.client(wait=5) as client:
            info = client.control("info")
        slowest = max(slowest, time.monotonic() - began)
        assert info["slaves"]["slaves"] <= 40
        most = max(most, len(node_processes(pid)))
        time.sleep(0.2)
    assert most == 40, f"the app should reach the cap; it had at most {most} slaves"
    assert node.answer("storm", "echo", b"still here") == b"still here"
    assert node.stop() == 0
    wait_until(lambda: not node_processes(pid), timeout=15, message="no process left")
    print(f"\nslowest info during the storm: {slowest:.3f} s")


def test_malformed_and_oversized_slave_messages_are_dropped_and_said_once(cocaine_node,
                                                                          tmp_path, caplog):
    cocaine_node.add_app("noisy", exec_app(tmp_path / "noisy", tasks=("flood", "echo")))
    with caplog.at_level("WARNING", logger="cocaine.engine"):
        assert call(cocaine_node, "noisy", "flood", b"2000") == b"flooded"
        assert call(cocaine_node, "noisy", "echo", b"fine") == b"fine"
    notices = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    # 2,002 messages dropped: one line said it (the next comes 10 s later, with the count).
    assert len(notices) == 1, notices
    assert "not msgpack" in notices[0]
    # Which slave sent it: an operator finds it in `cocaine app info` (and its pid there).
    slaves = [s["id"] for s in cocaine_node.info("noisy")["slaves"]]
    assert any(f"from slave {slave}" in notices[0] for slave in slaves), (notices, slaves)


def test_a_slave_header_of_too_many_items_is_refused_before_it_is_built():
    from cocaine_core.engine.channel import SLAVE_MAX_ITEMS
    from cocaine_core.errors import ProtocolError
    from cocaine_core.protocol import unpack

    many = b"\xdd" + (10**6).to_bytes(4, "big") + b"\x03" + b"\x00" * (10**6 - 1)
    with pytest.raises(ProtocolError, match="max_array_len"):
        unpack(many, max_items=SLAVE_MAX_ITEMS)
    assert unpack(b"\x95\x07\x01\xcd\x01\xf6\xa4boom\xa0", max_items=SLAVE_MAX_ITEMS) == [
        7, 1, 502, "boom", ""]


@pytest.mark.skipif(os.geteuid() != 0, reason="isolation needs a node run as root")
def test_an_isolated_app_cannot_open_a_way_to_a_program_its_user_cannot_reach(tmp_path,
                                                                             node_process):
    # The program lies in a folder of root's (0700): naming it must not make that folder, or
    # the secret beside the program, reachable to the app (as opening its way used to).
    private = Path(tempfile.mkdtemp(prefix=".cocaine-private-", dir=Path.home()))
    try:
        private.chmod(0o700)
        program = private / "worker"
        program.write_text(f"#!{sys.executable}\n" + WORKER.read_text())
        program.chmod(0o755)
        (private / "secret.txt").write_text("root's\n")
        node = node_process("--app-uids", "61700-61799")
        try:
            manifest = {"type": "exec", "args": {"command": [str(program)]},
                        "tasks": {"echo": {"type": "native-server"}}}
            code = _archive({"README": b"nothing but the manifest's program\n"})
            with node.client() as client, pytest.raises(ServiceError) as refused:
                client.control("deploy", name="reach", manifest=manifest, archive=code,
                               sha256=archive.sha256(code))
            # In the app's view the home folder holds only the Python installation's way.
            assert f"cannot run '{program}': No such file or directory" in str(refused.value)
            assert "must be open to that user" in str(refused.value)
        finally:
            node.stop()
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_what_a_dead_slave_started_in_its_group_dies_with_it(cocaine_node, tmp_path):
    cocaine_node.add_app("grp", exec_app(tmp_path / "grp", engine={"pool-limit": 1}))
    child = int(call(cocaine_node, "grp", "spawn"))
    [slave] = node_processes(os.getpid())
    os.kill(slave, signal.SIGKILL)
    wait_until(lambda: process_gone(child), timeout=10,
               message="the slave's child to die with it")
    assert call(cocaine_node, "grp", "echo", b"on") == b"on"


def test_deploying_an_exec_folder_says_what_it_packs_and_warns_of_secrets(tmp_path,
                                                                          node_process):
    manifest = exec_app(tmp_path / "app", tasks=("echo",))
    (tmp_path / "app" / ".ssh").mkdir()
    (tmp_path / "app" / ".ssh" / "id_ed25519").write_text("PRIVATE\n")
    (tmp_path / "app" / ".env").write_text("TOKEN=1\n")
    node = node_process()
    try:
        result = node.cli("app", "deploy", str(manifest), "--name", "packed")
        said = result.stderr.decode()
        assert f"packing {(tmp_path / 'app').resolve()} (an exec app: its whole folder): " \
               f"4 files" in said
        assert "look like secrets" in said and ".ssh/id_ed25519" in said and ".env" in said
        assert node.answer("packed", "echo", b"hi") == b"hi"
    finally:
        node.stop()


def test_an_exec_folder_larger_than_a_node_unpacks_is_refused_before_packing(tmp_path):
    manifest = exec_app(tmp_path / "big", tasks=("echo",))
    with open(tmp_path / "big" / "data.bin", "wb") as f:
        f.truncate(600 * 2**20)  # sparse: 600 MiB to pack, nothing on disk
    result = subprocess.run([str(Path(sys.executable).with_name("cocaine")), "app", "deploy",
                             str(manifest), "--node", "tcp://127.0.0.1:9"],
                            capture_output=True, timeout=60)
    assert result.returncode == 1
    assert b"holds 600 MiB" in result.stderr and b"more than a node unpacks" in result.stderr


@pytest.mark.parametrize("kind", ["exec", "python"])
def test_sigterm_ends_cocaine_run_while_an_app_hangs_in_its_start(tmp_path, kind):
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "exec":
        args: dict[str, Any] = {"command": ["sleep", "1000"]}
    else:
        (folder / "app.py").write_text("import time\ntime.sleep(1000)\n")
        args = {"source": "app.py"}
    (folder / "manifest.json").write_text(json.dumps({
        "type": kind, "args": args, "engine": {"startup-timeout": 60},
        "tasks": {"echo": {"type": "native-server"}}}))
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        run = subprocess.Popen([str(Path(sys.executable).with_name("cocaine")), "run",
                                str(folder / "manifest.json"), "--listen",
                                f"tcp://127.0.0.1:{free_port()}"], stdout=out, stderr=out)
    try:
        wait_until(lambda: b"listening on" in log.read_bytes(), timeout=30,
                   message="the node to listen")
        hung = wait_until(lambda: [pid for pid in node_processes(run.pid)], timeout=30,
                          message="the app's start to run")
        run.terminate()
        assert run.wait(timeout=10) == 0, log.read_text()
        assert "stopping while starting" in log.read_text()
        wait_until(lambda: all(process_gone(pid) for pid in hung), timeout=10,
                   message="the hanging start to be killed")
    finally:
        run.kill()
        run.wait()


def test_cocaine_run_reload_restarts_exec_slaves_when_any_file_of_the_app_changes(tmp_path):
    manifest = exec_app(tmp_path / "rel", tasks=("whoami",),
                        engine={"pool-min": 1, "pool-limit": 1})
    (tmp_path / "rel" / "node_modules").mkdir()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    run = subprocess.Popen([str(Path(sys.executable).with_name("cocaine")), "run",
                            str(manifest), "--listen", endpoint, "--reload"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def pid() -> int | None:
        try:
            with Client(endpoint, wait=5) as client:
                return int(client.call("rel", "whoami").split()[3])  # its session: its pid
        except ServiceError:
            return None

    try:
        first = wait_until(pid, timeout=30, message="the app to answer")
        (tmp_path / "rel" / "node_modules" / "ignored.js").write_text("// a package\\n")
        (tmp_path / "rel" / "settings.json").write_text('{"colour": "blue"}\\n')
        wait_until(lambda: (now := pid()) and now != first, timeout=30,
                   message="a new slave after the change")
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=30) == 0
    finally:
        run.kill()
        run.wait()


def test_a_javascript_app_without_its_packages_says_which_module_and_what_to_do(cocaine_node,
                                                                               tmp_path):
    folder = tmp_path / "nomods"
    folder.mkdir()
    (folder / "app.js").write_text("const { Worker } = require('cocaine-worker');\n"
                                   "new Worker().run();\n")
    (folder / "manifest.json").write_text(json.dumps({
        "type": "exec", "args": {"command": ["node", "app.js"]},
        "tasks": {"echo": {"type": "native-server"}}}))
    engine = cocaine_node.add_app("nomods", folder / "manifest.json")
    wait_until(lambda: engine.state.value == "broken", timeout=60, message="a broken app")
    reason = cocaine_node.info("nomods")["broken"]
    assert "exited with status 1 before its handshake; it wrote: Error: Cannot find module " \
           "'cocaine-worker'" in reason, reason
    assert "no node_modules: run npm ci" in reason
    assert "\\n" not in reason and len(reason) < 800, reason


def test_a_spare_still_starting_when_the_app_stops_hears_its_terminate(cocaine_node, tmp_path):
    # A Python program takes ~0.2 s to connect: the spare the pool starts after the first call
    # was still starting when the app was stopped, its TERMINATE was dropped, and the stop
    # waited out termination-timeout (30 s here) for it.
    folder = tmp_path / "spare"
    folder.mkdir()
    (folder / "app.py").write_text("def echo(request):\n    return request.data\n")
    (folder / "manifest.json").write_text(json.dumps({
        "type": "exec",
        "args": {"command": [sys.executable, "-m", "cocaine_python.worker", "app.py"]},
        "engine": {"termination-timeout": 30},
        "tasks": {"echo": {"type": "native-server"}}}))
    cocaine_node.add_app("spare", folder / "manifest.json")
    assert call(cocaine_node, "spare", "echo", b"x") == b"x"
    cocaine_node.run(cocaine_node.node.remove_app, "spare", timeout=20)
    assert not node_processes(os.getpid())
