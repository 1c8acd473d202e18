"""``bench/run.py --peers`` installs Celery and redis in a venv with pip, or with uv's pip in one
without (as uv makes them), or says what to install (``bench/baselines/celery_peer.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is not installed; run.py puts the root on sys.path too

from bench.baselines.celery_peer import install, install_command  # noqa: E402

PACKAGES = ("celery", "redis")


@pytest.fixture(scope="module")
def venv_without_pip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The python of a venv made with ``--without-pip`` (what ``uv venv`` makes)."""
    folder = tmp_path_factory.mktemp("venv") / "nopip"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True,
                   timeout=120)
    python = folder / "bin" / "python"
    assert subprocess.run([python, "-c", "import pip"], capture_output=True).returncode != 0
    return str(python)


@pytest.fixture
def fake_uv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``uv`` on PATH (and nothing else) that records its arguments and succeeds."""
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "uv-args"
    script = folder / "uv"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))
    return log


def test_a_venv_with_pip_installs_with_its_pip(tmp_path: Path) -> None:
    if subprocess.run([sys.executable, "-c", "import pip"], capture_output=True).returncode:
        pytest.skip("this venv has no pip")
    assert install_command(PACKAGES, tmp_path, sys.executable) == [
        sys.executable, "-m", "pip", "install", "--quiet", "--target", str(tmp_path), *PACKAGES]


def test_a_venv_without_pip_installs_with_uv(venv_without_pip: str, fake_uv: Path,
                                             tmp_path: Path) -> None:
    target = tmp_path / "peers"
    assert install(PACKAGES, target, venv_without_pip) is None
    assert fake_uv.read_text().split("\n")[:-1] == [
        "pip", "install", "--quiet", "--python", venv_without_pip, "--target", str(target),
        *PACKAGES]


def test_a_venv_without_pip_or_uv_says_what_to_install(venv_without_pip: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no uv
    reason = install(PACKAGES, tmp_path / "peers", venv_without_pip)
    assert reason == (f"cannot install celery redis: {venv_without_pip} has no pip (a venv made "
                      f"by uv or with --without-pip) and uv is not on PATH; install them into "
                      f"the venv (uv pip install celery redis, or python -m ensurepip then "
                      f"python -m pip install celery redis)")
    assert not (tmp_path / "peers").exists()


def test_a_failed_install_says_which_installer_failed(venv_without_pip: str, fake_uv: Path,
                                                      tmp_path: Path) -> None:
    uv = Path(os.environ["PATH"]) / "uv"
    uv.write_text("#!/bin/sh\necho 'No solution found when resolving dependencies' >&2\n"
                  "exit 1\n")
    reason = install(PACKAGES, tmp_path / "peers", venv_without_pip)
    assert reason == ("could not install celery and redis (uv): No solution found when "
                      "resolving dependencies")
