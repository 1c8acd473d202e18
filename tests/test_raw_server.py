"""``raw-server``: real TCP and unix-socket clients of a node running a Python app."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from cocaine_core.errors import CocaineError
from cocaine_core.manifest import load_manifest
from cocaine_core.testing import free_port, wait_until

APP = '''
import json, os, time

def echo(request):
    return request.data

def meta(request):
    return json.dumps(request.meta)

def parts(request):
    for piece in request.data.split(b","):
        yield piece

def sleepy(request):
    delay, _, tag = request.data.partition(b":")
    time.sleep(float(delay))
    return tag

def boom(request):
    if request.data == b"boom":
        raise ValueError("it broke\\nbadly")
    return request.data

def big(request):
    return b"x" * 1048576

def ticking(request):
    try:
        while True:
            with open({record!r}, "a") as f:
                f.write("tick\\n")
            time.sleep(0.05)
            yield b"."
    finally:
        with open({record!r}, "a") as f:
            f.write("stopped\\n")

def held(request):
    with open({record!r}, "a") as f:
        f.write(request.data.decode() + "\\n")
    deadline = time.monotonic() + 30
    while not os.path.exists({release!r}) and time.monotonic() < deadline:
        time.sleep(0.01)
    return request.data
'''


def raw_app(cocaine_node, make_app, tmp_path: Path, name: str = "raw",
            engine: dict | None = None, **tasks: dict) -> dict[str, Any]:
    """Start an app whose tasks are raw-servers (tcp port 0 unless given); their info."""
    code = APP.format(record=str(tmp_path / "record"), release=str(tmp_path / "release"))
    tasks = {event: {"type": "raw-server", "endpoint": "tcp://127.0.0.1:0", **options}
             for event, options in tasks.items()}
    cocaine_node.add_app(name, make_app(code, tasks=tasks, engine=engine, name=name))
    return cocaine_node.info(name)["tasks"]


def connect(endpoint: str, timeout: float = 20) -> socket.socket:
    """A blocking client socket connected to a raw-server endpoint."""
    if endpoint.startswith("unix://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(endpoint[len("unix://"):])
        return sock
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_to_end(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset counts as the end too)."""
    data = bytearray()
    while True:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            break
        if not piece:
            break
        data += piece
    return bytes(data)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes, or fewer if the server closes first."""
    data = bytearray()
    while len(data) < size:
        piece = sock.recv(min(size - len(data), 1 << 20))
        if not piece:
            break
        data += piece
    return bytes(data)


def read_lines(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` lines (without their ``\\n``)."""
    data = bytearray()
    while data.count(b"\n") < count:
        piece = sock.recv(65536)
        assert piece, f"closed before {count} lines came: {bytes(data)!r}"
        data += piece
    return bytes(data).split(b"\n")[:count]


def length_frame(data: bytes) -> bytes:
    """``data`` in length framing."""
    return struct.pack(">I", len(data)) + data


def read_length_frame(sock: socket.socket) -> bytes:
    """One length-framed answer."""
    (size,) = struct.unpack(">I", read_exactly(sock, 4))
    return read_exactly(sock, size)


def test_line_framing_round_trip(cocaine_node, make_app, tmp_path):
    """Lines (\\n or \\r\\n) are answered line by line; a last line without \\n at the end of
    the client's sending is a frame too; a generator's chunks are joined; meta says who."""
    tasks = raw_app(cocaine_node, make_app, tmp_path, echo={}, meta={}, parts={})
    endpoint = tasks["echo"]["endpoint"]
    assert endpoint.startswith("tcp://127.0.0.1:") and not endpoint.endswith(":0")
    assert tasks["echo"]["framing"] == "line"
    with connect(endpoint) as sock:
        sock.sendall(b"hello\r\nworld\n\nlast")
        sock.shutdown(socket.SHUT_WR)
        assert read_to_end(sock) == b"hello\nworld\n\nlast\n"
    with connect(tasks["parts"]["endpoint"]) as sock:
        sock.sendall(b"a,b,c\n")
        assert read_lines(sock, 1) == [b"abc"]
    with connect(tasks["meta"]["endpoint"]) as first, connect(tasks["meta"]["endpoint"]) as two:
        first.sendall(b"x\n")
        two.sendall(b"x\n")
        one, other = json.loads(read_lines(first, 1)[0]), json.loads(read_lines(two, 1)[0])
        assert one["remote"] == f"127.0.0.1:{first.getsockname()[1]}"
        assert one["connection"] != other["connection"]
    info = cocaine_node.info("raw")["tasks"]["echo"]
    assert info["frames"] == 4 and info["answered"] == 4 and info["failed"] == 0


