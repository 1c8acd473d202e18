"""Fixtures of the worker libraries' tests: ``engine``, a fake engine (``fake_engine.py``)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fake_engine import FakeEngine


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    """A fake engine in a short temp folder (ipc paths are limited to ~100 bytes); its worker
    is killed and the folder removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="cfe-"))
    fake = FakeEngine(folder)
    try:
        yield fake
    finally:
        fake.close()
        shutil.rmtree(folder, ignore_errors=True)
