"""The ``cocaine`` command (``cocaine_core/cli/``): manifest check, errors, ``--debug``, what
``call``, ``info`` and ``app list`` print, and every command to a node that is not there.

Most tests run the real ``cocaine`` script of the venv as a subprocess (on a pseudo-terminal
where the terminal matters). ``cocaine plugins`` is tested with the plugins themselves, in
``tests/test_plugins.py``.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cocaine_core.errors import ServiceError
from cocaine_core.testing import free_port
from tests import distributions

ROOT = Path(__file__).resolve().parents[1]

#: Only the core, cocaine-python and the example driver: what these tests use, so that the
#: other plugins of the work tree (and their state) do not change the answers.
PLUGINS = {"COCAINE_LOAD_PLUGINS": "python,example"}


def run_cocaine(*args: str, env: dict[str, str] | None = None,
                **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``cocaine`` with only the plugins these tests use."""
    return distributions.run_cocaine(*args, env={**PLUGINS, **(env or {})}, **kwargs)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A folder with an app's code, ``app.py``."""
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "app.py").write_text("def hello(request):\n    return b'hi'\n")
    return folder


def write(folder: Path, text: str, name: str = "app.json") -> Path:
    """Write a manifest file."""
    path = folder / name
    path.write_text(text)
    return path


# -- cocaine manifest check ---------------------------------------------------------------------


def test_check_prints_the_resolved_manifest(app_dir: Path) -> None:
    path = write(app_dir, '{"type": "python", "args": {"source": "app.py"},\n'
                          ' "engine": {"pool-limit": 3, "suicide-timeout": 20},\n'
                          ' "tasks": {"hello": {"type": "native-server", "timeout": 2}}}')
    result = run_cocaine("manifest", "check", str(path))
    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout) == {
        "type": "python",
        "args": {"source": "app.py"},
        "engine": {"pool-limit": 3, "pool-min": 0, "queue-limit": 100, "grow-threshold": 1,
                   "concurrency": 1, "heartbeat-timeout": 30.0, "startup-timeout": 10.0,
                   "idle-timeout": 20.0, "termination-timeout": 5.0, "job-timeout": None,
                   "max-requests": 0, "max-rss": None, "backend": "process"},
        "tasks": {"hello": {"type": "native-server", "timeout": 2.0}},
    }


def test_check_accepts_the_example_app_with_its_trailing_commas() -> None:
    result = run_cocaine("manifest", "check", str(ROOT / "examples" / "hello" / "manifest.json"))
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["tasks"]) == {"echo", "count", "fail"}


def test_check_prints_every_problem_and_exits_1(app_dir: Path) -> None:
    path = write(app_dir, '{"type": "python", "args": {"source": "app.py"},\n'
                          ' "engine": {"pool-limit": "ten", "queue-limt": 5},\n'
                          ' "tasks": {}}')
    result = run_cocaine("manifest", "check", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"3 problems with the manifest in {path}:\n"
        '  - engine.pool-limit: must be an integer from 1 to 1000, got "ten"\n'
        "  - engine.queue-limt: unknown key; did you mean 'queue-limit'?\n"
        '  - tasks: is empty: an app needs at least one task, e.g. {"hello": {"type": '
        '"native-server"}}\n')


def test_check_names_the_line_and_column_of_text_that_is_not_json(app_dir: Path) -> None:
    path = write(app_dir, '{\n  "type": "python",\n  "args": {"source": "app.py"}\n'
                          '  "tasks": {}\n}\n')
    result = run_cocaine("manifest", "check", str(path))
    assert result.returncode == 1
    assert result.stderr == (f"1 problem with the manifest in {path}:\n"
                             "  - not valid JSON at line 4, column 3: Expecting ',' delimiter\n")


