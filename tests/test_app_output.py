"""What an app writes to fds 1 and 2 reaches the node's log tagged, bounded, and counted.

Before, ``os.write(1, ...)`` went raw into the node's own log, so an app could forge a node
line, and a flood lost most lines without a word. Now the template's stdout and stderr are
pipes the node reads (``backends/output.py``): each line is logged as ``[app] line`` with
control characters escaped, a budget bounds the flood, and every dropped line is counted and
said; the python runtime's ``print`` still arrives tagged with its slave.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from cocaine_core.backends.output import LINES_PER_SECOND, MAX_LINE
from cocaine_core.client import Client
from cocaine_core.testing import wait_until, write_app

FORGED = "2026-11-29 00:00:00,000 INFO    cocaine.node: node forged stopped"
FLOOD = 500_000

APP = f'''
import os


def forge(request):
    os.write(1, b"{FORGED}\\n")
    os.write(2, b"\\x1b[31mred\\x1b[0m\\rback on stderr\\n")
    os.write(1, b"x" * {MAX_LINE * 3} + b"\\nafter the long line\\n")
    print("a python print")
    return b"ok"


def flood(request):
    lines = b"".join(b"flood %06d yyyyyyyyyyyyyyyyyyyy\\n" % n for n in range({FLOOD}))
    view = memoryview(lines)
    while view:
        view = view[os.write(1, view[:65536]):]
    return b"done"
'''

TASKS = {"forge": {"type": "native-server"}, "flood": {"type": "native-server"}}
DROPPED = re.compile(r"\[(\d+) lines of stdout from app out dropped")


def test_raw_output_is_tagged_and_cannot_pass_for_a_node_line(tmp_path: Path,
                                                              node_process) -> None:
    node = node_process()
    node.cli("app", "deploy", str(write_app(tmp_path / "out", APP, TASKS)), "--name", "out")
    with Client(node.endpoint, wait=30) as client:
        assert client.call("out", "forge") == b"ok"
    wait_until(lambda: all(text in node.log.read_text() for text in (
        "after the long line", "a python print")), timeout=10,
        message="the app's output in the node's log")
    log = node.log.read_text().splitlines()
    assert not any(line.startswith(FORGED) for line in log), "a forged node line got through"
    assert any(line.endswith(f"cocaine.app: [out] {FORGED}") for line in log)
    assert any(r"[out] \x1b[31mred\x1b[0m\rback on stderr" in line for line in log)
    assert any(f"[out] {'x' * MAX_LINE} [cut: longer than {MAX_LINE} bytes]" in line
               for line in log)
    assert any(re.search(r"\[out/\S+\] a python print$", line) for line in log)
    assert not any(line.startswith("x") for line in log)


def test_a_flood_is_bounded_counted_and_said(tmp_path: Path, node_process) -> None:
    node = node_process()
    node.cli("app", "deploy", str(write_app(tmp_path / "out", APP, TASKS)), "--name", "out")
    with Client(node.endpoint, wait=30) as client:
        before = client.control("info")["rss-bytes"]
        started = time.monotonic()
        assert client.call("out", "flood") == b"done"
        flooded = time.monotonic() - started
        # The node answers while it reads and drops the flood.
        took = time.monotonic()
        after = client.control("info")["rss-bytes"]
        took = time.monotonic() - took

    def accounted() -> tuple[int, int] | None:
        text = node.log.read_text()
        logged = len(re.findall(r"\[out\] flood \d{6} y+$", text, re.M))
        dropped = sum(int(n) for n in DROPPED.findall(text))
        return (logged, dropped) if logged + dropped == FLOOD else None

    logged, dropped = wait_until(accounted, timeout=30, message="every line logged or counted")
    print(f"\n{FLOOD} lines written in {flooded:.2f} s: {logged} logged, {dropped} dropped "
          f"(counted and said); node RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB; "
          f"info answered in {took:.3f} s")
    assert dropped > 0 and logged <= 2 * LINES_PER_SECOND + LINES_PER_SECOND * (flooded + 10)
    assert after - before < 64 * 2**20
    text = node.log.read_text()
    assert not any(line.startswith("flood") for line in text.splitlines())
    assert len(DROPPED.findall(text)) < 10, "drops are said a few times, not per line"