def test_length_and_eof_framing(cocaine_node, make_app, tmp_path):
    """Length framing carries any bytes (empty, binary, newlines); eof framing answers the
    whole sending and closes."""
    tasks = raw_app(cocaine_node, make_app, tmp_path, echo={"framing": "length"},
                    parts={"framing": "eof"})
    frames = [b"", b"\x00\x01\n\r\xff", b"y" * 100_000]
    with connect(tasks["echo"]["endpoint"]) as sock:
        sock.sendall(b"".join(length_frame(frame) for frame in frames))
        assert [read_length_frame(sock) for _ in frames] == frames
    with connect(tasks["parts"]["endpoint"]) as sock:
        sock.sendall(b"one,two,\nthree")
        sock.shutdown(socket.SHUT_WR)
        assert read_to_end(sock) == b"onetwo\nthree"


def test_pipelined_answers_keep_request_order(cocaine_node, make_app, tmp_path):
    """Frames whose jobs end out of order (slower first) are answered in request order."""
    tasks = raw_app(cocaine_node, make_app, tmp_path, engine={"pool-limit": 4},
                    sleepy={"framing": "length"})
    delays = [0.8, 0.4, 0.0, 0.2, 0.0, 0.1]
    with connect(tasks["sleepy"]["endpoint"]) as sock:
        sock.sendall(b"".join(length_frame(b"%g:%d" % (delay, index))
                              for index, delay in enumerate(delays)))
        answers = [read_length_frame(sock) for _ in delays]
    assert answers == [b"%d" % index for index in range(len(delays))]


def test_over_long_frames_close_the_connection(cocaine_node, make_app, tmp_path):
    """A line without \\n within max-frame, or a length prefix over it, closes the connection;
    a frame of exactly max-frame is served."""
    tasks = raw_app(cocaine_node, make_app, tmp_path, echo={"max-frame": 10},
                    sleepy={"framing": "length", "max-frame": 10})
    with connect(tasks["echo"]["endpoint"]) as sock:
        sock.sendall(b"0123456789\r\n" + b"z" * 50)
        assert read_to_end(sock) == b"0123456789\n"
    with connect(tasks["sleepy"]["endpoint"]) as sock:
        sock.sendall(struct.pack(">I", 11))
        assert read_to_end(sock) == b""
    info = cocaine_node.info("raw")["tasks"]
    assert info["echo"]["too-large"] == 1 and info["sleepy"]["too-large"] == 1
    assert info["echo"]["connections"] == 0


def test_on_error_close_or_frame(cocaine_node, make_app, tmp_path):
    """on-error close: the answers before the failed frame, then the connection closes;
    on-error frame: ERROR <code> <message> on one line, and the connection goes on."""
    tasks = raw_app(cocaine_node, make_app, tmp_path, boom={},
                    echo={"on-error": "frame", "max-answer": 3})
    with connect(tasks["boom"]["endpoint"]) as sock:
        sock.sendall(b"a\nboom\nc\n")
        assert read_to_end(sock) == b"a\n"
    with connect(tasks["echo"]["endpoint"]) as sock:
        sock.sendall(b"ab\nabcd\nc\n")
        first, error, last = read_lines(sock, 3)
    assert (first, last) == (b"ab", b"c")
    assert error.startswith(b"ERROR 500 the answer grew to over 3 bytes")
    info = cocaine_node.info("raw")["tasks"]
    assert info["boom"]["failed"] == 1 and info["echo"]["failed"] == 1


