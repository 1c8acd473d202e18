"""Fixtures of the engine's tests: an engine on the fake backend (``fake_backend.py``)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cocaine_core.appinfo import AppInfo
from cocaine_core.engine import Engine
from cocaine_core.manifest import load_manifest
from tests.engine.fake_backend import FakeBackend, FakeBackendPlugin, reset_fakes


@pytest.fixture
def fake_engine(inline_plugin: Any, make_app: Any) -> Iterator[Callable[..., Engine]]:
    """``fake_engine(**engine_keys)``: an Engine on the ``fake`` backend (not started)."""
    inline_plugin(FakeBackendPlugin(), name="fake-backend")
    FakeBackend.made.clear()
    reset_fakes()
    run_dir = Path(tempfile.mkdtemp(prefix="ce-"))  # short: ipc paths have a limit

    def make(**engine: Any) -> Engine:
        keys = {"backend": "fake", **{k.replace("_", "-"): v for k, v in engine.items()}}
        manifest = load_manifest(make_app("def echo(request):\n    return request.data\n",
                                          engine=keys))
        return Engine(AppInfo(name="app", manifest=manifest, run_dir=run_dir))

    yield make
    reset_fakes()
    shutil.rmtree(run_dir, ignore_errors=True)
