"""``cocaine node`` for real: deploys that carry code, restarts, redeploys, bad input."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import tarfile
import threading
import time
from pathlib import Path

import msgpack
import pytest

from cocaine_core import archive
from cocaine_core.errors import ServiceError
from cocaine_core.testing import leftover_slaves, wait_until, write_app

APP = '''
import os
import time

VERSION = "{version}"


def echo(request):
    return request.data


def version(request):
    return VERSION


def slow(request):
    time.sleep(float(request.data or 0.5))
    return b"finished"
'''

TASKS = {name: {"type": "native-server"} for name in ("echo", "version", "slow")}


def make(folder: Path, version: str = "1", **engine: object) -> Path:
    return write_app(folder, APP.format(version=version), TASKS, dict(engine))


def pad(manifest: Path, size: int) -> None:
    """Make the app's source about ``size`` bytes bigger, incompressibly."""
    with open(manifest.parent / "app.py", "a") as f:
        f.write(f"\nPADDING = {base64.b64encode(os.urandom(size)).decode()!r}\n")


def deploy_raw(client, name: str, manifest: dict, code: bytes) -> dict:
    return client.control("deploy", name=name, manifest=manifest, archive=code,
                          sha256=archive.sha256(code))


def test_deploy_from_another_folder_list_info_remove(node_process, tmp_path):
    node = node_process()
    manifest = make(tmp_path / "src" / "hello")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = node.cli("app", "deploy", str(manifest), cwd=elsewhere)
    assert "deployed hello version 1" in result.stdout.decode()
    with node.client() as client:
        assert client.call("hello", "echo", b"hi") == b"hi"
        info = client.control("app-info", name="hello")
    assert info["state"] == "running" and info["deployed"]["version"] == 1
    listing = node.cli("app", "list").stdout.decode()
    assert "hello" in listing and "running" in listing
    assert json.loads(node.cli("app", "info", "hello").stdout)["deployed"]["sha256"]
    node.cli("app", "remove", "hello")
    with node.client() as client, pytest.raises(ServiceError) as error:
        client.call("hello", "echo", b"hi")
    assert error.value.code == 404
    assert not (node.storage / "apps" / "hello").exists()
    assert list((node.storage / "code").iterdir()) == []
    assert node.stop() == 0


def test_apps_survive_a_restart(node_process, tmp_path):
    node = node_process()
    node.cli("app", "deploy", str(make(tmp_path / "a" / "one", "1")))
    node.cli("app", "deploy", str(make(tmp_path / "b" / "two", "2")))
    assert node.stop() == 0
    node.start()
    with node.client() as client:
        assert client.call("one", "version") == b"1"
        assert client.call("two", "version") == b"2"
    node.kill()
    node.start()
    with node.client() as client:
        assert client.call("two", "echo", b"after kill -9") == b"after kill -9"
    assert node.stop() == 0


#: Appended to version 2 of the app: its import says which process runs it (in a file the test
#: watches), then blocks until the test releases it (at most a minute), so the test can kill
#: the node while the deploy is certainly half-way: code unpacked, app loading, nothing stored.
BLOCKING_IMPORT = """
import os as _os, pathlib as _pathlib, time as _time

_mark = _pathlib.Path({importing!r} + ".tmp")
_mark.write_text(str(_os.getpid()))
_mark.replace({importing!r})
_deadline = _time.monotonic() + 60
while not _os.path.exists({release!r}) and _time.monotonic() < _deadline:
    _time.sleep(0.01)
"""


def test_kill_during_deploys_leaves_storage_consistent(node_process, tmp_path):
    """SIGKILL while version 2 is being deployed (its template process is importing it): after
    a restart, storage holds version 1 whole, and nothing of version 2."""
    # The app signals the test through files in the test's own folder: it runs as the node's
    # user (isolation is not what this test is about).
    node = node_process("--app-uids", "none")
    node.cli("app", "deploy", str(make(tmp_path / "v1" / "app", "1")))
    importing, release = tmp_path / "importing", tmp_path / "release"
    manifest = make(tmp_path / "v2" / "app", "2")
    with open(manifest.parent / "app.py", "a") as f:
        f.write(BLOCKING_IMPORT.format(importing=str(importing), release=str(release)))
    deployer = threading.Thread(target=node.cli, args=("app", "deploy", str(manifest),
                                                       "--wait", "30"), kwargs={"check": False})
    deployer.start()
    try:
        pid = int(wait_until(lambda: importing.exists() and importing.read_text(), timeout=60,
                             message="version 2's import to begin"))
        assert pid in leftover_slaves(node.process.pid), "the import runs in the node's template"
        node.kill()
    finally:
        release.touch()
        deployer.join(timeout=150)
    assert not deployer.is_alive()
    node.start()
    assert not list(node.storage.glob("*/.*.tmp"))
    with node.client() as client:
        assert client.call("app", "version") == b"1"  # version 2 never finished loading
    records = list((node.storage / "apps").iterdir())
    codes = list((node.storage / "code").iterdir())
    assert len(records) == 1 and len(codes) == 1, "no orphaned code, no half record"
    record = json.loads(records[0].read_text())
    assert archive.sha256(codes[0].read_bytes()) == record["sha256"]
    assert record["version"] == 1
    assert node.stop() == 0


