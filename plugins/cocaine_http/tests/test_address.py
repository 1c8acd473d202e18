"""``http-server``: keys checked at deploy, addresses shared, held and in use."""

from __future__ import annotations

import socket

import httpx
import pytest

from cocaine_core.errors import ManifestError, NodeError
from cocaine_core.manifest import parse_manifest
from cocaine_core.testing import free_port


def problems(tmp_path, **task) -> dict[str, str]:
    """The problems of a manifest with one http-server task of ``task``'s keys."""
    (tmp_path / "app.py").write_text("def web(request):\n    return b''\n")
    data = {"type": "python", "args": {"source": "app.py"},
            "tasks": {"web": {"type": "http-server", **task}}}
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, root=tmp_path)
    return {p.path: p.message for p in caught.value.problems}


def test_keys_are_checked_at_deploy(tmp_path):
    """A missing or malformed listen, a path without '/', numbers out of range: named."""
    assert "tasks.web.listen" in problems(tmp_path)
    assert "HOST:PORT" in problems(tmp_path, listen="localhost")["tasks.web.listen"]
    assert "[::1]:8080" in problems(tmp_path, listen="::1:80")["tasks.web.listen"]
    assert "starting with '/'" in problems(tmp_path, listen="127.0.0.1:1",
                                           path="api")["tasks.web.path"]
    message = problems(tmp_path, listen="127.0.0.1:1", **{"max-header": 10})
    assert "from 1024 to 1048576" in message["tasks.web.max-header"]
    message = problems(tmp_path, listen="127.0.0.1:1", **{"header-timeout": 0})
    assert "tasks.web.header-timeout" in message


def test_a_second_app_on_the_same_address_fails_to_start(serve, cocaine_node):
    """Two apps cannot share an address: the second one's start names the first."""
    port = free_port()
    url = serve({"echo": {"listen": f"127.0.0.1:{port}"}}, name="first")["echo"]
    with pytest.raises(NodeError) as caught:
        serve({"meta": {"listen": f"127.0.0.1:{port}"}}, name="second")
    assert str(caught.value).startswith(
        f"task 'meta' (http-server): cannot listen on 127.0.0.1:{port}: app 'first' serves "
        f"HTTP there")
    assert httpx.post(url, content=b"still").content == b"still"
    assert "second" not in cocaine_node.info()["apps"]


def test_an_address_in_use_says_so(serve):
    """An address another program listens on: the start fails, naming it and what to do."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(NodeError) as caught:
            serve({"echo": {"listen": f"127.0.0.1:{port}"}})
    assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in \
        str(caught.value)


def test_the_address_is_free_again_when_the_app_stops(serve, cocaine_node):
    """Stopping the app closes its server: the port can be bound again, by a new app."""
    port = free_port()
    serve({"echo": {"listen": f"127.0.0.1:{port}"}}, name="one")
    cocaine_node.remove_app("one")
    url = serve({"meta": {"listen": f"127.0.0.1:{port}"}}, name="two")["meta"]
    assert httpx.get(url + "/x").json()["path"] == "/x"


def test_tasks_on_one_address_must_agree_on_connection_keys(serve):
    """Connection limits apply before routing: tasks sharing an address must agree."""
    with pytest.raises(NodeError) as caught:
        serve({"echo": {"path": "/a"}, "meta": {"path": "/b", "idle-timeout": 1}})
    assert "idle-timeout" in str(caught.value) and "task 'echo'" in str(caught.value)
