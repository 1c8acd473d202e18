"""Hardening of a real ``cocaine node``: what deploys, uploads and endpoints may touch on the
node's disk, and how long a deploy may take (issue 13)."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
import threading
import time
from pathlib import Path

import pytest

from cocaine_core import archive
from cocaine_core.errors import ServiceError
from cocaine_core.testing import free_port, leftover_slaves, wait_until, write_app

APP = "def echo(request):\n    return request.data\n"
TASKS = {"echo": {"type": "native-server"}}
HANG = "import time\ntime.sleep(1000)\n\ndef echo(request):\n    return request.data\n"


def manifest_of(tasks: dict | None = None, source: str = "app.py", **engine: object) -> dict:
    return {"type": "python", "args": {"source": source}, "tasks": tasks or TASKS,
            "engine": dict(engine)}


def code_of(text: str = APP) -> bytes:
    info = tarfile.TarInfo("app.py")
    data = text.encode()
    info.size = len(data)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def deploy(client, name: str, manifest: dict, code: bytes) -> dict:
    return client.control("deploy", name=name, manifest=manifest, archive=code,
                          sha256=archive.sha256(code))


def refused(client, name: str, manifest: dict, code: bytes) -> ServiceError:
    with pytest.raises(ServiceError) as error:
        deploy(client, name, manifest, code)
    return error.value


@pytest.fixture
def short(tmp_path):
    """A folder with a short path (ipc paths are limited to 107 bytes)."""
    folder = Path("/tmp") / f"h1-{free_port()}"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# -- ipc endpoints never delete a file -------------------------------------------------------


def test_ipc_endpoint_on_a_node_file_is_refused_and_the_file_kept(node_process, short):
    node = node_process(folder=short / "n")
    with node.client() as client:
        deploy(client, "keep", manifest_of(), code_of())
        record, lock = node.storage / "apps" / "keep", node.run_dir / "node.lock"
        mine = short / "notes.txt"
        mine.write_text("a user's file")
        before = record.read_bytes()
        for target, why in ((record, "inside the node's folder"),
                            (lock, "inside the node's folder"),
                            (node.run_dir / "other.sock", "inside the node's folder"),
                            (mine, "exists and is not a socket")):
            for key in ("endpoint", "publish"):
                kind = "zeromq-server" if key == "endpoint" else "zeromq-sink"
                tasks = {"echo": {"type": kind, key: f"ipc://{target}"}}
                error = refused(client, "evil", manifest_of(tasks), code_of())
                assert error.code == 400, error
                assert str(target) in error.message and why in error.message, error.message
        assert record.read_bytes() == before and lock.exists()
        assert mine.read_text() == "a user's file"
        assert "evil" not in client.control("list")
    assert node.stop() == 0
    node.start()
    with node.client() as client:
        assert client.call("keep", "echo", b"hi") == b"hi"


def test_ipc_endpoint_on_a_live_socket_of_another_app_is_refused(node_process, short):
    node = node_process(folder=short / "n")
    sock = short / "a.sock"
    with node.client() as client:
        deploy(client, "first", manifest_of({"echo": {"type": "zeromq-server",
                                                      "endpoint": f"ipc://{sock}"}}), code_of())
        error = refused(client, "second", manifest_of(
            {"echo": {"type": "zeromq-server", "endpoint": f"ipc://{sock}"}}), code_of())
        assert error.code == 400 and "already in use" in error.message
        assert sock.is_socket()


def test_node_listen_on_a_file_is_refused_and_the_file_kept(node_process, short):
    mine = short / "notes.txt"
    mine.write_text("a user's file")
    node = node_process(folder=short / "n", listen=f"ipc://{mine}", start=False)
    with pytest.raises(AssertionError, match="the node exited"):
        node.start(timeout=30)
    assert mine.read_text() == "a user's file"
    assert "exists and is not a socket" in node.log.read_text()


# -- the run folder ------------------------------------------------------------------------


def test_a_node_run_folder_keeps_what_the_node_did_not_make(node_process, short):
    node = node_process(folder=short / "n", start=False)
    node.run_dir = short / "run"
    node.start()
    (node.run_dir / "mine.txt").write_text("keep me")  # put there while a node used it
    with node.client() as client:
        deploy(client, "app", manifest_of(), code_of())
    assert (node.run_dir / "code").is_dir()
    assert node.stop() == 0
    node.start()
    assert node.stop() == 0
    assert (node.run_dir / "mine.txt").read_text() == "keep me"
    assert not (node.run_dir / "code").exists(), "the node's own unpacked code is cleaned"


def _refused(node, match: str) -> str:
    with pytest.raises(AssertionError, match="the node exited"):
        node.start(timeout=30)
    log = node.log.read_text()
    assert match in log, log
    return log


def test_a_users_folder_as_run_folder_is_refused_untouched(node_process, short):
    """A folder with someone's files, even ones named code/ and uploads/, is not a run
    folder: the node emptied code/ and uploads/ and made the folder 0700 before."""
    run = short / "home"
    for name, text in (("code/project/main.c", "int main;"), ("uploads/photo.jpg", "jpg"),
                       ("notes.txt", "notes")):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    run.chmod(0o755)
    node = node_process(folder=short / "n", start=False)
    node.run_dir = run
    _refused(node, "holds files no node made")
    assert (run / "code/project/main.c").read_text() == "int main;"
    assert (run / "uploads/photo.jpg").read_text() == "jpg"
    assert run.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in run.iterdir()) == ["code", "notes.txt", "uploads"]


def test_a_run_folder_linked_to_storage_is_refused(node_process, short):
    """A --run-dir that is a symbolic link to the storage folder passed the overlap check
    (only its parent was resolved) and the node deleted every stored app's code."""
    node = node_process(folder=short / "n")
    with node.client() as client:
        deploy(client, "app", manifest_of(), code_of())
    assert node.stop() == 0
    codes = sorted((node.storage / "code").iterdir())
    link = short / "linked-run"
    link.symlink_to(node.storage)
    node.run_dir = link
    _refused(node, "overlap")
    assert sorted((node.storage / "code").iterdir()) == codes
    assert not (node.storage / "node.lock").exists()


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_kept(node_process, short):
    """``node.lock`` was opened for writing, following a link: its target was emptied."""
    node = node_process(folder=short / "n", start=False)
    node.run_dir = short / "run"
    node.start()
    assert node.stop() == 0
    victim = short / "victim.txt"
    victim.write_text("precious")
    (node.run_dir / "node.lock").unlink()
    (node.run_dir / "node.lock").symlink_to(victim)
    _refused(node, "node.lock")
    assert victim.read_text() == "precious"


