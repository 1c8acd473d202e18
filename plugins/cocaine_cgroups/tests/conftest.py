"""Fixtures for the cgroups plugin's tests: the machine's layout, a node with a name of its own,
and a guard that no test leaves a cgroup behind (it removes any it finds, then fails)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cocaine_cgroups import plugin
from cocaine_cgroups.cgroupfs import remove_dir
from cocaine_cgroups.hierarchy import Layout, detect
from cocaine_cgroups.placement import PARENT, safe_name

from cocaine_core.testing import RunningNode, free_port

#: The node name every test node uses: unique to this test run, so nothing else is touched.
NODE_NAME = f"cgtest-{os.getpid()}"


def leftover_groups(layout: Layout, node: str = NODE_NAME) -> list[Path]:
    """Groups of test nodes (every name starting with ``node``) that exist now."""
    found = []
    for hierarchy in layout.hierarchies:
        parent = hierarchy.own / PARENT
        if parent.is_dir():
            found += [c for c in parent.iterdir() if c.name.startswith(safe_name(node))]
    return found


def require(layout: Layout, *controllers: str) -> None:
    """Skip the test unless root and every one of ``controllers`` is usable here."""
    if os.geteuid() != 0:
        pytest.skip("managing cgroups needs root here (no delegated subtree is set up)")
    for controller in controllers:
        if layout.hierarchy_of(controller) is None:
            pytest.skip(f"this machine lacks the {controller} controller: "
                        f"{layout.missing_reason(controller)}")


@contextlib.contextmanager
def held_by_another_process(*paths: Path) -> Iterator[None]:
    """Another live process holds the lock on each group folder of ``paths``, as the node
    that made them would (a live twin of the same name)."""
    opens = "".join(f"fd = os.open({str(p)!r}, os.O_RDONLY | os.O_DIRECTORY)\n"
                    "fcntl.flock(fd, fcntl.LOCK_EX)\nfds.append(fd)\n" for p in paths)
    process = subprocess.Popen(
        [sys.executable, "-c", f"import fcntl, os, sys\nfds = []\n{opens}"
                               "print('held', flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None and process.stdout is not None
    try:
        assert process.stdout.readline() == "held\n"
        yield
    finally:
        process.stdin.close()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def layout() -> Layout:
    """This machine's cgroup layout."""
    return detect()


@pytest.fixture(autouse=True)
def _no_cgroup_left_behind(layout: Layout) -> Iterator[None]:
    """Fail a test that leaves a cgroup of the test node behind, after removing it."""
    yield
    plugin.use_layout(None)
    left = leftover_groups(layout)
    for path in left:
        remove_dir(path, timeout=5)
    for hierarchy in layout.hierarchies:
        with contextlib.suppress(OSError):  # only when empty: others' groups stay
            (hierarchy.own / PARENT).rmdir()
    assert not left, f"cgroups left behind: {left}"


@pytest.fixture
def cg_node() -> Iterator[RunningNode]:
    """A running node named ``NODE_NAME``; stopped, with every app, after the test."""
    run_dir = Path("/tmp") / f"cocaine-cgtest-{free_port()}"
    node = RunningNode(run_dir=run_dir, name=NODE_NAME)
    node.start()
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def group_dir(layout: Layout) -> Callable[[str, str], Path]:
    """``group_dir(controller, app)``: where the test node's group of ``app`` is for
    ``controller``."""
    def where(controller: str, app: str) -> Path:
        hierarchy = layout.hierarchy_of(controller)
        assert hierarchy is not None
        return hierarchy.own / PARENT / f"{NODE_NAME}:{app}"
    return where
