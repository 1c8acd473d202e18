"""The distributions install like any other: wheels of cocaine-core and cocaine-zmq, built and
installed with plain pip into a fresh venv (dependencies from PyPI), find each other.

Slow (it builds two wheels and downloads the dependencies), but run by default: it is the only
test of the packaging itself, and of the entry point as pip installs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.distributions import PLUGIN_VARIABLES

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str | Path, timeout: float = 900, cwd: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with none of this environment's plugin or venv settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in (*PLUGIN_VARIABLES, "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env,
                            timeout=timeout, cwd=cwd, check=False)
    if check:
        assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def fresh_venv() -> Iterator[Path]:
    """A new venv with the cocaine-core and cocaine-zmq wheels installed by plain pip."""
    with tempfile.TemporaryDirectory(prefix="cocaine-wheels-",
                                     ignore_cleanup_errors=True) as temp:
        wheels = Path(temp) / "wheels"
        run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels,
            ROOT, ROOT / "plugins" / "cocaine_zmq")
        built = sorted(p.name for p in wheels.glob("*.whl"))
        assert [name.split("-")[0] for name in built] == ["cocaine_core", "cocaine_zmq"], built
        venv = Path(temp) / "venv"
        run(sys.executable, "-m", "venv", venv)
        run(venv / "bin" / "python", "-m", "pip", "install", *sorted(wheels.glob("*.whl")))
        yield venv


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_zmq_wheel_is_a_plugin_of_the_core_wheel(fresh_venv: Path) -> None:
    result = run(fresh_venv / "bin" / "cocaine", "plugins", "--json", cwd=fresh_venv)
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(records) == {"core", "zmq"}, records
    zmq = records["zmq"]
    assert (zmq["distribution"], zmq["module"], zmq["loaded"], zmq["errors"]) == (
        "cocaine-zmq", "cocaine_zmq.plugin", True, [])
    assert records["core"]["distribution"] == "cocaine-core"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_installed_core_is_the_wheel_not_the_work_tree(fresh_venv: Path) -> None:
    result = run(fresh_venv / "bin" / "python", "-c",
                 "import cocaine_core, cocaine_zmq; print(cocaine_core.__file__); "
                 "print(cocaine_zmq.__file__)", cwd=fresh_venv)
    for line in result.stdout.splitlines():
        assert Path(line).is_relative_to(fresh_venv), line


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_missing_language_names_its_distribution(fresh_venv: Path) -> None:
    manifest = fresh_venv / "app.json"
    manifest.write_text('{"type": "python", "args": {"source": "app.py"},\n'
                        ' "tasks": {"echo": {"type": "native-server"}},}\n')
    result = run(fresh_venv / "bin" / "cocaine", "manifest", "check", manifest, check=False,
                 cwd=fresh_venv)
    assert result.returncode == 1
    assert result.stderr == (
        f"1 problem with the manifest in {manifest}:\n"
        "  - type: language 'python' is provided by cocaine-python, which is not installed or "
        "failed to load (see 'cocaine plugins'); pip install cocaine-python. installed "
        "languages: (none)\n")
