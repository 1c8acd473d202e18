"""An app's group on disk: made on a v2 tree, counted, swept when stale, refused politely."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cocaine_cgroups import ownership
from cocaine_cgroups.delegation import move_node_out_of
from cocaine_cgroups.errors import CgroupError
from cocaine_cgroups.groups import AppGroup, sweep_stale
from cocaine_cgroups.hierarchy import V2, Hierarchy, Layout
from cocaine_cgroups.parameters import parse_limits
from cocaine_cgroups.placement import PARENT

from cocaine_core.testing import wait_until

from .conftest import NODE_NAME, held_by_another_process, require

CONTROLLERS = frozenset({"cpu", "cpuset", "memory", "pids"})


def fake_v2(tmp_path: Path) -> Layout:
    """A cgroup v2 tree as plain folders: the node's group delegated every controller."""
    own = tmp_path / "system.slice" / "cocaine.service"
    own.mkdir(parents=True)
    for folder in (tmp_path, own):
        (folder / "cgroup.controllers").write_text(" ".join(sorted(CONTROLLERS)))
        (folder / "cgroup.subtree_control").write_text("")
        (folder / "cgroup.procs").write_text("")
    return Layout((Hierarchy(V2, tmp_path, CONTROLLERS, own, CONTROLLERS),))


def limits_of(raw: dict) -> object:
    limits, problems = parse_limits(raw)
    assert not problems
    return limits


def test_v2_group_is_made_beneath_the_node_with_controllers_handed_down(tmp_path: Path) -> None:
    layout = fake_v2(tmp_path)
    group = AppGroup("web1", "hello", limits_of({
        "memory": {"memory.limit_in_bytes": "64M", "memory.memsw.limit_in_bytes": "64M"},
        "cpu": {"cpu.shares": 512, "cpu.cfs_quota_us": 50000},
        "cpuset": {"cpuset.cpus": "1"},
        "pids": {"pids.max": 50},
    }), layout)
    group.create()
    own = layout.hierarchies[0].own
    path = own / PARENT / "web1:hello"
    assert [p.path for p in group.parts] == [path]
    for folder in (own, own / PARENT):
        assert (folder / "cgroup.subtree_control").read_text() == "+cpu +cpuset +memory +pids"
    files = {f.name: f.read_text() for f in path.iterdir()}
    assert files == {"memory.max": str(64 << 20), "memory.swap.max": "0", "cpu.weight": "58",
                     "cpu.max": "50000 100000", "cpuset.cpus": "1", "pids.max": "50"}
    group.join(4242)
    assert (path / "cgroup.procs").read_text() == "4242"


def test_refuses_what_the_hierarchy_cannot_express(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match=r"memory\.swappiness: has no cgroup v2 equivalent"):
        AppGroup("web1", "hello", limits_of({"memory": {"memory.swappiness": 0}}),
                 fake_v2(tmp_path))


def test_a_missing_controller_says_how_to_get_it(tmp_path: Path) -> None:
    layout = fake_v2(tmp_path)
    hierarchy = layout.hierarchies[0]
    layout = Layout((Hierarchy(V2, hierarchy.mountpoint, frozenset({"cpu"}), hierarchy.own,
                               CONTROLLERS),))
    with pytest.raises(CgroupError) as caught:
        AppGroup("web1", "hello", limits_of({"memory": {"memory.max": "1G"},
                                             "pids": {"pids.max": 9}}), layout)
    message = str(caught.value)
    assert "needs the memory, pids controllers" in message
    assert "echo +memory >" in message and "Delegate=yes" in message


def test_out_of_memory_is_explained_once_per_kill(tmp_path: Path) -> None:
    group = AppGroup("web1", "hello", limits_of({"memory": {"memory.max": "64M"}}),
                     fake_v2(tmp_path))
    group.create()
    events = group.parts[0].path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n")
    assert group.explain_exit(-9) is None
    events.write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
    assert group.explain_exit(-15) is None  # not how the kernel kills
    assert group.explain_exit(-9) == ("out of memory: the kernel killed it at the app's memory "
                                      "limit of 64 MiB (engine.resource-limits.memory)")
    assert group.explain_exit(-9) is None  # that kill is accounted for


def test_v2_node_moves_itself_into_a_leaf_only_when_alone(tmp_path: Path) -> None:
    own = fake_v2(tmp_path).hierarchies[0].own
    (own / "cgroup.procs").write_text(f"1\n{os.getpid()}\n")
    with pytest.raises(CgroupError, match=r"holds other processes too \(1\)"):
        move_node_out_of(own)
    (own / "cgroup.procs").write_text(f"{os.getpid()}\n")
    move_node_out_of(own)
    assert (own / PARENT / "node" / "cgroup.procs").read_text() == str(os.getpid())


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"])


