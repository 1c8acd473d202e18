"""Finding each controller's hierarchy and the node's own group, on several kinds of machine."""

from __future__ import annotations

from pathlib import Path

from cocaine_cgroups.hierarchy import V1, V2, build_layout, detect, parse_mountinfo

PROC_CGROUPS = """#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t1\t1
cpu\t1\t1\t1
cpuacct\t1\t1\t1
memory\t4\t23\t1
pids\t8\t1\t1
hugetlb\t0\t1\t1
"""

HYBRID_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""

HYBRID_CGROUP = """\
9:name=systemd:/system.slice/cocaine.service
8:pids:/system.slice/cocaine.service
4:memory:/system.slice/cocaine.service
3:cpuset:/
1:cpu,cpuacct:/system.slice/cocaine.service
0::/system.slice/cocaine.service
"""


def test_hybrid_machine_with_comounted_cpu_and_cpuacct() -> None:
    layout = build_layout(HYBRID_MOUNTS, HYBRID_CGROUP, PROC_CGROUPS)
    cpu = layout.hierarchy_of("cpu")
    assert cpu is not None and cpu is layout.hierarchy_of("cpuacct")
    assert cpu.version == V1
    assert cpu.own == Path("/sys/fs/cgroup/cpu,cpuacct/system.slice/cocaine.service")
    cpuset = layout.hierarchy_of("cpuset")
    assert cpuset is not None and cpuset.own == Path("/sys/fs/cgroup/cpuset")
    assert layout.unified is not None
    assert layout.unified.own == Path("/sys/fs/cgroup/unified/system.slice/cocaine.service")
    assert all("name=systemd" not in h.controllers for h in layout.hierarchies)


def test_pure_v2_machine(tmp_path: Path) -> None:
    """Controllers on v2 are those the node's own group may use (its cgroup.controllers)."""
    own = tmp_path / "system.slice" / "cocaine.service"
    own.mkdir(parents=True)
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (own / "cgroup.controllers").write_text("cpu memory pids\n")
    mounts = f"25 1 0:22 / {tmp_path} rw - cgroup2 cgroup2 rw\n"
    proc_cgroups = "".join(f"{name}\t0\t1\t1\n" for name in ("cpuset", "cpu", "memory", "pids"))
    layout = build_layout(mounts, "0::/system.slice/cocaine.service\n", proc_cgroups)
    memory = layout.hierarchy_of("memory")
    assert memory is not None and memory.version == V2 and memory.own == own
    assert layout.hierarchy_of("cpuset") is None
    reason = layout.missing_reason("cpuset")
    assert "not delegated" in reason and "+cpuset" in reason and str(own.parent) in reason


def test_bind_mounted_subtree_in_a_container() -> None:
    """A container sees its part of the hierarchy mounted at the mount point: the mount's root
    is cut from the group path."""
    mounts = "50 40 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n"
    layout = build_layout(mounts, "4:memory:/docker/abc/app\n", PROC_CGROUPS)
    memory = layout.hierarchy_of("memory")
    assert memory is not None and memory.own == Path("/sys/fs/cgroup/memory/app")


def test_escaped_mount_points_and_unknown_options() -> None:
    mounts = parse_mountinfo(r"1 1 0:1 / /cg\040here rw - cgroup cgroup rw,memory,clone_children"
                             "\n")
    assert mounts[0].mountpoint == Path("/cg here") and mounts[0].controllers == {"memory"}


def test_missing_reasons() -> None:
    layout = build_layout("", "", PROC_CGROUPS + "rdma\t0\t1\t0\n")
    assert "not in /proc/cgroups" in layout.missing_reason("nope")
    assert "cgroup_disable=rdma" in layout.missing_reason("rdma")
    assert "mount -t cgroup -o memory" in layout.missing_reason("memory")


def test_this_machine() -> None:
    """The live machine: every controller's own group exists and is a directory."""
    layout = detect()
    for hierarchy in layout.hierarchies:
        assert hierarchy.own.is_dir(), hierarchy
        assert (hierarchy.own / "cgroup.procs").exists()
