"""The ``cocaine`` command (``cocaine_core/cli/``): manifest check, errors, ``--debug``.

Every test runs the real ``cocaine`` script of the venv as a subprocess. ``cocaine plugins`` is
tested with the plugins themselves, in ``tests/test_plugins.py``.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
                   "backend": "process"},
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
        '  - engine.pool-limit: must be a positive integer, got "ten"\n'
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