def test_listening_on_an_ipc_path_in_the_run_folder_is_refused(node_process, short):
    node = node_process(folder=short / "n", start=False,
                        listen=f"ipc://{short}/run/code")
    node.run_dir = short / "run"
    _refused(node, "inside the run folder")


@pytest.mark.parametrize("where", ["storage", "inside storage", "holds storage"])
def test_run_dir_overlapping_storage_is_refused_and_apps_kept(node_process, short, where):
    node = node_process(folder=short / "n")
    with node.client() as client:
        deploy(client, "app", manifest_of(), code_of())
    assert node.stop() == 0
    record = node.storage / "apps" / "app"
    before = record.read_bytes()
    node.run_dir = {"storage": node.storage, "inside storage": node.storage / "run",
                    "holds storage": node.storage.parent}[where]
    with pytest.raises(AssertionError, match="the node exited"):
        node.start(timeout=30)
    assert record.read_bytes() == before
    assert len(list((node.storage / "code").iterdir())) == 1
    assert "overlap" in node.log.read_text()
    node.run_dir = Path("/tmp") / f"cocaine-node-{free_port()}"


# -- refused deploys leave nothing ---------------------------------------------------------


def _unextractable() -> bytes:
    """Passes every check, but cannot be unpacked: a file is then used as a folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ("app.py", "pad.bin", "app.py/inner.py"):
            data = APP.encode() if name != "pad.bin" else b"\0" * 2**20
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_refused_deploys_leave_no_partial_folder(node_process):
    node = node_process()
    code = _unextractable()
    with node.client() as client:
        for _ in range(3):
            error = refused(client, "app", manifest_of(), code)
            assert error.code == 400 and "could not be unpacked" in error.message, error
        assert client.control("info")["busy"] == {}
    left = list((node.run_dir / "code").rglob("*")) if (node.run_dir / "code").exists() else []
    assert not [p for p in left if p.name.endswith(".partial")], left


# -- archive limits ----------------------------------------------------------------------------


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def tar_bomb(size: int) -> bytes:
    """An app whose archive holds ``size`` bytes of zeros: a few MB compressed."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("app.py")
        info.size = len(APP)
        tar.addfile(info, io.BytesIO(APP.encode()))
        info = tarfile.TarInfo("zeros.bin")
        info.size = size
        tar.addfile(info, _Zeros(size))
    return gzip.compress(raw.getvalue(), compresslevel=6)


