"""Fixtures of the timer tests: an app that records every job, and a driver on a fake engine."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from cocaine_timers.clock import ManualClock

from cocaine_core.engine import Job
from cocaine_core.manifest import TaskConfig

#: An app whose handlers append one JSON line per job to RECORD: event, meta, start, end.
RECORDER = '''
import json, os, time

RECORD = {record!r}


def _record(request, start, **extra):
    line = json.dumps({{"event": request.event, "meta": request.meta, "start": start,
                        "end": time.time(), "pid": os.getpid(), **extra}}) + "\\n"
    fd = os.open(RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _runs():
    try:
        with open(RECORD) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0
'''


class Recorder:
    """Reads the lines an app's handlers recorded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def jobs(self) -> list[dict[str, Any]]:
        """Every recorded job, in the order they finished."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def code(self, handlers: str) -> str:
        """App source: the recording helpers followed by ``handlers``."""
        return RECORDER.format(record=str(self.path)) + handlers


@pytest.fixture
def recorder(tmp_path: Path) -> Recorder:
    """A recorder writing to a file in the test's temporary folder."""
    return Recorder(tmp_path / "record.jsonl")


@attrs.define
class FakeEngine:
    """Just enough engine for a driver: ``submit`` keeps jobs for the test to end."""

    jobs: list[Job] = attrs.field(factory=list)
    refuse: bool = False
    config: Any = attrs.field(factory=lambda: type("Config", (), {"job_timeout": None})())
    name: str = "test"

    def submit(self, job: Job) -> None:
        """Keep the job, or refuse it at once like a full queue."""
        if self.refuse:
            job.refuse("queue is full")
            return
        self.jobs.append(job)


@pytest.fixture
def fake_driver() -> Callable[..., tuple[Any, FakeEngine, ManualClock]]:
    """``fake_driver(DriverClass, options, wall=...)``: a started driver on a fake engine and
    a ``ManualClock``."""

    def make(driver_class: type, options: dict[str, Any], wall: float = 1_700_000_000.0,
             ) -> tuple[Any, FakeEngine, ManualClock]:
        from cocaine_core.schema import check_keys

        values, problems = check_keys(options, driver_class.keys, "task")
        assert not problems, problems
        task = TaskConfig(name="task", type="timer", event="tick", options=values)
        engine = FakeEngine()
        clock = ManualClock(wall=wall)
        driver = driver_class(task, engine, clock=clock)
        driver.begin()
        return driver, engine, clock

    return make
