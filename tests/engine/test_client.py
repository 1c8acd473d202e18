"""The clients (``cocaine_core/client.py``): the asyncio one and the control service through
it; both saying at once when nothing listens, or when what listens is not a node."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from cocaine_core import client as client_module
from cocaine_core import protocol
from cocaine_core.client import AsyncClient, Client
from cocaine_core.errors import ServiceError
from cocaine_core.protocol import Code
from cocaine_core.testing import free_port

APP = '''
import time


def echo(request):
    return request.data


def slow(request):
    time.sleep(0.2)
    return request.data
'''


def test_async_client_many_requests_in_flight(cocaine_node, make_app):
    manifest = make_app(APP, tasks={"echo": {"type": "native-server"},
                                    "slow": {"type": "native-server"}},
                        engine={"pool-limit": 4})
    cocaine_node.add_app("hello", manifest)

    async def main() -> list[bytes]:
        async with AsyncClient(cocaine_node.endpoint, wait=30) as client:
            answers = await asyncio.gather(*(client.call("hello", "slow", str(i))
                                             for i in range(8)))
            with pytest.raises(ServiceError) as error:
                await client.call("hello", "missing")
            assert error.value.code == 404
            assert await client.control("list") == ["hello"]
            chunks = [c async for c in client.stream("hello", "echo", b"abc")]
            assert chunks == [b"abc"]
            return answers

    answers = asyncio.run(main())
    assert answers == [str(i).encode() for i in range(8)]


# -- a node that is not there: said at once, not after `wait` ------------------------------------


def free_endpoint() -> str:
    """A TCP endpoint nothing listens on."""
    return f"tcp://127.0.0.1:{free_port()}"


def call_sync(endpoint: str, wait: float | None) -> ServiceError:
    with Client(endpoint, wait=wait) as client, pytest.raises(ServiceError) as error:
        client.call("hello", "echo", b"x")
    return error.value


def call_async(endpoint: str, wait: float | None) -> ServiceError:
    async def main() -> None:
        async with AsyncClient(endpoint, wait=wait) as client:
            await client.call("hello", "echo", b"x")

    with pytest.raises(ServiceError) as error:
        asyncio.run(main())
    return error.value


@pytest.mark.parametrize("calls", [call_sync, call_async], ids=["Client", "AsyncClient"])
@pytest.mark.parametrize("wait", [None, 30.0], ids=["wait forever", "wait 30 s"])
def test_nothing_listening_is_an_error_at_once(calls, wait: float | None) -> None:
    endpoint = free_endpoint()
    started = time.monotonic()
    error = calls(endpoint, wait)
    assert time.monotonic() - started < 2
    assert error.code == 503
    assert error.message == (f"nothing listens at {endpoint}; is the node running? "
                             f"(cocaine node / cocaine run)")


@pytest.mark.parametrize("calls", [call_sync, call_async], ids=["Client", "AsyncClient"])
def test_a_missing_ipc_socket_file_is_an_error_at_once(calls, tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/node.sock"
    started = time.monotonic()
    error = calls(endpoint, None)
    assert time.monotonic() - started < 2
    assert error.message.startswith(f"nothing listens at {endpoint} (no socket file); ")


@contextlib.contextmanager
def tcp_server(greet: Callable[[socket.socket], None]) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that calls ``greet`` with each connection it accepts (and
    closes them all at the end); yields its endpoint."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            held.append(connection)
            greet(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the thread's accept(); close() alone does not
        server.close()
        thread.join(timeout=5)
        for connection in held:
            connection.close()


@pytest.fixture
def not_a_node() -> Iterator[str]:
    """A TCP server that answers every connection with an HTTP error and hangs up."""
    def greet(connection: socket.socket) -> None:
        connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        connection.close()

    with tcp_server(greet) as endpoint:
        yield endpoint


@pytest.mark.parametrize("calls", [call_sync, call_async], ids=["Client", "AsyncClient"])
def test_a_listener_that_is_not_a_node_is_named(calls, not_a_node: str) -> None:
    started = time.monotonic()
    error = calls(not_a_node, None)
    assert time.monotonic() - started < 2
    # A node with --curve closes a plain client's handshake the same way: both are named.
    assert not_a_node in error.message and "--server-key" in error.message
    assert "not a cocaine node: check the endpoint" in error.message


@pytest.fixture
def router() -> Iterator[tuple[str, zmq.Socket]]:
    """A bare ROUTER on a free port: a "node" that reads requests and answers none."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    try:
        yield f"tcp://127.0.0.1:{port}", sock
    finally:
        sock.close()


@pytest.mark.parametrize("calls", [call_sync, call_async], ids=["Client", "AsyncClient"])
def test_a_node_that_dies_before_answering_is_seen_at_once(calls, router) -> None:
    endpoint, sock = router

    def close_after_the_request() -> None:
        assert sock.poll(10_000), "the request never came"
        sock.close()

    closer = threading.Thread(target=close_after_the_request)
    closer.start()
    started = time.monotonic()
    error = calls(endpoint, 30.0)
    closer.join()
    assert time.monotonic() - started < 3
    assert error.message == (f"nothing listens at {endpoint}; is the node running? "
                             f"(cocaine node / cocaine run)")


