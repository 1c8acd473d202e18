"""cocaine-python: the ``python`` language for cocaine apps.

A handler is the module-level callable named after its event. It receives a ``Request`` and
returns bytes, str, None or a msgpack-able value, or yields them as a stream of chunks;
``async def`` handlers and async generators work too. A ``Response`` gives the answer a status
and headers (an HTTP driver presents them): return it, or yield it (without a body) first.
A streamed request's body is read piece by piece from ``request.stream``; a read raises
``JobCancelled`` once nobody waits for the answer.
"""

from cocaine_core.slave_channel import JobCancelled
from cocaine_python.request import Request
from cocaine_python.response import Response

__all__ = ["JobCancelled", "Request", "Response"]
