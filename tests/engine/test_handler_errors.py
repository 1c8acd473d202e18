"""A handler's failure, however odd the exception or the answer, is its job's 502: the handler
ran once, the client reads why, and the slave lives on (issue 13, "Handlers")."""

from __future__ import annotations

import logging

import pytest

from cocaine_core.client import Client
from cocaine_core.errors import ServiceError
from cocaine_core.errortext import MESSAGE_LIMIT, TRACEBACK_LIMIT, cut, escape
from cocaine_core.testing import wait_until

APP = '''
import os


def _mark(request):
    with open(request.data.decode(), "a") as f:
        f.write(str(os.getpid()) + "\\n")


class BadStr(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")


class BadEncode(str):
    def encode(self, *args, **kwargs):
        raise ValueError("cannot encode \\udc80 this")


def pid(request):
    return str(os.getpid())


def str_raises(request):
    _mark(request)
    raise BadStr()


def surrogate_message(request):
    _mark(request)
    raise ValueError("bad \\udc80 text")


def surrogate_answer(request):
    _mark(request)
    return "answer \\udc80"


def surrogate_chunk(request):
    _mark(request)
    yield b"first"
    yield "chunk \\udc80"


def encode_fails(request):
    _mark(request)
    return BadEncode("x")


def not_packable(request):
    _mark(request)
    return object()


async def async_str_raises(request):
    _mark(request)
    raise BadStr()


def prints_surrogate(request):
    print("printed \\udc80 text")
    print("AFTER" + "-MARK")
    return str(os.getpid())


async def async_surrogate(request):
    _mark(request)
    raise ValueError("async \\udc80")


class Abort(BaseException):
    pass


async def async_base_exception(request):
    _mark(request)
    raise Abort("not an Exception")
'''

#: The event, and what the client's 502 message must say. The first two, ``encode_fails``
#: and the async ones crashed the slave (a 500 after two runs) or left the job unanswered.
CASES = {
    "str_raises": "BadStr: <exception str() failed: RuntimeError: no str for you>",
    "surrogate_message": "ValueError: bad \\udc80 text",
    "surrogate_answer": "str that is not valid UTF-8 (it holds a lone surrogate)",
    "surrogate_chunk": "str that is not valid UTF-8 (it holds a lone surrogate)",
    "encode_fails": "cannot encode \\udc80 this",
    "not_packable": "object, which is not bytes, str, None or msgpack-able",
    "async_str_raises": "BadStr: <exception str() failed: RuntimeError: no str for you>",
    "async_surrogate": "ValueError: async \\udc80",
    # A BaseException that is not an Exception left an async job unanswered.
    "async_base_exception": "Abort: not an Exception",
}


@pytest.fixture
def odd_app(cocaine_node, make_app):
    tasks = {name: {"type": "native-server"} for name in ("pid", *CASES)}
    # One slave: the same pid before and after shows the slave lived on. Concurrency 2 runs
    # the async handlers on the runtime's asyncio loop.
    cocaine_node.add_app("odd", make_app(APP, tasks, engine={"pool-limit": 1,
                                                             "concurrency": 2}))
    return cocaine_node


@pytest.mark.parametrize("event", list(CASES))
def test_odd_failure_is_one_502_and_the_slave_lives(odd_app, tmp_path, event):
    marks = tmp_path / "marks"
    with Client(odd_app.endpoint, wait=20) as client:
        before = client.call("odd", "pid")
        chunks = []
        with pytest.raises(ServiceError) as error:
            for chunk in client.stream("odd", event, str(marks)):
                chunks.append(chunk)
        after = client.call("odd", "pid")
    assert error.value.code == 502, error.value
    assert CASES[event] in error.value.message
    error.value.message.encode("utf-8")  # readable: valid UTF-8
    assert chunks == ([b"first"] if event == "surrogate_chunk" else [])
    assert len(marks.read_text().split()) == 1  # ran once: no crash, no retry
    assert before == after  # the same slave
    assert odd_app.info("odd")["jobs"]["retried"] == 0


def test_printing_a_lone_surrogate_reaches_the_log_escaped(cocaine_node, make_app, caplog):
    """Printed text with a lone surrogate killed the slave's heartbeat thread (it could not
    pack the line): its output stopped and it was later killed as hung."""
    caplog.set_level(logging.INFO, logger="cocaine.app")
    cocaine_node.add_app("printer", make_app(APP, {"prints_surrogate": {"type": "native-server"},
                                                   "pid": {"type": "native-server"}},
                                             engine={"pool-limit": 1}))
    with Client(cocaine_node.endpoint, wait=20) as client:
        slave = client.call("printer", "prints_surrogate")
        wait_until(lambda: "AFTER-MARK" in caplog.text, timeout=10,
                   message="the line printed after the surrogate to reach the node's log")
        assert client.call("printer", "pid") == slave
    assert "printed \\udc80 text" in caplog.text


def test_cut_bounds_text_and_says_how_much_went():
    assert cut("short", 100) == "short"
    assert cut("a \udc80 b", 100) == "a \\udc80 b"
    assert escape("\udc80") == "\\udc80"
    big = "x" * 50_000
    message = cut(big, MESSAGE_LIMIT)
    assert len(message.encode()) <= MESSAGE_LIMIT
    assert message.startswith("xxx") and message.endswith(
        f"… [{50_000 - message.count('x')} bytes cut]")
    wide = "é" * 20_000 + "\udc80" * 10
    traceback = cut(wide, TRACEBACK_LIMIT, keep_end=True)
    assert len(traceback.encode()) <= TRACEBACK_LIMIT
    assert traceback.startswith("é") and traceback.endswith("\\udc80")
    assert "bytes cut]" in traceback