def test_tar_bomb_is_refused_before_unpacking(node_process):
    node = node_process()
    bomb = tar_bomb(1000 * 2**20)
    with node.client() as client:
        rss = client.control("info")["rss-bytes"]
        started = time.monotonic()
        error = refused(client, "bomb", manifest_of(), bomb)
        took = time.monotonic() - started
        grew = client.control("info")["rss-bytes"] - rss
    assert error.code == 400 and "--max-unpacked" in error.message and "512 MiB" in error.message
    assert not (node.run_dir / "code" / "bomb").exists()
    print(f"\n1000 MiB bomb ({len(bomb) / 2**20:.1f} MiB compressed) refused in {took:.2f} s, "
          f"node RSS +{grew / 2**20:.1f} MiB")
    assert took < 10


def test_too_many_members_are_refused(node_process):
    node = node_process("--max-archive-members", "100")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for index in range(101):
            info = tarfile.TarInfo("app.py" if index == 0 else f"m{index}.py")
            info.size = len(APP)
            tar.addfile(info, io.BytesIO(APP.encode()))
    with node.client() as client:
        error = refused(client, "many", manifest_of(), buffer.getvalue())
    assert error.code == 400 and "more than 100 members" in error.message
    assert "--max-archive-members" in error.message


def test_archive_limit_settings_have_ranges(node_process, tmp_path):
    node = node_process("--max-unpacked", "5", start=False)
    with pytest.raises(AssertionError, match="the node exited"):
        node.start(timeout=30)
    assert "--max-unpacked" in node.log.read_text() and "1048576" in node.log.read_text()


# -- uploads are capped and expire ------------------------------------------------------------


def test_open_uploads_are_capped_and_expire_on_a_timer(node_process):
    node = node_process("--max-uploads", "4", "--upload-idle", "2")
    uploads = node.run_dir / "uploads"
    with node.client() as client:
        for _ in range(4):
            client.control("upload-begin", size=1000)
        with pytest.raises(ServiceError) as error:
            client.control("upload-begin", size=1000)
        assert error.value.code == 503 and "--max-uploads 4" in error.value.message
        assert "try again" in error.value.message
        assert len(list(uploads.iterdir())) == 4
        # No new upload-begin: the timer alone drops them.
        wait_until(lambda: not list(uploads.iterdir()), timeout=15,
                   message="idle uploads dropped")
        client.control("upload-begin", size=1000)


def test_open_uploads_announced_bytes_are_capped(node_process):
    node = node_process("--upload-space", str(2**20))
    with node.client() as client:
        client.control("upload-begin", size=600_000)
        with pytest.raises(ServiceError) as error:
            client.control("upload-begin", size=600_000)
    assert error.value.code == 503 and "--upload-space" in error.value.message


# -- deploys take a bounded time ------------------------------------------------------------


def test_hung_deploy_is_refused_at_the_deploy_timeout(node_process):
    node = node_process("--deploy-timeout", "3")
    slow = manifest_of(**{"startup-timeout": 600})
    with node.client(wait=60) as client:
        started = time.monotonic()
        error = refused(client, "hung", slow, code_of(HANG))
        took = time.monotonic() - started
        assert error.code == 400 and "--deploy-timeout" in error.message, error
        assert client.control("info")["busy"] == {}
        assert "hung" not in client.control("list")
        wait_until(lambda: not leftover_slaves(node.process.pid), timeout=15,
                   message="the hung template stopped")
        deploy(client, "hung", manifest_of(), code_of())  # the name is free again
        assert client.call("hung", "echo", b"hi") == b"hi"
    print(f"\nhung deploy refused in {took:.1f} s (--deploy-timeout 3)")
    assert took < 20


