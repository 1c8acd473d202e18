"""CurveZMQ: ``cocaine node --curve`` encrypts and authenticates its endpoint; clients pass its
public key; ``--client-keys`` limits who may connect at all. Real node processes, real
sockets, the bytes on the wire read through a relay."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils import z85

from cocaine_core.archive import pack_source
from cocaine_core.client import AsyncClient, Client
from cocaine_core.errors import NodeError, ServiceError
from cocaine_core.storages import open_storage
from cocaine_core.testing import NodeProcess, RunningNode, free_port, wait_until, write_app
from cocaine_core.trust.curve import (
    beyond_loopback,
    check_server_key,
    curve_keypair,
    ed25519_to_x25519,
    read_client_keys,
    server_public_key,
)
from cocaine_core.trust.keys import Signer, default_key_path, generate, load_or_create

COCAINE = str(Path(sys.executable).with_name("cocaine"))
MARKER = "SNIFF-ME-7f3a9c"
CODE = f"""
def echo(request):
    return request.data + b"|{MARKER}-IN-THE-ANSWER"
"""


class CurveNode(NodeProcess):
    """A ``cocaine node --curve`` process: clients of it pass its public key."""

    server_key: str = ""

    def start(self, timeout: float = 30.0) -> CurveNode:
        """Start the node; wait until its key is stored and it answers a client with it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [COCAINE, "node", "--listen", self.endpoint, "--storage",
                 f"files://{self.storage}", "--run-dir", str(self.run_dir), "--log-format",
                 "plain", *self.extra], stdout=log, stderr=subprocess.STDOUT)

        def answers() -> bool:
            assert self.process.poll() is None, f"the node exited:\n{self.log.read_text()}"
            self.server_key = server_public_key(open_storage(f"files://{self.storage}")) or ""
            if not self.server_key:
                return False
            with Client(self.endpoint, wait=0.5, server_key=self.server_key) as client:
                try:
                    info = client.control("info")
                    return not info["busy"] and not info["loading"]
                except ServiceError:
                    return False

        wait_until(answers, timeout=timeout, message="the Curve node to answer")
        return self

    def client(self, wait: float | None = 60.0, **keys: Any) -> Client:
        """A client that knows the node's public key (unless ``server_key`` is given)."""
        keys.setdefault("server_key", self.server_key)
        return Client(self.endpoint, wait=wait, **keys)

    def cli(self, *args: str, check: bool = True, cwd: Path | None = None,
            input: bytes | None = None, node: str | None = None) -> Any:
        """``cocaine ARGS --node ENDPOINT --server-key KEY``."""
        result = subprocess.run([COCAINE, *args, "--node", node or self.endpoint,
                                 "--server-key", self.server_key], cwd=cwd,
                                capture_output=True, input=input, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"cocaine {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout.decode()}{result.stderr.decode()}")
        return result


@pytest.fixture
def curve_node(node_process, tmp_path: Path):
    """A factory of ``cocaine node --curve`` processes (killed after the test)."""
    def factory(*extra: str, folder: Path | None = None) -> CurveNode:
        node = node_process("--curve", *extra, folder=folder, start=False)
        node.__class__ = CurveNode
        return node.start()
    return factory


def deploy_echo(node: NodeProcess, folder: Path, **cli: Any) -> None:
    manifest = write_app(folder / "hello", CODE, {"echo": {"type": "native-server"}})
    node.cli("app", "deploy", str(manifest), **cli)


def refused(call: Any) -> tuple[ServiceError, float]:
    started = time.monotonic()
    with pytest.raises(ServiceError) as caught:
        call()
    return caught.value, time.monotonic() - started


# -- a client needs the node's key ------------------------------------------------------------

def test_without_the_server_key_a_client_calls_nothing_and_is_told_what_to_do(
        curve_node, tmp_path: Path) -> None:
    node = curve_node()
    deploy_echo(node, tmp_path)  # a signed deploy through the CLI, over CurveZMQ
    with node.client() as client:
        assert client.call("hello", "echo", b"hi").startswith(b"hi|")

    for target in (("hello", "echo", b"hi"), ("@node", "info", None)):
        with Client(node.endpoint, wait=20) as plain:
            error, took = refused(lambda target=target: plain.call(*target))
        assert error.code == 503 and "--server-key" in error.message, error.message
        assert "--curve" in error.message
        assert took < 10, f"a plain client waited {took:.1f} s to be refused"

    async def plain_async() -> ServiceError:
        client = AsyncClient(node.endpoint, wait=20)
        try:
            with pytest.raises(ServiceError) as caught:
                await client.call("hello", "echo", b"hi")
            return caught.value
        finally:
            client.close()
    error = asyncio.run(plain_async())
    assert "--server-key" in error.message, error.message

    wrong = zmq.curve_keypair()[0].decode()
    with Client(node.endpoint, wait=20, server_key=wrong) as client:
        error, took = refused(lambda: client.call("hello", "echo", b"hi"))
    assert "not this node's public key" in error.message and took < 10, error.message

    shown = node.cli("info").stdout.decode()
    assert f"clients pass --server-key {node.server_key}" in shown
    assert f"--server-key {node.server_key}" in node.log.read_text()
    stored = open_storage(f"files://{node.storage}").get("curve", "server").decode()
    secret = stored.split('"secret": "')[1][:40]
    assert secret not in node.log.read_text() and secret not in shown


