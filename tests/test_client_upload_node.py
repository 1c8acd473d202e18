"""``Client.open``, ``AsyncClient.open`` and ``cocaine call APP EVENT -`` end to end: a real
``cocaine node`` process and a Python app whose handlers read ``request.stream``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cocaine_core.client import AsyncClient, Client
from cocaine_core.client_upload_body import COALESCE
from cocaine_core.errors import ServiceError
from cocaine_core.testing import wait_until, write_app

MIB = 2**20

APP = '''
import hashlib
import time


def store(request):
    digest, size = hashlib.sha256(), 0
    for piece in request.stream:
        digest.update(piece)
        size += len(piece)
    return f"{size} {digest.hexdigest()}"


def echo(request):
    for piece in request.stream:
        yield piece
    yield b"end"


def fail_early(request):
    next(iter(request.stream))
    raise ValueError("no thanks")


def slow(request):
    for piece in request.stream:
        time.sleep(0.5)
    return b"read it all"


def quick(request):
    return b"quick"
'''

TASKS = {name: {"type": "native-server"}
         for name in ("store", "echo", "fail_early", "slow", "quick")}


@pytest.fixture
def node(tmp_path: Path, node_process) -> Any:
    running = node_process()
    running.cli("app", "deploy", str(write_app(tmp_path / "up", APP, TASKS, {"pool-limit": 1})),
                "--name", "up")
    return running


def digest(data: bytes) -> bytes:
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode()


def test_a_body_written_in_pieces_reaches_the_handler_whole(node) -> None:
    data = os.urandom(40 * MIB + 123)
    with Client(node.endpoint, wait=60) as client, client.open("up", "store") as request:
        for i in range(0, len(data), 100_000):
            request.write(data[i:i + 100_000])
        request.end()
        assert request.read() == digest(data)
    with Client(node.endpoint, wait=60) as client, client.open("up", "store") as request:
        request.end()  # an empty body
        assert request.read() == digest(b"")


def test_a_handler_that_answers_as_it_reads(node) -> None:
    pieces = [os.urandom(COALESCE) for _ in range(40)]
    got: list[bytes] = []
    with Client(node.endpoint, wait=60) as client, client.open("up", "echo") as request:
        for piece in pieces:
            request.write(piece)
            got.extend(request.received())
        request.end()
        got.extend(request)
    assert b"".join(got) == b"".join(pieces) + b"end"


def test_a_handler_that_fails_early_fails_the_writes(node) -> None:
    with Client(node.endpoint, wait=60) as client:
        with pytest.raises(ServiceError) as error, client.open("up", "fail_early") as request:
            for _ in range(10_000):  # 2.5 GiB if the error were never seen
                request.write(b"x" * COALESCE)
        assert error.value.code == 502 and "no thanks" in error.value.message
        with pytest.raises(ServiceError) as missing, client.open("nope", "store") as request:
            for _ in range(10_000):
                request.write(b"x" * COALESCE)
        assert missing.value.code == 404
        assert client.call("up", "quick") == b"quick"  # the client goes on


def test_leaving_early_cancels_the_job_and_frees_the_slave(node) -> None:
    with Client(node.endpoint, wait=60) as client:
        with pytest.raises(KeyboardInterrupt), client.open("up", "slow") as request:
            request.write(b"x" * COALESCE)
            request.flush()
            raise KeyboardInterrupt
        started = time.monotonic()
        # pool-limit 1: the quick call runs once the slow job was stopped, not after its
        # body stalled (60 s) or the client's wait
        assert client.call("up", "quick") == b"quick"
        assert time.monotonic() - started < 15


def test_the_async_client_streams_and_reads_in_another_task(node) -> None:
    data = os.urandom(16 * MIB)

    async def main() -> tuple[bytes, bytes]:
        async with AsyncClient(node.endpoint, wait=60) as client:
            async with client.open("up", "store") as request:
                for i in range(0, len(data), MIB // 2):
                    await request.write(data[i:i + MIB // 2])
                await request.end()
                stored = await request.read()
            async with client.open("up", "echo") as request:
                reader = asyncio.ensure_future(request.read())
                for i in range(0, len(data), COALESCE):
                    await request.write(data[i:i + COALESCE])
                await request.end()
                echoed = await reader
            return stored, echoed

    stored, echoed = asyncio.run(main())
    assert stored == digest(data)
    assert echoed == data + b"end"


def rss_kib(pid: int, field: str = "VmHWM") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field}")


def test_cocaine_call_streams_a_pipe(node) -> None:
    size = 2**30
    cocaine = str(Path(sys.executable).with_name("cocaine"))
    producer = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
    peak = 0
    try:
        call = subprocess.Popen([cocaine, "call", "up", "store", "-", "--node", node.endpoint],
                                stdin=producer.stdout, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert producer.stdout is not None
        producer.stdout.close()
        try:
            def ended() -> bool:
                nonlocal peak
                with contextlib.suppress(OSError, AssertionError):
                    peak = max(peak, rss_kib(call.pid))
                return call.poll() is not None

            wait_until(ended, timeout=240, interval=0.2, message="cocaine call to end")
            out, err = call.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                call.kill()
            call.wait()
    finally:
        producer.kill()
        producer.wait()
    assert call.returncode == 0, err.decode()
    zeros = hashlib.sha256()
    for _ in range(size // MIB):
        zeros.update(bytes(MIB))
    assert out == f"{size} {zeros.hexdigest()}".encode()
    assert 0 < peak < 150 * 1024, f"cocaine call's peak RSS was {peak} KiB for 1 GiB"


def test_over_curve_with_the_server_key_and_refused_at_once_without(node_process,
                                                                     tmp_path: Path) -> None:
    from cocaine_core.storages import open_storage
    from cocaine_core.trust.curve import server_public_key

    node = node_process("--curve", start=False).spawn()
    key = ""

    def answers() -> bool:
        nonlocal key
        assert node.process.poll() is None, node.log.read_text()
        key = server_public_key(open_storage(node.storage_uri)) or ""
        if not key:
            return False
        with Client(node.endpoint, wait=0.5, server_key=key) as client, \
                contextlib.suppress(ServiceError):
            return not client.control("info")["loading"]
        return False

    wait_until(answers, timeout=30, message="the Curve node to answer")
    cocaine = str(Path(sys.executable).with_name("cocaine"))
    subprocess.run([cocaine, "app", "deploy", str(write_app(tmp_path / "up", APP, TASKS)),
                    "--name", "up", "--node", node.endpoint, "--server-key", key],
                   check=True, capture_output=True, timeout=120)
    data = os.urandom(3 * MIB)
    with Client(node.endpoint, wait=60, server_key=key) as client, \
            client.open("up", "store") as request:
        request.write(data)
        request.end()
        assert request.read() == digest(data)
    started = time.monotonic()
    with Client(node.endpoint, wait=30) as plain, pytest.raises(ServiceError) as error, \
            plain.open("up", "store") as request:
        for _ in range(20):
            request.write(b"x" * COALESCE)
        request.end()
        request.read()
    assert error.value.code == 503 and "--server-key" in error.value.message
    assert time.monotonic() - started < 10


def test_cocaine_call_stops_reading_stdin_when_the_answer_ends_or_fails(node) -> None:
    cocaine = str(Path(sys.executable).with_name("cocaine"))
    for event, code, out_expected, err_expected in (
            ("quick", 0, b"quick", b""), ("fail_early", 1, b"", b"502")):
        producer = subprocess.Popen(["cat", "/dev/zero"], stdout=subprocess.PIPE)
        try:
            result = subprocess.run([cocaine, "call", "up", event, "-", "--node",
                                     node.endpoint], stdin=producer.stdout,
                                    capture_output=True, timeout=60)
        finally:
            producer.kill()
            producer.wait()
        assert result.returncode == code, result.stderr
        assert result.stdout == out_expected and err_expected in result.stderr
