"""The asyncio client, and the control service through it."""

from __future__ import annotations

import asyncio

import pytest

from cocaine_core.client import AsyncClient
from cocaine_core.errors import ServiceError

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
