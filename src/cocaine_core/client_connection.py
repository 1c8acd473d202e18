"""How a client tells a node that is not there, or that refuses it, from a slow one.

A client's socket monitor reports failed connects and handshakes; ``connection_error``
turns such an event into the error a waiting request fails with, and ``ConnectionNews``
remembers the refusals libzmq never retries.

What libzmq 4.3 reports to a client (found by trying each case):

- nothing listens: ``CONNECT_RETRIED``, again and again;
- a plain client at a ``--curve`` node, or a Curve client at a plain one:
  ``HANDSHAKE_FAILED_PROTOCOL`` with ``PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH``, once (libzmq
  drops that connection for good, so a monitor made later hears nothing) when the client
  reads the node's greeting before the node closes; else, as often, the close comes first:
  ``HANDSHAKE_FAILED_NO_DETAIL`` (EPIPE or ECONNRESET) and ``CONNECT_RETRIED``, every retry;
- a wrong server key: the node cannot read the client's HELLO and closes the connection:
  ``HANDSHAKE_FAILED_NO_DETAIL`` (EPIPE or ECONNRESET), then ``CONNECT_RETRIED``, again every
  retry;
- a client key not in the node's ``--client-keys``: ``HANDSHAKE_FAILED_AUTH`` with the ZAP
  status (400), once, never retried.

A refused handshake also ends the socket's only pipe, at a moment of libzmq's choosing: a
send after it would wait forever for room. So clients send without blocking and, when there
is no room, wait for it at most ``wait`` seconds while they watch the news (``send_bounded``,
``send_bounded_async``).
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from cocaine_core.errors import ServiceError
from cocaine_core.protocol import Status

if TYPE_CHECKING:
    from cocaine_core.trust.client_keys import ClientKeys

HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
#: What the socket monitor reports: a connect attempt that failed (refused, no socket file:
#: nothing listens, whether or not a node was there before), a peer that does not speak
#: ZeroMQ (or refused our keys).
WATCHED = zmq.EVENT_CONNECT_RETRIED | HANDSHAKE_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED
#: Where a client finds a node's server key.
WHERE_KEY = ("the node's log says it at start ('clients pass --server-key ...'), and cocaine "
             "keys list shows it on the node's machine")


def no_answer(endpoint: str, wait: float) -> ServiceError:
    """The error of a request that got no answer within the client's ``wait``."""
    return ServiceError(Status.SERVER_ERROR, f"no answer from the node at {endpoint} within "
                                             f"{wait:g} s: it may be busy or stuck; wait "
                                             f"longer (--wait; Client(wait=...)), or read its "
                                             f"log")


def not_sent(endpoint: str, wait: float) -> ServiceError:
    """The error of a request that could not even be handed to the connection in ``wait``."""
    return ServiceError(Status.UNAVAILABLE, f"could not send to the node at {endpoint} within "
                                            f"{wait:g} s: the connection is down or the node "
                                            f"takes nothing more from this client; nothing was "
                                            f"sent, so the request can be retried")


def monitor_event(frames: list[bytes]) -> int:
    """The event number of a monitor message (16 bits, native order, then a 32-bit value)."""
    return int(struct.unpack_from("=H", frames[0])[0])


def monitor_value(frames: list[bytes]) -> int:
    """The value of a monitor message (an errno, a protocol error or a ZAP status)."""
    return int(struct.unpack_from("=I", frames[0], 2)[0]) if len(frames[0]) >= 6 else 0


def final(event: int, value: int) -> bool:
    """Whether libzmq gives the connection up for good after ``event``: a refused handshake
    (a mechanism mismatch, a ZAP refusal) is never retried, so it holds for every request."""
    return event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_AUTH)


