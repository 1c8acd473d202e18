"""``Response``: an answer's status and headers, sent as HEADERS before its body.

The runtime tests drive a real slave with the fake engine of ``test_streamed_body.py``
(loaded from its file: test modules are not a package here).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cocaine_python import Response

from cocaine_core.protocol import Status

_spec = importlib.util.spec_from_file_location(
    "cocaine_python_stream_engine", Path(__file__).with_name("test_streamed_body.py"))
assert _spec is not None and _spec.loader is not None
if _spec.name not in sys.modules:  # a dataclass needs its module registered as it is made
    sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_spec.name])
_engine = sys.modules[_spec.name]
StreamEngine = _engine.StreamEngine

APP = '''
import asyncio

from cocaine_python import Response


def made(request):
    return Response(b"made", status=201, headers={"Content-Type": "text/plain",
                                                  "X-Id": request.text()})


def empty(request):
    return Response(status=204)


def packed(request):
    return Response({"a": 1}, headers=[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])


async def async_made(request):
    await asyncio.sleep(0)
    return Response("é", status=202, headers=[["Content-Type", "text/plain; charset=utf-8"]])


def parts(request):
    yield Response(status=206, headers={"Content-Range": "bytes 0-2/10"})
    yield b"a"
    yield None
    yield "b"


async def async_parts(request):
    yield Response(status=200, headers={"Content-Type": "text/event-stream"})
    for i in range(3):
        await asyncio.sleep(0)
        yield f"data: {i}\\n\\n"


def nothing_first(request):
    yield None
    yield Response(status=201)
    yield b"x"


def late(request):
    yield b"first"
    yield Response(status=500)


async def async_late(request):
    yield b"first"
    yield Response(status=500)


def with_body(request):
    yield Response(b"body", status=200)


def twice(request):
    yield Response(status=200)
    yield Response(status=201)


def bad_status(request):
    return Response(b"x", status=42)


def bad_header(request):
    return Response(b"x", headers={"X-Evil": "a\\r\\nSet-Cookie: b"})


def bad_body(request):
    return Response(object(), status=201)


def changed(request):
    response = Response(b"x")
    response.status = "200"
    return response


def plain(request):
    return b"plain"


def plain_stream(request):
    yield b"one"
    yield b"two"
'''

EVENTS = ["made", "empty", "packed", "async_made", "parts", "async_parts", "nothing_first",
          "late", "async_late", "with_body", "twice", "bad_status", "bad_header", "bad_body",
          "changed", "plain", "plain_stream"]


@pytest.fixture
def engine_for() -> Iterator[Any]:
    """``engine_for(concurrency)``: a slave serving APP and the engine that drives it."""
    folder = Path(tempfile.mkdtemp(prefix="cpr-"))
    engines: list[Any] = []

    def start(concurrency: int = 1) -> Any:
        engine = StreamEngine(folder, concurrency)
        engines.append(engine)
        engine.start(APP, EVENTS)
        return engine

    try:
        yield start
    finally:
        for engine in engines:
            engine.close()
        shutil.rmtree(folder, ignore_errors=True)


LOOPS = pytest.mark.parametrize("concurrency", [1, 4], ids=["blocking", "asyncio"])


def call(engine: Any, event: str, body: bytes = b"") -> Any:
    return engine.answer(engine.invoke(event, first=body, stream=False))


# -- the class ------------------------------------------------------------------------------

def test_headers_as_a_dict_or_pairs():
    assert Response().headers == [] and Response().status == 200 and Response().body is None
    assert Response(b"x", headers={"A": "1", "B": "2"}).headers == [["A", "1"], ["B", "2"]]
    assert Response(headers=[("A", "1"), ["A", "2"]]).headers == [["A", "1"], ["A", "2"]]
    assert repr(Response(b"x", status=201, headers={"A": "1"})) == (
        "Response(status=201, 1 header(s), bytes)")


@pytest.mark.parametrize("kwargs,error,message", [
    ({"status": "200"}, TypeError, "status must be an int (an HTTP status, 100..599), not str"),
    ({"status": True}, TypeError, "status must be an int"),
    ({"status": 99}, ValueError, "status 99 is not an HTTP status: give one in 100..599"),
    ({"status": 600}, ValueError, "status 600 is not an HTTP status"),
    ({"headers": "A: 1"}, TypeError, "headers must be a dict or a list of (name, value) pairs"),
    ({"headers": [("A", "1", "2")]}, TypeError, "header ('A', '1', '2') is not a (name, value)"),
    ({"headers": {"A": 1}}, TypeError, "header 'A': its name and value must be str, not str "
                                       "and int"),
    ({"headers": {"Bad Name": "1"}}, ValueError, "header name 'Bad Name' is not valid"),
    ({"headers": {"": "1"}}, ValueError, "header name '' is not valid"),
    ({"headers": {"A": "1\n2"}}, ValueError, "header 'A': its value '1\\n2' holds a line break"),
    ({"headers": {f"H{i}": "v" for i in range(65)}}, ValueError,
     "more than 64 headers: an answer carries at most 64"),
    ({"headers": ((f"H{i}", "v") for i in range(10**9))}, ValueError, "more than 64 headers"),
    ({"headers": {"A": "v" * 70_000}}, ValueError, "the headers hold 70001 characters: at "
                                                   "most 65536"),
])
def test_a_bad_status_or_header_raises_saying_what(kwargs, error, message):
    with pytest.raises(error) as caught:
        Response(b"x", **kwargs)
    assert str(caught.value).startswith(message), str(caught.value)


# -- in the slave ---------------------------------------------------------------------------

@LOOPS
def test_a_returned_response_sends_headers_then_its_body(engine_for, concurrency):
    engine = engine_for(concurrency)
    job = call(engine, "made", b"7")
    assert job.order == ["head", "choke"] and job.chunks == [b"made"]
    assert job.headers == [{"status": 201, "headers": [["Content-Type", "text/plain"],
                                                       ["X-Id", "7"]]}]
    job = call(engine, "empty")
    assert job.order == ["head", "choke"] and job.chunks == []
    assert job.headers == [{"status": 204, "headers": []}]
    job = call(engine, "packed")
    assert job.chunks == [b"\x81\xa1a\x01"]  # msgpack, like any answer
    assert job.headers[0]["headers"] == [["Set-Cookie", "a=1"], ["Set-Cookie", "b=2"]]
    job = call(engine, "async_made")
    assert job.order == ["head", "choke"] and job.chunks == ["é".encode()]
    assert job.headers == [{"status": 202, "headers": [["Content-Type",
                                                        "text/plain; charset=utf-8"]]}]


@LOOPS
def test_a_generator_yields_its_response_first(engine_for, concurrency):
    engine = engine_for(concurrency)
    job = call(engine, "parts")
    assert job.order == ["head", "chunk", "chunk", "choke"] and job.chunks == [b"a", b"b"]
    assert job.headers == [{"status": 206, "headers": [["Content-Range", "bytes 0-2/10"]]}]
    job = call(engine, "async_parts")
    assert job.order == ["head", "chunk", "chunk", "chunk", "choke"]
    assert job.chunks == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
    assert job.headers == [{"status": 200, "headers": [["Content-Type", "text/event-stream"]]}]
    job = call(engine, "nothing_first")  # a None before it sends nothing: still first
    assert job.order == ["head", "chunk", "choke"] and job.headers[0]["status"] == 201


@pytest.mark.parametrize("event,message", [
    ("late", "ValueError: the generator yielded a Response after the answer had started"),
    ("async_late", "ValueError: the generator yielded a Response after the answer had started"),
    ("twice", "ValueError: the generator yielded a Response after the answer had started"),
    ("with_body", "ValueError: the generator yielded a Response with a body: yield "
                  "Response(status=..., headers=...) first, then the body as chunks"),
    ("bad_status", "ValueError: status 42 is not an HTTP status: give one in 100..599"),
    ("bad_header", "ValueError: header 'X-Evil': its value 'a\\r\\nSet-Cookie: b' holds a "
                   "line break or NUL"),
    ("bad_body", "TypeError: the handler returned a object, which is not bytes, str, None or "
                 "msgpack-able"),
    ("changed", "TypeError: status must be an int (an HTTP status, 100..599), not str"),
])
@LOOPS
def test_a_bad_response_is_a_502_saying_why(engine_for, concurrency, event, message):
    engine = engine_for(concurrency)
    job = call(engine, event)
    assert job.error is not None and job.error[0] == Status.APP_ERROR, job
    assert job.error[1].startswith(message), job.error[1]
    if event in ("bad_status", "bad_header", "bad_body", "changed", "with_body"):
        assert job.headers == []  # nothing went out before the error
    assert call(engine, "plain").chunks == [b"plain"]  # the slave goes on


@LOOPS
def test_plain_answers_send_no_headers(engine_for, concurrency):
    engine = engine_for(concurrency)
    job = call(engine, "plain")
    assert job.order == ["choke"] and job.headers == []
    job = call(engine, "plain_stream")
    assert job.order == ["chunk", "chunk", "choke"] and job.headers == []
