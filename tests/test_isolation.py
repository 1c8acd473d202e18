"""Apps as users of their own (issue 14, item 4): a real ``cocaine node`` run as root gives
each app's template and slaves an unprivileged uid, ``no_new_privs`` and a view of the disk in
which storage, keys, the run folder and other apps are out of reach."""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from cocaine_core import archive
from cocaine_core.backends.process import node_processes, slave_oom_score_adj
from cocaine_core.errors import NodeError, ServiceError
from cocaine_core.testing import NodeProcess, process_gone, wait_until
from cocaine_core.trust.app_users import DEFAULT_APP_UIDS, AppUsers, parse_app_uids

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="isolation needs a node run as root")

PROBE = """\
import json, os, socket, subprocess

def whoami(request):
    return json.dumps({"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                       "pid": os.getpid(), "ppid": os.getppid(),
                       "home": os.environ.get("HOME"), "cwd": os.getcwd()}).encode()

def probe(request):
    # Each path: "listed" / "read" / "connected", or the error's name.
    out = {}
    for kind, path in json.loads(request.data):
        try:
            if kind == "connect":
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(path)
                out[path] = "connected"
            elif kind == "list":
                os.listdir(path)
                out[path] = "listed"
            else:
                with open(path, "rb") as f:
                    f.read(1)
                out[path] = "read"
        except OSError as exc:
            out[path] = type(exc).__name__
    return json.dumps(out).encode()

def spawn(request):
    return str(subprocess.Popen(["sleep", "1000"]).pid).encode()
"""
TASKS = {name: {"type": "native-server"} for name in ("whoami", "probe", "spawn")}
LOW, HIGH = 61500, 61599


def deploy(node, name: str, pool_limit: int = 2, limits: dict | None = None,
           prelude: str = "") -> None:
    """Deploy the probe app, its archive holding a file of mode 0600 beside its code."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member, text, mode in (("app.py", prelude + PROBE, 0o644),
                                   ("secret.txt", "mine\n", 0o600)):
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(text.encode()), mode
            tar.addfile(info, io.BytesIO(text.encode()))
    code = buffer.getvalue()
    manifest = {"type": "python", "args": {"source": "app.py"}, "tasks": TASKS,
                "engine": {"pool-limit": pool_limit, **({"resource-limits": limits}
                                                         if limits else {})}}
    with node.client() as client:
        client.control("deploy", name=name, manifest=manifest, archive=code,
                       sha256=archive.sha256(code))


def ask(node, app: str, event: str, data: object = None) -> dict:
    with node.client() as client:
        return json.loads(client.call(app, event, json.dumps(data).encode()))


def status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def mount_points(pid: int) -> dict[str, str]:
    """Process ``pid``'s view of the disk: each mount point with its file system type."""
    found = {}
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            found[fields[4]] = fields[fields.index("-") + 1]
    return found


def code_root(node, app: str) -> Path:
    """The app's unpacked code, found from outside in the node's run folder."""
    versions = list((node.run_dir / "code" / app).iterdir())
    assert len(versions) == 1, versions
    return versions[0]


def engine_socket(node, app: str) -> Path:
    found = [p for p in node.run_dir.iterdir() if p.name.startswith(f"{app}.")]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def node(node_process):
    return node_process("--app-uids", f"{LOW}-{HIGH}")


def test_apps_run_as_their_own_unprivileged_users(node, tmp_path):
    deploy(node, "one")
    deploy(node, "two")
    one, two = ask(node, "one", "whoami"), ask(node, "two", "whoami")
    with node.client() as client:
        apps = client.control("info")["apps"]
    assert apps["one"]["uid"] == one["uid"] and apps["two"]["uid"] == two["uid"]
    for seen in (one, two):
        assert LOW <= seen["uid"] <= HIGH and seen["gid"] == seen["uid"], seen
        assert seen["groups"] == [] and seen["home"] == "/tmp", seen
    assert one["uid"] != two["uid"]
    deploy(node, "one", pool_limit=3)  # a new version: the same user
    assert ask(node, "one", "whoami")["uid"] == one["uid"]
    # From outside: the slave and its template, with no privilege left.
    one = ask(node, "one", "whoami")
    template = one["ppid"]
    processes = node_processes(node.process.pid)
    assert one["pid"] in processes and template in processes
    for pid in (one["pid"], template):
        seen = status(pid)
        assert seen["Uid"].split() == [str(one["uid"])] * 4, seen["Uid"]
        assert seen["Gid"].split() == [str(one["uid"])] * 4, seen["Gid"]
        assert seen["NoNewPrivs"] == "1" and int(seen["CapEff"], 16) == 0, seen
    # Started again from storage by a new node process: isolated as well.
    assert node.stop() == 0
    node.start()
    again = ask(node, "one", "whoami")
    assert LOW <= again["uid"] <= HIGH, again
    assert status(again["pid"])["NoNewPrivs"] == "1"


