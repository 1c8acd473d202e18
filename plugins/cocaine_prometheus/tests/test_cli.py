"""``--metrics`` on the command line: bad values refused with a clear message, an address in
use fails the node's start, port 0 takes a free port, and ``cocaine run`` serves it too."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cocaine_prometheus.address import is_loopback, parse_metrics_address
from prometheus_client.parser import text_string_to_metric_families

from cocaine_core.testing import free_port, wait_until, write_app

COCAINE = str(Path(sys.executable).with_name("cocaine"))


@pytest.mark.parametrize(("value", "says"), [
    ("9101", "give a port after a colon"),
    ("127.0.0.1:", "the port must be a number from 0 to 65535"),
    ("127.0.0.1:65536", "the port must be from 0 to 65535"),
    ("127.0.0.1:http", "the port must be a number"),
    (":9101", "give a host before the port"),
    ("::1:9101", "write an IPv6 address in brackets"),
    ("[::1]9101", "an IPv6 address is written [ADDRESS]:PORT"),
    ("[nope]:9101", "'nope' is not an IPv6 address"),
    ("1.2.3:9101", "'1.2.3' is neither an IPv4 address nor a host name"),
    ("", "give HOST:PORT"),
])
def test_bad_addresses_are_refused_saying_what_is_wrong(value: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_metrics_address(value)


@pytest.mark.parametrize(("value", "canonical"), [
    ("127.0.0.1:9101", "127.0.0.1:9101"), (" [::1]:0 ", "[::1]:0"),
    ("localhost:65535", "localhost:65535"), ("metrics.example:80", "metrics.example:80"),
])
def test_good_addresses(value: str, canonical: str) -> None:
    assert parse_metrics_address(value) == canonical


def test_loopback_is_told_from_the_rest() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.8.0.1") and is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.0.0.1")
    assert not is_loopback("example.org")


@pytest.mark.parametrize("command", ["node", "run"])
def test_the_cli_refuses_a_bad_metrics_value(command: str, tmp_path: Path) -> None:
    manifest = write_app(tmp_path / "app", "def echo(request):\n    return request.data\n",
                         {"echo": {"type": "native-server"}})
    run_dir = Path("/tmp") / f"cocaine-node-{free_port()}"
    where = ([str(manifest)] if command == "run" else
             ["--storage", f"files://{tmp_path / 'storage'}", "--run-dir", str(run_dir)])
    try:
        result = subprocess.run(
            [COCAINE, command, *where, "--listen", f"tcp://127.0.0.1:{free_port()}",
             "--metrics", "127.0.0.1:99999"], capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)  # the node makes it before it checks
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "--metrics 127.0.0.1:99999" in out and "the port must be from 0 to 65535" in out, out


def test_an_address_in_use_fails_the_node_start_naming_it(node_process) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        node = node_process("--metrics", address, start=False).spawn()
        code = node.process.wait(timeout=60)
        log = node.log.read_text()
    assert code != 0
    assert f"--metrics {address}: address in use" in log, log


def test_cocaine_run_serves_metrics_on_a_free_port_when_given_0(tmp_path: Path) -> None:
    manifest = write_app(tmp_path / "app", "def echo(request):\n    return request.data\n",
                         {"echo": {"type": "native-server"}})
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [COCAINE, "run", str(manifest), "--name", "solo", "--log-format", "plain",
             "--listen", f"tcp://127.0.0.1:{free_port()}", "--metrics", "127.0.0.1:0"],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        found = wait_until(lambda: re.search(r"http://127\.0\.0\.1:(\d+)/metrics .*"
                                             r"\(port 0: took (\d+)\)", log.read_text()),
                           timeout=30, message="the metrics address in the log")
        assert found.group(1) == found.group(2) != "0"
        base = f"http://127.0.0.1:{found.group(1)}"

        def solo_running() -> bool:
            text = httpx.get(f"{base}/metrics", timeout=5, trust_env=False).text
            families = {f.name: f for f in text_string_to_metric_families(text)}
            return any(s.labels == {"app": "solo", "state": "running"} and s.value == 1
                       for s in families["cocaine_app_state"].samples)

        wait_until(solo_running, timeout=30, message="the hosted app in /metrics")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.parametrize("command", ["node", "run"])
def test_help_lists_the_option(command: str) -> None:
    result = subprocess.run([COCAINE, command, "--help"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0
    assert "--metrics HOST:PORT" in result.stdout and "No authentication" in result.stdout


def test_the_node_config_file_may_give_it(node_process, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'metrics = "127.0.0.1:{port}"\n')
    node_process("--config", str(config))
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False)
    assert response.status_code == 200 and "cocaine_build_info" in response.text