def test_redeploy_under_load_drops_no_request(node_process, tmp_path):
    node = node_process()
    node.cli("app", "deploy", str(make(tmp_path / "v1" / "live", "1", **{"pool-limit": 2})))
    failures: list[Exception] = []
    versions: set[bytes] = set()
    stop = threading.Event()

    def load() -> None:
        with node.client() as client:
            while not stop.is_set():
                try:
                    versions.add(client.call("live", "version"))
                    client.call("live", "slow", b"0.05")
                except Exception as exc:  # every failure is a dropped request
                    failures.append(exc)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: b"1" in versions, message="load on version 1")
        node.cli("app", "deploy", str(make(tmp_path / "v2" / "live", "2",
                                           **{"pool-limit": 2})))
        wait_until(lambda: b"2" in versions, timeout=30, message="version 2 answering")
        time.sleep(0.5)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert failures == []
    assert node.stop() == 0


def test_sigterm_under_load_answers_in_flight_and_exits_0(node_process, tmp_path):
    node = node_process()
    node.cli("app", "deploy", str(make(tmp_path / "x" / "busy", "1", **{"pool-limit": 3})))
    results: list[object] = []

    def call() -> None:
        with node.client() as client:
            try:
                results.append(client.call("busy", "slow", b"1.0"))
            except ServiceError as exc:
                results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    with node.client() as client:
        wait_until(lambda: client.control("info")["apps"]["busy"]["pool"]["busy"] == 3,
                   timeout=20, message="three jobs in flight")
    node.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join()
    assert results == [b"finished"] * 3
    assert node.process.wait(30) == 0
    assert not leftover_slaves(node.process.pid)


def test_sighup_applies_what_changed_in_storage(node_process, tmp_path):
    node = node_process()
    node.cli("app", "deploy", str(make(tmp_path / "a" / "keep")))
    node.cli("app", "deploy", str(make(tmp_path / "b" / "drop")))
    (node.storage / "apps" / "drop").unlink()
    node.process.send_signal(signal.SIGHUP)
    with node.client() as client:
        wait_until(lambda: client.control("list") == ["keep"], message="drop to be gone")
    assert node.stop() == 0


@pytest.mark.parametrize("name", ["../x", "/etc", "", "x" * 65, "a/b", "..", "@node"])
def test_bad_app_names_are_refused(node_process, tmp_path, name):
    node = node_process()
    manifest = json.loads(make(tmp_path / "app").read_text())
    code = archive.pack_source(tmp_path / "app" / "app.py")
    with node.client() as client, pytest.raises(ServiceError) as error:
        deploy_raw(client, name, manifest, code)
    assert error.value.code == 400 and "is not allowed" in error.value.message


def _tar(*members: tarfile.TarInfo, data: bytes = b"x = 1\n") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member in members:
            if member.isfile():
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                tar.addfile(member)
    return buffer.getvalue()


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize("members,complaint", [
    ([tarfile.TarInfo("/etc/evil.py")], "absolute path"),
    ([tarfile.TarInfo("../evil.py")], "'..'"),
    ([tarfile.TarInfo("app/../../evil.py")], "'..'"),
    ([_link("app.py", "/etc/passwd")], "links outside"),
    ([_link("app.py", "../../outside")], "links outside"),
    ([_link("app.py", "/etc/passwd", tarfile.LNKTYPE)], "links outside"),
])
def test_unsafe_archives_are_refused_before_unpacking(node_process, tmp_path, members,
                                                      complaint):
    node = node_process()
    node.cli("app", "deploy", str(make(tmp_path / "v1" / "safe")))
    code = _tar(*members)
    manifest = {"type": "python", "args": {"source": "app.py"}, "tasks": TASKS}
    with node.client() as client:
        with pytest.raises(ServiceError) as error:
            deploy_raw(client, "safe", manifest, code)
        assert complaint in error.value.message
        assert client.call("safe", "version") == b"1", "what was deployed is unharmed"
    assert not Path("/etc/evil.py").exists() and not (tmp_path.parent / "evil.py").exists()


