"""An ``exec`` app's slaves (programs started by the node, no template) are in the app's groups
from their first instruction, the trial start's too, and its memory limit holds."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cocaine_cgroups.hierarchy import Layout

from cocaine_core.errors import ServiceError
from cocaine_core.testing import RunningNode, wait_until

from .conftest import require

WORKER = Path(__file__).resolve().parents[3] / "tests/languages/workers/raw_worker.py"
#: Notes this process's groups before anything else runs, then becomes the worker.
START = """#!/bin/sh
echo "$$ $(tr '\\n' ' ' < /proc/self/cgroup)" >> starts.txt
exec {python} raw_worker.py
"""


def exec_app(folder: Path, limits: dict[str, object]) -> Path:
    folder.mkdir(parents=True)
    (folder / "raw_worker.py").write_text(WORKER.read_text())
    start = folder / "start.sh"
    start.write_text(START.format(python=sys.executable))
    start.chmod(0o755)
    manifest = {"type": "exec", "args": {"command": ["./start.sh"]},
                "engine": {"pool-limit": 2, "pool-min": 2, "resource-limits": limits},
                "tasks": {name: {"type": "native-server"} for name in ("echo", "whoami")}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder / "manifest.json"


def groups(line: str) -> dict[str, str]:
    found = {}
    for entry in line.split()[1:]:
        _, controllers, path = entry.split(":", 2)
        for controller in controllers.split(","):
            found[controller] = path
    return found


def test_exec_slaves_and_their_trial_start_in_the_apps_groups(
        cg_node: RunningNode, tmp_path: Path, layout: Layout,
        group_dir: Callable[[str, str], Path]) -> None:
    require(layout, "pids", "memory")
    manifest = exec_app(tmp_path / "app", {"pids": {"pids.max": 64},
                                           "memory": {"memory.limit_in_bytes": "256M"}})
    cg_node.add_app("execd", manifest)
    starts = tmp_path / "app" / "starts.txt"
    lines = wait_until(lambda: len(starts.read_text().splitlines()) >= 3
                       and starts.read_text().splitlines(), timeout=30,
                       message="the trial and two slaves to start")
    for controller in ("pids", "memory"):
        hierarchy = layout.hierarchy_of(controller)
        assert hierarchy is not None
        expected = "/" + str(group_dir(controller, "execd").relative_to(hierarchy.mountpoint))
        for line in lines:  # the trial's first, then each slave's, at its first instruction
            assert groups(line)[controller] == expected, (controller, line)
    with cg_node.client() as client:
        assert client.call("execd", "echo", b"confined") == b"confined"


def test_an_exec_app_refused_by_a_limit_says_so(cg_node: RunningNode, tmp_path: Path,
                                                 layout: Layout) -> None:
    require(layout, "memory")
    manifest = exec_app(tmp_path / "tiny", {"memory": {"memory.limit_in_bytes": "4M"}})
    engine = cg_node.add_app("tiny", manifest)
    # A Python interpreter does not start in 4 MiB: the trial is killed by the kernel, the
    # app does not run (the moment's fault, as a Python template's: tried again with back-off
    # while jobs wait), and the reason names the limit.
    wait_until(lambda: engine.loader.last_failure, timeout=60, message="a failed start")
    assert "killed by signal 9" in engine.loader.last_failure
    assert "out of memory" in engine.loader.last_failure
    with pytest.raises(ServiceError) as caught, cg_node.client() as client:
        client.call("tiny", "echo", b"x", deadline=1)
    assert caught.value.code in (503, 520)  # refused, or its deadline passed while it waited