@pytest.mark.parametrize("calls", [call_sync, call_async], ids=["Client", "AsyncClient"])
def test_no_answer_within_wait_names_the_endpoint_and_the_wait(calls, router) -> None:
    endpoint, _ = router
    started = time.monotonic()
    error = calls(endpoint, 0.3)
    assert 0.25 < time.monotonic() - started < 3
    assert error.code == 500
    assert error.message.startswith(f"no answer from the node at {endpoint} within 0.3 s: ")


def answer_one(sock: zmq.Socket) -> None:
    """Answer the first request ``sock`` (a bare ROUTER) receives with its event's name."""
    assert sock.poll(10_000), "no request came"
    identity, header, _ = sock.recv_multipart()
    request_id, event = protocol.unpack(header)[1], protocol.unpack(header)[3]
    sock.send_multipart([identity, protocol.pack(Code.CHOKE, request_id), event.encode()])


def test_a_refused_request_is_not_delivered_when_a_node_comes_later() -> None:
    endpoint = free_endpoint()
    with Client(endpoint, wait=5) as client:
        with pytest.raises(ServiceError):
            client.call("hello", "first")
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        sock.linger = 0
        try:
            sock.bind(endpoint)

            answering = threading.Thread(target=answer_one, args=(sock,))
            answering.start()
            assert client.call("hello", "second") == b"second"
            answering.join()
        finally:
            sock.close()


def test_quick_answers_never_start_the_monitor(cocaine_node, make_app, monkeypatch) -> None:
    # "Quick" is raised from 100 ms so that a busy test machine cannot make an echo slow.
    monkeypatch.setattr(client_module, "QUICK_MS", 500)
    manifest = make_app(APP + "\n\ndef slower(request):\n    time.sleep(0.8)\n"
                              "    return request.data\n",
                        tasks={"echo": {"type": "native-server"},
                               "slower": {"type": "native-server"}})
    cocaine_node.add_app("hello", manifest)
    with Client(cocaine_node.endpoint, wait=30) as client:
        client.call("hello", "echo", b"warm")  # the first job may wait for a slave
    with Client(cocaine_node.endpoint, wait=30) as client:
        # The monitor exists from the start (a refusal libzmq never retries is news only
        # once); only a slow answer reads what it said.
        reads = []
        news_read = client._news.read
        monkeypatch.setattr(client._news, "read", lambda frames: reads.append(frames)
                            or news_read(frames))
        for i in range(20):
            assert client.call("hello", "echo", str(i)) == str(i).encode()
        assert not reads, "a quick answer read the monitor"
        assert client.call("hello", "slower", b"late") == b"late"
        assert reads, "a slow answer did not watch the connection"
        assert client.call("hello", "echo", b"after") == b"after"


def test_a_refused_async_request_is_not_delivered_when_a_node_comes_later() -> None:
    endpoint = free_endpoint()

    async def main() -> bytes:
        async with AsyncClient(endpoint, wait=5) as client:
            with pytest.raises(ServiceError):
                await client.call("hello", "first")
            sock = zmq.Context.instance().socket(zmq.ROUTER)
            sock.linger = 0
            try:
                sock.bind(endpoint)
                answering = threading.Thread(target=answer_one, args=(sock,))
                answering.start()
                answer = await client.call("hello", "second")
                answering.join()
                return answer
            finally:
                sock.close()

    assert asyncio.run(main()) == b"second"


#: A ZMTP 3.0 greeting of a CurveZMQ server: signature, version 3.0, mechanism, as-server, filler.
CURVE_GREETING = (b"\xff" + b"\0" * 8 + b"\x7f" + bytes([3, 0]) + b"CURVE".ljust(20, b"\0")
                  + b"\x01" + b"\0" * 31)


@pytest.fixture
def curve_greeter() -> Iterator[str]:
    """A TCP server that greets as a ``--curve`` node does and then holds the connection: a
    plain client reads the mechanism before any close, so libzmq gives the connection up
    (``HANDSHAKE_FAILED_PROTOCOL``) every time, not only when the race goes that way."""
    with tcp_server(lambda connection: connection.sendall(CURVE_GREETING)) as endpoint:
        yield endpoint


def no_room(sock: zmq.Socket) -> bool:  # type: ignore[type-arg]
    return not sock.getsockopt(zmq.EVENTS) & zmq.POLLOUT


def test_a_send_after_libzmq_dropped_the_refused_connection_fails_at_once(
        curve_greeter) -> None:
    # A refused handshake ends the socket's only pipe: a blocking send would wait forever.
    with Client(curve_greeter, wait=30, key=False) as client:
        deadline = time.monotonic() + 10
        while not no_room(client._socket) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert no_room(client._socket), "libzmq kept the refused connection's pipe"
        started = time.monotonic()
        with pytest.raises(ServiceError) as caught:
            client.call("hello", "echo", b"x")
        assert time.monotonic() - started < 5
        assert caught.value.code == 503 and "--server-key" in caught.value.message


def test_an_async_send_after_libzmq_dropped_the_refused_connection_fails_at_once(
        curve_greeter) -> None:
    async def main() -> ServiceError:
        async with AsyncClient(curve_greeter, wait=30, key=False) as client:
            deadline = time.monotonic() + 10
            while not no_room(client._socket) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert no_room(client._socket), "libzmq kept the refused connection's pipe"
            with pytest.raises(ServiceError) as caught:
                await asyncio.wait_for(client.call("hello", "echo", b"x"), 5)
            return caught.value
    error = asyncio.run(main())
    assert error.code == 503 and "--server-key" in error.message
