"""The ZeroMQ drivers' numbers have ranges (issue 13): a ``backlog`` of 1e12 passed the check
and was a 500 OverflowError when the socket was made; now it is a 400 by key path."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from cocaine_core import archive
from cocaine_core.errors import ManifestError, ServiceError
from cocaine_core.manifest import parse_manifest
from cocaine_core.testing import leftover_slaves, write_app

CODE = "def work(request):\n    return request.data\n"


@pytest.mark.parametrize("kind", ["zeromq-server", "zeromq-sink"])
def test_a_backlog_of_1e12_is_a_400_naming_the_range(node_process, tmp_path, kind):
    node = node_process()
    folder = tmp_path / "app"
    write_app(folder, CODE, {"work": {"type": kind, "backlog": 1e12}})
    code = archive.pack_source(folder / "app.py")
    data = json.loads((folder / "manifest.json").read_text())
    with node.client() as client:
        with pytest.raises(ServiceError) as error:
            client.control("deploy", name="app", manifest=data, archive=code,
                           sha256=archive.sha256(code))
        assert error.value.code == 400, error.value
        assert ("tasks.work.backlog: must be an integer from 1 to 100000, got 1000000000000"
                in error.value.message)
        assert client.control("list") == []
    assert not (node.storage / "apps" / "app").exists()
    assert leftover_slaves(node.process.pid) == []


@pytest.mark.parametrize(("key", "value", "message"), [
    ("backlog", 100_001, "must be an integer from 1 to 100000, got 100001"),
    ("max-message-size", 2**30 + 1,
     "must be an integer from 1 to 1073741824, got 1073741825"),
    ("max-message-size", 2**63, "must be an integer from 1 to 1073741824, got "),
])
def test_zeromq_numbers_out_of_range_are_refused(tmp_path, key, value, message):
    problems = problems_of(tmp_path, {key: value})
    assert problems[f"tasks.work.{key}"].startswith(message), problems


@pytest.mark.parametrize("value", [0, -1, math.inf, math.nan, 2.5])
def test_a_backlog_that_is_no_count_is_refused(tmp_path, value):
    assert "tasks.work.backlog" in problems_of(tmp_path, {"backlog": value})


def problems_of(folder: Path, keys: dict[str, Any]) -> dict[str, str]:
    """The problems by key path of a manifest with one zeromq-server task ``work``."""
    (folder / "app.py").write_text(CODE)
    data = {"type": "python", "args": {"source": "app.py"},
            "tasks": {"work": {"type": "zeromq-server", **keys}}}
    try:
        parse_manifest(data, root=folder)
    except ManifestError as exc:
        return {p.path: p.message for p in exc.problems}
    return {}
