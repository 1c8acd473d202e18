"""``python -m cocaine_python.worker``: a cocaine-python app served as an exec worker, and how
it fails: without its variables (exit 2), and with an app that does not load (the engine is
told with an ERROR of the slave's start, exit 3). The engine is the conformance kit's
``Harness``: a real ROUTER and the real worker process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cocaine_core.conformance.harness import Harness
from cocaine_core.conformance.messages import SLAVE_ID
from cocaine_core.conformance.rules import SETTINGS
from cocaine_core.protocol import Code
from tests import distributions

WORKER = [sys.executable, "-m", "cocaine_python.worker"]


def test_missing_variables_are_named_and_exit_2(tmp_path):
    (tmp_path / "app.py").write_text("def echo(request):\n    return request.data\n")
    env = {"PATH": "/usr/bin:/bin", "COCAINE_APP": "a"}
    result = subprocess.run([*WORKER, "app.py"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "COCAINE_ENDPOINT, COCAINE_SLAVE_ID not set" in result.stderr
    assert "Traceback" not in result.stderr


def _started(tmp_path: Path, source: str, *args: str) -> Harness:
    """A kit engine with the worker started on ``source`` in ``tmp_path``, handshake read."""
    # The worker resolves SOURCE in its working folder.
    kit = Harness([*WORKER, source, *args], timeout=30, cwd=str(tmp_path))
    try:
        kit.start()
        message = kit.receive(time.monotonic() + 30)
        assert message is not None and message.code == Code.HANDSHAKE
        assert message.fields[1] == SLAVE_ID
        kit.handshake = message
    except BaseException:
        kit.close()
        raise
    return kit


def _exit_status(kit: Harness) -> int:
    assert kit.process is not None
    return kit.process.wait(timeout=30)


@pytest.mark.parametrize(("code", "args", "reason"), [
    ("raise RuntimeError('no database here')\n", (),
     "importing app.py raised RuntimeError: no database here"),
    ("def echo(request):\n    return request.data\n", ("--events", "echo,stream"),
     "app.py has no handler 'stream'"),
    ("def broken(:\n", (), "syntax error in"),
])
def test_an_app_that_does_not_load_answers_configure_with_an_error_and_exits_3(
        tmp_path, code, args, reason):
    (tmp_path / "app.py").write_text(code)
    kit = _started(tmp_path, "app.py", *args)
    try:
        kit.send(Code.CONFIGURE, SETTINGS)
        message = kit.receive(time.monotonic() + 30)
        assert message is not None and message.code == Code.ERROR, message
        _, job_id, status, text, _traceback = message.fields
        assert (job_id, status) == (None, 500)
        assert reason in text
        assert _exit_status(kit) == 3
        assert any(reason in line for line in kit.tail()), kit.tail()  # said on stderr too
    finally:
        kit.close()


def test_events_default_to_the_functions_the_module_defines(tmp_path):
    (tmp_path / "app.py").write_text(textwrap.dedent("""
        from pathlib import Path

        def hello(request):
            return b"hi " + request.data

        def _private(request):
            return b"no"
    """))
    kit = _started(tmp_path, "app.py")
    try:
        kit.send(Code.CONFIGURE, SETTINGS)
        assert kit.wait(lambda: bool(kit.beats), time.monotonic() + 30)  # ready
        answers = {event: kit.invoke(event, b"you") for event in ("hello", "Path", "_private")}
        assert kit.wait(lambda: all(a.done for a in answers.values()),
                        time.monotonic() + 30)
        assert answers["hello"].body() == b"hi you"
        assert [answers[e].code for e in ("Path", "_private")] == [404, 404]
        kit.send(Code.TERMINATE, "done")
        assert _exit_status(kit) == 0
    finally:
        kit.close()


def test_the_kit_fails_configure_quoting_the_error_of_an_app_that_does_not_load(tmp_path):
    (tmp_path / "app.py").write_text("raise RuntimeError('no database here')\n")
    result = subprocess.run(
        [str(distributions.COCAINE), "conformance", "--", *WORKER, "app.py"], cwd=tmp_path,
        env=distributions.clean_environment(extra={"COCAINE_LOAD_PLUGINS": ""}),
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[1] == ("FAIL configure: the worker could not start: ERROR 500: importing "
                        "app.py raised RuntimeError: no database here at "
                        f"{tmp_path / 'app.py'}:1; it then exited with status 3")
    assert lines[12] == ("FAIL terminate and exit: not reached (the worker exited with "
                        "status 3 during 'configure')")
