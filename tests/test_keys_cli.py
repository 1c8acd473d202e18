"""``cocaine keys`` and the CLI's keys as a careless operator meets them (from the operator
probe): a mistyped storage, a private key given to authorize, a revoke said twice, a public
key given to sign with, a key file that cannot be used while calling an app, the first
control command of a new user, and a node started without the --curve its storage had."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cocaine_core.client import Client
from cocaine_core.errors import TrustError
from cocaine_core.testing import NodeProcess, free_port
from cocaine_core.trust.keys import generate
from tests.test_curve import curve_node  # noqa: F401 - a fixture

COCAINE = str(Path(sys.executable).with_name("cocaine"))


def cocaine(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COCAINE, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_a_mistyped_storage_is_an_error_and_nothing_is_made(tmp_path: Path) -> None:
    key = generate(tmp_path / "k")
    typo = tmp_path / "storage-typo"
    result = cocaine("keys", "authorize", f"{key.path}.pub", "--storage", f"files://{typo}")
    assert result.returncode == 1 and "no storage at" in result.stderr, result.stderr
    assert not typo.exists()
    listed = cocaine("keys", "list", "--storage", f"files://{typo}")
    assert listed.returncode == 1 and not typo.exists()


def test_authorize_names_the_storage_and_warns_of_a_private_key(tmp_path: Path) -> None:
    key = generate(tmp_path / "k")
    store = tmp_path / "store"
    store.mkdir()
    result = cocaine("keys", "authorize", str(key.path), "--storage", f"files://{store}")
    assert result.returncode == 0, result.stderr
    assert f"authorized {key.fingerprint}" in result.stdout and str(store) in result.stdout
    assert "is a private key" in result.stderr
    first = cocaine("keys", "revoke", key.fingerprint, "--storage", f"files://{store}")
    assert first.returncode == 0 and first.stdout.startswith("revoked"), first.stdout
    again = cocaine("keys", "revoke", key.fingerprint, "--storage", f"files://{store}")
    assert again.returncode == 0 and "already revoked" in again.stdout, again.stdout


def test_a_public_key_given_to_sign_with_is_named_as_such(tmp_path: Path) -> None:
    key = generate(tmp_path / "k")
    result = cocaine("info", "--key", f"{key.path}.pub", "--node",
                     f"tcp://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "is a public key" in result.stderr and "without .pub" in result.stderr


def test_a_key_that_cannot_be_used_does_not_stop_a_call_to_an_app(cocaine_node, make_app,
                                                                   tmp_path: Path) -> None:
    cocaine_node.add_app("hello", make_app("def echo(request):\n    return request.data\n"))
    with Client(cocaine_node.endpoint, wait=30, key=tmp_path / "gone") as client:
        assert client.call("hello", "echo", b"hi") == b"hi"
        with pytest.raises(TrustError, match="no private key"):
            client.control("list")


def test_the_first_control_command_of_a_new_user_makes_their_key(tmp_path: Path) -> None:
    config = tmp_path / "config"
    env = {"XDG_CONFIG_HOME": str(config)}
    result = cocaine("app", "list", "--node", f"tcp://127.0.0.1:{free_port()}", env=env)
    key = config / "cocaine" / "id_ed25519"
    assert key.is_file() and key.stat().st_mode & 0o777 == 0o600
    assert f"made your key {key}" in result.stderr and "error 503" in result.stderr
    # A call to an app makes none.
    other = tmp_path / "other"
    cocaine("call", "hello", "echo", "--node", f"tcp://127.0.0.1:{free_port()}",
            env={"XDG_CONFIG_HOME": str(other)})
    assert not (other / "cocaine").exists()


def test_a_node_started_without_the_curve_its_storage_had_warns(curve_node) -> None:  # noqa: F811
    node = curve_node()
    assert node.stop() == 0
    plain = NodeProcess(node.folder)  # the same storage, without --curve
    try:
        plain.start()
        assert "its storage holds a Curve key pair" in plain.log.read_text()
    finally:
        plain.kill()
        shutil.rmtree(plain.run_dir, ignore_errors=True)
