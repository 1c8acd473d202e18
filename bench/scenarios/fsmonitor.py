"""Scenario 4b, filesystem-monitor: a file written → its handler started (p50, p99).

The bench writes one new file at a time into the watched folder and notes the time; the app's
handler writes the time it started, for each change in its batch, to a log outside the
folder. The latency includes the driver's batching (``debounce``, 0.05 s by default): a batch
is sent once no new change came for that long, so about 50 ms is the design's floor.
Files are written 0.1 s apart so each makes its own batch. Skipped, with the reason, when no
installed plugin registers ``filesystem-monitor``.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.nodes import CocaineRun, installed_drivers, write_app
from bench.results import ScenarioResult, percentile, skipped
from bench.session import Bench

NAME = "fsmonitor"
TITLE = "filesystem-monitor: file written → handler started"
GAP = 0.1

APP = """\
import time

LOG = {log!r}


def changed(request):
    started = time.time()
    with open(LOG, "a") as f:
        for kind, path in request.meta.get("changes", []):
            f.write(f"{{kind}} {{path}} {{started!r}}\\n")
"""


def run(bench: Bench) -> ScenarioResult:
    """Write ``settings.fs_writes`` files, one at a time, and time each to its handler."""
    if "filesystem-monitor" not in installed_drivers():
        return skipped(NAME, TITLE, "skipped: filesystem-monitor not installed")
    result = ScenarioResult(NAME, TITLE)
    folder = bench.subfolder("fsmonitor")
    watched = folder / "watched"
    watched.mkdir(exist_ok=True)
    log = folder / "changes.log"
    log.write_text("")
    manifest = write_app(folder / "app", APP.format(log=str(log)),
                         {"changed": {"type": "filesystem-monitor", "path": str(watched)}},
                         {"pool-limit": 2, "pool-min": 1})
    node = CocaineRun(bench.group, manifest, name="fsmonitor")
    node.start(event=None)
    latencies: list[float] = []
    try:
        _write_and_wait(watched / "warm-up.txt", log)  # the watch is in place
        for index in range(bench.settings.fs_writes):
            time.sleep(GAP)
            latencies.append(_write_and_wait(watched / f"file-{index}.txt", log))
    finally:
        node.stop()
    result.figure("file written → handler started, p50", "ms").add(percentile(latencies, 50))
    p99 = percentile(latencies, 99)
    result.figure("file written → handler started, p99", "ms").add(p99)
    result.details["writes"] = len(latencies)
    result.details["each_ms"] = [round(v, 3) for v in latencies]
    result.samples["filesystem-monitor: written → handler"] = [v / 1000 for v in latencies]
    result.target("file change → handler p50", percentile(latencies, 50), "< 100", "ms")
    return result


def _write_and_wait(path: Path, log: Path, timeout: float = 10.0) -> float:
    """Create ``path``; return ms until the handler logged it started (its first change)."""
    written = time.time()
    path.write_bytes(b"cocaine\n")
    needle = f" {path} ".encode()
    deadline = time.monotonic() + timeout
    while True:
        data = log.read_bytes()
        at = data.find(needle)
        if at >= 0:
            line = data[at:data.index(b"\n", at)]
            return (float(line.split()[-1]) - written) * 1000
        if time.monotonic() > deadline:
            raise TimeoutError(f"the handler did not see {path.name} within {timeout:g} s")
        time.sleep(0.002)
