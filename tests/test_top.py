"""``cocaine top``: rows from two snapshots, lines that fit 80 columns, and the command for
real: on a pseudo-terminal of 80x24 (its screen emulated by pyte), piped, against a node that
goes away and comes back, and across a cluster of nodes on their own hosts."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyte
import pytest

from cocaine_core.cli import top_view
from cocaine_core.client import Client
from cocaine_core.errors import ServiceError
from cocaine_core.testing import free_port, write_app

COCAINE = str(Path(sys.executable).with_name("cocaine"))

# -- top_view: pure functions --------------------------------------------------------------


def app_info(done: int, failed: int = 0, *, uptime: float = 100.0, state: str = "running",
             **extra: Any) -> dict[str, Any]:
    """An app's part of ``info``, as the node gives it."""
    return {"state": state, "uptime": uptime,
            "pool": {"total": 3, "busy": 2, "idle": 1, "starting": 0, "limit": 8},
            "queue": {"depth": 3, "limit": 100},
            "jobs": {"done": done, "failed": failed, "timed-out": 1, "refused": 0,
                     "expired": 0, "abandoned": 0,
                     "latency-ms": {"p50": 3.4, "p99": 1250.0}},
            "slaves": [{"rss-bytes": 30 * 2**20}, {"rss-bytes": 10 * 2**20}], **extra}


def node_info(uptime: float, apps: dict[str, Any], pid: int = 4242) -> dict[str, Any]:
    """A node's ``info``."""
    return {"node": "alpha", "version": "1.2.3", "pid": pid, "uptime": uptime,
            "rss-bytes": 120 * 2**20, "apps": apps}


def test_rates_are_the_counters_change_over_the_nodes_own_time_between_snapshots():
    before = node_info(10.0, {"web": app_info(100, 4), "api": app_info(50)})
    now = node_info(12.0, {"web": app_info(2500, 10), "api": app_info(50), "new": app_info(7)})
    rows = top_view.app_rows(top_view.Snapshots("tcp://n:1", now, before, elapsed=2.5))
    assert [r.name for r in rows] == ["web", "api", "new"]  # busiest first, then by name
    web, api, new = rows
    assert web.rate == 1200 and web.errors == 3  # 2400 done, 6 failed in 2 s (uptime)
    assert api.rate == 0 and api.errors == 0
    assert new.rate is None  # not in the earlier snapshot
    assert (web.p50, web.p99, web.queue, web.queue_limit) == (3.4, 1250.0, 3, 100)
    assert (web.busy, web.idle, web.starting, web.limit, web.memory) == (2, 1, 0, 8, 40 * 2**20)


def test_first_frame_and_restarts_show_no_rate():
    now = node_info(12.0, {"web": app_info(2500)})
    assert top_view.app_rows(top_view.Snapshots("e", now))[0].rate is None
    other_pid = node_info(10.0, {"web": app_info(100)}, pid=1)
    assert top_view.app_rows(top_view.Snapshots("e", now, other_pid, 2))[0].rate is None
    redeployed = node_info(10.0, {"web": app_info(100, uptime=500)})
    assert top_view.app_rows(top_view.Snapshots("e", now, redeployed, 2))[0].errors is None
    went_back = node_info(10.0, {"web": app_info(9000)})
    assert top_view.app_rows(top_view.Snapshots("e", now, went_back, 2))[0].rate is None


def test_numbers_are_humanised():
    assert [top_view.per_second(v) for v in (None, 0, 0.05, 3.44, 120, 999.6, 1234, 56789,
                                             2.5e6)] == \
        ["-", "0/s", "<0.1/s", "3.4/s", "120/s", "1.0k/s", "1.2k/s", "57k/s", "2.5M/s"]
    assert [top_view.millis(v) for v in (None, 0.42, 3.4, 120, 1250, 12500, 150000)] == \
        ["-", "0.42 ms", "3.4 ms", "120 ms", "1.25 s", "12.5 s", "2 min"]
    assert [top_view.size(v) for v in (None, 512, 3500, 120 * 2**20, 1.2 * 2**30)] == \
        ["-", "512 B", "3.4 KiB", "120 MiB", "1.2 GiB"]
    assert [top_view.duration(v) for v in (None, 45, 725, 11040, 200000)] == \
        ["-", "45s", "12m05s", "3h04m", "2d07h"]


