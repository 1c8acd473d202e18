"""What a handler prints or raises reaches the node's log tagged, escaped, bounded and counted.

Before, ``print`` (the runtime's LOG messages) and a failed handler's traceback went raw into
the node's log: a CR, a newline in an exception's message or in its class's ``__module__``
made a line that passed for the node's own, and a print flood had no budget (28k lines a
second logged; a 50 MB line logged whole, in 64 KiB pieces). Now ``engine/app_log.py`` escapes
and tags every line (a traceback's continuation lines as ``[app/slave] | ...``) and applies
the raw path's budget per app and stream, counting and saying what it drops.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path

import pytest

from cocaine_core.backends.output import LINES_PER_SECOND, MAX_LINE
from cocaine_core.client import Client
from cocaine_core.errors import ServiceError
from cocaine_core.testing import wait_until, write_app

FORGED = "2026-11-29 01:50:00,000 INFO    cocaine.node: FORGED"
FLOOD = 200_000
LONG = 50 * 2**20

APP = f'''
FORGED = {FORGED!r}


def forge_print(request):
    print("x\\r" + FORGED + " by print\\x1b[2K\\x00 \\u2028" + FORGED + " after a separator")
    return b"ok"


def forge_raise(request):
    raise ValueError("boom\\n" + FORGED + " by raise")


class Odd(Exception):
    pass


Odd.__module__ = "mod\\n" + FORGED + " by module"


def forge_module(request):
    raise Odd("odd")


def long_line(request):
    print("z" * {LONG})
    print("after the long line")
    return b"ok"


def flood(request):
    for n in range({FLOOD}):
        print("flood %06d " % n + "y" * 200)
    return b"done"
'''

TASKS = {name: {"type": "native-server"}
         for name in ("forge_print", "forge_raise", "forge_module", "long_line", "flood")}
DROPPED = re.compile(r"\[(\d+) printed lines of stdout from app out dropped")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def _deploy(tmp_path: Path, node_process):
    node = node_process()
    node.cli("app", "deploy", str(write_app(tmp_path / "out", APP, TASKS,
                                            {"pool-limit": 1})), "--name", "out")
    return node


def test_printed_and_raised_text_cannot_pass_for_a_node_line(tmp_path: Path,
                                                             node_process) -> None:
    node = _deploy(tmp_path, node_process)
    with Client(node.endpoint, wait=30) as client:
        assert client.call("out", "forge_print") == b"ok"
        messages = []
        for handler in ("forge_raise", "forge_module"):
            with pytest.raises(ServiceError) as error:
                client.call("out", handler)
            assert error.value.code == 502
            messages.append(error.value.message)
        assert client.call("out", "long_line") == b"ok"
    # The client's message is not the log: it keeps its newline, readable.
    assert f"boom\n{FORGED} by raise" in messages[0]
    wait_until(lambda: all(text in node.log.read_text() for text in (
        "by print", "by raise", "by module", "after the long line")), timeout=20,
        message="the app's lines in the node's log")
    raw = node.log.read_bytes()
    assert not any(c in raw for c in (b"\r", b"\x1b", b"\x00", "\u2028".encode()))
    log = raw.decode().splitlines()
    # Every line is the node's (a timestamp, then the level and logger) or, continuing a
    # record, starts with the app's tag; no line an app sent starts a line of the log.
    for line in log:
        assert TIMESTAMP.match(line) or line.startswith("[out/"), line
        assert not line.startswith(FORGED), f"a forged node line got through: {line!r}"
        if "FORGED" in line:
            assert "cocaine.app: [out/" in line or line.startswith("[out/"), line
    assert any(re.search(r"cocaine\.app: \[out/\S+\] x\\r" + re.escape(FORGED) +
                         r" by print\\x1b\[2K\\x00 \\u2028", line) for line in log)
    assert any(re.fullmatch(r"\[out/\S+\] \| ValueError: boom", line) for line in log)
    assert any(re.fullmatch(r"\[out/\S+\] \| " + re.escape(FORGED) + " by raise", line)
               for line in log)
    assert any(re.fullmatch(r"\[out/\S+\] \| " + re.escape(FORGED) + " by module.Odd: odd",
                            line) for line in log)
    # A 50 MiB line: one line of the log, cut at MAX_LINE bytes, and said so.
    assert max(len(line) for line in log) < MAX_LINE + 200
    long = [line for line in log if "zzzz" in line]
    assert len(long) == 1 and long[0].endswith(f"{'z' * 100} [cut: longer than {MAX_LINE} bytes]")
    assert len(raw) < 2**20


def test_a_print_flood_is_bounded_counted_and_said(tmp_path: Path, node_process) -> None:
    node = _deploy(tmp_path, node_process)
    with Client(node.endpoint, wait=30) as client:
        assert client.call("out", "forge_print") == b"ok"  # the slave is up
        before = client.control("info")["rss-bytes"]
        result: list[bytes] = []
        caller = threading.Thread(target=lambda: result.append(
            Client(node.endpoint, wait=60).call("out", "flood")), daemon=True)
        started = time.monotonic()
        caller.start()
        slowest, largest = 0.0, before
        while caller.is_alive():  # the node answers while the app floods it
            took = time.monotonic()
            largest = max(largest, client.control("info")["rss-bytes"])
            slowest = max(slowest, time.monotonic() - took)
            caller.join(0.2)
        flooded = time.monotonic() - started
        assert result == [b"done"]

    def accounted() -> tuple[int, int] | None:
        text = node.log.read_text()
        logged = len(re.findall(r"\[out/\S+\] flood \d{6} y+$", text, re.M))
        dropped = sum(int(n) for n in DROPPED.findall(text))
        return (logged, dropped) if logged + dropped == FLOOD else None

    logged, dropped = wait_until(accounted, timeout=30, message="every line logged or counted")
    print(f"\n{FLOOD} lines printed in {flooded:.2f} s: {logged} logged, {dropped} dropped "
          f"(counted and said); node RSS {before / 2**20:.1f} -> max {largest / 2**20:.1f} MiB; "
          f"info answered in {slowest:.3f} s at worst meanwhile")
    assert dropped > 0 and logged <= 2 * LINES_PER_SECOND + LINES_PER_SECOND * (flooded + 10)
    assert largest - before < 64 * 2**20
    assert slowest < 2.0
    assert len(DROPPED.findall(node.log.read_text())) < 10, "drops said a few times, not per line"


def test_the_engine_bounds_any_slave(caplog) -> None:
    """The budget is the engine's (a slave in any language may send LOG): lines past it are
    dropped, counted with those the slave dropped itself, and said once."""
    from cocaine_core.engine.app_log import AppLog  # here: the tests above run on old code too

    caplog.set_level(logging.INFO, logger="cocaine.app")
    out = AppLog("any")
    started = time.monotonic()
    for n in range(5 * LINES_PER_SECOND):
        out.line("s1", "stdout", f"line {n}")
    out.line("s1", "stdout", "", dropped=7)  # the slave's own count
    out.line("s1", "weird\nstream", "to stderr\r")
    took = time.monotonic() - started
    logged = [r for r in caplog.records if "line " in r.getMessage()]
    assert 2 * LINES_PER_SECOND <= len(logged) <= LINES_PER_SECOND * (2 + took)
    assert len(logged) < 5 * LINES_PER_SECOND
    assert caplog.records[-1].getMessage() == "[any/s1] to stderr\\r"
    assert caplog.records[-1].levelno == logging.WARNING
    out.say_dropped()
    stdout = out.info()["stdout"]
    assert stdout["dropped"] == 5 * LINES_PER_SECOND - len(logged) + 7
    said = re.findall(r"^\[any\] \[(\d+) printed lines of stdout from app any dropped",
                      "\n".join(r.getMessage() for r in caplog.records), re.M)
    assert 1 <= len(said) <= 2 + took / 5 and sum(map(int, said)) == stdout["dropped"]
    out.failure("s1", 3, 502, "bad\nthing", "Traceback\n  line\r\nValueError: bad\nthing\n")
    assert caplog.records[-1].getMessage().split("\n") == [
        "[any/s1] job 3 failed with 502:", "[any/s1] | Traceback", "[any/s1] |   line\\r",
        "[any/s1] | ValueError: bad", "[any/s1] | thing"]