def test_remove_during_a_deploy_cancels_it(node_process):
    node = node_process()
    slow = manifest_of(**{"startup-timeout": 600})
    answers: list[object] = []

    def deployer() -> None:
        with node.client(wait=120) as client:
            try:
                answers.append(deploy(client, "hung", slow, code_of(HANG)))
            except ServiceError as exc:
                answers.append(exc)

    thread = threading.Thread(target=deployer)
    thread.start()
    with node.client(wait=60) as client:
        wait_until(lambda: client.control("info")["busy"].get("hung") == "deploy",
                   message="the deploy under way")
        wait_until(lambda: leftover_slaves(node.process.pid), message="the import under way")
        started = time.monotonic()
        answer = client.control("remove", name="hung")
        took = time.monotonic() - started
        assert answer["removed"] and answer.get("cancelled-deploy")
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert isinstance(answers[0], ServiceError) and "cancelled by a remove" in \
            answers[0].message
        assert client.control("info")["busy"] == {} and "hung" not in client.control("list")
        wait_until(lambda: not leftover_slaves(node.process.pid), timeout=15,
                   message="the hung template stopped")
    print(f"\nremove cancelled a hung deploy in {took:.1f} s")


def test_hung_deploys_do_not_block_other_apps_past_the_timeout(node_process):
    node = node_process("--deploy-timeout", "5")
    slow = manifest_of(**{"startup-timeout": 600})
    threads = []
    for index in range(4):
        def hung(index: int = index) -> None:
            with node.client(wait=60) as client, pytest.raises(ServiceError):
                deploy(client, f"hung{index}", slow, code_of(HANG))

        threads.append(threading.Thread(target=hung))
        threads[-1].start()
    with node.client(wait=60) as client:
        wait_until(lambda: len(client.control("info")["busy"]) == 4, message="4 deploys")
        started = time.monotonic()
        assert deploy(client, "good", manifest_of(), code_of())["state"] == "running"
        took = time.monotonic() - started
    for thread in threads:
        thread.join(timeout=60)
    print(f"\na deploy behind 4 hung ones took {took:.1f} s (--deploy-timeout 5)")
    assert took < 20


# -- a deployed app's code comes from its archive ------------------------------------------


@pytest.mark.parametrize("where", ["absolute", "climbing"])
def test_deployed_source_outside_the_code_is_refused(node_process, tmp_path, where):
    outside = tmp_path / "outside.py"
    outside.write_text(APP)
    node = node_process()
    source = str(outside) if where == "absolute" else "../../../../../../.." + str(outside)
    with node.client() as client:
        error = refused(client, "app", manifest_of(source=source), code_of())
        assert error.code == 400 and "args.source" in error.message, error
        assert "outside the app's uploaded code" in error.message
        assert "app" not in client.control("list")


def test_cocaine_run_keeps_an_absolute_source(tmp_path):
    from cocaine_core.manifest import load_manifest

    outside = tmp_path / "elsewhere" / "app.py"
    outside.parent.mkdir()
    outside.write_text(APP)
    path = write_app(tmp_path / "app", APP, TASKS)
    data = json.loads(path.read_text())
    data["args"]["source"] = str(outside)
    path.write_text(json.dumps(data))
    assert load_manifest(path).args["source"] == str(outside)


def test_refused_deploys_leave_no_folder_of_their_name(node_process):
    """Each refused name left an empty run/code/<name>/ folder until the next start."""
    node = node_process()
    with node.client() as client:
        refused(client, "unpacks", manifest_of(), _unextractable())
        refused(client, "broken", manifest_of(), code_of("raise ImportError('no')\n"))
        refused(client, "badmanifest", manifest_of(tasks={"echo": {"type": "nope"}}),
                code_of())
    code = node.run_dir / "code"
    left = sorted(p.name for p in code.iterdir()) if code.exists() else []
    assert left == [], left
    with node.client() as client:
        assert client.control("list") == []


def test_a_port_past_65535_is_refused(node_process, short):
    """libzmq listened on 99999 modulo 65536 (34463) without a word."""
    node = node_process(folder=short / "n", start=False, listen="tcp://127.0.0.1:99999")
    _refused(node, "a port is at most 65535")
