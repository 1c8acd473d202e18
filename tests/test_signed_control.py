"""Signed control: a real ``cocaine node`` takes control requests signed by a key it
authorizes, and refuses (401, nothing stored) every other: unsigned, another key, a stale
time, a replay, a changed body, a revoked key, a process of another user."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from cocaine_core import protocol
from cocaine_core.client import Client
from cocaine_core.errors import ServiceError
from cocaine_core.protocol import CONTROL_APP, Code
from cocaine_core.testing import write_app
from cocaine_core.trust.keys import Signer, default_key_path, generate

EVIL = "def run(request):\n    import subprocess\n    return subprocess.run('id', shell=True, " \
       "capture_output=True).stdout\n"


def evil_deploy_args(name: str = "evil") -> dict[str, Any]:
    """What the probe of the issue sent: a deploy of code that runs a shell command."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = EVIL.encode()
        info = tarfile.TarInfo("evil.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    code = buffer.getvalue()
    return {"name": name, "manifest": {"type": "python", "args": {"source": "evil.py"},
                                       "tasks": {"run": {"type": "native-server"}}},
            "archive": code, "sha256": hashlib.sha256(code).hexdigest()}


def raw_control(endpoint: str, method: str, args: dict[str, Any],
                auth: Any = None, *, frames: list[bytes] | None = None
                ) -> tuple[list[bytes], list[Any]]:
    """Send one control request from a bare DEALER; return the frames sent and the answer's
    header fields."""
    body = msgpack.packb(args, use_bin_type=True)
    policy: dict[str, Any] = {} if auth is None else {"auth": auth}
    sent = frames or [protocol.pack(Code.REQUEST, 1, CONTROL_APP, method, policy), body]
    with zmq.Context.instance().socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sock.send_multipart(sent)
        assert sock.poll(20_000), "no answer from the node"
        return sent, protocol.unpack(sock.recv_multipart()[0])


def assert_refused(answer: list[Any], *words: str) -> None:
    assert answer[0] == Code.ERROR and answer[2] == 401, answer
    for word in words:
        assert word in answer[3], answer[3]


def stored_apps(node: Any) -> list[str]:
    return sorted(p.name for p in (node.storage / "apps").glob("*")) if \
        (node.storage / "apps").is_dir() else []


@pytest.fixture
def node(node_process):
    return node_process()


def test_an_unsigned_deploy_from_a_raw_dealer_is_refused_and_nothing_is_stored(node) -> None:
    _, answer = raw_control(node.endpoint, "deploy", evil_deploy_args())
    assert_refused(answer, "unsigned", "cocaine keys generate", "cocaine keys authorize")
    for method in ("list", "info", "app-info", "upload-begin", "remove", "restart"):
        _, answer = raw_control(node.endpoint, method, {"name": "evil", "size": 10})
        assert_refused(answer, "unsigned")
    assert stored_apps(node) == []
    assert not list((node.storage / "code").glob("*")) if (node.storage / "code").is_dir() \
        else True
    with node.client() as client:
        assert client.control("list") == []  # signed with this run's key: taken


def test_a_signature_by_another_key_a_stale_time_or_a_changed_body_is_refused(
        node, tmp_path: Path) -> None:
    stranger = generate(tmp_path / "stranger")
    args = evil_deploy_args()
    body = msgpack.packb(args, use_bin_type=True)
    _, answer = raw_control(node.endpoint, "deploy", args, stranger.sign("deploy", body))
    assert_refused(answer, stranger.fingerprint, "does not authorize", "cocaine keys authorize")

    owner = Signer.load(default_key_path())
    stale = owner.sign("deploy", body)
    stale["ts"] -= 120
    # A fresh signature over the stale time: only the time is wrong.
    from cocaine_core.trust.keys import signing_payload
    stale["sig"] = owner.key.sign(signing_payload("deploy", body, stale["ts"], stale["nonce"]))
    _, answer = raw_control(node.endpoint, "deploy", args, stale)
    assert_refused(answer, "120 s before", "clock")

    changed = owner.sign("deploy", msgpack.packb({"name": "harmless"}, use_bin_type=True))
    _, answer = raw_control(node.endpoint, "deploy", args, changed)
    assert_refused(answer, "does not match")

    forged = owner.sign("list", body)  # signed for another method
    _, answer = raw_control(node.endpoint, "deploy", args, forged)
    assert_refused(answer, "does not match")
    assert stored_apps(node) == []


def test_a_replayed_request_is_refused(node) -> None:
    owner = Signer.load(default_key_path())
    body = msgpack.packb({}, use_bin_type=True)
    sent, answer = raw_control(node.endpoint, "list", {}, owner.sign("list", body))
    assert answer[0] == Code.CHUNK, answer  # the original is taken
    _, again = raw_control(node.endpoint, "list", {}, frames=sent)
    assert_refused(again, "nonce", "replayed")


def test_a_signed_deploy_through_the_cli_works_and_a_revoked_key_is_refused_at_once(
        node, tmp_path: Path) -> None:
    manifest = write_app(tmp_path / "hello", "def echo(request):\n    return request.data\n",
                         {"echo": {"type": "native-server"}})
    node.cli("app", "deploy", str(manifest))
    with node.client() as client:
        assert client.call("hello", "echo", b"hi") == b"hi"
    assert stored_apps(node) == ["hello"]

    # A second operator: authorized through the node's storage, then revoked.
    other = tmp_path / "other"
    made = subprocess.run([str(Path(sys.executable).with_name("cocaine")), "keys", "generate",
                           "--key", str(other)], capture_output=True, text=True, check=True)
    assert "fingerprint SHA256:" in made.stdout
    keys = [str(Path(sys.executable).with_name("cocaine")), "keys"]
    store = ["--storage", f"files://{node.storage}"]
    subprocess.run([*keys, "authorize", f"{other}.pub", *store], check=True,
                   capture_output=True)
    listed = node.cli("app", "list", "--key", str(other))
    assert "hello" in listed.stdout.decode()
    fingerprint = Signer.load(other).fingerprint
    subprocess.run([*keys, "revoke", fingerprint, *store], check=True, capture_output=True)
    refused = node.cli("app", "remove", "hello", "--key", str(other), check=False)
    assert refused.returncode == 1
    assert "error 401" in refused.stderr.decode() and "revoked" in refused.stderr.decode()
    shown = subprocess.run([*keys, "list", *store, "--json"], check=True,
                           capture_output=True, text=True)
    states = {k["fingerprint"]: k["revoked"] for k in json.loads(shown.stdout)["keys"]}
    assert states[fingerprint] is not None and list(states.values()).count(None) == 1
    assert stored_apps(node) == ["hello"]  # the revoked key's remove did nothing


def test_the_node_authorizes_its_user_s_key_at_the_first_start_only(
        node_process, tmp_path: Path) -> None:
    config = tmp_path / "config"
    env = {**os.environ, "XDG_CONFIG_HOME": str(config)}
    node = node_process(env=env)
    key = config / "cocaine" / "id_ed25519"
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600
    assert (key.parent.stat().st_mode & 0o777) == 0o700
    assert "authorized SHA256:" in node.log.read_text()
    with Client(node.endpoint, wait=30, key=key) as client:
        assert client.control("list") == []
    # This run's usual key is not the node user's: refused.
    with Client(node.endpoint, wait=30) as client, pytest.raises(ServiceError) as refused:
        client.control("list")
    assert refused.value.code == 401
    # Revoked, it is not authorized again by a restart.
    subprocess.run([str(Path(sys.executable).with_name("cocaine")), "keys", "revoke",
                    str(key) + ".pub", "--storage", f"files://{node.storage}"], check=True,
                   capture_output=True)
    assert node.stop() == 0
    node.start()
    with Client(node.endpoint, wait=30, key=key) as client, pytest.raises(ServiceError) as no:
        client.control("list")
    assert no.value.code == 401 and "revoked" in no.value.message


NOBODY_PROBE = textwrap.dedent("""
    import json, os, sys
    import msgpack, zmq
    from cocaine_core import protocol
    from cocaine_core.client import Client
    from cocaine_core.errors import ServiceError, TrustError
    from cocaine_core.trust import keys
    sys.path.insert(0, sys.argv[3])
    from test_signed_control import evil_deploy_args, raw_control
    endpoint, owner_key = sys.argv[1], sys.argv[2]
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    out = {"uid": os.getuid()}
    try:
        open(owner_key, "rb").read()
        out["read_key"] = "read"
    except OSError as exc:
        out["read_key"] = type(exc).__name__
    _, answer = raw_control(endpoint, "deploy", evil_deploy_args())
    out["raw"] = answer[2]
    os.environ["XDG_CONFIG_HOME"] = "/nonexistent"
    with Client(endpoint, wait=30) as client:
        try:
            client.control("deploy", **evil_deploy_args())
        except ServiceError as exc:
            out["client"] = exc.code
    mine = keys.Signer(keys.Ed25519PrivateKey.generate())
    with Client(endpoint, wait=30, key=mine) as client:
        try:
            client.control("deploy", **evil_deploy_args())
        except ServiceError as exc:
            out["own_key"] = exc.code
    print(json.dumps(out))
""")


def test_a_process_of_another_user_cannot_deploy(node, tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(NOBODY_PROBE)
    result = subprocess.run([sys.executable, str(probe), node.endpoint,
                             str(default_key_path()), str(Path(__file__).parent)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"uid": 65534, "read_key": "PermissionError", "raw": 401, "client": 401,
                   "own_key": 401}
    assert stored_apps(node) == []
