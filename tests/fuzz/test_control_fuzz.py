"""The control service's arguments, fuzzed: every ``@node`` method given random msgpack maps
(its own keys with values of any type, unknown keys) or bodies that are no map at all. Each
answer is a result or a 4xx error (503 when busy) naming what is wrong; never a 500 with a
Python exception's name, and the node still answers afterwards."""

from __future__ import annotations

import io
import tarfile
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cocaine_core import archive
from cocaine_core.control import ControlService
from cocaine_core.protocol import Code
from cocaine_core.testing import RunningNode
from tests.fuzz.conversation import Conversation
from tests.fuzz.strategies import FUZZ, TEXT, json_values, msgpack_values

VALUES = msgpack_values()
#: The keys each method reads (control.py); others are drawn too.
KEYS = {"list": [], "info": [], "app-info": ["name"], "cluster-nodes": [],
        "upload-begin": ["size"],
        "upload-chunk": ["upload", "data", "offset"],
        "deploy": ["name", "manifest", "archive", "upload", "sha256"],
        "remove": ["name"], "restart": ["name"]}
METHODS = sorted(KEYS)


def small_tar() -> bytes:
    """A good code archive (one app.py)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        code = b"def echo(request):\n    return request.data\n"
        info = tarfile.TarInfo("app.py")
        info.size = len(code)
        tar.addfile(info, io.BytesIO(code))
    return buffer.getvalue()


GOOD_TAR = small_tar()


@st.composite
def arguments(draw: st.DrawFn, method: str) -> bytes:
    """A body for ``method``: a map of its keys (and others) with values of any type, its
    deploy archive now and then good with the right sha256, or a body that is no map."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(st.binary(max_size=32),
                              VALUES.map(lambda v: msgpack.packb(v, use_bin_type=True))))
    args: dict[Any, Any] = {}
    for key in draw(st.lists(st.sampled_from(KEYS[method] or ["name"]), unique=True,
                             max_size=5)):
        args[key] = draw(VALUES)
    if method == "deploy" and draw(st.booleans()):
        args["name"] = draw(st.one_of(st.just("fuzz-deploy"), TEXT))
        args["manifest"] = draw(st.one_of(
            json_values().filter(lambda v: not _huge(v)),
            st.fixed_dictionaries({"type": st.just("python"),
                                   "args": st.just({"source": "app.py"}),
                                   "tasks": st.dictionaries(TEXT, json_values(4).filter(
                                       lambda v: not _huge(v)), max_size=2)})))
        args["archive"] = draw(st.one_of(st.just(GOOD_TAR), st.binary(max_size=64)))
        args["sha256"] = archive.sha256(args["archive"])
    for key in draw(st.lists(st.one_of(TEXT, VALUES.filter(_hashable)), max_size=2)):
        args.setdefault(key, draw(VALUES))
    return msgpack.packb(args, use_bin_type=True)


def _huge(value: Any) -> bool:
    """Whether a JSON value has an integer msgpack cannot carry."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -2**63 <= value < 2**64
    if isinstance(value, list):
        return any(_huge(v) for v in value)
    if isinstance(value, dict):
        return any(_huge(v) for v in value.values())
    return False


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def test_the_fuzzed_methods_are_every_method() -> None:
    assert set(METHODS) == set(ControlService(node=None).methods)  # type: ignore[arg-type]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("method", METHODS)
@FUZZ
@given(data=st.data())
def test_a_method_given_any_arguments_answers_a_result_or_a_4xx(fuzz_node: RunningNode,
                                                                method: str,
                                                                data: st.DataObject) -> None:
    body = data.draw(arguments(method))
    talk = Conversation(fuzz_node.endpoint)
    try:
        answer = talk.request("@node", method, body)
        if answer[0] == Code.ERROR:
            code, message = answer[2], answer[3]
            assert 400 <= code < 500 or code == 503, f"{method} answered {code}: {message}"
            for name in ("TypeError", "ValueError", "KeyError", "AttributeError",
                         "OverflowError", "Traceback"):
                assert name not in message, f"{method} answered {code}: {message}"
        else:
            msgpack.unpackb(answer[-1], raw=False, strict_map_key=False)
        assert talk.request("@node", "list", b"")[0] == Code.CHOKE
    finally:
        talk.close()


def test_a_deploy_of_an_archive_with_a_hard_link_to_itself_answers_a_4xx(
        fuzz_node: RunningNode) -> None:
    from tests.fuzz.test_archive_fuzz import HARD_LINKS_TO_NOTHING_BEFORE

    code = HARD_LINKS_TO_NOTHING_BEFORE["to itself"]
    body = msgpack.packb({"name": "linked", "archive": code, "sha256": archive.sha256(code),
                          "manifest": {"type": "python", "args": {"source": "app.py"},
                                       "tasks": {"echo": {"type": "native-server"}}}},
                         use_bin_type=True)
    sock = Conversation(fuzz_node.endpoint)
    try:
        sock.socket.send_multipart([msgpack.packb([Code.REQUEST, 1, "@node", "deploy", None]),
                                    body])
        while True:
            frames = sock.socket.recv_multipart() if sock.socket.poll(60_000) else None
            assert frames is not None, "no answer to the deploy"
            fields = msgpack.unpackb(frames[0], raw=False)
            if fields[0] != Code.CHUNK:
                break
        assert fields[0] == Code.ERROR and 400 <= fields[2] < 500, fields
    finally:
        sock.close()
