"""How ``cocaine run`` and ``cocaine node`` log (``cocaine_core/cli/logs.py``): the formats, and
that nothing written to stdout or stderr waits for a reader, even at exit.

``setup_logging`` replaces ``sys.stdout`` and ``sys.stderr``, so each test runs it in a Python
process of its own.
"""

from __future__ import annotations

import errno
import json
import os
import pty
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = '''
import logging, sys, time, warnings
import typer
from cocaine_core.cli.logs import setup_logging

output = setup_logging("info", sys.argv[1])
log = logging.getLogger("cocaine.test")
started = time.monotonic()
log.info("first %s", "line")
print("printed")
typer.echo("echoed", err=True)
warnings.warn("careful")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("it failed")
for number in range(int(sys.argv[2])):
    log.info("line %06d %s", number, "x" * 100)
log.info("last line")
with open(sys.argv[3], "w") as f:
    f.write(f"{time.monotonic() - started} {output.dropped_total} {time.monotonic()}")
'''


def run_script(tmp_path: Path, fmt: str, lines: int, stdout: int, stderr: int,
               timeout: float = 30) -> tuple[subprocess.Popen[bytes], float, int, float]:
    """Run SCRIPT; return the process (ended), the seconds its logging took, what it dropped,
    and the seconds between its last statement and its end."""
    result = tmp_path / "result"
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SCRIPT), fmt, str(lines),
                                str(result)], stdin=subprocess.DEVNULL, stdout=stdout,
                               stderr=stderr, env={**os.environ, "COLUMNS": "200"})
    try:
        process.wait(timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    ended = time.monotonic()
    took, dropped, last = result.read_text().split()
    return process, float(took), int(dropped), ended - float(last)


def test_nothing_waits_for_a_pipe_nobody_reads_not_even_the_exit(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        process, took, dropped, exiting = run_script(tmp_path, "plain", 50_000, write_end,
                                                     write_end)
    finally:
        os.close(write_end)
        os.close(read_end)
    assert process.returncode == 0
    assert took < 30  # ~0.8 s: it ended at all, so no write waited for the pipe
    assert dropped > 30_000  # the queue holds 10,000, the pipe about 500 lines
    assert exiting < 5  # ~1.05 s: the queue gets about a second to drain at exit, no more


@pytest.mark.parametrize("fmt", ["plain", "json", "rich"])
def test_everything_is_written_in_order_when_read(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "out"
    with open(out, "wb") as f:
        process, _, dropped, _ = run_script(tmp_path, fmt, 3, f.fileno(), f.fileno())
    assert process.returncode == 0 and dropped == 0
    text = out.read_text()
    order = ["first line", "printed", "echoed", "careful", "it failed", "ZeroDivisionError",
             "line 000000", "line 000002", "last line"]
    positions = [text.find(word) for word in order]
    assert -1 not in positions and positions == sorted(positions), text
    if fmt == "json":
        records = [json.loads(line) for line in text.splitlines()
                   if line not in ("printed", "echoed")]
        assert [r["message"] for r in records][:1] == ["first line"]
        failed = next(r for r in records if r["message"] == "it failed")
        assert failed["level"] == "error" and "ZeroDivisionError" in failed["traceback"]
        warned = next(r for r in records if "careful" in r["message"])
        assert warned["logger"] == "py.warnings"
    elif fmt == "plain":
        assert " INFO    cocaine.test: first line\n" in text
    else:
        assert "INFO     first line" in text and "\x1b[" not in text  # not a terminal


def test_rich_on_a_terminal_keeps_its_colours(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    try:
        process, _, dropped, _ = run_script(tmp_path, "auto", 3, follower, follower)
    finally:
        os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError as exc:  # EIO: the terminal's other side is closed
            assert exc.errno == errno.EIO
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    text = b"".join(chunks).decode()
    assert process.returncode == 0 and dropped == 0
    assert "\x1b[" in text and "first line" in text and "last line" in text
