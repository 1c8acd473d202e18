"""Manifest checks of the ZeroMQ tasks: endpoints, prefixes, limits, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from cocaine_zmq.endpoints import endpoint, endpoints, prefixes

from cocaine_core.errors import ManifestError
from cocaine_core.manifest import parse_manifest
from cocaine_core.schema import Invalid


def check(tmp_path: Path, **tasks: dict) -> list[str]:
    """The problems of a manifest with ``tasks`` (empty if it is fine)."""
    (tmp_path / "app.py").write_text("")
    data = {"type": "python", "args": {"source": "app.py"}, "tasks": tasks}
    try:
        parse_manifest(data, root=tmp_path)
    except ManifestError as exc:
        return [str(problem) for problem in exc.problems]
    return []


@pytest.mark.parametrize("value", ["tcp://127.0.0.1:5555", "tcp://*:5555", "tcp://[::1]:80",
                                   "tcp://127.0.0.1:*", "ipc:///tmp/app.sock", "ipc://@abstract",
                                   "inproc://results"])
def test_good_endpoints(value):
    """tcp with host and port, ipc paths, inproc names."""
    assert endpoint(value) == value


@pytest.mark.parametrize(("value", "says"), [
    ("tpc://127.0.0.1:5555", "starting with tcp://, ipc:// or inproc://"),
    ("127.0.0.1:5555", "starting with tcp://"),
    ("tcp://127.0.0.1", "tcp://HOST:PORT"),
    ("tcp://127.0.0.1:70000", "port from 1 to 65535"),
    ("ipc://", "needs a path"),
    ("ipc:///" + "x" * 120, "the system allows 107"),
    (5555, "must be a ZeroMQ endpoint"),
])
def test_bad_endpoints(value, says):
    """Each refusal says what would be accepted."""
    with pytest.raises(Invalid, match=says.replace("(", r"\(")):
        endpoint(value)


def test_endpoint_lists_and_prefixes():
    """A subscriber takes one endpoint or a list; one prefix or a list, "" meaning all."""
    assert endpoints("inproc://a") == ["inproc://a"]
    assert endpoints(["inproc://a", "inproc://b"]) == ["inproc://a", "inproc://b"]
    assert prefixes("") == [""] and prefixes(["a", "b"]) == ["a", "b"]
    for bad in ([], 3):
        with pytest.raises(Invalid):
            endpoints(bad)
    with pytest.raises(Invalid):
        prefixes([1])


def test_defaults_are_filled(tmp_path):
    """backlog 1000, max-message-size 16 MiB, no endpoint (a free port), no publish."""
    (tmp_path / "app.py").write_text("")
    manifest = parse_manifest({"type": "python", "args": {"source": "app.py"}, "tasks": {
        "a": {"type": "zeromq-server"}, "b": {"type": "zeromq-sink"},
        "c": {"type": "zeromq-subscriber", "endpoint": "tcp://127.0.0.1:1"}}}, root=tmp_path)
    limits = {"backlog": 1000, "max-message-size": 16 * 2**20}
    assert manifest.tasks["a"].options == {"endpoint": None, **limits}
    assert manifest.tasks["b"].options == {"endpoint": None, "publish": None, **limits}
    assert manifest.tasks["c"].options == {"endpoint": ["tcp://127.0.0.1:1"], "subscribe": ("",),
                                           "publish": None, **limits}


def test_problems_name_their_key(tmp_path):
    """Every problem is reported at once, with its key path."""
    problems = check(
        tmp_path,
        a={"type": "zeromq-server", "endpoint": "tcp://localhost", "backlog": "ten"},
        b={"type": "zeromq-sink", "endpoint": "tcp://127.0.0.1:5555",
           "publish": "tcp://127.0.0.1:5555"},
        c={"type": "zeromq-subscriber", "subscribe": 7},
        d={"type": "zeromq-subscriber", "endpoint": "tcp://127.0.0.1:1",
           "publish": "tcp://127.0.0.1:1"},
        f={"type": "zeromq-sink", "max-message-size": 0},
        e={"type": "zeromq-server", "endpiont": "tcp://127.0.0.1:1"},
    )
    text = "\n".join(problems)
    for expected in ("tasks.a.endpoint: must be tcp://HOST:PORT",
                     "tasks.a.backlog: must be an integer from 1 to 100000",
                     "tasks.b.publish: must differ from endpoint",
                     "tasks.c.endpoint: is required",
                     "tasks.c.subscribe: must be a topic prefix",
                     "tasks.d.publish: is an endpoint this task subscribes to",
                     "tasks.f.max-message-size: must be an integer from 1 to 1073741824",
                     "tasks.e.endpiont: unknown key; did you mean 'endpoint'?"):
        assert expected in text, f"{expected!r} not in:\n{text}"
