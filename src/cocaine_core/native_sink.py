"""Where a native request's answer goes (``NativeSink``), and the requests in flight
(``InFlight``) that a client's CANCEL, or its leaving, finds again (see ``endpoint.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cocaine_core import protocol
from cocaine_core.clients import OnHanded, Outbox
from cocaine_core.protocol import Code

if TYPE_CHECKING:
    from cocaine_core.engine import Engine
    from cocaine_core.engine.job import Job

#: Most requests in flight the endpoint remembers for CANCEL (see ``InFlight``).
IN_FLIGHT_LIMIT = 100_000

#: A request in flight: the client's routing identity and the id it chose.
RequestKey = tuple[bytes, Any]


class NativeSink:
    """Sends a job's answer back to the client that asked, over the node's ROUTER."""

    __slots__ = ("envelope", "in_flight", "on_handed", "outbox", "request_id")

    def __init__(self, outbox: Outbox, envelope: list[bytes], request_id: Any) -> None:
        self.outbox = outbox
        self.envelope = envelope
        self.request_id = request_id
        #: Where the request is remembered while its job runs (None: not cancellable).
        self.in_flight: InFlight | None = None
        self.on_handed: OnHanded = None

    def watch_handoff(self, on_handed: OnHanded) -> None:
        """Call ``on_handed`` as each chunk leaves for the client's socket (perhaps later
        than ``chunk``: a client that reads slowly has a backlog)."""
        self.on_handed = on_handed

    @property
    def key(self) -> RequestKey:
        """The request this sink answers: the client's identity and its request id."""
        return self.envelope[0], self.request_id

    def chunk(self, data: bytes) -> None:
        """Send one chunk."""
        self.outbox.send([*self.envelope, protocol.pack(Code.CHUNK, self.request_id), data],
                         self.on_handed)

    def choke(self) -> None:
        """Send the end of the answer."""
        self._ended()
        self.outbox.send([*self.envelope, protocol.pack(Code.CHOKE, self.request_id)])

    def last(self, data: bytes) -> None:
        """Send the last chunk with the end of the answer, in one message."""
        self._ended()
        self.outbox.send([*self.envelope, protocol.pack(Code.CHOKE, self.request_id), data])

    def error(self, code: int, message: str) -> None:
        """Send an error (no choke follows)."""
        self._ended()
        self.outbox.send([*self.envelope,
                          protocol.pack(Code.ERROR, self.request_id, code, message)])

    def _ended(self) -> None:
        if self.in_flight is not None:
            self.in_flight.ended(self)


class InFlight:
    """The jobs of the app requests in flight, by (client identity, request id), so that a
    client's CANCEL finds its job.

    A request is remembered from the moment its job is queued or started until the job ends
    (its sink is told) or the client cancels it; so the map holds at most the jobs alive,
    which each app's ``queue-limit`` and ``pool-limit`` bound, however many requests a client
    sends without reading a single answer. ``limit`` is a last guard against a job that never
    ends: past it, the oldest request is forgotten (it can no longer be cancelled; its
    deadline still holds).
    """

    def __init__(self, limit: int = IN_FLIGHT_LIMIT) -> None:
        self.limit = limit
        #: Requests forgotten because the map was full.
        self.evicted = 0
        self._jobs: dict[RequestKey, tuple[Engine, Job]] = {}
        #: Requests in flight per client (to find a gone client's at once).
        self._clients: dict[bytes, int] = {}

    def add(self, key: RequestKey, engine: Engine, job: Job) -> None:
        """Remember ``job``, run by ``engine``, as the job of request ``key``. A client that
        reuses an id still in flight can cancel only its latest request of that id."""
        self.pop(key)
        while len(self._jobs) >= self.limit:
            self.pop(next(iter(self._jobs)))
            self.evicted += 1
        self._jobs[key] = (engine, job)
        clients = self._clients
        clients[key[0]] = clients.get(key[0], 0) + 1

    def pop(self, key: RequestKey) -> tuple[Engine, Job] | None:
        """Forget request ``key``; return its engine and job, or None if not in flight."""
        entry = self._jobs.pop(key, None)
        if entry is not None:
            client, clients = key[0], self._clients
            left = clients[client] - 1
            if left:
                clients[client] = left
            else:
                del clients[client]
        return entry

    def get(self, key: RequestKey) -> tuple[Engine, Job] | None:
        """The engine and job of request ``key``, if it is in flight."""
        return self._jobs.get(key)

    def ended(self, sink: NativeSink) -> None:
        """The job answering through ``sink`` has ended: forget its request."""
        key = sink.key
        entry = self._jobs.get(key)
        if entry is not None and entry[1].sink is sink:
            self.pop(key)

    def of_client(self, client: bytes) -> list[RequestKey]:
        """The requests of ``client`` in flight."""
        if client not in self._clients:
            return []
        return [key for key in self._jobs if key[0] == client]

    def __len__(self) -> int:
        return len(self._jobs)
