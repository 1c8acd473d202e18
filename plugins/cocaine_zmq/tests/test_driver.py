"""What the three ZeroMQ drivers share (``driver.py``): they end with their app, quietly.

A driver is closed by the engine (``await driver.close()``) once its app has stopped, and by
the plugin's ``cocaine_app_stopped`` for whatever is left; neither may log an error, and every
endpoint a driver bound is free again afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from cocaine_core.manifest import load_manifest
from cocaine_core.testing import wait_until

CODE = '''
def work(request):
    return request.data
'''


def task_options(kind: str, tcp: Callable[[], str]) -> tuple[dict[str, str], list[str]]:
    """A task of ``kind`` with every socket it can have; and the endpoints it binds."""
    if kind == "zeromq-server":
        options = {"endpoint": tcp()}
        return options, [options["endpoint"]]
    if kind == "zeromq-sink":
        options = {"endpoint": tcp(), "publish": tcp()}
        return options, [options["endpoint"], options["publish"]]
    options = {"endpoint": tcp(), "publish": tcp()}  # subscriber: connects, binds publish
    return options, [options["publish"]]


@pytest.mark.parametrize("kind", ["zeromq-server", "zeromq-sink", "zeromq-subscriber"])
def test_redeploy_and_removal_log_no_error(kind, cocaine_node, make_app, tcp, is_free,
                                           caplog):
    """Deploy, redeploy (the first version stops and closes) and remove (the second stops):
    no ERROR record is logged, and every endpoint the two versions bound is free again."""
    caplog.set_level(logging.INFO)
    first, first_bound = task_options(kind, tcp)
    second, second_bound = task_options(kind, tcp)
    cocaine_node.add_app("z", make_app(CODE, tasks={"work": {"type": kind, **first}},
                                       name="v1"))
    manifest = load_manifest(make_app(CODE, tasks={"work": {"type": kind, **second}},
                                      name="v2"))
    cocaine_node.run(cocaine_node.node.run_app, "z", manifest)
    assert cocaine_node.info("z")["state"] == "running"
    cocaine_node.remove_app("z")
    errors = [f"{r.name}: {r.getMessage()}\n{r.exc_text or ''}" for r in caplog.records
              if r.levelno >= logging.ERROR]
    assert errors == []
    for endpoint in first_bound + second_bound:
        wait_until(lambda endpoint=endpoint: is_free(endpoint),
                   message=f"{endpoint} to be free")
