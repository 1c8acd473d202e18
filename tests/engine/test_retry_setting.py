"""A job whose slave dies before it answered runs again once, on another slave (DESIGN.md);
a task (``"retry": false``) or a request (policy ``retry: false``, ``Client(...).call(...,
retry=False)``, ``cocaine call --no-retry``) turns that off for handlers that must not run
twice (issue 13, "Handlers")."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from cocaine_core import protocol
from cocaine_core.client import AsyncClient, Client
from cocaine_core.endpoint import Policy
from cocaine_core.errors import ManifestError, ServiceError
from cocaine_core.manifest import load_manifest
from cocaine_core.protocol import Code
from cocaine_core.testing import write_app

APP = '''
import os
import signal


def _first_run(request):
    """Append this run to the file named by the request; whether it is the first."""
    path = request.data.decode()
    first = not os.path.exists(path)
    with open(path, "a") as f:
        f.write(str(os.getpid()) + "\\n")
    return first


def charge(request):
    if _first_run(request):
        os._exit(1)  # the slave dies mid-job, before it answered
    return b"charged"


def charge_killed(request):
    if _first_run(request):
        os.kill(os.getpid(), signal.SIGKILL)
    return b"charged"
'''

RETRY_OFF = "was not run again because retry is off"


def _app(node, make_app, name: str, task: dict | None = None) -> None:
    task = task or {}
    tasks = {"charge": {"type": "native-server", **task},
             "charge_killed": {"type": "native-server", **task}}
    node.add_app(name, make_app(APP, tasks, engine={"pool-limit": 2}))


def _runs(marks: Path) -> list[int]:
    return [int(pid) for pid in marks.read_text().split()]


@pytest.mark.parametrize("event", ["charge", "charge_killed"])
def test_by_default_a_job_whose_slave_died_runs_again_on_another(cocaine_node, make_app,
                                                                  tmp_path, event):
    _app(cocaine_node, make_app, "r")
    marks = tmp_path / "marks"
    with Client(cocaine_node.endpoint, wait=30) as client:
        assert client.call("r", event, str(marks)) == b"charged"
    runs = _runs(marks)
    assert len(runs) == 2 and runs[0] != runs[1]  # twice: the documented behaviour
    assert cocaine_node.info("r")["jobs"]["retried"] == 1


@pytest.mark.parametrize("event", ["charge", "charge_killed"])
def test_a_task_with_retry_false_runs_its_job_once(cocaine_node, make_app, tmp_path, event):
    _app(cocaine_node, make_app, "once", {"retry": False})
    marks = tmp_path / "marks"
    with Client(cocaine_node.endpoint, wait=30) as client, \
            pytest.raises(ServiceError) as error:
        client.call("once", event, str(marks))
    assert error.value.code == 500
    assert "slave" in error.value.message and RETRY_OFF in error.value.message
    assert len(_runs(marks)) == 1
    info = cocaine_node.info("once")
    assert info["jobs"]["retried"] == 0 and info["jobs"]["failed"] == 1


@pytest.mark.parametrize("event", ["charge", "charge_killed"])
def test_a_request_with_retry_false_runs_once(cocaine_node, make_app, tmp_path, event):
    _app(cocaine_node, make_app, "req")
    marks = tmp_path / "marks"
    with Client(cocaine_node.endpoint, wait=30) as client:
        with pytest.raises(ServiceError) as error:
            client.call("req", event, str(marks), retry=False)
        assert error.value.code == 500 and RETRY_OFF in error.value.message
        assert len(_runs(marks)) == 1
        # The same event without the policy still runs again (the setting is per request).
        again = tmp_path / "again"
        assert client.call("req", event, str(again)) == b"charged"
        assert len(_runs(again)) == 2


def test_a_raw_request_with_policy_retry_false_runs_once(cocaine_node, make_app, tmp_path):
    """The policy key as any client would send it: a msgpack false."""
    _app(cocaine_node, make_app, "raw")
    marks = tmp_path / "marks"
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.linger = 0
    try:
        socket.connect(cocaine_node.endpoint)
        socket.send_multipart([protocol.pack(Code.REQUEST, 1, "raw", "charge",
                                             {"urgent": False, "retry": False}),
                               str(marks).encode()])
        assert socket.poll(30_000), "no answer came"
        header = protocol.unpack(socket.recv_multipart()[0])
    finally:
        socket.close()
    assert header[:3] == [Code.ERROR, 1, 500] and RETRY_OFF in header[3]
    assert len(_runs(marks)) == 1


def test_the_async_client_sends_retry_false(cocaine_node, make_app, tmp_path):
    _app(cocaine_node, make_app, "areq")
    marks = tmp_path / "marks"

    async def call() -> ServiceError:
        async with AsyncClient(cocaine_node.endpoint, wait=30) as client:
            try:
                await client.call("areq", "charge", str(marks), retry=False)
            except ServiceError as exc:
                return exc
        raise AssertionError("the job succeeded")

    error = asyncio.run(call())
    assert error.code == 500 and RETRY_OFF in error.message
    assert len(_runs(marks)) == 1


def test_cocaine_call_no_retry(cocaine_node, make_app, tmp_path):
    _app(cocaine_node, make_app, "cli")
    marks = tmp_path / "marks"
    cocaine = str(Path(sys.executable).with_name("cocaine"))
    result = subprocess.run([cocaine, "call", "cli", "charge", str(marks), "--no-retry",
                             "--node", cocaine_node.endpoint, "--wait", "30"],
                            capture_output=True, timeout=120, env=os.environ.copy())
    assert result.returncode != 0
    assert RETRY_OFF in result.stderr.decode() + result.stdout.decode()
    assert len(_runs(marks)) == 1


def test_a_bad_retry_is_refused_by_its_path(tmp_path):
    manifest = write_app(tmp_path / "bad", "def charge(request):\n    return b''\n",
                         {"charge": {"type": "native-server", "retry": "no"}})
    with pytest.raises(ManifestError) as error:
        load_manifest(manifest)
    assert "tasks.charge.retry: must be true or false" in str(error.value)
    for value in ("no", 0, 1.0):
        with pytest.raises(ServiceError) as refused:
            Policy.parse({"retry": value})
        assert refused.value.code == 400 and "policy.retry must be true or false" in \
            refused.value.message
    assert Policy.parse({"retry": False}).retry is False
    assert Policy.parse({}).retry is True and Policy.parse({"retry": None}).retry is True