def test_a_bad_server_key_is_a_clear_error_at_once() -> None:
    with pytest.raises(ServiceError) as caught:
        check_server_key("too-short")
    assert caught.value.code == 400 and "40 Z85 characters" in caught.value.message
    assert check_server_key(" " + zmq.curve_keypair()[0].decode() + "\n")


# -- the bytes on the wire -------------------------------------------------------------------

class Relay:
    """A TCP relay on 127.0.0.1 that records every byte, both ways."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.recorded = bytearray()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = [self.listener]
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                self.threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(None)
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.recorded += data
            try:
                sink.sendall(data)
            except OSError:
                return

    def bytes(self) -> bytes:
        with self.lock:
            return bytes(self.recorded)

    def close(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self.threads:
            thread.join(5)


@pytest.mark.parametrize("curve", [True, False], ids=["curve", "plain"])
def test_a_sniffed_connection_carries_no_plaintext(node_process, curve_node, tmp_path: Path,
                                                   curve: bool) -> None:
    node = curve_node() if curve else node_process()
    relay = Relay(int(node.endpoint.rsplit(":", 1)[1]))
    through = f"tcp://127.0.0.1:{relay.port}"
    keys = {"server_key": node.server_key} if curve else {}
    try:
        manifest = write_app(tmp_path / "hello", CODE, {"echo": {"type": "native-server"}})
        code = pack_source(tmp_path / "hello" / "app.py")  # the bytes the CLI uploads
        subprocess.run([COCAINE, "app", "deploy", str(manifest), "--node", through,
                        *(["--server-key", node.server_key] if curve else [])],
                       check=True, capture_output=True, timeout=120)
        with Client(through, wait=30, **keys) as client:
            answer = client.call("hello", "echo", f"{MARKER}-IN-THE-REQUEST".encode())
        assert answer == f"{MARKER}-IN-THE-REQUEST|{MARKER}-IN-THE-ANSWER".encode()
        wire = relay.bytes()  # the relay records what it forwards before forwarding it
    finally:
        relay.close()
    assert len(wire) > 1000, "the relay saw the deploy, the request and the answer"
    code_seen = code[10:-8] in wire  # the compressed files, without gzip's header
    assert code_seen is not curve, "code: plaintext on the wire" if code_seen else "not seen"
    for part in ("IN-THE-REQUEST", "IN-THE-ANSWER"):
        seen = f"{MARKER}-{part}".encode() in wire
        assert seen is not curve, f"{part}: {'plaintext on the wire' if seen else 'not seen'}"
    assert (b"echo" in wire) is not curve  # the event name and headers too


# -- who may connect ---------------------------------------------------------------------------

def test_client_keys_let_listed_keys_in_and_refuse_the_others(curve_node,
                                                              tmp_path: Path) -> None:
    owner, _ = load_or_create(default_key_path())
    listed = generate(tmp_path / "listed")
    unlisted = generate(tmp_path / "unlisted")
    keys = tmp_path / "client-keys"
    keys.write_text(f"# who may connect\n\n{owner.public.openssh()}\n"
                    f"  {listed.public.openssh()}  \n")
    node = curve_node("--client-keys", str(keys))
    assert node.cli("info").stdout.decode().count("2 client keys") == 1
    deploy_echo(node, tmp_path)
    with node.client(key=tmp_path / "listed") as client:
        assert client.call("hello", "echo", b"hi").startswith(b"hi|")
    with node.client(key=tmp_path / "unlisted", wait=20) as client:
        error, took = refused(lambda: client.call("hello", "echo", b"hi"))
    assert "--client-keys" in error.message and "unlisted.pub" in error.message, error.message
    assert took < 10
    assert "not in --client-keys" in node.log.read_text()

    # A raw Z85 Curve key line, read again on SIGHUP.
    public = curve_keypair(unlisted)[0].decode()
    keys.write_text(keys.read_text() + f"{public}\n")
    node.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "3 key(s)" in node.log.read_text(), timeout=10,
               message="the node to read --client-keys again")
    with node.client(key=tmp_path / "unlisted") as client:
        assert client.call("hello", "echo", b"hi").startswith(b"hi|")


@pytest.mark.parametrize(("text", "line"), [
    ("# fine\nssh-ed25519 AAAAnot-base64 x\n", 2),
    ("\n\nnot a key at all\n", 3),
    ("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ me\n", 1),
])
def test_a_malformed_client_keys_file_is_a_clear_error_at_start(tmp_path: Path, text: str,
                                                                line: int) -> None:
    keys = tmp_path / "client-keys"
    keys.write_text(text)
    with pytest.raises(NodeError) as caught:
        read_client_keys(keys)
    assert f"--client-keys {keys}, line {line}" in str(caught.value)
    done = subprocess.run([COCAINE, "node", "--curve", "--client-keys", str(keys),
                           "--listen", f"tcp://127.0.0.1:{free_port()}", "--storage",
                           f"files://{tmp_path / 'storage'}", "--run-dir",
                           str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"line {line}" in done.stderr + done.stdout and "Traceback" not in done.stderr


def test_client_keys_without_curve_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "client-keys"
    keys.write_text("")
    done = subprocess.run([COCAINE, "node", "--client-keys", str(keys), "--storage",
                           f"files://{tmp_path / 'storage'}", "--run-dir",
                           str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--client-keys needs --curve" in done.stderr + done.stdout


def test_an_ssh_key_s_curve_key_is_the_one_its_client_uses(tmp_path: Path) -> None:
    for number in range(20):
        signer = generate(tmp_path / f"k{number}")
        assert z85.encode(ed25519_to_x25519(signer.public.raw)) == curve_keypair(signer)[0]
    signer = Signer.load(tmp_path / "k0")
    keys = tmp_path / "keys"
    keys.write_text(signer.public.openssh() + "\n")
    assert read_client_keys(keys) == {z85.decode(curve_keypair(signer)[0])}


def test_the_zap_handler_stops_with_the_node(tmp_path: Path) -> None:
    owner, _ = load_or_create(default_key_path())
    keys = tmp_path / "client-keys"
    keys.write_text(owner.public.openssh() + "\n")
    running = RunningNode()
    running.node.curve, running.node.client_keys = True, keys
    running.start()
    try:
        key = running.info()["curve-key"]
        with Client(running.endpoint, wait=10, server_key=key) as c:
            assert c.control("info")["client-keys"] == 1
        with Client(running.endpoint, wait=10, server_key=key, key=False) as c:
            assert "--client-keys" in refused(lambda: c.control("info"))[0].message
        assert any(t.name == "cocaine-zap" for t in threading.enumerate())
    finally:
        running.stop()
    wait_until(lambda: not any(t.name == "cocaine-zap" for t in threading.enumerate()),
               timeout=10, message="the ZAP thread to stop")


# -- the key pair, the warning -----------------------------------------------------------------

def test_the_server_key_survives_a_restart(curve_node, tmp_path: Path) -> None:
    node = curve_node(folder=tmp_path / "one")
    first = node.server_key
    assert node.client().control("info")["curve-key"] == first
    assert node.stop() == 0
    again = curve_node(folder=tmp_path / "one")
    assert again.server_key == first
    with Client(again.endpoint, wait=30, server_key=first) as client:
        assert client.control("info")["curve-key"] == first
    assert "a new key pair" not in again.log.read_text().split("node stopped")[-1]


def _log_after_start(command: list[str], log: Path, ready: str) -> str:
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: ready in log.read_text() or process.poll() is not None,
                   timeout=60, message="the node to start")
        assert process.poll() is None, log.read_text()
        return log.read_text()
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.parametrize(("host", "curve", "warned"), [
    ("0.0.0.0", False, True), ("0.0.0.0", True, False), ("127.0.0.1", False, False)])
def test_listening_beyond_loopback_without_curve_warns(tmp_path: Path, host: str,
                                                       curve: bool, warned: bool) -> None:
    command = [COCAINE, "node", "--listen", f"tcp://{host}:{free_port()}", "--storage",
               f"files://{tmp_path / 'storage'}", "--run-dir",
               str(tmp_path / "run"), "--log-format", "plain",
               *(["--curve"] if curve else [])]
    text = _log_after_start(command, tmp_path / "node.log", "node ready")
    assert ("in plaintext" in text) is warned, text
    if warned:
        assert "anyone who can reach it may call its apps" in text and "--curve" in text


def test_cocaine_run_warns_beyond_loopback_too(tmp_path: Path) -> None:
    manifest = write_app(tmp_path / "app", CODE, {"echo": {"type": "native-server"}})
    text = _log_after_start([COCAINE, "run", str(manifest), "--listen",
                             f"tcp://0.0.0.0:{free_port()}", "--log-format", "plain"],
                            tmp_path / "run.log", "serving app")
    assert "in plaintext" in text


def test_which_endpoints_reach_beyond_this_machine() -> None:
    for endpoint in ("tcp://0.0.0.0:1", "tcp://*:1", "tcp://[::]:1", "tcp://10.1.2.3:1",
                     "tcp://eth0:1", "tcp://example.org:1"):
        assert beyond_loopback(endpoint), endpoint
    for endpoint in ("tcp://127.0.0.1:1", "tcp://127.9.9.9:1", "tcp://[::1]:1",
                     "tcp://localhost:1", "tcp://lo:1", "ipc:///tmp/x", "inproc://x"):
        assert not beyond_loopback(endpoint), endpoint

