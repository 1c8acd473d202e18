"""``zeromq-server``: REQ and DEALER clients in another process, one reply per request."""

from __future__ import annotations

import threading
from pathlib import Path

import msgpack
import pytest

from cocaine_core.errors import NodeError
from cocaine_core.testing import wait_until

APP = '''
import json, os, time
from cocaine_zmq import frames_of

def echo(request):
    return b"|".join(frames_of(request))

def meta(request):
    return json.dumps(request.meta)

def count(request):
    for i in range(3):
        yield str(i)

def nothing(request):
    return None

def boom(request):
    raise ValueError("boom")

def big(request):
    return b"x" * int(request.data or b"262144")

def slow(request):
    time.sleep(0.1)
    return request.data

def held(request):
    deadline = time.monotonic() + 60
    while not os.path.exists({release!r}) and time.monotonic() < deadline:
        time.sleep(0.01)
    return request.data
'''


def server_app(cocaine_node, make_app, tmp_path: Path, name: str = "srv",
               engine: dict | None = None, **tasks: dict) -> dict:
    """Start an app whose tasks are zeromq-servers; return the tasks' info."""
    code = APP.format(release=str(tmp_path / "release"))
    tasks = {event: {"type": "zeromq-server", **options} for event, options in tasks.items()}
    cocaine_node.add_app(name, make_app(code, tasks=tasks, engine=engine, name=name))
    return cocaine_node.info(name)["tasks"]


def test_req_round_trips(cocaine_node, make_app, tmp_path, peer, tcp):
    """A REQ client gets [ok, chunks...]; multi-frame requests reach the handler as frames."""
    echo, meta, count, nothing = tcp(), tcp(), tcp(), tcp()
    server_app(cocaine_node, make_app, tmp_path, echo={"endpoint": echo},
               meta={"endpoint": meta}, count={"endpoint": count},
               nothing={"endpoint": nothing})
    assert peer.req(echo, [b"hello"], [b"a", b"b", b""], [b""]) == [
        [b"ok", b"hello"], [b"ok", b"a|b|"], [b"ok", b""]]
    assert peer.req(meta, [b"x"], [b"x", b"y"]) == [[b"ok", b'{"frames": 1}'],
                                                     [b"ok", b'{"frames": 2}']]
    assert peer.req(count, [b""]) == [[b"ok", b"0", b"1", b"2"]]
    assert peer.req(nothing, [b""]) == [[b"ok"]]


def test_dealer_pipelines_a_thousand_requests(cocaine_node, make_app, tmp_path, peer, tcp):
    """1,000 requests pipelined on one DEALER are all answered, each with its own tag back."""
    endpoint = tcp()
    server_app(cocaine_node, make_app, tmp_path, engine={"queue-limit": 2000, "pool-limit": 2},
               echo={"endpoint": endpoint})
    result = peer("dealer", endpoint=endpoint, count=1000)
    assert result == {"ok": 1000, "errors": {}, "bad": 0, "messages": [], "distinct": 1000}
    info = cocaine_node.info("srv")["tasks"]["echo"]
    assert info["answered"] == 1000 and info["in-flight"] == 0


def test_dealer_without_delimiter(cocaine_node, make_app, tmp_path, peer, tcp):
    """A DEALER that sends no empty delimiter gets replies without one."""
    endpoint = tcp()
    server_app(cocaine_node, make_app, tmp_path, echo={"endpoint": endpoint})
    result = peer("dealer", endpoint=endpoint, count=50, delimiter=False)
    assert result["ok"] == 50 and result["bad"] == 0


def test_raising_handler_gets_an_error_reply(cocaine_node, make_app, tmp_path, peer,
                                             short_dir):
    """A handler's exception is an [error, 502, message] reply; the server serves on."""
    endpoint = f"ipc://{short_dir}/boom.sock"
    server_app(cocaine_node, make_app, tmp_path, boom={"endpoint": endpoint})
    replies = peer.req(endpoint, [b"1"], [b"2"])
    assert replies == [[b"error", b"502", b"ValueError: boom"]] * 2


def test_full_queue_answers_503(cocaine_node, make_app, tmp_path, peer, tcp):
    """Beyond the app's queue-limit, requests are answered 503 at once, never left hanging."""
    endpoint = tcp()
    server_app(cocaine_node, make_app, tmp_path, engine={"queue-limit": 5, "pool-limit": 1},
               slow={"endpoint": endpoint})
    result = peer("dealer", endpoint=endpoint, count=50)
    assert result["ok"] + result["errors"].get("503", 0) == 50
    assert result["ok"] >= 5 and result["errors"]["503"] > 0 and result["bad"] == 0
    assert "queue is full" in result["messages"][0]


def test_free_port_from_the_node_range(cocaine_node, make_app, tmp_path, peer):
    """Without an endpoint the server takes a port from the node's range, shown in info,
    and gives it back when the app stops."""
    tasks = server_app(cocaine_node, make_app, tmp_path, echo={})
    endpoint = tasks["echo"]["endpoint"]
    port = int(endpoint.rsplit(":", 1)[1])
    assert endpoint.startswith("tcp://127.0.0.1:")
    ports = cocaine_node.node.ports
    assert ports.first <= port <= ports.last
    assert peer.req(endpoint, [b"hi"]) == [[b"ok", b"hi"]]
    cocaine_node.remove_app("srv")
    assert port not in ports._taken


def test_oversized_requests_are_refused(cocaine_node, make_app, tmp_path, peer, tcp):
    """Over max-message-size: an [error, 400] reply. A frame over twice that is cut off by
    ZeroMQ itself (no reply, the connection dropped); either way the server serves on."""
    endpoint = tcp()
    server_app(cocaine_node, make_app, tmp_path, echo={"endpoint": endpoint,
                                                       "max-message-size": 1000})
    first, split, fine = peer.req(endpoint, [b"x" * 1500], [b"y" * 600] * 3, [b"z" * 1000])
    for reply in first, split:
        assert reply[:2] == [b"error", b"400"]
        assert b"over this task's max-message-size of 1000 bytes" in reply[2]
    assert fine == [b"ok", b"z" * 1000]
    cut, after = peer.req(endpoint, [b"w" * 2500], [b"after"], timeout=2)
    assert cut is None and after == [b"ok", b"after"]
    assert cocaine_node.info("srv")["tasks"]["echo"]["too-large"] == 2


def test_too_large_answer_is_an_error(cocaine_node, make_app, tmp_path, peer, tcp):
    """An answer that grows over max-message-size is replaced by an [error, 500] reply."""
    endpoint = tcp()
    server_app(cocaine_node, make_app, tmp_path, big={"endpoint": endpoint,
                                                     "max-message-size": 1000})
    small, large = peer.req(endpoint, [b"1000"], [b"1001"])
    assert small == [b"ok", b"x" * 1000]
    assert large[:2] == [b"error", b"500"] and b"max-message-size" in large[2]


def test_vanished_clients_leak_nothing(cocaine_node, make_app, tmp_path, peer, tcp, fd_count):
    """Clients that leave before their reply: the replies are dropped and counted, nothing is
    kept for them, their connections close, and the server serves on."""
    endpoint = tcp()
    server_app(cocaine_node, make_app, tmp_path, engine={"pool-limit": 1},
               held={"endpoint": endpoint})
    (tmp_path / "release").touch()
    assert peer.req(endpoint, [b"warm"]) == [[b"ok", b"warm"]]
    (tmp_path / "release").unlink()
    before = fd_count()
    assert peer("vanish", endpoint=endpoint, count=5) == {"sent": 5}

    def task() -> dict:
        return cocaine_node.info("srv")["tasks"]["held"]

    wait_until(lambda: task()["requests"] == 6, message="the 5 requests to arrive")
    (tmp_path / "release").touch()
    wait_until(lambda: task()["dropped"] == 5, message="5 replies to be dropped")
    assert task()["in-flight"] == 0 and task()["answered"] == 6
    wait_until(lambda: fd_count() <= before, timeout=30, message="the connections to close")
    assert peer.req(endpoint, [b"again"]) == [[b"ok", b"again"]]