def _frame(width: int, height: int | None = None, **kw: Any) -> list[str]:
    long = "an-app-with-a-name-far-too-long-for-any-terminal-" * 3
    apps = {long: app_info(10**9, 10**8, queue={"depth": 123456, "limit": 10**7},
                           pool={"busy": 999, "idle": 999, "starting": 999, "limit": 9999}),
            "broken": app_info(0, state="broken", broken="cannot start: " + "x " * 200)}
    apps.update({f"app{i:02d}": app_info(i * 10) for i in range(30)})
    before = node_info(1.0, {n: app_info(0) for n in apps})
    nodes = [top_view.Snapshots("tcp://127.0.0.1:10053", node_info(2.0, apps), before, 1.0)]
    return [line.plain for line in top_view.frame_lines(nodes, width, height, **kw)]


@pytest.mark.parametrize(("width", "last"), [(80, "SLAVES b/i/s"), (100, "UP"), (132, "DONE"),
                                             (200, "DONE")])
def test_every_line_fits_the_width_and_app_names_are_cut_with_an_ellipsis(width, last):
    lines = _frame(width, 100, status="every 1s · q quits")  # on a terminal: cut
    assert all(len(line) <= width for line in lines), [ln for ln in lines if len(ln) > width]
    assert lines[0].endswith("every 1s · q quits")
    assert lines[1].startswith("APP") and lines[1].rstrip().endswith(last)
    row = next(line for line in lines if line.startswith("an-app-with"))
    assert "…" in row.split()[0] and "1.0G/s" in row
    assert any(line.startswith("  ↳ cannot start: x x") and line.endswith("…") for line in lines)
    plain = _frame(width)  # piped: the reason is wrapped, not cut
    assert all(len(line) <= width for line in plain)
    reason = [ln for ln in plain if ln.startswith(("  ↳", "    x"))]
    assert len(reason) > 1 and sum(ln.count("x") for ln in reason) > width // 2 - 14


def test_rows_are_bounded_by_the_screens_height_with_a_count_of_the_rest():
    lines = _frame(80, 10)
    assert len(lines) == 10
    assert lines[-1].startswith("+26 more")  # 32 apps: the broken one first, with its reason
    assert lines[2].split()[1] == "broken"  # line; 6 rows shown


def test_an_unreachable_node_is_a_line_saying_why():
    gone = top_view.Snapshots("tcp://127.0.0.1:9", error="node unreachable: connection refused")
    lines = [ln.plain for ln in top_view.frame_lines([gone], 80, 24)]
    assert lines[0] == "tcp://127.0.0.1:9 · node unreachable: connection refused"
    fine = top_view.Snapshots("tcp://10.0.0.1:10053", node_info(2.0, {"web": app_info(5)}))
    peer = top_view.Snapshots("tcp://10.0.0.2:10053", name="beta", seen="silent",
                              error="node unreachable: no answer within 5 s")
    text = top_view.plain([fine, peer], 80, cluster="blue")
    assert text.splitlines()[0] == "cluster blue · 2 nodes"
    assert "── alpha tcp://10.0.0.1:10053 · v1.2.3 · up 2s · rss 120 MiB · 1 app" in text
    assert "── beta tcp://10.0.0.2:10053 (silent) · node unreachable: no answer within 5 s" \
        in text


def test_apps_named_on_the_command_line_are_the_only_ones_shown():
    nodes = [top_view.Snapshots("e", node_info(2.0, {"web": app_info(5), "api": app_info(1),
                                                     "web2": app_info(1)}))]
    assert [r.name for r in top_view.app_rows(nodes[0], ["web*"])] == ["web", "web2"]
    assert "no app matches nope" in top_view.plain(nodes, 80, patterns=["nope"])


# -- the command, for real ----------------------------------------------------------------

APP = """
def echo(request):
    return request.data

def fail(request):
    raise RuntimeError("always")
"""


@pytest.fixture
def busy_node(node_process: Any, tmp_path: Path) -> Iterator[Any]:
    """A node serving the app ``hello``, called over and over by a thread until the end."""
    node = node_process()
    manifest = write_app(tmp_path / "hello", APP, {"echo": {"type": "native-server"},
                                                   "fail": {"type": "native-server"}})
    node.cli("app", "deploy", str(manifest), "--name", "hello")
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            with Client(node.endpoint, wait=10) as client:
                try:
                    while not stop.is_set():
                        client.call("hello", "echo", b"hi")
                except ServiceError:
                    time.sleep(0.05)  # the node is being restarted by the test: connect anew

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        stop.set()
        thread.join(15)