def test_handler_error_as_a_line(cocaine_node, make_app, tmp_path):
    """A handler's exception (its message has a newline) is one ERROR 502 line."""
    tasks = raw_app(cocaine_node, make_app, tmp_path, boom={"on-error": "frame"})
    with connect(tasks["boom"]["endpoint"]) as sock:
        sock.sendall(b"boom\nok\n")
        error, answer = read_lines(sock, 2)
    assert error.startswith(b"ERROR 502 ") and b"it broke badly" in error
    assert answer == b"ok"


def test_unix_socket_relative_path_and_removal(cocaine_node, make_app, tmp_path):
    """A relative unix path is the manifest's folder's; the socket is 0660, serves, and is
    removed when the app stops, leaving the folder's other files alone."""
    tasks = raw_app(cocaine_node, make_app, tmp_path, echo={"endpoint": "unix:echo.sock"},
                    meta={"endpoint": "unix://meta.sock"})
    path = tmp_path / "raw" / "echo.sock"
    assert tasks["echo"]["endpoint"] == f"unix://{path}"
    assert stat.S_ISSOCK(path.lstat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o660
    with connect(tasks["echo"]["endpoint"]) as sock:
        sock.sendall(b"over unix\n")
        assert read_lines(sock, 1) == [b"over unix"]
    with connect(tasks["meta"]["endpoint"]) as sock:
        sock.sendall(b"\n")
        assert json.loads(read_lines(sock, 1)[0])["remote"] == "unix"
    # A new version of the app binds the same path while the old one's connections drain.
    held = connect(tasks["echo"]["endpoint"])
    cocaine_node.run(cocaine_node.node.run_app, "raw",
                     load_manifest(tmp_path / "raw" / "manifest.json"))
    with held, connect(tasks["echo"]["endpoint"]) as sock:
        sock.sendall(b"new version\n")
        assert read_lines(sock, 1) == [b"new version"]
        assert read_to_end(held) == b""  # the old version closed its idle connection
    before = sorted(p.name for p in (tmp_path / "raw").iterdir())
    cocaine_node.remove_app("raw")
    after = sorted(p.name for p in (tmp_path / "raw").iterdir())
    assert after == [name for name in before if name not in ("echo.sock", "meta.sock")]


def test_unix_socket_refusals(cocaine_node, make_app, tmp_path):
    """The node refuses a path holding a file, a socket in use, or a stale socket (and never
    deletes any of them)."""
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "file.sock").write_text("mine")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(folder / "stale.sock"))
    stale.close()
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(folder / "live.sock"))
    live.listen(1)
    try:
        for name, words in (("file.sock", "is not a socket"),
                            ("stale.sock", f"stale socket (nothing listens on it; perhaps left "
                                           f"by a process that was killed); the node never "
                                           f"deletes what it did not create: remove it (rm "
                                           f"{folder / 'stale.sock'})"),
                            ("live.sock", "already listens")):
            with pytest.raises(CocaineError) as caught:
                raw_app(cocaine_node, make_app, tmp_path, echo={"endpoint": f"unix:{name}"})
            message = str(caught.value)
            assert str(folder / name) in message and words in message, message
            assert (folder / name).exists()
    finally:
        live.close()
    assert (folder / "file.sock").read_text() == "mine"
    assert stat.S_ISSOCK((folder / "stale.sock").lstat().st_mode)


def test_a_unix_socket_in_the_nodes_folders_is_refused(cocaine_node, make_app, tmp_path):
    """An app cannot make its socket among the node's files (where it could take the name
    of another app's code, and break its deploy)."""
    run_dir = cocaine_node.node.run_dir
    target = Path(run_dir) / "code-of-another-app"
    with pytest.raises(CocaineError) as caught:
        raw_app(cocaine_node, make_app, tmp_path, echo={"endpoint": f"unix://{target}"})
    assert "inside the node's folder" in str(caught.value), caught.value
    assert not target.exists()


