"""The load generator of the bench's ``http`` scenario, ``wrk``, and a profile of a process.

The same wrk command drives every server: one thread, a fixed number of keep-alive
connections, each a closed loop of POSTs with the same body (``bench/http_post.lua``), for a
whole number of seconds. A server that closes the connection after each answer (gunicorn's
sync workers) gets a new one at once: what its users get. The script prints the counts and
latency percentiles as JSON at the end, which ``run_wrk`` parses.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent / "http_post.lua"
MARKER = "BENCH-JSON "
#: A request slower than this is counted as a wrk timeout error.
REQUEST_TIMEOUT_S = 10


@dataclass
class WrkResult:
    """What one wrk run saw."""

    requests: int
    seconds: float
    #: Latency percentiles and mean, in microseconds (wrk's histogram).
    latency_us: dict[str, float]
    #: Errors by kind (connect, read, write, status: answers of 4xx/5xx, timeout).
    errors: dict[str, int] = field(default_factory=dict)
    #: CPU seconds (user + system) wrk used.
    cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Requests answered per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_missing() -> str | None:
    """Why wrk cannot run here, or None."""
    if shutil.which("wrk") is None:
        return "skipped: wrk is not installed (Debian: apt-get install wrk)"
    return None


def run_wrk(url: str, body_bytes: int, connections: int, seconds: int,
            threads: int = 1) -> WrkResult:
    """POST ``body_bytes`` bytes to ``url`` for ``seconds`` over ``connections`` connections."""
    if not 1 <= seconds <= 3600:
        raise ValueError(f"wrk runs for whole seconds, 1 to 3600; got {seconds}")
    command = ["wrk", "--threads", str(threads), "--connections", str(connections),
               "--duration", f"{seconds}s", "--timeout", f"{REQUEST_TIMEOUT_S}s", "--latency",
               "--script", str(SCRIPT), url]
    env = {**os.environ, "BENCH_BODY_BYTES": str(body_bytes)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, env=env, timeout=seconds + 60,
                          stdin=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = done.stdout.decode(errors="replace")
    lines = [line for line in output.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed (exit {done.returncode}): "
                           f"{(done.stderr.decode(errors='replace') + output)[-1500:]}")
    data = json.loads(lines[-1][len(MARKER):])
    return WrkResult(requests=int(data["requests"]), seconds=data["duration_us"] / 1e6,
                     latency_us={k: float(v) for k, v in data["latency_us"].items()},
                     errors={k: int(v) for k, v in data["errors"].items() if v},
                     cpu_seconds=(after.ru_utime - before.ru_utime)
                     + (after.ru_stime - before.ru_stime))


def py_spy() -> str | None:
    """The py-spy command (beside the bench's Python, or on PATH), or None."""
    import sys

    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_profile(pid: int, seconds: int, output: Path) -> subprocess.Popen[bytes] | None:
    """Sample ``pid``'s Python stacks for ``seconds`` with py-spy (not pausing it), into
    ``output`` (collapsed stacks); None without py-spy.

    Only the thread holding the GIL is sampled (``--gil``): the Python work. Without it a
    thread waiting in C (a blocking ZeroMQ recv) or preempted in a syscall that woke another
    process (a ZeroMQ send) reads as busy: on 2 shared cores, a third of the node's samples
    were ``Socket.send``, where perf saw 4% of its CPU in libzmq."""
    command = py_spy()
    if command is None:
        return None
    return subprocess.Popen(
        [command, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250",
         "--nonblocking", "--gil", "--format", "raw", "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


_LINE = re.compile(r":\d+\)$")
#: A frame on this share of the stacks or more is the trunk, not where the time goes.
TRUNK = 0.9


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """The functions where a process spent its samples, from py-spy's collapsed stacks:
    ``self`` (the innermost frame) and ``total`` (anywhere on the stack; frames on at least
    ``TRUNK`` of the stacks left out), as [function, share of samples in %], the largest
    first."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    if not samples:
        return {"samples": 0, "self": [], "total": []}

    def rows(counter: Counter[str]) -> list[list[object]]:
        return [[name, round(100 * n / samples, 1)] for name, n in counter.most_common(top)]

    # The trunk (the CLI, the event loop's run_forever...) is on nearly every stack: left out.
    branches = Counter({name: n for name, n in total.items() if n < TRUNK * samples})
    return {"samples": samples, "self": rows(own), "total": rows(branches)}