def test_check_of_a_missing_file(tmp_path: Path) -> None:
    result = run_cocaine("manifest", "check", "nope.json", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == ("1 problem with the manifest in nope.json:\n"
                             "  - no such file: nope.json\n")


def test_check_names_a_missing_provider(app_dir: Path) -> None:
    path = write(app_dir, '{"type": "python", "args": {"source": "app.py"},\n'
                          ' "tasks": {"feed": {"type": "zeromq-server"}}}')
    result = run_cocaine("manifest", "check", str(path),
                         env={"COCAINE_DISABLE_PLUGINS": "zmq,cocaine-zmq"})
    assert result.returncode == 1
    assert ("  - tasks.feed.type: driver 'zeromq-server' is provided by cocaine-zmq, which is "
            "not installed or failed to load (see 'cocaine plugins'); pip install cocaine-zmq."
            in result.stderr)


def test_check_resolves_source_from_the_manifest_folder(app_dir: Path, tmp_path: Path) -> None:
    write(app_dir, '{"type": "python", "args": {"source": "app.py"},\n'
                   ' "tasks": {"hello": {"type": "native-server"}}}')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cocaine("manifest", "check", "../app/app.json", cwd=elsewhere)
    assert result.returncode == 0, result.stderr


# -- domain errors: one clear message, exit 1; a traceback only with --debug --------------------


def test_a_domain_error_is_one_message_and_exit_1(tmp_path: Path) -> None:
    result = run_cocaine("run", "nope.json", "--log-format", "plain", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == ("error: 1 problem with the manifest in nope.json:\n"
                             "  - no such file: nope.json\n")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cocaine("--debug", "run", "nope.json", "--log-format", "plain", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "cocaine_core.errors.ManifestError: 1 problem with the manifest in nope.json" in \
        result.stderr
    assert "  - no such file: nope.json" in result.stderr


@pytest.fixture
def busy_endpoint() -> Iterator[str]:
    """A TCP endpoint something already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def test_a_node_error_is_one_message_and_exit_1(busy_endpoint: str, tmp_path: Path) -> None:
    manifest = ROOT / "examples" / "hello" / "manifest.json"
    result = run_cocaine("run", str(manifest), "--listen", busy_endpoint, "--log-format",
                         "plain", env={"TMPDIR": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot listen on {busy_endpoint}: ")
    assert "Choose another endpoint with --listen" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_node_that_cannot_listen_leaves_no_temporary_folder(busy_endpoint: str,
                                                              tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    manifest = ROOT / "examples" / "hello" / "manifest.json"
    result = run_cocaine("run", str(manifest), "--listen", busy_endpoint, "--log-format",
                         "plain", env={"TMPDIR": str(temp)})
    assert result.returncode == 1
    assert list(temp.iterdir()) == []


def test_debug_does_not_change_a_handled_answer(app_dir: Path) -> None:
    path = write(app_dir, '{"type": "python", "tasks": {}}')
    result = run_cocaine("--debug", "manifest", "check", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "  - args.source: is required" in result.stderr


# -- usage ------------------------------------------------------------------------------------


def test_help_lists_the_commands() -> None:
    result = run_cocaine("--help")
    assert result.returncode == 0
    for command in ("run", "call", "info", "plugins", "manifest"):
        assert f" {command} " in result.stdout
    assert "--debug" in result.stdout


@pytest.mark.parametrize(("args", "words"), [
    (["no-such-command"], "No such command 'no-such-command'"),
    (["manifest", "check"], "Missing argument"),
    (["plugins", "--jsn"], "No such option: --jsn"),
])
def test_a_usage_error_is_a_message_and_exit_2(args: list[str], words: str) -> None:
    result = run_cocaine(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert words in result.stderr


def test_commands_are_registered_once(capsys: pytest.CaptureFixture[str]) -> None:
    from cocaine_core import cli

    assert cli.main(["--help"]) == 0
    registered = (len(cli.app.registered_commands), len(cli.app.registered_groups))
    assert cli.main(["--help"]) == 0
    assert (len(cli.app.registered_commands), len(cli.app.registered_groups)) == registered
    names = [c.name for c in cli.app.registered_commands]
    assert len(names) == len(set(names)), names


def test_debug_is_read_from_its_option_not_from_anywhere_in_argv() -> None:
    # "--debug" after "--" is the request body, not the option: no traceback.
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    result = run_cocaine("call", "--node", endpoint, "hello", "echo", "--", "--debug")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error 503: nothing listens at {endpoint}")


# -- a node that is not there: every command says so at once ----------------------------------


@pytest.mark.parametrize("args", [
    ["call", "hello", "echo", "hi"],
    ["info"],
    ["app", "list"],
    ["app", "info", "hello"],
    ["app", "remove", "hello"],
    ["app", "restart", "hello"],
    ["app", "deploy", str(ROOT / "examples" / "hello" / "manifest.json")],
], ids=lambda args: " ".join(args[:2]))
def test_nothing_listening_is_said_at_once(args: list[str]) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_cocaine(*args, "--node", endpoint, timeout=30)
    assert time.monotonic() - started < 3
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"error 503: nothing listens at {endpoint}; is the node running? "
                             f"(cocaine node / cocaine run)\n")


def test_call_in_process_to_a_missing_node(capsys: pytest.CaptureFixture[str]) -> None:
    from cocaine_core import cli

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    assert cli.main(["app", "list", "--node", endpoint]) == 1
    assert time.monotonic() - started < 3
    assert capsys.readouterr().err.startswith(f"error 503: nothing listens at {endpoint}; ")


# -- cocaine call: the answer as the app sent it; a terminal's line always ended ---------------

CALL_APP = '''
import time


def echo(request):
    return request.data


def lines(request):
    return "1\\n2\\n3\\n"


def partial(request):
    yield "1"
    raise ValueError("boom after a chunk")


def slow(request):
    yield "tick"
    time.sleep(30)
'''

CALL_TASKS = {name: {"type": "native-server"} for name in ("echo", "lines", "partial", "slow")}


@pytest.fixture
def call_node(cocaine_node: Any, make_app: Any) -> str:
    """A node serving the app ``hello``; its endpoint."""
    cocaine_node.add_app("hello", make_app(CALL_APP, CALL_TASKS, engine={"pool-limit": 2}))
    return cocaine_node.endpoint


def on_terminal(*args: str, interrupt_after: bytes | None = None,
                timeout: float = 30) -> tuple[int, bytes]:
    """Run ``cocaine`` with stdout and stderr on a pseudo-terminal; return its exit code and
    what the terminal showed (``\\r\\n`` as ``\\n``). With ``interrupt_after``, SIGINT it once
    that text showed, as Ctrl-C would."""
    master, worker = pty.openpty()
    process = subprocess.Popen([str(distributions.COCAINE), *args], stdin=subprocess.DEVNULL,
                               stdout=worker, stderr=worker,
                               env=distributions.clean_environment(extra=PLUGINS))
    os.close(worker)
    shown, interrupted = b"", False
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"cocaine {' '.join(args)} still runs; showed {shown!r}"
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not data:
                break
            shown += data
            if interrupt_after is not None and interrupt_after in shown and not interrupted:
                process.send_signal(signal.SIGINT)
                interrupted = True
        return process.wait(timeout), shown.replace(b"\r\n", b"\n")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)


def test_call_on_a_terminal_ends_an_answer_without_a_newline(call_node: str) -> None:
    assert on_terminal("call", "hello", "echo", "world", "--node", call_node) == (0, b"world\n")


def test_call_on_a_terminal_adds_no_second_newline(call_node: str) -> None:
    assert on_terminal("call", "hello", "lines", "--node", call_node) == (0, b"1\n2\n3\n")


def test_call_piped_prints_the_answer_exactly(call_node: str) -> None:
    result = run_cocaine("call", "hello", "echo", "world", "--node", call_node)
    assert (result.returncode, result.stdout, result.stderr) == (0, "world", "")


def test_an_error_after_a_chunk_starts_its_own_line(call_node: str) -> None:
    assert on_terminal("call", "hello", "partial", "--node", call_node) == (
        1, b"1\nerror 502: ValueError: boom after a chunk\n")


def test_ctrl_c_during_a_call_leaves_the_line_ended(call_node: str) -> None:
    code, shown = on_terminal("call", "hello", "slow", "--node", call_node,
                              interrupt_after=b"tick")
    assert (code, shown) == (130, b"tick\n")


def test_call_node_list_prints_json(call_node: str) -> None:
    result = run_cocaine("call", "@node", "list", "--node", call_node)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == '[\n  "hello"\n]\n'


def test_call_node_method_takes_json_arguments(call_node: str) -> None:
    result = run_cocaine("call", "@node", "app-info", '{"name": "hello"}', "--node", call_node)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["state"] == "running"
    bad = run_cocaine("call", "@node", "app-info", "hello", "--node", call_node)
    assert bad.returncode == 2
    assert "@node takes its arguments as a JSON object" in bad.stderr


# -- cocaine info and app list: readable at 80 columns, nothing cut ----------------------------

LONG_NAME = "image-thumbnailer-for-the-photo-archive"


@pytest.fixture
def busy_node(cocaine_node: Any, make_app: Any) -> str:
    """A node with an app whose name is long, that has done 3 jobs and failed 2."""
    cocaine_node.add_app(LONG_NAME, make_app(CALL_APP, CALL_TASKS))
    with cocaine_node.client() as client:
        for _ in range(3):
            client.call(LONG_NAME, "echo", b"x")
        for _ in range(2):
            with pytest.raises(ServiceError):
                client.call(LONG_NAME, "partial")
    return cocaine_node.endpoint


def piped(*args: str, columns: str | None) -> subprocess.CompletedProcess[str]:
    """Run ``cocaine`` with its output piped, with ``COLUMNS`` set or (None) unset."""
    env = distributions.clean_environment(extra=PLUGINS)
    env.pop("COLUMNS")
    if columns is not None:
        env["COLUMNS"] = columns
    return subprocess.run([str(distributions.COCAINE), *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


@pytest.mark.parametrize("columns", ["80", None, "200"], ids=["COLUMNS=80", "piped", "wide"])
def test_info_is_whole_at_any_width(busy_node: str, columns: str | None) -> None:
    result = piped("info", "--node", busy_node, columns=columns)
    assert (result.returncode, result.stderr) == (0, "")
    out = result.stdout
    assert "…" not in out
    assert f"{LONG_NAME} · running" in out
    assert "3 done, 2 failed, 0 timed out, 0 refused" in out
    for task in CALL_TASKS:
        assert f"{task} (native-server)" in out
    assert max(len(line) for line in out.splitlines()) <= int(columns or 80)


@pytest.mark.parametrize("columns", ["80", None, "200"], ids=["COLUMNS=80", "piped", "wide"])
def test_app_list_is_whole_at_any_width(busy_node: str, columns: str | None) -> None:
    result = piped("app", "list", "--node", busy_node, columns=columns)
    assert (result.returncode, result.stderr) == (0, "")
    out = result.stdout
    assert "…" not in out
    assert out.startswith(f"{LONG_NAME}  running · ")
    flat = " ".join(out.split())
    assert "3 done · 2 failed · tasks: echo, lines, partial, slow" in flat
    assert max(len(line) for line in out.splitlines()) <= int(columns or 80)


@pytest.mark.parametrize("args, message", [
    (["node", "--log-level", "nonsense"], "error: unknown log level 'nonsense'; choose one of"),
    (["call", "a", "b", "--wait", "nan"], "error 400: wait must be a number of seconds"),
    (["call", "a", "b", "--wait", "-1"], "error 400: wait must be a number of seconds"),
    (["call", "a", "b", "--node", "garbage"], "error 400: cannot connect to 'garbage'"),
], ids=["log level", "wait nan", "wait negative", "endpoint"])
def test_careless_options_are_one_clear_message(tmp_path: Path, args: list[str],
                                                message: str) -> None:
    """Each was a Python traceback, or (a negative --wait) a call that never returned."""
    if args[0] == "node":
        args = [*args, "--run-dir", str(tmp_path / "run"), "--listen",
                f"tcp://127.0.0.1:{free_port()}"]
    elif "--node" not in args:
        args = [*args, "--node", f"tcp://127.0.0.1:{free_port()}"]
    result = run_cocaine(*args, cwd=tmp_path)
    assert result.returncode == 1, result
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr
