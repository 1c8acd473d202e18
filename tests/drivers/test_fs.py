"""filesystem-monitor: batches of changes made by other processes, a path that comes later."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cocaine_core.errors import ManifestError
from cocaine_core.manifest import load_manifest
from cocaine_core.testing import wait_until

HANDLER = '''
import json, os

def spool(request):
    line = json.dumps(request.meta) + "\\n"
    fd = os.open({record!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
'''


class Batches:
    """The batches the app's handler recorded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[list[list[str]]]:
        """Each job's list of [kind, path]."""
        if not self.path.exists():
            return []
        return [json.loads(line)["changes"] for line in self.path.read_text().splitlines()]

    def changes(self) -> list[tuple[str, str]]:
        """Every change of every batch, in order."""
        return [(kind, path) for batch in self.all() for kind, path in batch]

    def wait_for(self, *expected: tuple[str, Path]) -> None:
        """Wait until every ``(kind, path)`` in ``expected`` has been reported."""
        wanted = {(kind, str(path)) for kind, path in expected}
        wait_until(lambda: wanted <= set(self.changes()), timeout=15,
                   message=f"changes {sorted(wanted - set(self.changes()))}")


@pytest.fixture
def monitor(cocaine_node, make_app, tmp_path):
    """``monitor(path, **keys)`` starts an app watching ``path``; returns its Batches."""
    record = tmp_path / "record.jsonl"

    def start(path: str | Path, name: str = "fs", **keys: Any) -> Batches:
        manifest = make_app(HANDLER.format(record=str(record)),
                            tasks={"spool": {"type": "filesystem-monitor", "path": str(path),
                                             **keys}},
                            engine={"pool-limit": 1, "pool-min": 1}, name="app")
        cocaine_node.add_app(name, manifest)
        return Batches(record)

    return start


def run(*command: str) -> None:
    """Run a command in another process; fail the test if it fails."""
    subprocess.run(command, check=True, timeout=30)


def test_cp_modify_mv_rm_from_another_process(monitor, tmp_path):
    watched = tmp_path / "watched"
    watched.mkdir()
    source = tmp_path / "source.txt"
    source.write_text("hello\n")
    batches = monitor(watched)
    run("cp", str(source), str(watched / "a.txt"))
    batches.wait_for(("added", watched / "a.txt"))
    run("sh", "-c", f"echo more >> '{watched / 'a.txt'}'")
    batches.wait_for(("modified", watched / "a.txt"))
    run("mv", str(watched / "a.txt"), str(watched / "b.txt"))
    batches.wait_for(("deleted", watched / "a.txt"), ("added", watched / "b.txt"))
    run("mkdir", str(watched / "sub"))
    run("mv", str(source), str(watched / "sub" / "c.txt"))  # moved in from outside, nested
    batches.wait_for(("added", watched / "sub" / "c.txt"))
    run("rm", "-r", str(watched / "b.txt"), str(watched / "sub"))
    batches.wait_for(("deleted", watched / "b.txt"), ("deleted", watched / "sub" / "c.txt"))
    for batch in batches.all():
        assert all(kind in ("added", "modified", "deleted") for kind, _ in batch)


def test_files_in_a_new_nested_folder_are_not_missed(monitor, tmp_path):
    watched = tmp_path / "watched"
    watched.mkdir()
    batches = monitor(watched)
    deep = watched / "job" / "deep"
    # One process, no pause: the files exist before any watch on the new folders can.
    run("sh", "-c", f"mkdir -p '{deep}' && echo 1 > '{deep}/a' && echo 2 > '{deep}/b'")
    batches.wait_for(("added", watched / "job"), ("added", deep / "a"), ("added", deep / "b"))


def test_burst_of_a_thousand_files_is_coalesced_and_complete(monitor, tmp_path,
                                                             cocaine_node):
    watched = tmp_path / "watched"
    watched.mkdir()
    source = tmp_path / "many"
    source.mkdir()
    for i in range(1000):
        (source / f"f{i:04}").write_text(str(i))
    batches = monitor(watched)
    run("sh", "-c", f"cp '{source}'/* '{watched}'/")
    expected = {str(watched / f"f{i:04}") for i in range(1000)}

    def added() -> set[str]:
        return {path for kind, path in batches.changes() if kind == "added"}

    wait_until(lambda: expected <= added(), timeout=20,
               message="all 1000 files reported as added")
    jobs = len(batches.all())
    assert jobs <= 50, f"{jobs} jobs for one burst"
    info = cocaine_node.info("fs")["tasks"]["spool"]
    # (A batch of late "modified" changes may still be on its way: fires >= jobs seen.)
    assert info["fires"] >= jobs and info["changes"] >= 1000 and info["refused"] == 0


def test_a_path_created_after_start_is_waited_for(monitor, make_app, tmp_path, cocaine_node):
    # Relative to the manifest's folder (make_app puts it in tmp_path / "app").
    inbox = tmp_path / "app" / "inbox"
    batches = monitor("inbox")
    assert cocaine_node.info("fs")["tasks"]["spool"]["watching"] == str(inbox.parent)
    run("mkdir", "-p", str(inbox / "deep"))
    run("cp", str(tmp_path / "app" / "app.py"), str(inbox / "deep" / "copy.py"))
    batches.wait_for(("added", inbox), ("added", inbox / "deep" / "copy.py"))
    info = cocaine_node.info("fs")["tasks"]["spool"]
    assert info["watching"] == str(inbox) and info["last-error"] is None
    run("cp", str(tmp_path / "app" / "app.py"), str(inbox / "later.py"))
    batches.wait_for(("added", inbox / "later.py"))
    # Removed and made again: watched again.
    run("rm", "-r", str(inbox))
    batches.wait_for(("deleted", inbox))
    run("mkdir", str(inbox))
    run("cp", str(tmp_path / "app" / "app.py"), str(inbox / "again.py"))
    batches.wait_for(("added", inbox / "again.py"))


def test_a_single_file_and_nothing_else(monitor, tmp_path):
    folder = tmp_path / "etc"
    folder.mkdir()
    target = folder / "app.conf"
    target.write_text("a = 1\n")
    batches = monitor(target)
    run("cp", str(target), str(folder / "other.conf"))  # a neighbour: not reported
    run("sh", "-c", f"echo 'b = 2' >> '{target}'")
    batches.wait_for(("modified", target))
    run("mv", str(folder / "other.conf"), str(target))  # replaced, as editors save
    run("sh", "-c", f"echo 'c = 3' >> '{target}'")
    wait_until(lambda: len(batches.all()) >= 2, timeout=15, message="a second batch")
    assert {path for _, path in batches.changes()} == {str(target)}


def test_not_recursive(monitor, tmp_path):
    watched = tmp_path / "watched"
    (watched / "sub").mkdir(parents=True)
    batches = monitor(watched, recursive=False, debounce=0.02)
    run("touch", str(watched / "sub" / "deep.txt"))
    run("touch", str(watched / "top.txt"))
    batches.wait_for(("added", watched / "top.txt"))
    assert str(watched / "sub" / "deep.txt") not in {path for _, path in batches.changes()}


def test_a_missing_folder_is_a_manifest_error(tmp_path):
    (tmp_path / "app.py").write_text("def spool(request):\n    pass\n")
    (tmp_path / "manifest.json").write_text(json.dumps({
        "type": "python", "args": {"source": "app.py"},
        "tasks": {"spool": {"type": "filesystem-monitor", "path": "no/such/folder"}}}))
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / "manifest.json")
    assert (f"tasks.spool.path: neither {tmp_path}/no/such/folder nor its folder "
            f"{tmp_path}/no/such exists") in str(caught.value)
    # A missing path in an existing folder is fine: it is waited for.
    (tmp_path / "manifest.json").write_text(json.dumps({
        "type": "python", "args": {"source": "app.py"},
        "tasks": {"spool": {"type": "filesystem-monitor", "path": "later"}}}))
    assert load_manifest(tmp_path / "manifest.json").tasks["spool"].options == {
        "path": "later", "recursive": True, "debounce": 0.05}