def test_tcp_address_in_use(cocaine_node, make_app, tmp_path):
    """A TCP endpoint something else listens on fails the app's start, naming it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        endpoint = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(CocaineError, match="already in use") as caught:
            raw_app(cocaine_node, make_app, tmp_path, echo={"endpoint": endpoint})
        assert endpoint in str(caught.value)


def test_many_connections_and_max_connections(cocaine_node, make_app, tmp_path):
    """200 connections at once are all served; past max-connections a connection is
    accepted and closed at once, and counted."""
    tasks = raw_app(cocaine_node, make_app, tmp_path, engine={"pool-limit": 2},
                    echo={}, meta={"max-connections": 5})
    socks = [connect(tasks["echo"]["endpoint"]) for _ in range(200)]
    try:
        for index, sock in enumerate(socks):
            sock.sendall(b"%d-a\n%d-b\n" % (index, index))
        for index, sock in enumerate(socks):
            assert read_lines(sock, 2) == [b"%d-a" % index, b"%d-b" % index]
    finally:
        for sock in socks:
            sock.close()
    kept = [connect(tasks["meta"]["endpoint"]) for _ in range(5)]
    try:
        wait_until(lambda: cocaine_node.info("raw")["tasks"]["meta"]["connections"] == 5)
        with connect(tasks["meta"]["endpoint"]) as extra:
            extra.sendall(b"x\n")
            assert read_to_end(extra) == b""
        assert cocaine_node.info("raw")["tasks"]["meta"]["connections-refused"] == 1
    finally:
        for sock in kept:
            sock.close()


def test_slow_reader_keeps_the_node_bounded(cocaine_node, make_app, tmp_path):
    """A client that sends 128 frames whose answers are 1 MiB each and reads none: the node
    reads only a pipeline's worth, holds a bounded amount, and serves them all once read."""
    tasks = raw_app(cocaine_node, make_app, tmp_path, engine={"pool-limit": 2},
                    big={"pipeline": 4})
    node = psutil.Process()
    rss = node.memory_info().rss
    count = 128
    with connect(tasks["big"]["endpoint"], timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"\n" * count)

        def settled() -> bool:
            info = cocaine_node.info("raw")["tasks"]["big"]
            return info["answered"] >= 1 and info["in-flight"] == 4
        wait_until(settled, timeout=20, message="the pipeline to fill")
        time.sleep(0.5)  # give a node that would not stop the chance to read more
        info = cocaine_node.info("raw")["tasks"]["big"]
        assert info["frames"] < 32, info  # a pipeline in flight, a few in kernel buffers
        grown = node.memory_info().rss - rss
        assert grown < 48 * 2**20, f"the node grew by {grown >> 20} MiB"
        data = read_exactly(sock, count * (2**20 + 1))
    assert data == (b"x" * 2**20 + b"\n") * count


def test_client_gone_mid_flight(cocaine_node, make_app, tmp_path):
    """A client that goes (a reset) with frames queued and running: the queued ones never
    run, the running one's answer is dropped, and the server goes on serving others."""
    tasks = raw_app(cocaine_node, make_app, tmp_path, engine={"pool-limit": 1},
                    held={})
    record = tmp_path / "record"
    sock = connect(tasks["held"]["endpoint"])
    sock.sendall(b"one\ntwo\nthree\n")
    wait_until(lambda: record.exists() and record.read_text() == "one\n")
    wait_until(lambda: cocaine_node.info("raw")["tasks"]["held"]["frames"] == 3)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # with linger 0: a reset, as from a client whose host dropped it
    wait_until(lambda: cocaine_node.info("raw")["tasks"]["held"]["connections"] == 0)
    assert cocaine_node.info("raw")["tasks"]["held"]["abandoned"] == 3
    (tmp_path / "release").touch()
    with connect(tasks["held"]["endpoint"]) as sock:
        sock.sendall(b"four\n")
        assert read_lines(sock, 1) == [b"four"]
    assert record.read_text() == "one\nfour\n"


