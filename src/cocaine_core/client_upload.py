"""Requests whose body is written in pieces as it comes: ``Client.open`` (``AsyncClient.open``:
``client_upload_async``).

    with client.open("files", "store") as request:
        for piece in source:          # bytes, bytearray, memoryview or str (UTF-8)
            request.write(piece)
        request.end()                 # the body is complete
        answer = request.read()       # or: for chunk in request: ...

The node gives the body credit (docs/protocol.md): one piece while the job waits in its
queue, the rest of its ``WINDOW`` (8) once it runs, then one
more for each piece the handler has read (``request.stream`` in a Python app). ``write``
sends at once while there is credit and otherwise waits for some, up to the client's
``wait`` (then a 500 saying the handler does not read its body): a slow handler slows the
writer, and the client holds at most ``COALESCE`` bytes of the body besides the piece being
sent. The node fails a request whose body stalls (no piece for 60 s while it may send one):
a source slower than that should send what it has (``flush()``). The bounds are in
``client_upload_body``.

Pieces: writes smaller than ``COALESCE`` (256 KiB) are gathered into one piece (``flush()``
sends what is gathered now, ``end()`` too); larger ones go out in pieces of at most ``PIECE``
(1 MiB; less if the client's ``max_message`` is lower). Each piece is a copy: the caller may
reuse its buffer once ``write`` returned.

Errors: an error the node answers while the body is being written (404 no such app or event,
503 queue full, 502 the handler raised early...) is raised by the next ``write``, ``flush``
or ``end`` at once (the socket is looked at between writes, without waiting), and by every
later one; the request is over then. Leaving the ``with`` block before the answer has ended
(an exception, ``break``, Ctrl-C, or not reading the answer) sends CANCEL: the node drops the
job. ``close()`` does the same outside a ``with``. An answer that ends before the body (the
handler returned without reading it all) is no error: ``done`` turns true and what is written
after is dropped.

An answer that begins before the body ends (a handler that answers as it reads): its chunks
are kept as they arrive while ``write`` waits for credit, at most ``ANSWER_CHUNKS`` (64)
chunks or ``ANSWER_BYTES`` (16 MiB); take them between writes with ``received()`` (never
waits), or iterate. Past that bound a ``write`` that needs credit fails (400) rather than
hold more: a blocking client has no one else to read them. Or set ``request.answer_to`` to a
function (``sys.stdout.buffer.write``) that takes each chunk as it arrives, none kept. (An
``AsyncClient`` waits instead, for another task reading the answer.)

A streamed request is for an app's event: ``@node`` (control) takes its arguments whole and
is refused here (400, nothing sent). A ``Client`` runs one request at a time: finish (or
close) an open request before the next ``call``/``stream``/``open`` on the same client
(another client, or an ``AsyncClient``, runs many). A client of several nodes opens the
request on the node it talks to now and never fails over once the request is sent (its body
is not kept to be sent again): a dropped connection fails the request (500; 503 if the node
was never reached). Signing and CurveZMQ work as for ``stream()`` (same socket, same
checks): a node that refuses the client, or nothing listening, fails the request at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

import zmq

from cocaine_core import protocol
from cocaine_core.client_connection import send_bounded
from cocaine_core.client_upload_body import Body, Piece, link_error, open_frames, piece_limit
from cocaine_core.errors import ServiceError
from cocaine_core.protocol import Code, Status

if TYPE_CHECKING:
    from cocaine_core.client import Client
    from cocaine_core.client_failover import FailoverClient
    from cocaine_core.client_links import Link


class Channel(Protocol):
    """How a blocking streamed request talks to its node (one client's socket, or a link)."""

    def send(self, frames: list[bytes]) -> None:
        """Send, waiting for room up to the client's wait."""

    def ready(self) -> bool:
        """Whether a message can be read now."""

    def receive(self, wait: float | None) -> list[bytes]:
        """The next message within ``wait`` seconds (500 after; 503 if the node is gone)."""

    def cancel(self) -> None:
        """Tell the node nobody waits for the request (if it may still have it)."""

    def forget(self) -> None:
        """The request has ended: nothing to cancel when the client closes."""


class StreamedRequest:
    """A request whose body is written in pieces (the module's docstring). Not thread-safe."""

    def __init__(self, channel: Channel, body: Body, frames: list[bytes],
                 wait: float | None) -> None:
        """Send the REQUEST ``frames`` on ``channel``; ``wait``: the client's."""
        self._channel = channel
        self._body = body
        self.wait = wait
        #: If set, each answer chunk is given to it as it arrives, while writing too (none
        #: is kept then: no bound to reach); else they wait for ``received()`` or iterating.
        self.answer_to: Callable[[bytes], object] | None = None
        channel.send(frames)

    @property
    def id(self) -> int:
        """The request's id on its connection."""
        return self._body.id

    @property
    def done(self) -> bool:
        """Whether the answer has ended (or the request failed)."""
        return self._body.done and not self._body.answer

    def write(self, data: Piece) -> None:
        """Write ``data`` to the body: gathered if small, sent in pieces as the node gives
        credit (waiting for it up to ``wait``). Raises the node's error if it answered one."""
        body = self._body
        if not body.writable():
            return
        self._poll()
        for piece in body.pieces_of(data):
            self._send(piece)

    def flush(self) -> None:
        """Send what ``write`` gathered now (a handler that answers as it reads sees it)."""
        if not self._body.writable():
            return
        self._poll()
        if self._body.gathered:
            self._send(self._body.rest())

    def end(self) -> None:
        """The body is complete: send what is gathered, then CHOKE. Then read the answer."""
        body = self._body
        if (body.ended or body.done) and body.error is None:
            body.ended = True  # done: the handler answered without the rest of the body
            return
        self.flush()
        self._channel.send([protocol.pack(Code.CHOKE, body.id)])
        body.ended = True

    def received(self) -> list[bytes]:
        """The answer's chunks that arrived and were not read yet, without waiting (raises
        the request's error once they are read)."""
        self._poll()
        chunks = []
        while (chunk := self._body.next_chunk()) is not None:
            chunks.append(chunk)
        return chunks

    def __iter__(self) -> Iterator[bytes]:
        """The answer's chunks as they arrive (each waited for up to ``wait``). Iterating
        before ``end()`` is fine for a handler that answers as it reads."""
        body = self._body
        while True:
            chunk = body.next_chunk()
            if chunk is not None:
                yield chunk
            elif body.done:
                return
            else:
                self._receive(self.wait)

    def read(self) -> bytes:
        """The rest of the answer, joined (call ``end()`` first)."""
        return b"".join(self)

    def close(self) -> None:
        """Cancel the request if its answer has not ended; nothing more can be written."""
        body = self._body
        if body.closed:
            return
        body.closed = True
        if not body.done:
            body.done = True
            self._channel.cancel()

    def __enter__(self) -> StreamedRequest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, piece: bytes) -> None:
        body = self._body
        if body.credit <= 0:
            end = None if self.wait is None else time.monotonic() + self.wait
            while body.credit <= 0 and not body.done:
                if body.full:
                    raise body.not_read()
                left = None if end is None else max(0.0, end - time.monotonic())
                try:
                    self._receive(left)
                except ServiceError as exc:
                    if exc.code != Status.SERVER_ERROR or body.error is not None:
                        raise
                    raise body.no_credit(self.wait) from None  # nothing came within wait
        if not body.writable():
            return  # the answer ended meanwhile
        self._channel.send([protocol.pack(Code.CHUNK, body.id), piece])
        body.credit -= 1
        body.pieces += 1

    def _poll(self) -> None:
        body = self._body
        while not body.full and not body.done and self._channel.ready():
            self._receive(0)
        if body.error is not None:
            raise body.error

    def _receive(self, wait: float | None) -> None:
        try:
            frames = self._channel.receive(wait)
        except ServiceError as exc:
            if exc.code != Status.SERVER_ERROR or not exc.message.startswith("no answer"):
                self._body.fail(exc)  # the connection failed: nobody has the request
            raise
        body = self._body
        body.take_frames(frames)
        if body.done:
            self._channel.forget()
        while self.answer_to is not None and body.answer:
            chunk = body.answer.popleft()
            body.answer_bytes -= len(chunk)
            self.answer_to(chunk)