def test_an_app_reads_its_code_and_nothing_of_the_node_or_other_apps(node, tmp_path):
    deploy(node, "one")
    deploy(node, "two")
    mine, theirs = code_root(node, "one"), code_root(node, "two")
    keys = Path(os.environ["XDG_CONFIG_HOME"]) / "cocaine"
    assert keys.is_dir()  # the node made (or found) its user's key there
    targets = [("read", str(mine / "app.py")), ("read", str(mine / "secret.txt")),
               ("list", str(mine)),
               ("list", str(node.storage)), ("list", str(node.storage / "code")),
               ("list", str(node.run_dir)), ("list", str(node.run_dir / "code")),
               ("read", str(theirs / "app.py")), ("list", str(theirs)),
               ("connect", str(engine_socket(node, "two"))),
               ("list", str(keys)), ("read", str(keys / "id_ed25519")),
               ("read", f"/proc/{node.process.pid}/cmdline")]  # other users' processes
    seen = ask(node, "one", "probe", targets)
    assert seen.pop(str(mine / "app.py")) == "read"
    assert seen.pop(str(mine / "secret.txt")) == "read"  # packed 0600: still the app's
    assert seen.pop(str(mine)) == "listed"
    refused = {"PermissionError", "FileNotFoundError"}
    assert all(result in refused for result in seen.values()), seen
    # The same probe as root would succeed: the targets exist, the refusals are isolation.
    for _kind, path in targets:
        assert os.path.exists(path), path
    # Storage and keys are covered in the app's view even where the disk's modes would do
    # (or, in /tmp, not there at all: the app has a /tmp of its own).
    mounts = mount_points(ask(node, "one", "whoami")["pid"])
    assert mounts.get("/tmp") == "tmpfs", mounts
    for folder in (node.storage, keys):
        real = os.path.realpath(folder)
        assert mounts.get(real) == "tmpfs" or real.startswith("/tmp/"), (folder, mounts)
    # The other app's code stays its own group's alone on disk.
    info = os.stat(theirs / "app.py")
    assert info.st_uid == 0 and info.st_mode & 0o007 == 0, oct(info.st_mode)


def test_processes_an_isolated_app_starts_stop_with_it(node, tmp_path):
    deploy(node, "kids")
    with node.client() as client:
        child = int(client.call("kids", "spawn"))
    assert not process_gone(child)
    assert status(child)["NoNewPrivs"] == "1"
    node.cli("app", "remove", "kids")
    wait_until(lambda: process_gone(child), timeout=15, message="the app's child to stop")


def test_isolated_slaves_keep_their_oom_order_and_cgroup(node_process, tmp_path):
    if not Path("/sys/fs/cgroup/pids").is_dir():
        pytest.skip("no cgroup v1 pids hierarchy here")
    node = node_process("--app-uids", f"{LOW}-{HIGH}", "--name", f"iso-{os.getpid()}")
    deploy(node, "limited", limits={"pids": {"pids.max": 200}})
    slave = ask(node, "limited", "whoami")
    template = slave["ppid"]
    # The node set the template's score as root (lowered, where the machine lets it); the
    # slave raised its own above it, as its user.
    expected = slave_oom_score_adj(oom(template), oom(node.process.pid))
    assert oom(slave["pid"]) == expected > oom(template)
    groups = dict(line.split(":", 2)[1:]
                  for line in Path(f"/proc/{slave['pid']}/cgroup").read_text().splitlines())
    assert groups["pids"].endswith(":limited"), groups  # the app's group, not the node's
    assert Path(f"/proc/{template}/cgroup").read_text() == \
        Path(f"/proc/{slave['pid']}/cgroup").read_text()