def connection_error(endpoint: str, event: int, value: int = 0, *, curve: bool = False,
                     key_path: Path | None = None) -> ServiceError | None:
    """What a monitor event means for a request still waiting (None: nothing yet).
    ``curve``: the client was given a server key; ``key_path``: its key file, if any."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and \
            value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        if curve:
            return ServiceError(Status.UNAVAILABLE, f"the node at {endpoint} does not use "
                                                    f"CurveZMQ (it runs without --curve), but "
                                                    f"this client was given a server key: "
                                                    f"drop --server-key (COCAINE_SERVER_KEY) "
                                                    f"for it, or check the endpoint")
        return ServiceError(Status.UNAVAILABLE, f"the node at {endpoint} encrypts its "
                                                f"connections (it runs with --curve) and this "
                                                f"client has no server key: pass the node's "
                                                f"public key with --server-key (or "
                                                f"COCAINE_SERVER_KEY; Client(server_key=...)); "
                                                f"{WHERE_KEY}")
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        mine = (f"the line of {key_path}.pub" if key_path is not None else
                "this client has no key: make one with cocaine keys generate, then send the "
                "line of its .pub file")
        return ServiceError(Status.UNAVAILABLE, f"the node at {endpoint} does not let this "
                                                f"client in: its key is not in the node's "
                                                f"--client-keys; ask the node's operator to "
                                                f"add your public key ({mine}) to that file "
                                                f"(the node reads it again on SIGHUP)")
    if curve and event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return ServiceError(Status.UNAVAILABLE, f"the node at {endpoint} closed this "
                                                f"client's CurveZMQ handshake: the server key "
                                                f"given (--server-key, COCAINE_SERVER_KEY) is "
                                                f"not this node's public key ({WHERE_KEY}), "
                                                f"or the node does not use --curve")
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return ServiceError(Status.UNAVAILABLE, f"the node at {endpoint} closed the "
                                                f"connection during the ZeroMQ handshake: it "
                                                f"probably runs with --curve and this client "
                                                f"has no server key: pass the node's public "
                                                f"key with --server-key (or "
                                                f"COCAINE_SERVER_KEY; Client(server_key=...)); "
                                                f"{WHERE_KEY}. Otherwise what listens there "
                                                f"is not a cocaine node: check the endpoint")
    if event == zmq.EVENT_CONNECT_RETRIED:
        path = endpoint.removeprefix("ipc://")
        where = (f"{endpoint} (no socket file)" if endpoint.startswith("ipc://")
                 and not os.path.exists(path) else endpoint)
        return ServiceError(Status.UNAVAILABLE, f"nothing listens at {where}; is the node "
                                                f"running? (cocaine node / cocaine run)")
    if event & HANDSHAKE_FAILED:
        return ServiceError(Status.UNAVAILABLE, f"what listens at {endpoint} is not a cocaine "
                                                f"node (the ZeroMQ handshake failed); check "
                                                f"the endpoint")
    return None


def watcher(sock: zmq.Socket[bytes]) -> tuple[zmq.Socket[bytes], zmq.Poller]:
    """A monitor of ``sock`` (the events a client watches) and a poller of both."""
    monitor, poller = sock.get_monitor_socket(WATCHED), zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    return monitor, poller


def forget_unsent(sock: zmq.Socket[Any], endpoint: str) -> None:
    """Drop the requests queued for a connection that never came: they would run if a node
    appeared there later, long after their callers were told they failed."""
    sock.disconnect(endpoint)
    sock.connect(endpoint)


class ConnectionNews:
    """What a client's socket monitor said, as errors; a refusal libzmq never retries is
    kept (``final``) for every later request, until a handshake succeeds."""

    def __init__(self, endpoint: str, *, curve: bool = False,
                 key_path: Path | None = None) -> None:
        self.endpoint = endpoint
        self.curve = curve
        self.key_path = key_path
        #: The error every request fails with, the connection being given up (None: none).
        self.final: ServiceError | None = None
        #: The last failed handshake, which the retry reported next is the consequence of.
        self._handshake: ServiceError | None = None

    @classmethod
    def of(cls, endpoint: str, keys: ClientKeys) -> ConnectionNews:
        """The news of a client with ``keys`` (a server key given: CurveZMQ)."""
        if not keys.server_key:
            return cls(endpoint)
        signer = keys.signer()
        return cls(endpoint, curve=True, key_path=signer.path if signer else None)

    def read(self, frames: list[bytes]) -> ServiceError | None:
        """The error one monitor message means (None: nothing a request fails with)."""
        event, value = monitor_event(frames), monitor_value(frames)
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.final = None
            return None
        if event == zmq.EVENT_CONNECT_RETRIED and self._handshake is not None:
            refused, self._handshake = self._handshake, None  # a retry after a refusal
            return refused
        error = connection_error(self.endpoint, event, value, curve=self.curve,
                                 key_path=self.key_path)
        if event & HANDSHAKE_FAILED:
            self._handshake = error
        if error is not None and final(event, value):
            self.final = error
        return error


#: Milliseconds between two looks at the news while a send waits for room.
SEND_POLL_MS = 100


def _check_final(sock: Any, news: ConnectionNews) -> None:
    if news.final is not None:
        forget_unsent(sock, news.endpoint)  # a new pipe: the next request tries again
        raise news.final


def send_bounded(sock: zmq.Socket[bytes], monitor: zmq.Socket[bytes], news: ConnectionNews,
                 frames: list[Any], wait: float | None) -> None:
    """Send ``frames`` on a blocking client's socket; if there is no room, wait for it up to
    ``wait`` seconds (None: forever), failing at once when the monitor says the connection
    was refused for good."""
    try:
        sock.send_multipart(frames, zmq.NOBLOCK)
        return
    except zmq.Again:
        pass
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        while monitor.poll(0):
            news.read(monitor.recv_multipart())
        _check_final(sock, news)
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise not_sent(news.endpoint, wait or 0)
        ms = SEND_POLL_MS if left is None else max(1, min(SEND_POLL_MS, int(left * 1000)))
        if sock.poll(ms, zmq.POLLOUT):
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
                return
            except zmq.Again:
                continue


async def send_bounded_async(sock: Any, news: ConnectionNews, frames: list[Any],
                             wait: float | None) -> None:
    """``send_bounded`` for an ``AsyncClient``'s socket, whose monitor a task of its own reads
    into ``news``."""
    try:
        await sock.send_multipart(frames, flags=zmq.NOBLOCK)
        return
    except zmq.Again:
        pass
    loop = asyncio.get_running_loop()
    deadline = None if wait is None else loop.time() + wait
    while True:
        _check_final(sock, news)
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            raise not_sent(news.endpoint, wait or 0)
        ms = SEND_POLL_MS if left is None else max(1, min(SEND_POLL_MS, int(left * 1000)))
        if await sock.poll(ms, zmq.POLLOUT):
            try:
                await sock.send_multipart(frames, flags=zmq.NOBLOCK)
                return
            except zmq.Again:
                continue