def test_upload_over_the_limit_is_refused(node_process, tmp_path):
    node = node_process("--max-upload", "100000")
    manifest = make(tmp_path / "big")
    pad(manifest, 200_000)
    result = node.cli("app", "deploy", str(manifest), check=False)
    assert result.returncode == 1
    assert b"over this node's upload limit of 100000 bytes" in result.stderr


def test_invalid_manifest_is_refused_with_every_problem(node_process, tmp_path):
    node = node_process()
    node.cli("app", "deploy", str(make(tmp_path / "v1" / "app", "1")))
    manifest = make(tmp_path / "bad" / "app", "2")
    data = json.loads(manifest.read_text())
    data["engine"] = {"pool-limit": "ten", "queue-limt": 3}
    data["tasks"]["extra"] = {"type": "no-such-driver"}
    manifest.write_text(json.dumps(data))
    result = node.cli("app", "deploy", str(manifest), check=False)
    err = result.stderr.decode()
    assert result.returncode == 1
    assert "engine.pool-limit: must be an integer from 1 to 1000" in err
    assert "engine.queue-limt: unknown key; did you mean 'queue-limit'?" in err
    assert "tasks.extra.type" in err
    with node.client() as client:
        assert client.call("app", "version") == b"1"


def test_broken_code_is_refused_and_the_old_version_keeps_serving(node_process, tmp_path):
    node = node_process()
    node.cli("app", "deploy", str(make(tmp_path / "v1" / "app", "1")))
    manifest = make(tmp_path / "v2" / "app", "2")
    (manifest.parent / "app.py").write_text("def echo(request)\n    pass\n")
    result = node.cli("app", "deploy", str(manifest), check=False)
    assert result.returncode == 1 and b"syntax error" in result.stderr
    with node.client() as client:
        assert client.call("app", "version") == b"1"


def test_deploy_while_removing_is_refused(node_process, tmp_path):
    node = node_process()
    node.cli("app", "deploy", str(make(tmp_path / "v1" / "app", "1",
                                       **{"termination-timeout": 5})))
    manifest = json.loads(make(tmp_path / "v2" / "app", "2").read_text())
    code = archive.pack_source(tmp_path / "v2" / "app" / "app.py")
    with node.client() as client:
        slow = threading.Thread(target=lambda: node.client().call("app", "slow", b"2"))
        slow.start()
        wait_until(lambda: client.control("info")["apps"]["app"]["pool"]["busy"] == 1,
                   message="a busy slave")
        remover = threading.Thread(target=node.cli, args=("app", "remove", "app"))
        remover.start()
        wait_until(lambda: client.control("info")["apps"].get("app", {}).get("state")
                   == "stopping", message="the removal under way")
        with pytest.raises(ServiceError) as error:
            deploy_raw(client, "app", manifest, code)
        assert "busy with a removal" in error.value.message
        remover.join()
        slow.join()


def test_fifty_apps_deployed_at_once(node_process, tmp_path):
    node = node_process()
    code = archive.pack_source(make(tmp_path / "one").parent / "app.py")
    manifest = {"type": "python", "args": {"source": "app.py"}, "tasks": TASKS}
    errors: list[Exception] = []

    def deploy(index: int) -> None:
        try:
            with node.client(wait=600) as client:  # 50 interpreters on 2 busy cores
                deploy_raw(client, f"app{index:02d}", manifest, code)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deploy, args=(i,)) for i in range(50)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert errors == []
    with node.client() as client:
        info = client.control("info")
        assert len(info["apps"]) == 50
        assert client.call("app49", "echo", b"x") == b"x"
    print(f"\n50 apps deployed in {elapsed:.1f} s; node RSS {info['rss-bytes'] / 2**20:.1f} MiB")
    assert node.stop() == 0


def test_control_rejects_garbage_arguments(node_process):
    node = node_process()
    with node.client() as client:
        with pytest.raises(ServiceError) as error:
            client.call("@node", "deploy", b"\xc1 not msgpack")
        assert error.value.code == 400
        with pytest.raises(ServiceError) as error:
            client.call("@node", "deploy", msgpack.packb({"name": "ok"}))
        assert "manifest" in error.value.message
        with pytest.raises(ServiceError) as error:
            client.call("@node", "nonsense")
        assert error.value.code == 404
        assert client.control("list") == []
