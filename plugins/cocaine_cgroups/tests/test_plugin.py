"""The plugin on a live node: slaves confined from the start, limits enforced by the kernel,
usage in info, groups removed on stop."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cocaine_cgroups import plugin
from cocaine_cgroups.hierarchy import Layout
from cocaine_cgroups.machine import available
from cocaine_cgroups.placement import PARENT

from cocaine_core.errors import CocaineError, ServiceError
from cocaine_core.manifest import load_manifest
from cocaine_core.testing import RunningNode, wait_until

from .conftest import NODE_NAME, held_by_another_process, leftover_groups, require

APP = '''
import json
import os
import subprocess
import tempfile

AT_IMPORT = open("/proc/self/cgroup").read()


def where(request):
    return json.dumps({"pid": os.getpid(), "at_import": AT_IMPORT,
                       "now": open("/proc/self/cgroup").read(),
                       "cpus": sorted(os.sched_getaffinity(0))})


def hog(request):
    chunks = [b"\\x01" * (1 << 20) for _ in range(int(request.data))]
    return str(len(chunks))


def bomb(request):
    """Fork until the kernel refuses (at most a bound), children forking too; then clean up."""
    read_end, write_end = os.pipe()
    children, error = [], None
    for _ in range(int(request.data)):
        try:
            pid = os.fork()
        except OSError as exc:
            error = exc.errno
            break
        if pid == 0:
            os.close(write_end)
            try:
                grandchild = os.fork()
            except OSError:
                grandchild = -1
            os.read(read_end, 1)
            if grandchild > 0:
                os.waitpid(grandchild, 0)
            os._exit(0)
        children.append(pid)
    os.close(write_end)
    os.close(read_end)
    for pid in children:
        os.waitpid(pid, 0)
    return json.dumps({"children": len(children), "error": error})


def orphan(request):
    return str(subprocess.Popen(["sleep", "60"], start_new_session=True).pid)
'''

TASKS = {name: {"type": "native-server"} for name in ("where", "hog", "bomb", "orphan")}


def start(node: RunningNode, make_app: Callable[..., Path], name: str,
          limits: dict[str, Any], **engine: Any) -> None:
    node.add_app(name, make_app(APP, tasks=TASKS, engine={"resource-limits": limits, **engine}))


def call(node: RunningNode, app: str, event: str, data: bytes = b"") -> bytes:
    with node.client() as client:
        return client.call(app, event, data, timeout=60)


def procs(path: Path) -> set[int]:
    return {int(pid) for pid in (path / "cgroup.procs").read_text().split()}


def cgroup_of(text: str, controller: str) -> str:
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    raise AssertionError(f"no {controller} line in {text!r}")


def test_template_and_slaves_run_in_the_group_from_their_first_instruction(
        cg_node: RunningNode, make_app: Callable[..., Path], layout: Layout,
        group_dir: Callable[[str, str], Path]) -> None:
    require(layout, "pids", "memory")
    start(cg_node, make_app, "confined", {"pids": {"pids.max": 64},
                                          "memory": {"memory.limit_in_bytes": "256M"}},
          **{"pool-min": 1})
    info = wait_until(lambda: (i := cg_node.info("confined"))["pool"]["idle"] and i,
                      timeout=30, message="a warm slave")
    slave_pid = info["slaves"][0]["pid"]
    template_pid = cg_node.engine("confined").backend.template.pid
    for controller in ("pids", "memory"):
        members = procs(group_dir(controller, "confined"))
        assert {slave_pid, template_pid} <= members, controller
    seen = json.loads(call(cg_node, "confined", "where"))
    assert seen["pid"] == slave_pid  # that very slave's first job
    for controller in ("pids", "memory"):
        hierarchy = layout.hierarchy_of(controller)
        assert hierarchy is not None
        expected = "/" + str(group_dir(controller, "confined").relative_to(hierarchy.mountpoint))
        assert cgroup_of(seen["at_import"], controller) == expected  # the template's import
        assert cgroup_of(seen["now"], controller) == expected


def test_past_the_memory_limit_the_kernel_kills_and_the_job_says_so(
        cg_node: RunningNode, make_app: Callable[..., Path], layout: Layout,
        group_dir: Callable[[str, str], Path]) -> None:
    require(layout, "memory")
    memory = {"memory.limit_in_bytes": "64M"}
    if (group_dir("memory", "x").parent.parent / "memory.memsw.limit_in_bytes").exists():
        memory["memory.memsw.limit_in_bytes"] = "64M"  # or swap would save it
    start(cg_node, make_app, "hungry", {"memory": memory}, **{"pool-limit": 1})
    with pytest.raises(ServiceError) as caught:
        call(cg_node, "hungry", "hog", b"512")
    assert caught.value.code == 500
    assert "out of memory" in caught.value.message
    assert "memory limit of 64 MiB" in caught.value.message
    assert "already retried once" in caught.value.message
    assert call(cg_node, "hungry", "hog", b"8") == b"8"  # a fresh slave took over
    info = cg_node.info("hungry")
    assert info["cgroups"]["usage"]["oom-kills"] == 2
    assert info["spawns"] >= 3


def test_a_pids_limit_contains_a_fork_bomb(cg_node: RunningNode, make_app: Callable[..., Path],
                                           layout: Layout,
                                           group_dir: Callable[[str, str], Path]) -> None:
    require(layout, "pids")
    start(cg_node, make_app, "bomber", {"pids": {"pids.max": 24}}, **{"pool-limit": 1})
    result = json.loads(call(cg_node, "bomber", "bomb", b"200"))
    assert result["error"] == 11  # EAGAIN: the kernel refused the fork
    assert 0 < result["children"] < 24
    events = (group_dir("pids", "bomber") / "pids.events").read_text()
    assert int(events.split()[-1]) > 0
    wait_until(lambda: int((group_dir("pids", "bomber") / "pids.current").read_text()) < 12,
               timeout=30, message="the bomb's processes to end")
    assert json.loads(call(cg_node, "bomber", "bomb", b"3"))["children"] == 3


def test_a_template_that_cannot_fork_refuses_jobs_and_keeps_running(
        cg_node: RunningNode, make_app: Callable[..., Path], layout: Layout) -> None:
    require(layout, "pids")
    start(cg_node, make_app, "crowded", {"pids": {"pids.max": 1}}, **{"pool-limit": 1})
    with pytest.raises(ServiceError) as caught:
        call(cg_node, "crowded", "where")
    assert caught.value.code == 503
    assert "could not start one: fork failed" in caught.value.message
    assert cg_node.info("crowded")["state"] == "running"  # a limit, not the app's code
    assert cg_node.engine("crowded").backend.template.poll() is None


def test_cpuset_cpus_is_the_handlers_affinity(cg_node: RunningNode,
                                              make_app: Callable[..., Path], layout: Layout,
                                              group_dir: Callable[[str, str], Path]) -> None:
    require(layout, "cpuset")
    cpus, _ = available(layout, "cpus")
    assert cpus
    cpu = max(cpus)
    start(cg_node, make_app, "pinned", {"cpuset": {"cpuset.cpus": str(cpu)}})
    assert json.loads(call(cg_node, "pinned", "where"))["cpus"] == [cpu]
    mems = group_dir("cpuset", "pinned") / "cpuset.mems"
    assert mems.read_text() == (mems.parent.parent / "cpuset.mems").read_text()  # inherited


def test_info_shows_the_group_and_its_usage(cg_node: RunningNode,
                                            make_app: Callable[..., Path], layout: Layout,
                                            group_dir: Callable[[str, str], Path]) -> None:
    require(layout, "memory", "pids")
    limits = {"memory": {"memory.max": "256M"}, "pids": {"pids.max": 64}}
    start(cg_node, make_app, "counted", limits)
    call(cg_node, "counted", "hog", b"16")
    with cg_node.client() as client:  # what `cocaine info --json` prints
        section = client.control("info")["apps"]["counted"]["cgroups"]
    assert section["group"] == f"{PARENT}/{NODE_NAME}:counted"
    assert section["paths"]["memory"] == str(group_dir("memory", "counted"))
    assert section["hierarchies"]["memory"] == "v1"
    assert section["limits"] == limits
    usage = section["usage"]
    assert usage["memory-bytes"] > 0 and usage["memory-peak-bytes"] >= 16 << 20
    assert usage["pids"] >= 2  # the template and a slave, and its threads
    assert usage["cpu-seconds"] > 0
    assert usage["oom-kills"] == 0


def test_stopping_the_app_kills_leftovers_and_removes_the_group(
        cg_node: RunningNode, make_app: Callable[..., Path], layout: Layout) -> None:
    require(layout, "pids")
    start(cg_node, make_app, "leaky", {"pids": {"pids.max": 64}})
    orphan = int(call(cg_node, "leaky", "orphan"))
    paths = [Path(p) for p in cg_node.info("leaky")["cgroups"]["paths"].values()]
    assert all(orphan in procs(path) for path in paths)
    cg_node.remove_app("leaky")
    assert not any(path.exists() for path in paths)
    assert not _alive(orphan)
    assert not leftover_groups(layout)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_crashed_nodes_groups_go_when_it_starts_again(
        cg_node: RunningNode, make_app: Callable[..., Path], layout: Layout,
        group_dir: Callable[[str, str], Path]) -> None:
    require(layout, "pids")
    stale = group_dir("pids", "gone")
    stale.mkdir(parents=True)
    start(cg_node, make_app, "fresh", {"pids": {"pids.max": 64}})
    assert not stale.exists()
    assert group_dir("pids", "fresh").is_dir()


def test_a_missing_controller_fails_the_start_saying_how_to_fix_it(
        cg_node: RunningNode, make_app: Callable[..., Path], layout: Layout) -> None:
    require(layout, "pids")
    without_memory = Layout(tuple(h for h in layout.hierarchies if "memory" not in
                                  h.controllers), layout.kernel)
    plugin.use_layout(without_memory)
    with pytest.raises(CocaineError) as caught:
        start(cg_node, make_app, "nomem", {"memory": {"memory.max": "64M"},
                                           "pids": {"pids.max": 64}})
    message = str(caught.value)
    assert "needs the memory controller" in message
    assert "mount -t cgroup -o memory" in message
    assert "nomem" not in cg_node.node.apps
    assert not leftover_groups(layout)


def test_apps_without_limits_get_no_group(cg_node: RunningNode, make_app: Callable[..., Path],
                                         layout: Layout) -> None:
    cg_node.add_app("free", make_app(APP, tasks=TASKS))
    assert "cgroups" not in cg_node.info("free")
    seen = json.loads(call(cg_node, "free", "where"))
    assert f"{NODE_NAME}:" not in seen["now"]
    assert os.getpid() != seen["pid"]


def test_a_redeploy_runs_each_version_in_its_own_group(
        cg_node: RunningNode, make_app: Callable[..., Path], layout: Layout,
        group_dir: Callable[[str, str], Path]) -> None:
    """The new version starts while the old one drains: two groups, then only the new one."""
    require(layout, "pids")
    start(cg_node, make_app, "twice", {"pids": {"pids.max": 64}})
    old = group_dir("pids", "twice")
    assert (old / "pids.max").read_text().strip() == "64"
    manifest = load_manifest(make_app(APP, tasks=TASKS,
                                      engine={"resource-limits": {"pids": {"pids.max": 48}}}))
    cg_node.run(cg_node.node.run_app, "twice", manifest)
    new = Path(cg_node.info("twice")["cgroups"]["paths"]["pids"])
    assert new.name == f"{NODE_NAME}:twice:2"
    assert (new / "pids.max").read_text().strip() == "48"
    wait_until(lambda: not old.exists(), timeout=30, message="the old version's group to go")
    seen = json.loads(call(cg_node, "twice", "where"))
    assert cgroup_of(seen["now"], "pids").endswith(f"{NODE_NAME}:twice:2")


def test_the_plugin_implements_its_hooks() -> None:
    from cocaine_core.plugins import get_host

    record = get_host().record("cgroups")
    assert record is not None and record.loaded and not record.errors
    assert record.types == {"engine_keys": ["resource-limits"]}
    hooks = {impl.plugin_name for name in (
        "cocaine_validate_manifest", "cocaine_app_starting", "cocaine_slave_spawned",
        "cocaine_slave_exited", "cocaine_app_stopped", "cocaine_app_info")
        for impl in getattr(get_host().pm.hook, name).get_hookimpls()}
    assert "cgroups" in hooks


def test_a_live_twin_of_the_same_name_is_left_alone(
        cg_node: RunningNode, make_app: Callable[..., Path], layout: Layout) -> None:
    """Another live process of the node's name holds its groups: they are not taken for
    leftovers, and an app of the same name takes the next name."""
    require(layout, "pids")
    hierarchy = layout.hierarchy_of("pids")
    assert hierarchy is not None
    theirs = [hierarchy.own / PARENT / f"{NODE_NAME}:{app}" for app in ("theirs", "mine")]
    try:
        for path in theirs:
            path.mkdir(parents=True)
        with held_by_another_process(*theirs):
            start(cg_node, make_app, "mine", {"pids": {"pids.max": 64}})
            ours = Path(cg_node.info("mine")["cgroups"]["paths"]["pids"])
            assert ours.name == f"{NODE_NAME}:mine:2"
            assert all(path.is_dir() for path in theirs)
            cg_node.remove_app("mine")
            assert not ours.exists()
            assert all(path.is_dir() for path in theirs)
    finally:
        for path in theirs:
            if path.exists():
                path.rmdir()


def _entries(folder: Path) -> set[str]:
    try:
        return {entry.name for entry in folder.iterdir()}
    except OSError:
        return set()


def test_the_node_writes_no_lock_file_outside_its_groups_and_leaves_nothing(
        cg_node: RunningNode, make_app: Callable[..., Path], layout: Layout) -> None:
    """Issue 12: the plugin wrote ``/run/cocaine/cgroups-<node>.lock`` whatever the node's
    run folder, and left it there. A node's claim on its groups is a lock on the groups'
    own folders: nothing in ``/run/cocaine``, the temporary folder or the run folder."""
    require(layout, "pids")
    folders = [Path("/run/cocaine"), Path(tempfile.gettempdir()),
               Path(tempfile.gettempdir()) / f"cocaine-{os.getuid()}", cg_node.node.run_dir]
    before = {folder: _entries(folder) for folder in folders}
    start(cg_node, make_app, "tidy", {"pids": {"pids.max": 64}})
    assert call(cg_node, "tidy", "where")
    for folder in folders:
        assert not [e for e in _entries(folder) - before[folder] if "cgroups" in e or
                    NODE_NAME in e], folder
    cg_node.remove_app("tidy")
    for folder in folders[:-1]:
        assert not [e for e in _entries(folder) if NODE_NAME in e], folder
