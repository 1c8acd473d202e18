"""The template is the last process of its app the kernel's OOM killer takes (losing it costs
every slave), and its slaves do not inherit that protection (``backends/process.py``,
``backends/template.py``). The OOM storm itself, with a real memory limit, is in
``plugins/cocaine_cgroups/tests/test_oom.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cocaine_core.backends.process import (
    SLAVE_OOM_SCORE_STEP,
    TEMPLATE_OOM_SCORE_ADJ,
    oom_score_adj,
)
from cocaine_core.testing import RunningNode

APP = """
import json
import os
import subprocess


def scores(request):
    child = subprocess.run(["cat", "/proc/self/oom_score_adj"], capture_output=True,
                           text=True).stdout
    return json.dumps({"pid": os.getpid(),
                       "slave": int(open("/proc/self/oom_score_adj").read()),
                       "child": int(child)})
"""


def adj(pid: int) -> int:
    with open(f"/proc/{pid}/oom_score_adj") as f:
        return int(f.read())


def score(pid: int) -> int:
    """The kernel's own ranking: the OOM killer takes the highest."""
    with open(f"/proc/{pid}/oom_score") as f:
        return int(f.read())


def may_lower_scores() -> bool:
    """Whether this process has CAP_SYS_RESOURCE (root in a container often has not)."""
    with open("/proc/self/status") as f:
        caps = next(line for line in f if line.startswith("CapEff:"))
    return bool(int(caps.split()[1], 16) >> 24 & 1)


def test_the_template_is_protected_from_the_oom_killer_and_its_slaves_are_not(
        cocaine_node: RunningNode, make_app: Any) -> None:
    cocaine_node.add_app("scored", make_app(APP, tasks={"scores": {"type": "native-server"}},
                                            engine={"pool-limit": 2}))
    template = cocaine_node.engine("scored").backend.template.pid
    with cocaine_node.client() as client:
        seen = json.loads(client.call("scored", "scores", timeout=30))
    node = adj(os.getpid())  # what a process the node starts gets
    if may_lower_scores():
        assert adj(template) == TEMPLATE_OOM_SCORE_ADJ
        assert seen["slave"] == max(0, node)
    else:  # the template keeps the node's score; its slaves raise theirs above it
        assert adj(template) == node
        assert seen["slave"] == min(1000, max(0, node + SLAVE_OOM_SCORE_STEP))
    assert seen["slave"] >= 0 and seen["slave"] > adj(template)
    assert seen["child"] == seen["slave"] == adj(seen["pid"])  # what a handler starts too
    assert score(template) < score(seen["pid"])


def test_without_privilege_the_template_keeps_its_score_quietly(tmp_path: Path) -> None:
    """An unprivileged node cannot lower a score: it leaves it as it is and says nothing
    louder than debug; a slave may still set its own to 0 or higher."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to user nobody")
    script = textwrap.dedent("""
        import ctypes, logging, os, subprocess, sys
        from cocaine_core.backends import process, template
        logging.basicConfig(level=logging.INFO)
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: own /proc/self again
        child = subprocess.Popen(["sleep", "30"])
        try:
            before = process.oom_score_adj(child.pid)
            lowered = process.protect_from_oom_killer(child.pid)
            after = process.oom_score_adj(child.pid)
            template.reset_oom_score_adj(max(0, process.oom_score_adj() or 0) + 5)
            print(before, lowered, after, process.oom_score_adj())
        finally:
            child.kill()
            child.wait()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    before, lowered, after, mine = done.stdout.split()
    assert lowered == "False" and before == after
    assert int(mine) == max(0, oom_score_adj() or 0) + 5
    assert "WARNING" not in done.stderr and "ERROR" not in done.stderr