class ClientChannel:
    """A ``Client``'s socket, for one streamed request."""

    def __init__(self, client: Client, request_id: int) -> None:
        self.client = client
        self.id = request_id

    def send(self, frames: list[bytes]) -> None:
        """Send, as ``Client.stream`` does (failing at once if the node refused us)."""
        client = self.client
        assert client._watching is not None
        send_bounded(client._socket, client._watching[0], client._news, frames, client.wait)
        client._open.add(self.id)

    def ready(self) -> bool:
        """Whether a message waits on the socket."""
        return bool(self.client._socket.poll(0))

    def receive(self, wait: float | None) -> list[bytes]:
        """The next message, watching the connection as ``Client.stream`` does."""
        from cocaine_core.client import QUICK_MS

        client = self.client
        quick = QUICK_MS if wait is None else min(QUICK_MS, int(wait * 1000))
        if not client._socket.poll(quick):
            client._watch(None if wait is None else max(0.0, wait - quick / 1000))
        return client._socket.recv_multipart()

    def cancel(self) -> None:
        """CANCEL, unless the connection failed (then no node has the request)."""
        if self.id in self.client._open:
            self.client._open.discard(self.id)
            self.client._cancel(self.id)

    def forget(self) -> None:
        """The request has ended."""
        self.client._open.discard(self.id)


