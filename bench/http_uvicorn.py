"""``uvicorn`` as the bench's ``http`` scenario runs it: the uvicorn command line, with its
``--workers N`` listener made as an IPPROTO_TCP socket.

uvicorn's supervisor binds the listening socket itself and passes it to its workers, and makes
it with ``proto`` 0; sockets accepted from it inherit that, and asyncio turns TCP_NODELAY on
only for sockets whose ``proto`` is IPPROTO_TCP. So with ``--workers 2`` every answer written
in two pieces (headers, then body) waits for the client's delayed ACK: about 40 ms per request
on Linux (uvicorn issue 3149, open). The bench measures uvicorn as it would run with that
fixed (the same socket, created with ``proto`` IPPROTO_TCP, nothing else changed), so that
cocaine is compared with uvicorn at its best, not with the bug.

    python -m bench.http_uvicorn [uvicorn's options...]
"""

from __future__ import annotations

import socket

from uvicorn.config import Config
from uvicorn.main import main

_bind_socket = Config.bind_socket


def bind_socket(self: Config) -> socket.socket:
    """uvicorn's own ``bind_socket``; a TCP listener comes back with ``proto`` IPPROTO_TCP."""
    sock = _bind_socket(self)
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
        fixed = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
        fixed.set_inheritable(True)
        return fixed
    return sock


Config.bind_socket = bind_socket  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
