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
        "languages: 'exec'\n")


ZMQ_APP = '''
def work(request):
    return request.data.upper()


def total(request):
    return b"total:" + request.data
'''

ZMQ_CLIENT = '''
import sys, time, zmq
server, sink, published = sys.argv[1:4]
ctx = zmq.Context()
req = ctx.socket(zmq.REQ); req.setsockopt(zmq.LINGER, 0); req.connect(server)
req.send(b"7"); assert req.poll(30000), "no reply from zeromq-server"
print(req.recv_multipart())
sub = ctx.socket(zmq.SUB); sub.setsockopt(zmq.SUBSCRIBE, b""); sub.connect(published)
push = ctx.socket(zmq.PUSH); push.setsockopt(zmq.LINGER, 0); push.connect(sink)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:  # PUB/SUB's slow joiner: send until one is seen
    push.send(b"abc")
    if sub.poll(200):
        print(sub.recv_multipart())
        break
else:
    raise SystemExit("nothing published")
'''


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_manifest_with_the_three_zmq_drivers_runs_from_wheels(fresh_venv: Path,
                                                              tmp_path: Path) -> None:
    # Last in this module: it adds the python language to the venv.
    from cocaine_core.testing import free_port

    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", wheels,
        ROOT / "plugins" / "cocaine_python")
    run(fresh_venv / "bin" / "python", "-m", "pip", "install", *wheels.glob("*.whl"))
    server, sink, pub = (f"tcp://127.0.0.1:{free_port()}" for _ in range(3))
    (tmp_path / "app.py").write_text(ZMQ_APP)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({
        "type": "python", "args": {"source": "app.py"},
        "tasks": {
            "total": {"type": "zeromq-server", "endpoint": server},
            "work": {"type": "zeromq-sink", "endpoint": sink, "publish": pub},
            "relay": {"type": "zeromq-subscriber", "endpoint": pub, "emit": "total"},
        }}))
    node = subprocess.Popen([fresh_venv / "bin" / "cocaine", "run", manifest, "--listen",
                             f"tcp://127.0.0.1:{free_port()}"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        client = tmp_path / "client.py"
        client.write_text(ZMQ_CLIENT)
        result = None
        for _ in range(60):  # until the node has bound its sockets
            result = run(fresh_venv / "bin" / "python", client, server, sink, pub,
                         check=False, timeout=120)
            if result.returncode == 0 or node.poll() is not None:
                break
        assert result is not None and result.returncode == 0, (result, node.poll())
        lines = result.stdout.splitlines()
        assert lines[0] == "[b'ok', b'total:7']"
        assert lines[1] == "[b'work', b'ABC']"
    finally:
        node.terminate()
        output = node.communicate(timeout=60)[0]
    assert node.returncode == 0, output
