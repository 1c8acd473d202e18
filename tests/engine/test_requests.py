"""Request-response through the native path: answers, streams, errors, handler kinds."""

from __future__ import annotations

import json

import msgpack
import pytest

from cocaine_core.errors import ServiceError

APP = '''
import asyncio
import json


def echo(request):
    return request.data


def stream(request):
    for i in range(int(request.data or 5)):
        yield f"{i},"


def boom(request):
    raise ValueError("bad input: " + request.data.decode())


def value(request):
    return {"event": request.event, "n": [1, 2, 3]}


def text(request):
    return "héllo"


def nothing(request):
    return None


def parsed(request):
    return json.dumps(request.json())


async def later(request):
    await asyncio.sleep(0.01)
    return b"async:" + request.data


async def agen(request):
    for i in range(3):
        await asyncio.sleep(0)
        yield str(i)


def bad_value(request):
    return object()
'''

EVENTS = ["echo", "stream", "boom", "value", "text", "nothing", "parsed", "later", "agen",
          "bad_value"]


@pytest.fixture
def hello(cocaine_node, make_app):
    manifest = make_app(APP, tasks={e: {"type": "native-server"} for e in EVENTS})
    cocaine_node.add_app("hello", manifest)
    with cocaine_node.client() as client:
        yield client


def test_echo_round_trip(hello):
    assert hello.call("hello", "echo", b"world") == b"world"
    assert hello.call("hello", "echo", "") == b""
    big = bytes(range(256)) * 1024
    assert hello.call("hello", "echo", big) == big


def test_stream_arrives_in_order_as_chunks(hello):
    assert list(hello.stream("hello", "stream", b"50")) == [f"{i},".encode() for i in range(50)]


def test_handler_exception_is_502_with_type_and_message(hello):
    with pytest.raises(ServiceError) as error:
        hello.call("hello", "boom", b"xyz")
    assert error.value.code == 502
    assert "ValueError: bad input: xyz" in error.value.message
    assert hello.call("hello", "echo", b"still alive") == b"still alive"


def test_return_values_are_encoded(hello):
    assert msgpack.unpackb(hello.call("hello", "value")) == {"event": "value", "n": [1, 2, 3]}
    assert hello.call("hello", "text") == "héllo".encode()
    assert list(hello.stream("hello", "nothing")) == []
    assert json.loads(hello.call("hello", "parsed", b'{"a": 1}')) == {"a": 1}


def test_async_handlers_and_async_generators(hello):
    assert hello.call("hello", "later", b"x") == b"async:x"
    assert list(hello.stream("hello", "agen")) == [b"0", b"1", b"2"]


def test_unencodable_answer_is_an_error_not_a_crash(hello):
    with pytest.raises(ServiceError) as error:
        hello.call("hello", "bad_value")
    assert error.value.code == 502
    assert "not bytes, str, None or msgpack-able" in error.value.message
    assert hello.call("hello", "echo", b"ok") == b"ok"


def test_unknown_app_and_event_are_404(hello):
    with pytest.raises(ServiceError) as error:
        hello.call("nope", "echo")
    assert error.value.code == 404 and "no app named 'nope'" in error.value.message
    with pytest.raises(ServiceError) as error:
        hello.call("hello", "nope")
    assert error.value.code == 404 and "no event 'nope'" in error.value.message


def test_info_counts_jobs_and_latency(cocaine_node, hello):
    for _ in range(5):
        hello.call("hello", "echo", b"x")
    with pytest.raises(ServiceError):
        hello.call("hello", "boom", b"x")
    info = hello.control("info")["apps"]["hello"]
    assert info["jobs"]["done"] == 5
    assert info["jobs"]["failed"] == 1
    assert info["jobs"]["latency-ms"]["p50"] > 0
    assert info["pool"]["total"] >= 1
    assert all(s["rss-bytes"] > 0 for s in info["slaves"])
    assert info["tasks"]["echo"]["requests"] == 5
