"""One bench run's settings and shared means: durations, rounds, a work folder, processes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.processes import ProcessGroup


@dataclass
class Settings:
    """How long and how often each scenario measures (``--quick`` shrinks them all)."""

    quick: bool
    rounds: int
    #: Throughput: seconds measured per system and round, after a warm-up.
    throughput_seconds: float
    warmup_seconds: float
    #: Latency (one request in flight): seconds per system and round.
    latency_seconds: float
    #: recurring-timer: ticks at ``timer_interval_ms``.
    timer_ticks: int
    timer_interval_ms: int
    #: filesystem-monitor: files written, one at a time.
    fs_writes: int
    #: Memory: apps deployed for "node RSS with many apps".
    many_apps: int
    #: Overload: seconds of 10x queue-limit in flight.
    overload_seconds: float
    inflight: int = 100

    @classmethod
    def make(cls, quick: bool, rounds: int | None = None) -> Settings:
        """The full settings, or the quick ones (each scenario briefly: CI)."""
        if quick:
            return cls(quick=True, rounds=rounds or 2, throughput_seconds=0.25,
                       warmup_seconds=0.1, latency_seconds=0.4, timer_ticks=20,
                       timer_interval_ms=100, fs_writes=5, many_apps=10, overload_seconds=1.0)
        return cls(quick=False, rounds=rounds or 5, throughput_seconds=2.0, warmup_seconds=0.3,
                   latency_seconds=2.0, timer_ticks=300, timer_interval_ms=100, fs_writes=40,
                   many_apps=50, overload_seconds=10.0)


@dataclass
class Bench:
    """What every scenario gets: settings, a work folder, the process group, options."""

    settings: Settings
    folder: Path
    group: ProcessGroup = field(default_factory=ProcessGroup)
    peers: bool = False
    python: str = sys.executable
    verbose: bool = True
    #: Servers shared by scenarios (started on first use, stopped by ``close_services``).
    services: dict[str, Any] = field(default_factory=dict)

    def say(self, text: str) -> None:
        """Progress on stderr (the table goes to stdout)."""
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    def subfolder(self, name: str) -> Path:
        """A fresh folder of the work folder."""
        path = self.folder / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def service(self, key: str, start: Callable[[], Any]) -> Any:
        """The shared server ``key``, started by ``start()`` the first time it is asked for."""
        if key not in self.services:
            self.services[key] = start()
        return self.services[key]

    def close_services(self) -> None:
        """Stop every shared server, the most recent first."""
        while self.services:
            _key, service = self.services.popitem()
            try:
                service.stop()
            except Exception as exc:
                self.say(f"  could not stop {_key}: {exc}")
