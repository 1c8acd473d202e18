"""ZeroMQ sockets on the asyncio loop, without a future per message.

``SocketReader`` watches a socket's file descriptor and drains every waiting message into a
callback. ZeroMQ's descriptor is edge-triggered and also changes state when we *send*, so after
sending on a watched socket call ``poke()``: it schedules one more drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import zmq

log = logging.getLogger("cocaine.zmq")


class SocketReader:
    """Feeds every message arriving on ``socket`` to ``on_message`` from the asyncio loop."""

    #: Most messages handled in one go before yielding to the loop (fairness between apps).
    BATCH = 256

    def __init__(self, socket: zmq.Socket, on_message: Callable[[list[bytes]], None],
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.socket = socket
        self.on_message = on_message
        self.loop = loop or asyncio.get_running_loop()
        self._scheduled = False
        self._closed = False
        self.loop.add_reader(socket.getsockopt(zmq.FD), self._drain)
        self.poke()

    def poke(self) -> None:
        """Schedule a drain (after a send, or when more messages may be waiting)."""
        if not self._scheduled and not self._closed:
            self._scheduled = True
            self.loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        socket = self.socket
        recv = socket.recv_multipart
        for _ in range(self.BATCH):
            if self._closed:
                return
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                if self._closed:
                    return
                log.error("receive failed: %s", exc)
                return
            try:
                self.on_message(frames)
            except Exception:
                log.exception("error while handling a message")
        self.poke()  # more may be waiting; let other callbacks run first

    def send(self, frames: list[bytes]) -> bool:
        """Send without blocking; False if the peer's queue is full or it is gone."""
        try:
            self.socket.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return False
            raise
        finally:
            self.poke()
        return True

    def close(self) -> None:
        """Stop watching the socket (does not close it)."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(zmq.ZMQError, ValueError, OSError):
                self.loop.remove_reader(self.socket.getsockopt(zmq.FD))
