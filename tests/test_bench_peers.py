"""Celery runs in every full ``bench/run.py`` (a quick one only with ``--peers``): it installs
a missing redis-server with apt-get, and Celery and redis in a venv with pip, or with uv's pip
in one without (as uv makes them), or says what to install (``bench/baselines/celery_peer.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ is not installed; run.py puts the root on sys.path too

from bench.baselines import celery_peer  # noqa: E402
from bench.baselines.celery_peer import bundled_pip, install, install_command  # noqa: E402

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


def test_a_venv_without_pip_or_uv_installs_with_the_pip_wheel_of_its_ensurepip(
        venv_without_pip: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no uv
    wheel = bundled_pip(venv_without_pip)
    if wheel is None:
        pytest.skip("this python has no ensurepip (Debian's python3 without python3-venv)")
    assert install_command(PACKAGES, tmp_path, venv_without_pip) == [
        venv_without_pip, f"{wheel}/pip", "install", "--quiet", "--target", str(tmp_path),
        *PACKAGES]
    found = subprocess.run([venv_without_pip, f"{wheel}/pip", "--version"], capture_output=True,
                           timeout=120)
    assert found.returncode == 0 and found.stdout.startswith(b"pip "), found.stderr


def test_a_venv_without_pip_uv_or_ensurepip_says_what_to_install(
        venv_without_pip: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no uv
    monkeypatch.setattr(celery_peer, "bundled_pip", lambda python: None)  # no ensurepip
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


@pytest.mark.parametrize(("argv", "peers"), [
    ([], True), (["--no-peers"], False), (["--quick"], False), (["--quick", "--peers"], True)])
def test_celery_runs_in_every_full_run_and_in_a_quick_one_only_when_asked(argv: list[str],
                                                                         peers: bool) -> None:
    from bench.run import parse_args

    assert parse_args(argv).peers is peers


@pytest.fixture
def fake_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``apt-get`` on PATH (and nothing else) that logs its arguments; ``install`` puts a
    ``redis-server`` beside it, unless the file ``refuse`` exists."""
    if os.geteuid() != 0:
        pytest.skip("installing with apt-get is tried as root only (else with sudo -n)")
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "apt-args"
    script = folder / "apt-get"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n'
                      f'[ -e {tmp_path}/refuse ] && exit 100\n'
                      f'[ "$1" = install ] && printf "#!/bin/sh\\n" > {folder}/redis-server '
                      f"&& /bin/chmod 755 {folder}/redis-server\nexit 0\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))
    return log


def test_a_missing_redis_server_is_installed_with_apt_get(fake_apt: Path) -> None:
    from bench.baselines.celery_peer import install_redis

    assert install_redis() is None
    assert fake_apt.read_text().splitlines() == ["install -y -q redis-server"]


def test_a_redis_server_apt_get_cannot_install_is_said(fake_apt: Path) -> None:
    from bench.baselines.celery_peer import install_redis

    (fake_apt.parent / "refuse").touch()
    assert install_redis() == "redis-server is not on PATH and apt-get could not install it"
    assert fake_apt.read_text().splitlines() == ["install -y -q redis-server", "update -q"]
