"""A huge error (50 MB of exception message) reaches neither the client nor the node's log
whole, and the node's memory stays flat (issue 13, "Handlers").

Two slaves: the Python runtime, which cuts on its side, and one that sends the 50 MB message and
traceback itself, as a slave of any language could (the engine cuts on its side)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from cocaine_core.errors import ServiceError
from cocaine_core.errortext import MESSAGE_LIMIT, TRACEBACK_LIMIT
from cocaine_core.testing import wait_until, write_app

SIZE = 50_000_000

APP = f'''
import os
import sys


def pid(request):
    return str(os.getpid())


def huge(request):
    raise ValueError("HUGE" + "MSG" + "m" * {SIZE})  # the marker is not in the source line


def foreign(request):
    # Speak the slave protocol directly, as a slave in another language could: an ERROR with
    # a 50 MB message and a 50 MB traceback for this job (the runtime's own CHOKE that
    # follows is for a job that has ended, and ignored).
    frame = sys._getframe(1)
    runner, job_id = frame.f_locals["self"], frame.f_locals["job_id"]
    runner.channel.error(job_id, 502, "FOREIGN" + "MSG" + "m" * {SIZE}, "TB" + "t" * {SIZE})
'''


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of process ``pid``, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


class _Growth:
    """How far RSS grew (truthy, even when 0: ``wait_until`` waits for one)."""

    def __init__(self, growth: int) -> None:
        self.growth = growth


def _settled(pid: int, base: int) -> _Growth | None:
    """The RSS growth of ``pid`` over ``base`` once it is under 64 MB, else None."""
    growth = _memory(pid)["VmRSS"] - base
    return _Growth(growth) if growth < 64 * 2**20 else None


def _reset_peak(pid: int) -> bool:
    """Reset VmHWM of ``pid`` to its current RSS (Linux >= 4.0); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@pytest.mark.parametrize("event, marker", [("huge", "HUGEMSG"), ("foreign", "FOREIGNMSG")])
def test_huge_error_is_cut_for_the_client_and_logged_once(node_process, tmp_path, event,
                                                           marker, record_property):
    node = node_process()
    manifest = write_app(tmp_path / "src" / "big", APP,
                         {name: {"type": "native-server"} for name in ("pid", "huge", "foreign")},
                         engine={"pool-limit": 1})
    node.cli("app", "deploy", str(manifest))
    pid = node.process.pid
    with node.client(wait=60) as client:
        slave = client.call("big", "pid")
        client.call("big", "pid")  # warm: the node's buffers for one request are made
        before = _memory(pid)
        peak_known = _reset_peak(pid)
        with pytest.raises(ServiceError) as error:
            client.call("big", event)
        peak = _memory(pid)["VmHWM"] - before["VmRSS"]
        assert client.call("big", "pid") == slave  # the slave lived on
        # What the node held for the error is freed once it has been handled.
        settled = wait_until(lambda: _settled(pid, before["VmRSS"]), timeout=10,
                             message="the node's RSS to come back within 64 MB of what it "
                                     "was").growth
    record_property("rss_growth_mb", round(settled / 2**20, 1))
    record_property("rss_peak_growth_mb", round(peak / 2**20, 1) if peak_known else None)
    print(f"{event}: node RSS {before['VmRSS'] / 2**20:.1f} MB before, "
          f"+{settled / 2**20:.1f} MB after, peak +{peak / 2**20:.1f} MB"
          f"{'' if peak_known else ' (peak not reset)'}")
    if peak_known:
        # Cut in the slave, the node never holds it; sent whole by a slave (a 2 * SIZE frame:
        # message and traceback), the node holds it twice at most while it decodes it (then
        # cuts it and lets it go): its bytes and their decoded text, never ZeroMQ's copy too.
        assert peak < (64 * 2**20 if event == "huge" else 5 * SIZE)
    message = error.value.message
    assert error.value.code == 502
    assert message.startswith(("ValueError: " + marker, marker))
    assert len(message.encode()) <= MESSAGE_LIMIT and "bytes cut]" in message
    node.stop()
    log = node.log.read_text(errors="replace")
    assert log.count(marker) == 1, "the message is logged once"
    line_start = log.index("failed with 502")
    assert len(log) - line_start < MESSAGE_LIMIT + TRACEBACK_LIMIT + 4096, "and cut"
    with contextlib.suppress(OSError):
        node.log.unlink()