class Terminal:
    """``cocaine ARGS`` on a pseudo-terminal of 80x24 (stdin too: it reads keys), its screen
    emulated."""

    def __init__(self, *args: str) -> None:
        self.master, worker = pty.openpty()
        fcntl.ioctl(worker, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.modes = termios.tcgetattr(worker)
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        self.process = subprocess.Popen([COCAINE, *args], stdin=worker, stdout=worker,
                                        stderr=worker, env={**env, "TERM": "xterm-256color"},
                                        start_new_session=True)
        os.close(worker)
        self.screen = pyte.Screen(80, 24)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = b""

    def resize(self, rows: int, columns: int) -> None:
        """Make the terminal ``rows`` x ``columns`` (the program sees it at once)."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.screen.resize(rows, columns)
        self.process.send_signal(signal.SIGWINCH)  # not its controlling terminal: say it

    def read(self, seconds: float = 0.1) -> None:
        """Feed what the program wrote within ``seconds`` to the screen."""
        ready, _, _ = select.select([self.master], [], [], seconds)
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the program closed the terminal
                return
            self.raw += data
            self.stream.feed(data)

    def lines(self) -> list[str]:
        """The screen's lines now."""
        return [line.rstrip() for line in self.screen.display]

    def wait_for(self, predicate: Any, what: str, timeout: float = 30.0) -> list[str]:
        """Read until ``predicate(lines)`` holds; the lines."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read()
            if predicate(self.lines()):
                return self.lines()
            assert self.process.poll() is None, f"top exited: {self.raw[-2000:]!r}"
        raise AssertionError(f"the screen never showed {what}:\n" + "\n".join(self.lines()))

    def wait_exit(self, timeout: float = 15.0) -> int:
        """Read until the program exits; its exit code."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self.read()
        self.read(0.2)
        return self.process.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[Any]:
    made: list[Terminal] = []

    def start(*args: str) -> Terminal:
        made.append(Terminal(*args))
        return made[-1]

    yield start
    for one in made:
        one.close()


def _row(lines: list[str], app: str) -> list[str] | None:
    return next((line.split() for line in lines if line.startswith(app + " ")), None)


def _serving(lines: list[str]) -> bool:
    row = _row(lines, "hello")
    return row is not None and row[1] == "running" and row[2] not in ("-", "0/s")


def test_top_on_a_terminal_shows_the_apps_rate_within_80_columns_and_ctrl_c_ends_it(
        busy_node, terminal):
    screen = terminal("top", "--node", busy_node.endpoint, "--interval", "0.5")
    lines = screen.wait_for(lambda ls: _serving(ls) and f" · v{_version()} · up " in ls[0],
                            "the node's line and hello with a rate")
    assert lines[0].endswith("every 0.5s · q quits") and "1 app" in lines[0], lines
    assert lines[1].split() == ["APP", "STATE", "RATE", "ERR/s", "P50", "P99", "QUEUE",
                                "SLAVES", "b/i/s"]
    assert _row(lines, "hello")[4].replace(".", "").isdigit()  # p50: a number of ms
    assert all(len(line) <= 80 for line in lines)
    screen.resize(30, 120)  # a wider terminal: more columns, drawn at once
    lines = screen.wait_for(lambda ls: ls[1].split()[-4:] == ["MEM", "UP", "RESTARTS", "DONE"]
                            and _serving(ls), "the columns of 120", timeout=2)
    assert all(len(line) <= 120 for line in lines)
    before = termios.tcgetattr(screen.master)
    assert not before[3] & termios.ECHO  # keys read one by one, not echoed
    screen.process.send_signal(signal.SIGINT)
    assert screen.wait_exit() == 0
    assert b"\x1b[?1049l" in screen.raw  # the alternate screen left, the cursor shown again
    assert screen.raw.rfind(b"\x1b[?25h") > screen.raw.rfind(b"\x1b[?25l")
    assert termios.tcgetattr(screen.master)[3] == screen.modes[3]  # echo etc. restored
    assert b"Traceback" not in screen.raw and b"Warning" not in screen.raw


def test_q_quits_and_a_node_that_goes_away_is_said_and_asked_again(busy_node, terminal):
    screen = terminal("top", "hello", "--node", busy_node.endpoint, "--interval", "0.3",
                      "--wait", "2")
    screen.wait_for(_serving, "hello with a rate")
    busy_node.kill()
    lines = screen.wait_for(lambda ls: "node unreachable" in ls[0], "the node unreachable")
    assert lines[0].startswith(busy_node.endpoint)
    busy_node.start()  # its stored app comes back with it
    screen.wait_for(_serving, "hello served again", timeout=60)
    os.write(screen.master, b"q")
    assert screen.wait_exit() == 0
    assert b"Traceback" not in screen.raw


def _version() -> str:
    from cocaine_core import __version__

    return __version__


def _piped(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run([COCAINE, "top", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_piped_top_prints_one_plain_frame_with_rates(busy_node):
    started = time.monotonic()
    done = _piped("--node", busy_node.endpoint, "--interval", "0.5")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    lines = done.stdout.splitlines()
    assert "\x1b" not in done.stdout and all(len(line) <= 80 for line in lines)
    assert lines[0].startswith(f"{_node_name(busy_node)} · v{_version()} · up ")
    assert lines[1].startswith("APP") and _serving(lines)
    once = _piped("--once", "nope", "--node", busy_node.endpoint, "--interval", "0.2")
    assert "no app matches nope" in once.stdout


def _node_name(node: Any) -> str:
    with Client(node.endpoint, wait=10) as client:
        return str(client.control("info")["node"])


def test_once_against_no_node_says_it_is_unreachable_and_fails():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    done = _piped("--once", "--node", endpoint, "--wait", "1", "--interval", "0.2")
    assert done.returncode == 1
    assert done.stdout.startswith(f"{endpoint} · node unreachable: ")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("given", "bound"), [("0.05", "0.2"), ("61", "60")])
def test_a_bad_interval_is_refused_naming_the_bound(given, bound):
    done = _piped("--interval", given)
    assert done.returncode == 2
    assert "--interval" in done.stderr and bound in done.stderr


def test_cluster_top_lists_every_nodes_apps_and_a_node_that_cannot_be_reached(lan, tmp_path):
    from tests.cluster.cluster_kit import deploy, start_nodes, wait_peered

    nodes = start_nodes(lan, tmp_path, ["a", "b"])
    deploy(nodes, tmp_path, {}, name="both")
    deploy(nodes[1:], tmp_path, {}, name="only-b")
    wait_peered(nodes, app="both")
    (_, a), (_, b) = nodes
    done = _piped("--cluster", "--once", "--node", a.endpoint, "--interval", "0.3")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith("cluster blue · 2 nodes\nAPP")
    sections = text.split("── ")[1:]
    assert len(sections) == 2, text
    mine, peer = sections
    assert a.endpoint in mine.splitlines()[0] and "1 app" in mine.splitlines()[0]
    assert b.endpoint in peer.splitlines()[0] and "2 apps" in peer.splitlines()[0]
    assert [ln.split()[0] for ln in mine.splitlines()[1:]] == ["both"]
    assert sorted(ln.split()[0] for ln in peer.splitlines()[1:] if ln) == ["both", "only-b"]
    assert all(len(line) <= 80 for line in text.splitlines())

    b.kill()
    done = _piped("--cluster", "--once", "--node", a.endpoint, "--interval", "0.3",
                  "--wait", "2")
    assert done.returncode == 0, done.stderr  # the node asked is fine; its peer is not
    peer_line = next(ln for ln in done.stdout.splitlines() if b.endpoint in ln)
    assert "node unreachable" in peer_line and "only-b" not in done.stdout


def test_apps_not_running_come_first_so_a_short_screen_never_hides_them() -> None:
    from cocaine_core.cli.top_view import Snapshots, app_rows

    def app(state: str) -> dict:
        return {"state": state, "pool": {}, "queue": {}, "jobs": {"done": 0}, "uptime": 1.0}

    snapshots = Snapshots("tcp://127.0.0.1:10053", current={"apps": {
        "a-busy": app("running"), "zz-broken": app("broken"), "b-idle": app("running")}})
    assert [row.name for row in app_rows(snapshots)] == ["zz-broken", "a-busy", "b-idle"]
