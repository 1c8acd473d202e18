"""A node's storage under an operator's bad day: SIGHUP while deploys run, a full disk, and
the moments a node starts and stops (each with a real ``cocaine node`` process)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cocaine_core.errors import ServiceError
from cocaine_core.testing import wait_until, write_app

ECHO = "def echo(request):\n    return request.data\n"
TASKS = {"echo": {"type": "native-server"}}


def make(folder: Path, code: str = ECHO, **engine: Any) -> Path:
    """An echo app's manifest in ``folder`` (named after the folder)."""
    return write_app(folder, code, TASKS, engine=engine or None)


def test_sighup_never_removes_code_a_deploy_may_still_be_storing(node_process: Any,
                                                                 tmp_path: Path) -> None:
    """A deploy stores its code, then its record: code without a record may be a deploy
    half-way. SIGHUP removed such code (9 of 38 deploys under a SIGHUP every 30 ms said
    "deployed" and were lost at the next start); only a start, before anything listens,
    removes it now."""
    node = node_process()
    node.cli("app", "deploy", str(make(tmp_path / "keep")))
    ghost = node.storage / "code" / "ghost@0123456789abcdef"
    ghost.write_bytes(b"a deploy half-way")
    # A second app put into storage by hand shows when the SIGHUP has been applied.
    shutil.copy(node.storage / "apps" / "keep", node.storage / "apps" / "late")
    record = (node.storage / "apps" / "late").read_text().replace('"keep"', '"late"')
    (node.storage / "apps" / "late").write_text(record)
    for code in (node.storage / "code").glob("keep@*"):
        shutil.copy(code, code.with_name(code.name.replace("keep@", "late@")))
    node.process.send_signal(signal.SIGHUP)
    with node.client() as client:
        wait_until(lambda: client.control("list") == ["keep", "late"], timeout=30,
                   message="the SIGHUP to start 'late'")
    assert ghost.exists(), "SIGHUP removed code that no record points to yet"
    assert node.stop() == 0
    node.start()
    assert not ghost.exists(), "a start removes orphaned code"
    assert node.stop() == 0


def test_deploys_under_a_sighup_storm_are_all_kept(node_process: Any, tmp_path: Path) -> None:
    node = node_process()
    stop = threading.Event()

    def hup() -> None:
        while not stop.wait(0.02):
            node.process.send_signal(signal.SIGHUP)

    storm = threading.Thread(target=hup, daemon=True)
    storm.start()
    try:
        for version in range(8):
            manifest = make(tmp_path / "race", ECHO + f"VERSION = {version}\n")
            node.cli("app", "deploy", str(manifest))
            record = (node.storage / "apps" / "race").read_text()
            sha = record.split('"sha256": "')[1][:16]
            assert (node.storage / "code" / f"race@{sha}").exists(), (
                f"deploy {version} said deployed, but its code is gone")
    finally:
        stop.set()
        storm.join()
    assert node.stop() == 0
    node.start()
    with node.client() as client:
        assert client.call("race", "echo", b"kept") == b"kept"
    assert node.stop() == 0


@pytest.fixture
def small_storage(tmp_path: Path) -> Any:
    """A 2 MiB tmpfs for a node's storage (unmounted after)."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the tests run as root): {result.stderr}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_deploy_storage_cannot_hold_changes_nothing(node_process: Any, tmp_path: Path,
                                                     small_storage: Path) -> None:
    """On a full disk a deploy answered a 500 with a traceback in the log, and its app ran,
    unstored, until the next start."""
    node = node_process(start=False)
    node.storage = small_storage  # NodeProcess passes it to --storage on start
    node.start()
    big = tmp_path / "big"
    (big / "pkg").mkdir(parents=True)
    write_app(big, ECHO, TASKS, filename="pkg/__init__.py")
    (big / "pkg" / "data.bin").write_bytes(os.urandom(900 * 1024))  # does not compress
    manifest = json.loads((big / "manifest.json").read_text())
    manifest["args"]["source"] = "pkg"
    (big / "manifest.json").write_text(json.dumps(manifest))
    node.cli("app", "deploy", str(big / "manifest.json"), "--name", "b1")
    refused, message = None, ""
    for name in ("b2", "b3", "b4"):
        result = node.cli("app", "deploy", str(big / "manifest.json"), "--name", name,
                          check=False)
        if result.returncode != 0:
            refused, message = name, result.stdout.decode() + result.stderr.decode()
            break
    assert refused is not None, "the 2 MiB storage took every deploy"
    assert "was not stored" in message and "free space" in message, message
    with node.client() as client:
        apps = client.control("list")
        assert refused not in apps, f"{refused} runs, unstored: {apps}"
        assert client.call("b1", "echo", b"still") == b"still"
    assert not (small_storage / "apps" / refused).exists()
    assert not [p for p in (small_storage / "code").iterdir() if p.name.startswith(refused)]
    assert "Traceback" not in node.log.read_text()
    assert node.stop() == 0


SLOW = ("import time\n\ndef echo(request):\n    time.sleep(float(request.data or 0))\n"
        "    return b'done'\n")


def test_apps_of_a_stopping_node_answer_503_not_404(node_process: Any, tmp_path: Path) -> None:
    """While a node drains to stop, an app already stopped said 404 "no app named": clients
    take that for "never existed" and do not retry elsewhere."""
    node = node_process()
    node.cli("app", "deploy", str(make(tmp_path / "slow", SLOW, **{"termination-timeout": 10})))
    node.cli("app", "deploy", str(make(tmp_path / "quick")))
    codes: list[int] = []
    with node.client(wait=20) as client:
        long_job = threading.Thread(target=lambda: client.call("slow", "echo", b"3"))
        long_job.start()
        try:
            with node.client(wait=5) as other:
                wait_until(lambda: node_busy(other), timeout=10, message="the slow job to run")
                node.process.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + 2.5
                while time.monotonic() < deadline:
                    try:
                        other.call("quick", "echo", b"x")
                    except ServiceError as error:
                        codes.append(error.code)
                        if error.code == 503:
                            assert "stopping" in error.message
                    time.sleep(0.01)
        finally:
            long_job.join(20)
    assert codes, "the quick app stopped before the slow one"
    assert set(codes) == {503}, codes
    assert node.process.wait(30) == 0


def node_busy(client: Any) -> bool:
    """Whether the slow app has a job running."""
    return bool(client.control("info")["apps"]["slow"]["pool"]["busy"])
