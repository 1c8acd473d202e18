"""examples/seed end to end: the original README's app under ``cocaine run``, its three tasks
seen working (the aggregate timer's minute shortened to 200 ms)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cocaine_core.client import Client, wait_for_node
from cocaine_core.errors import ManifestError
from cocaine_core.manifest import load_manifest
from cocaine_core.testing import free_port, wait_until

SEED = Path(__file__).resolve().parents[3] / "examples" / "seed"


def cocaine_command() -> str:
    """The ``cocaine`` script of the running interpreter's environment."""
    script = Path(sys.executable).parent / "cocaine"
    return str(script) if script.exists() else (shutil.which("cocaine") or "cocaine")


def cgroups_of(pid: int) -> str | None:
    """The cgroup lines of a process (None if it has exited)."""
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except FileNotFoundError:
        return None


def limits_available() -> str | None:
    """Why the manifest with resource-limits cannot run here, or None if it can."""
    try:
        load_manifest(SEED / "manifest.json")
    except ManifestError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("manifest_name", [
    "manifest-nolimits.json",
    pytest.param("manifest.json", id="with-resource-limits"),
])
def test_seed_runs_and_its_three_tasks_work(tmp_path, manifest_name):
    if manifest_name == "manifest.json" and (reason := limits_available()):
        pytest.skip(f"resource-limits cannot be honoured here: {reason}")
    # The examples validate as written.
    original = load_manifest(SEED / manifest_name)
    assert original.tasks["aggregate"].options["interval"] == 60000
    seed = tmp_path / "seed"
    shutil.copytree(SEED, seed, ignore=shutil.ignore_patterns("__pycache__", "records.jsonl",
                                                              "aggregate.json", "spool",
                                                              "claimed"))
    manifest = seed / manifest_name
    manifest.write_text(manifest.read_text().replace('"interval": 60000', '"interval": 200'))
    var = seed / "var"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen([cocaine_command(), "run", str(manifest), "--name", "seed",
                                "--listen", endpoint, "--log-format", "plain"],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        # event: a native-server call, counted as one event (once the app has started).
        wait_for_node(endpoint, timeout=30)  # a client fails at once where nothing listens
        with Client(endpoint, wait=30) as client:
            wait_until(lambda: client.control("info")["apps"].get("seed", {}).get("state")
                       == "running", timeout=30, message="the app to run")
            answer = json.loads(client.call("seed", "event", b"hello\nworld\n"))
        assert answer["received"] == 12
        # spool: the folder does not exist yet; it is waited for, then files are taken in.
        (tmp_path / "in").mkdir()
        for i in range(3):
            (tmp_path / "in" / f"data{i}.txt").write_text(f"line {i}\n" * (i + 1))
        subprocess.run(["mkdir", str(var / "spool")], check=True)
        subprocess.run(["sh", "-c", f"cp '{tmp_path}'/in/* '{var}/spool/'"], check=True)

        def summary() -> dict | None:
            try:
                return json.loads((var / "aggregate.json").read_text())
            except (FileNotFoundError, ValueError):
                return None

        # aggregate: the timer sums both kinds of record, again and again.
        wait_until(lambda: (s := summary()) and s["files"] == 3 and s["events"] == 1
                   and s["runs"] >= 3, timeout=30, message="an aggregate of 3 files, 1 event")
        assert list((var / "spool").iterdir()) == []  # every file was taken in
        final = summary()
        assert final["lines"] == 1 + 2 + 3 + 2 and final["bytes"] == 7 * 6 + 12
        with Client(endpoint, wait=30) as client:
            app = client.control("info")["apps"]["seed"]
        info = app["tasks"]
        if manifest_name == "manifest.json":  # resource-limits: slaves live in a group of
            node_groups = cgroups_of(process.pid)  # their own, not the node's
            groups = [cgroups_of(slave["pid"]) for slave in app["slaves"] if slave["pid"]]
            assert groups and node_groups not in groups
        # (Ticks may be refused while the first slave starts: queue-limit is 5.)
        assert info["aggregate"]["done"] >= 3
        assert info["spool"]["fires"] >= 1 and info["spool"]["watching"] == str(var / "spool")
        assert info["event"]["requests"] == 1
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        finally:
            log.close()
            print((tmp_path / "run.log").read_text())  # shown if the test fails
    assert code == 0, (tmp_path / "run.log").read_text()
    output = (tmp_path / "run.log").read_text()
    assert "spool: took in" in output and "aggregate #" in output