def open_request(client: Client, app: str, event: str, urgent: bool, timeout: float | None,
                 deadline: float | None, retry: bool) -> StreamedRequest:
    """``Client.open``: send the REQUEST of a streamed request on ``client``'s socket."""
    request_id = next(client._ids)
    frames = open_frames(request_id, app, event, urgent, timeout, deadline, retry, client.wait)
    body = Body(request_id, client.endpoint, piece_limit(client.max_message))
    return StreamedRequest(ClientChannel(client, request_id), body, frames, client.wait)

class LinkChannel:
    """A ``FailoverClient``'s link to the node it talks to now, for one streamed request."""

    def __init__(self, client: FailoverClient, link: Link, request_id: int) -> None:
        self.client = client
        self.link = link
        self.id = request_id

    def send(self, frames: list[bytes]) -> None:
        """Send on the link (no failover: a failure is the request's error)."""
        from cocaine_core.client_links import LinkFailed

        try:
            self.link.send(frames, self.client.wait)
        except LinkFailed as failure:
            self.client._pending.pop(self.id, None)
            raise link_error(failure) from None
        self.client._pending[self.id] = self.link

    def ready(self) -> bool:
        """Whether a message (or the link's failure) waits."""
        self.link.drain()
        return self.link.failure is not None or bool(self.link.socket.poll(0, zmq.POLLIN))

    def receive(self, wait: float | None) -> list[bytes]:
        """The next message on the link."""
        from cocaine_core.client_links import LinkFailed

        try:
            return self.link.receive(wait)
        except LinkFailed as failure:
            self.client._pending.pop(self.id, None)
            raise link_error(failure) from None

    def cancel(self) -> None:
        """CANCEL on the link, unless it failed."""
        if self.client._pending.pop(self.id, None) is not None:
            self.client._cancelled |= self.link.cancel([protocol.pack(Code.CANCEL, self.id)])

    def forget(self) -> None:
        """The request has ended."""
        self.client._pending.pop(self.id, None)


def open_on_link(client: FailoverClient, app: str, event: str, urgent: bool,
                 timeout: float | None, deadline: float | None,
                 retry: bool) -> StreamedRequest:
    """``FailoverClient.open``: a streamed request on the node the client talks to now."""
    from cocaine_core.client_links import LinkFailed

    request_id = next(client._ids)
    frames = open_frames(request_id, app, event, urgent, timeout, deadline, retry, client.wait)
    try:
        link = client._link(client._active)
    except LinkFailed as failure:
        raise link_error(failure) from None
    body = Body(request_id, link.endpoint, piece_limit(client.max_message))
    return StreamedRequest(LinkChannel(client, link, request_id), body, frames, client.wait)