def test_replies_beyond_the_backlog_are_dropped(cocaine_node, make_app, tmp_path, peer,
                                                short_dir):
    """A client that does not read: `backlog` replies queue for it, ZeroMQ and the kernel
    hold a few more, and the rest are dropped and counted; the client reads the others."""
    endpoint = f"ipc://{short_dir}/hwm.sock"
    server_app(cocaine_node, make_app, tmp_path, engine={"pool-limit": 2},
               big={"endpoint": endpoint, "backlog": 2})
    go = short_dir / "go"
    reader = peer.start("slow_reader", endpoint=endpoint, count=30, go_file=str(go))

    def task() -> dict:
        return cocaine_node.info("srv")["tasks"]["big"]

    wait_until(lambda: task()["answered"] == 30, timeout=60, message="30 answers")
    dropped = task()["dropped"]
    assert 0 < dropped < 30
    go.write_text(f"{30 - dropped}\n")
    assert peer.result(reader) == {"received": 30 - dropped, "extra": 0}


def test_stopping_answers_every_request(cocaine_node, make_app, tmp_path, peer, tcp):
    """Removing the app: the request running gets 500 after termination-timeout, the queued
    one 503, and both clients have their one reply."""
    endpoint = tcp()
    server_app(cocaine_node, make_app, tmp_path,
               engine={"pool-limit": 1, "termination-timeout": 0.5}, held={"endpoint": endpoint})
    client = peer.start("dealer", endpoint=endpoint, count=2)
    wait_until(lambda: cocaine_node.info("srv")["tasks"]["held"]["requests"] == 2
               and cocaine_node.info("srv")["pool"]["busy"] == 1,
               message="one request to run and the other to wait")
    cocaine_node.remove_app("srv")
    result = peer.result(client)
    assert result["ok"] == 0 and result["errors"] == {"500": 1, "503": 1}


def test_endpoint_in_use_fails_the_start(cocaine_node, make_app, tmp_path, tcp, occupy,
                                         short_dir):
    """An endpoint something else listens on (tcp, or ipc, which ZeroMQ would silently take
    over) fails the app's start naming the task and the endpoint."""
    for endpoint in (tcp(), f"ipc://{short_dir}/taken.sock"):
        occupy(endpoint)
        with pytest.raises(NodeError) as error:
            server_app(cocaine_node, make_app, tmp_path, echo={"endpoint": endpoint})
        assert f"task 'echo' (zeromq-server): cannot bind {endpoint}" in str(error.value)
        assert "already in use" in str(error.value)
        assert "srv" not in cocaine_node.node.apps


def test_failed_start_frees_the_endpoints_already_bound(cocaine_node, make_app, tmp_path,
                                                        tcp, occupy, is_free):
    """When a later task cannot bind, the earlier tasks' endpoints are closed again."""
    first, second = tcp(), tcp()
    occupy(second)
    with pytest.raises(NodeError, match="task 'meta'"):
        server_app(cocaine_node, make_app, tmp_path, echo={"endpoint": first},
                   meta={"endpoint": second})
    wait_until(lambda: is_free(first), message=f"{first} to be free again")


def test_node_is_not_blocked_by_clients(cocaine_node, make_app, tmp_path, peer, tcp):
    """While a server's handler is held, the node still answers its own clients."""
    endpoint = tcp()
    server_app(cocaine_node, make_app, tmp_path, engine={"pool-limit": 1},
               held={"endpoint": endpoint})
    replies: list = []
    client = threading.Thread(target=lambda: replies.extend(peer.req(endpoint, [b"x"])))
    client.start()
    wait_until(lambda: cocaine_node.info("srv")["tasks"]["held"]["in-flight"] == 1,
               message="the request to be in flight")
    with cocaine_node.client() as native:
        assert msgpack.unpackb(native.call("@node", "list")) == ["srv"]
    (tmp_path / "release").touch()
    client.join(90)
    assert replies == [[b"ok", b"x"]]
