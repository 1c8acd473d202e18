"""Property-based fuzzing of every decoder (issue 13): a node with storage.

CI runs a moderate number of examples per property (about a minute for the folder). A longer
hunt: ``COCAINE_FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/fuzz`` (examples per property).
Hypothesis keeps failing examples in ``.hypothesis/`` and replays them first.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cocaine_core.node import Node
from cocaine_core.storages.files import FileStorage
from cocaine_core.testing import RunningNode, free_port, wait_until, write_app

ECHO = "def echo(request):\n    return request.data\n"


@pytest.fixture
def fuzz_node(tmp_path: Path) -> Iterator[RunningNode]:
    """A node with storage (so deploys get past "no storage") serving app ``fuzz-app``
    (event ``echo``), shared by one test's examples; stopped after it."""
    folder = tmp_path
    run_dir = Path("/tmp") / f"cocaine-fuzz-{free_port()}"  # short: ipc paths have a limit
    running = RunningNode(run_dir=run_dir)
    loop_node = Node(listen=running.endpoint, run_dir=run_dir,
                     storage=FileStorage(f"files://{folder / 'storage'}"))
    running.node = loop_node
    running.start()
    try:
        running.add_app("fuzz-app", write_app(folder / "app", ECHO,
                                               {"echo": {"type": "native-server"}}))
        wait_until(lambda: running.info("fuzz-app")["state"] == "running", timeout=60,
                   message="the fuzz app to run")
        yield running
    finally:
        running.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