def test_a_client_gone_stops_its_running_job(cocaine_node, make_app, tmp_path):
    """A running job whose client left is stopped on its slave (its generator's finally
    runs), not left to run for nobody."""
    tasks = raw_app(cocaine_node, make_app, tmp_path, engine={"pool-limit": 1},
                    ticking={})
    record = tmp_path / "record"
    sock = connect(tasks["ticking"]["endpoint"])
    sock.sendall(b"go\n")
    wait_until(lambda: record.exists() and "tick" in record.read_text())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    wait_until(lambda: "stopped" in record.read_text(), timeout=10,
               message="the generator to be stopped")


def test_idle_connection_closed(cocaine_node, make_app, tmp_path):
    """A connection silent for idle-timeout with nothing in flight is closed."""
    tasks = raw_app(cocaine_node, make_app, tmp_path, echo={"idle-timeout": 0.3})
    with connect(tasks["echo"]["endpoint"]) as sock:
        sock.sendall(b"hi\n")
        assert read_lines(sock, 1) == [b"hi"]
        started = time.monotonic()
        assert read_to_end(sock) == b""
        assert time.monotonic() - started < 10
    assert cocaine_node.info("raw")["tasks"]["echo"]["idle-closed"] == 1


def test_bad_keys_are_named_by_manifest_check(tmp_path):
    """``cocaine manifest check`` names each bad key and what it accepts."""
    (tmp_path / "app.py").write_text("def e(request):\n    return b''\n")
    tasks = {
        "a": {"type": "raw-server", "endpoint": "http://127.0.0.1:80"},
        "b": {"type": "raw-server", "endpoint": "tcp://127.0.0.1:70000", "framing": "json"},
        "c": {"type": "raw-server", "endpoint": "unix:missing/app.sock", "max-frame": 0,
              "pipeline": 2000, "idle-timeout": 0, "on-error": "ignore"},
        "d": {"type": "raw-server"},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"type": "python", "args": {"source": "app.py"}, "tasks": tasks}))
    cocaine = str(Path(sys.executable).with_name("cocaine"))
    result = subprocess.run([cocaine, "manifest", "check", str(tmp_path / "manifest.json")],
                            capture_output=True, text=True, timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    for expected in ("tasks.a.endpoint: must be tcp://HOST:PORT or unix://PATH",
                     "tasks.b.endpoint: must be tcp://HOST:PORT with a port from 1 to 65535",
                     "tasks.b.framing: must be one of \"line\", \"length\", \"eof\"",
                     "tasks.c.max-frame: must be an integer from 1 to 67108864",
                     "tasks.c.pipeline: must be an integer from 1 to 1024",
                     "tasks.c.idle-timeout: must be a number of seconds from 0.1 to 86400",
                     "tasks.c.on-error: must be one of \"close\", \"frame\"",
                     "tasks.d.endpoint: is required"):
        assert expected in out, out
    tasks["c"] = {"type": "raw-server", "endpoint": "unix:missing/app.sock"}
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"type": "python", "args": {"source": "app.py"}, "tasks": {"c": tasks["c"]}}))
    result = subprocess.run([cocaine, "manifest", "check", str(tmp_path / "manifest.json")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"tasks.c.endpoint: the socket's folder {tmp_path / 'missing'} does not exist" \
        in result.stdout + result.stderr
    assert not os.path.exists(tmp_path / "missing")


def test_full_queue_pauses_reading_instead_of_refusing(cocaine_node, make_app, tmp_path):
    """With the app's queue full, frames wait unread (none is refused with 503) and are
    served in order once there is room."""
    tasks = raw_app(cocaine_node, make_app, tmp_path,
                    engine={"pool-limit": 1, "queue-limit": 1}, held={"on-error": "frame"})
    record = tmp_path / "record"
    with connect(tasks["held"]["endpoint"]) as sock:
        sock.sendall(b"".join(b"%d\n" % index for index in range(10)))
        wait_until(lambda: record.exists() and record.read_text() == "0\n")
        wait_until(lambda: cocaine_node.info("raw")["tasks"]["held"]["frames"] == 2)
        time.sleep(0.3)  # a node that did not wait for room would take (and refuse) more
        assert cocaine_node.info("raw")["tasks"]["held"]["frames"] == 2
        (tmp_path / "release").touch()
        assert read_lines(sock, 10) == [b"%d" % index for index in range(10)]
    info = cocaine_node.info("raw")["tasks"]["held"]
    assert info["answered"] == 10 and info["failed"] == 0


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_endpoint(cocaine_node, make_app, tmp_path):
    """tcp://[::1]:0 binds a free port, shown in brackets; remote is [ip]:port."""
    tasks = raw_app(cocaine_node, make_app, tmp_path, meta={"endpoint": "tcp://[::1]:0"})
    endpoint = tasks["meta"]["endpoint"]
    assert endpoint.startswith("tcp://[::1]:") and not endpoint.endswith(":0")
    port = int(endpoint.rpartition(":")[2])
    with socket.create_connection(("::1", port), timeout=20) as sock:
        sock.sendall(b"\n")
        remote = json.loads(read_lines(sock, 1)[0])["remote"]
        assert remote == f"[::1]:{sock.getsockname()[1]}"


def test_stop_writes_answers_in_flight_then_closes(cocaine_node, make_app, tmp_path):
    """An app stopping accepts no more connections, reads no more frames, and closes each
    connection once the answers of its frames in flight are written."""
    import threading

    tasks = raw_app(cocaine_node, make_app, tmp_path, engine={"pool-limit": 1}, held={})
    endpoint = tasks["held"]["endpoint"]
    record = tmp_path / "record"
    with connect(endpoint) as sock:
        sock.sendall(b"first\n")
        wait_until(lambda: record.exists() and record.read_text() == "first\n")
        stopper = threading.Thread(target=cocaine_node.remove_app, args=("raw",))
        stopper.start()
        try:
            def refused() -> bool:
                try:
                    connect(endpoint, timeout=2).close()
                except OSError:
                    return True
                return False
            wait_until(refused, timeout=20, message="the endpoint to stop accepting")
            sock.sendall(b"late\n")  # read by nobody: the task stopped reading
            (tmp_path / "release").touch()
            assert read_to_end(sock) == b"first\n"
            sock.close()  # the node waits (up to 2 s) for its client to close too
        finally:
            stopper.join(60)
    assert not stopper.is_alive()
    assert record.read_text() == "first\n"


def test_a_new_version_that_cannot_listen_leaves_the_running_one_serving(
        cocaine_node, make_app, tmp_path):
    """A redeploy whose new version cannot start its drivers (its endpoint is taken) is
    refused, and the running version goes on serving: its drivers start again, its slaves
    and queued jobs stay its own."""
    tasks = raw_app(cocaine_node, make_app, tmp_path,
                    echo={"endpoint": f"tcp://127.0.0.1:{free_port()}"})
    endpoint = tasks["echo"]["endpoint"]
    with connect(endpoint) as sock:
        sock.sendall(b"before\n")
        assert read_lines(sock, 1) == [b"before"]
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        v2 = {"echo": {"type": "raw-server", "endpoint": endpoint},
              "other": {"type": "raw-server", "endpoint": f"tcp://127.0.0.1:{port}",
                        "emit": "echo"}}
        manifest = load_manifest(make_app(APP.format(record="r", release="x"), tasks=v2,
                                          name="raw-v2"))
        with pytest.raises(CocaineError, match="in use"):
            cocaine_node.run(cocaine_node.node.run_app, "raw", manifest)
    finally:
        taken.close()
    assert cocaine_node.info("raw")["state"] == "running"
    with connect(endpoint) as sock:
        sock.sendall(b"after\n")
        assert read_lines(sock, 1) == [b"after"]