def test_live_v2_group_joins_counts_and_kills(layout: Layout) -> None:
    """The v2 tree's own machinery (no controller needed): join, cpu.stat, cgroup.kill."""
    require(layout)
    if layout.unified is None:
        pytest.skip("this machine has no cgroup v2 tree mounted")
    group = AppGroup(NODE_NAME, "v2", limits_of({}), layout)
    group.parts = [p for p in group.parts if p.hierarchy.version == V2]
    group.create()
    process = sleeper()
    try:
        group.join(process.pid)
        path = group.parts[0].path
        assert process.pid in map(int, (path / "cgroup.procs").read_text().split())
        relative = path.relative_to(layout.unified.mountpoint)
        assert f"0::/{relative}\n" in Path(f"/proc/{process.pid}/cgroup").read_text()
        assert isinstance(group.usage()["cpu-seconds"], float)
        assert group.remove()
        assert process.wait(timeout=10) == -9
        assert not path.exists()
    finally:
        process.kill()
        process.wait()
        group.remove()


def test_stale_groups_of_this_node_are_swept(layout: Layout) -> None:
    """A dead node's groups (with a process still inside) go; groups a live process holds
    (this node's running apps, a live twin's) stay, and so do other nodes'."""
    require(layout, "pids")
    hierarchy = layout.hierarchy_of("pids")
    assert hierarchy is not None
    parent = hierarchy.own / PARENT
    ghost, alive = parent / f"{NODE_NAME}:ghost", parent / f"{NODE_NAME}:alive"
    twins = parent / f"{NODE_NAME}:twins"
    other = parent / f"{NODE_NAME}x:other"  # another node's: not ours to touch
    process = sleeper()
    paths = (ghost, alive, twins, other)
    held = None
    try:
        for path in paths:
            path.mkdir(parents=True)
        (ghost / "cgroup.procs").write_text(str(process.pid))
        held = ownership.hold(alive)
        assert held is not None
        with held_by_another_process(twins):
            removed = sweep_stale(layout, NODE_NAME)
            assert twins.is_dir()
        assert removed == [ghost]
        assert process.wait(timeout=10) == -9
        assert alive.is_dir() and other.is_dir() and not ghost.exists()
    finally:
        ownership.let_go(held)
        process.kill()
        process.wait()
        for path in paths:
            if path.exists():
                path.rmdir()


def test_without_permission_the_message_says_how_to_grant_it(layout: Layout,
                                                               tmp_path: Path) -> None:
    """Not root: run the same code as user nobody, on this machine's real hierarchies (the
    interpreter starts as root, since it may live in root's home, then drops to nobody)."""
    require(layout, "pids")
    script = textwrap.dedent(f"""
        import os
        from cocaine_cgroups.groups import AppGroup
        from cocaine_cgroups.hierarchy import detect
        from cocaine_cgroups.parameters import parse_limits
        limits, _ = parse_limits({{"pids": {{"pids.max": 10}}}})
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        try:
            AppGroup({NODE_NAME!r}, "perm", limits, detect()).create()
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert "CgroupError cannot create the cgroup" in result.stdout, result.stderr
    assert "permission denied to uid 65534" in result.stdout
    assert "needs root" in result.stdout and "Delegate=yes" in result.stdout


def test_a_group_in_use_is_not_taken_over(layout: Layout) -> None:
    """A group another live process holds (a running version, a live twin) is left alone:
    the new group takes the next name (``:2``), then the plain one once it is free."""
    require(layout, "pids")
    limits = limits_of({"pids": {"pids.max": 10}})
    first = AppGroup(NODE_NAME, "twin", limits, layout)
    first.create()
    second = AppGroup(NODE_NAME, "twin", limits, layout)
    try:
        second.create()
        assert second.name == f"{NODE_NAME}:twin:2"
        assert all(p.path.is_dir() for p in first.parts + second.parts)
    finally:
        first.remove()
        second.remove()
    wait_until(lambda: not any(p.path.exists() for p in first.parts + second.parts),
               timeout=5, message="the group's folders to go")
    third = AppGroup(NODE_NAME, "twin", limits, layout)
    third.create()
    assert third.name == f"{NODE_NAME}:twin"
    third.remove()


def test_leftovers_are_told_by_name_and_lock(layout: Layout) -> None:
    dead = _dead_pid()
    mine = os.getpid()
    assert ownership.is_ours("web1:hello", "web1")
    assert ownership.is_ours("web1:hello:2", "web1")
    assert ownership.is_ours("web_1:hello", "web 1")
    assert ownership.is_ours(f"web1+{dead}:hello", "web1")  # an earlier version's, dead
    assert not ownership.is_ours(f"web1+{mine}:hello", "web1")
    assert not ownership.is_ours("web1x:hello", "web1")
    assert not ownership.is_ours("web1.5:hello", "web1")
    assert not ownership.is_ours("node", "web1")
    require(layout, "pids")
    hierarchy = layout.hierarchy_of("pids")
    assert hierarchy is not None
    path = hierarchy.own / PARENT / f"{NODE_NAME}:locked"
    path.mkdir(parents=True)
    try:
        fd = ownership.hold(path)
        assert fd is not None
        assert ownership.hold(path) is None  # held, even by another descriptor of ours
        ownership.let_go(fd)
        fd = ownership.hold(path)
        assert fd is not None
        path.rmdir()
        ownership.let_go(fd)
        assert ownership.hold(path) is None  # gone
    finally:
        if path.exists():
            path.rmdir()


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid
