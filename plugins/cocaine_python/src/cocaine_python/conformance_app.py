"""The conformance app of cocaine-python: what ``cocaine conformance`` drives.

Run it as an exec worker::

    cocaine conformance -- python -m cocaine_python.worker \\
        plugins/cocaine_python/src/cocaine_python/conformance_app.py

Its handlers are async, so that with ``concurrency`` above 1 the runtime runs them together on
its event loop (``runtime.serve``): a ``sleep`` waits without holding up other jobs, and the
heartbeats go on from their own thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from cocaine_python.request import Request
from cocaine_python.response import Response

#: The largest ``stream`` count, and the longest ``sleep``, the app takes.
MAX_COUNT = 100_000
MAX_SLEEP_MS = 600_000


async def echo(request: Request) -> bytes:
    """The request body, unchanged (a streamed one whole, once it is complete)."""
    return await request.stream.gather() if request.streamed else request.data


async def sizes(request: Request) -> AsyncIterator[str]:
    """Per piece of the body, as it is read: one chunk, the piece's size in ASCII decimal."""
    async for piece in request.stream:
        yield str(len(piece))


async def status(request: Request) -> Response:
    """Body n: HEADERS with status n and ``X-Conformance: yes``, then ``status n`` (n outside
    100..599: ``Response`` refuses it, ERROR 502)."""
    n = _number(request, "status", 999)
    return Response(f"status {n}", status=n, headers={"X-Conformance": "yes"})


async def stream(request: Request) -> AsyncIterator[str]:
    """Body: an ASCII decimal n (0 to 100000); answers n chunks "0", "1", ... "n-1"."""
    for i in range(_number(request, "stream", MAX_COUNT)):
        yield str(i)


async def sleep(request: Request) -> str:
    """Body: an ASCII decimal number of milliseconds; waits that long, then answers "slept"."""
    await asyncio.sleep(_number(request, "sleep", MAX_SLEEP_MS) / 1000)
    return "slept"


async def fail(request: Request) -> None:
    """Fails with the body (text) as its message: ERROR 502."""
    raise RuntimeError(request.data.decode("utf-8", "replace"))


def _number(request: Request, event: str, largest: int) -> int:
    text = request.data.decode("ascii", "replace").strip()
    if not text.isdigit() or int(text) > largest:
        raise ValueError(f"{event} takes an ASCII decimal number from 0 to {largest} as its "
                         f"body, got {text[:40]!r}")
    return int(text)
