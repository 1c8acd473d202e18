"""cocaine-python: the ``python`` language for cocaine apps.

A handler is the module-level callable named after its event. It receives a ``Request`` and
returns bytes, str, None or a msgpack-able value, or yields them as a stream of chunks;
``async def`` handlers and async generators work too.
"""

from cocaine_python.request import Request

__all__ = ["Request"]