def oom(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


def test_without_cap_sys_admin_the_app_does_not_load_and_never_runs_as_root(tmp_path):
    """As in a container that lacks CAP_SYS_ADMIN: the template cannot make its mount
    namespace: the app does not load, and says why and what to do; its code never ran, as
    root or otherwise."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    shared = Path(tempfile.mkdtemp(prefix="cocaine-shared-", dir="/tmp"))
    os.chmod(shared, 0o777)
    node = NodeProcess(tmp_path / "capped", "--app-uids", f"{LOW}-{HIGH}", wrapper=(
        "setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"))
    try:
        node.start()
        assert "CapEff" in status(node.process.pid)
        assert not int(status(node.process.pid)["CapEff"], 16) & (1 << 21)  # no SYS_ADMIN
        marker = shared / "ran"
        # No retry would mend it: the deploy is refused at once, saying why and what to do.
        with pytest.raises(ServiceError) as refused:
            deploy(node, "boxed", prelude=f"open({str(marker)!r}, 'w').write('ran')\n")
        message = refused.value.message
        assert "unshare(CLONE_NEWNS)" in message and "--app-uids none" in message, message
        with node.client() as client:
            assert client.control("list") == []
        assert not marker.exists(), "the app's code ran"
    finally:
        node.kill()
        shutil.rmtree(node.run_dir, ignore_errors=True)
        shutil.rmtree(shared, ignore_errors=True)


def test_app_uids_none_runs_apps_as_the_node_user(node_process, tmp_path):
    node = node_process("--app-uids", "none")
    deploy(node, "plain")
    assert ask(node, "plain", "whoami")["uid"] == 0
    assert "--app-uids none: apps run as root" in node.log.read_text()


@pytest.mark.parametrize("value", ["61999-61000", "0-100", "abc", "61000-", "1000-2000000",
                                   "61000-4294967295"])
def test_a_bad_app_uids_is_a_clear_error(tmp_path, value):
    cocaine = Path(sys.executable).with_name("cocaine")
    run_dir = Path("/tmp") / f"cocaine-bad-uids-{os.getpid()}"
    result = subprocess.run([str(cocaine), "node", "--app-uids", value, "--storage",
                             f"files://{tmp_path / 'storage'}", "--run-dir", str(run_dir)],
                            capture_output=True, timeout=60)
    made = [path for path in (tmp_path / "storage", run_dir) if path.exists()]
    shutil.rmtree(run_dir, ignore_errors=True)
    text = (result.stdout + result.stderr).decode()
    assert result.returncode != 0 and "--app-uids" in text and "LOW-HIGH" in text, text
    assert made == [], "refused before anything is made"


def test_a_storage_folder_others_can_read_is_made_private(node_process):
    folder = Path(tempfile.mkdtemp(prefix="cocaine-open-", dir="/tmp"))
    try:
        os.chmod(folder, 0o755)
        (folder / "storage").mkdir(mode=0o755)
        os.chmod(folder / "storage", 0o755)
        node = node_process("--app-uids", f"{LOW}-{HIGH}", folder=folder)
        assert os.stat(node.storage).st_mode & 0o777 == 0o700
        assert "was readable by others (mode 755): made it 0700" in node.log.read_text()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- the node's choice of uids -------------------------------------------------------------------


def test_a_uid_a_process_runs_as_or_the_machine_knows_is_never_handed_out():
    with subprocess.Popen(["setpriv", "--reuid", str(HIGH - 1), "--regid", str(HIGH - 1),
                           "--clear-groups", "sleep", "30"]) as squatter:
        try:
            wait_until(lambda: str(HIGH - 1) in status(squatter.pid)["Uid"].split(),
                       message="the process to run as its uid")
            users = AppUsers(HIGH - 1, HIGH)
            assert users.user_for("app").uid == HIGH  # HIGH - 1 is in use
            assert users.user_for("app") == users.user_for("app")  # one uid per name
            with pytest.raises(NodeError, match=f"--app-uids {HIGH - 1}-{HIGH}"):
                users.user_for("another")
        finally:
            squatter.kill()
    known = pwd.getpwnam("nobody").pw_uid
    assert AppUsers(known, known + 1).user_for("app").uid == known + 1


def test_nodes_of_one_machine_never_hand_out_the_same_uid(tmp_path):
    first = AppUsers(HIGH - 2, HIGH, claims=tmp_path)
    second = AppUsers(HIGH - 2, HIGH, claims=tmp_path)  # another node of this machine
    uids = {first.user_for("one").uid, second.user_for("one").uid,
            first.user_for("two").uid}
    assert len(uids) == 3  # the same app name on two nodes: two uids
    with pytest.raises(NodeError, match="another node's"):
        second.user_for("two")
    del first  # a node that ends lets its uids go
    assert second.user_for("two").uid in uids


def test_app_uids_ranges():
    assert parse_app_uids(None, euid=0) == DEFAULT_APP_UIDS
    assert parse_app_uids(None, euid=1000) is None  # not root: apps run as the node's user
    assert parse_app_uids("none", euid=0) is None
    assert parse_app_uids("1000-1000", euid=0) == (1000, 1000)
    with pytest.raises(NodeError, match="needs the node to run as root"):
        parse_app_uids("61000-61999", euid=1000)
