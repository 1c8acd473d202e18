"""A storage watch: follow ``P/<namespace>/`` for some namespaces, through outages.

One etcd watch per namespace (never ``P/chunks/``: the chunks are big and the index tells
all), all on the current member's connection. The events are handed, in the order they
arrive, to a dispatcher thread that calls ``changed``: so ``changed`` may block, or use the
storage, without stalling the storage's loop; it is never called concurrently.

When the watch is cut (the member died, etcd is down) it reconnects, to the next member,
with a backoff from 0.2 s to 2 s, and resumes each namespace from the revision after the
last event it delivered: nothing written meanwhile (through another member) is lost. If
etcd compacted those revisions away it starts from now.

A watch counts as live only once its member proved it serves: a linearizable read (one
key) on the same connection succeeds after the watch was created; and while it runs the
member is checked that way every ``CHECK_EVERY`` seconds. A member that lost its quorum
(it accepts watches but sends nothing) or hangs fails that check within
``CHECK_EVERY + ATTEMPT_TIMEOUT`` seconds and the watch moves to the next member. Only a
live watch ends an outage: one warning when it begins, one line when the watch follows
again, ``available`` true again, and ``changed(None)`` (anything may have changed: read
again), which also comes at the very start and after a compaction, never on every retry.

Within a namespace, events come in revision order. Across namespaces they come in revision
order while the watch is live (etcd sends them on one stream); when it resumes, each
namespace's backlog comes whole, one namespace after the other.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import aetcd.exceptions

from cocaine_core.errors import StorageUnavailable
from cocaine_core.storages import Change
from cocaine_core.storages.files import KEY
from cocaine_etcd.connection import ATTEMPT_TIMEOUT, EtcdConnection, is_unreachable, reason

log = logging.getLogger("cocaine.etcd")

#: Seconds between reconnection attempts: the first, and the most.
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 2.0
#: Changes waiting for ``changed``: past this many, they collapse into one None (re-read
#: everything), so a stuck reader cannot make the storage hold unbounded memory.
MAX_PENDING = 10_000
#: Seconds between checks that the member a live watch is on still serves (a linearizable
#: read, bounded by ``ATTEMPT_TIMEOUT``): a hung or quorum-less member is left within
#: ``CHECK_EVERY + ATTEMPT_TIMEOUT`` seconds.
CHECK_EVERY = 2.0
#: Seconds ``stop`` waits for the dispatcher thread to finish the change in hand.
STOP_TIMEOUT = 2.0


class _Cut(Exception):
    """The watch stream ended: reconnect."""


class _Unserving(Exception):
    """The member the watch is on failed a linearizable read: leave it."""


class PrefixWatch:
    """Namespaces' prefixes followed on ``connection``, reported to ``changed``."""

    def __init__(self, connection: EtcdConnection, prefixes: dict[str, bytes],
                 changed: Callable[[Change], None]) -> None:
        self.connection = connection
        self.prefixes = prefixes
        self.changed = changed
        self.next_revision: dict[str, int] = {}
        self._pending: collections.deque[Change] = collections.deque()
        self._wake = threading.Condition()
        self._stopped = False
        self._live = False
        #: Whether the watch is cut (an outage being reported: one line for all of it).
        self._down = False
        #: Whether the next live watch reports ``changed(None)`` (start, outage, compaction).
        self._reread = True
        self._task: asyncio.Future[None] | None = None
        self._dispatcher = threading.Thread(target=self._dispatch, daemon=True,
                                            name="etcd watch")

    def start(self) -> None:
        """Begin watching (returns at once; ``changed(None)`` follows once it runs)."""
        self._dispatcher.start()
        self._task = self.connection.submit(self._follow())  # type: ignore[assignment]
        self.connection.on_close.append(self.stop)

    def stop(self) -> None:
        """Stop watching; no ``changed`` call starts after this returns (bounded)."""
        with self._wake:
            if self._stopped:
                return
            self._stopped = True
            self._pending.clear()
            self._wake.notify_all()
        if self._task is not None:
            self._task.cancel()
        if threading.current_thread() is not self._dispatcher:
            self._dispatcher.join(timeout=STOP_TIMEOUT)

    # -- the dispatcher thread ---------------------------------------------------------------

    def _report(self, change: Change) -> None:
        with self._wake:
            if self._stopped:
                return
            if len(self._pending) >= MAX_PENDING:
                self._pending.clear()
                change = None
            self._pending.append(change)
            self._wake.notify()

    def _dispatch(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._stopped:
                    self._wake.wait()
                if self._stopped:
                    return
                change = self._pending.popleft()
            try:
                self.changed(change)
            except Exception:
                log.exception("a storage watch's reader failed on %s", change)

    # -- the loop's side ---------------------------------------------------------------------

    async def _follow(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._stopped:
            index, client = self.connection.current()
            self._live = False
            try:
                try:
                    if not self.next_revision:
                        await self._from_now()
                    await self._stream(client)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is None or task.cancelling():
                        raise  # stop()
                    # The connection was closed under the watch (a request found the
                    # member failing): a cut like any other, never the watch's end.
                    raise _Cut("the connection was dropped") from None
            except aetcd.exceptions.RevisionCompactedError as exc:
                log.warning("storage watch: revisions up to %s were compacted; reading "
                            "everything again", exc.compacted_revision)
                self.next_revision = {}
                self._reread = True
                continue
            except asyncio.CancelledError:
                raise
            except (Exception, _Cut, _Unserving) as exc:
                unreachable = (isinstance(exc, _Cut | _Unserving | StorageUnavailable)
                               or is_unreachable(exc))
                name = self.connection.uri.endpoint_names()[index]
                # One line per outage, however long: the retries go on quietly (debug).
                if self._down:
                    log.debug("storage watch: %s: %s", name, exc)
                elif not unreachable:
                    log.exception("storage watch failed; resuming (quietly until it works)")
                else:
                    log.warning("storage watch: %s %s; resuming every %.1f s at most, quietly "
                                "until it works", name, self._why(exc), BACKOFF_MAX)
                self._down = True
                self._reread = True
                # A stream that merely ended leaves the connection to the other requests;
                # a member that failed a request gets a fresh one (gRPC's backoff).
                await self.connection.failed(index, close=not isinstance(exc, _Cut))
                if self._live:
                    backoff = BACKOFF_FIRST
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)
                continue

    @staticmethod
    def _why(exc: BaseException) -> str:
        if isinstance(exc, StorageUnavailable):
            return "cannot be reached"
        if isinstance(exc, _Cut):
            return "ended the watch"
        if isinstance(exc, _Unserving):
            return str(exc)
        return reason(exc)

    async def _check(self, client: aetcd.Client) -> None:
        """A linearizable read of one key on ``client``; _Unserving if it fails."""
        first = next(iter(self.prefixes.values()))
        try:
            await asyncio.wait_for(client.get(first), ATTEMPT_TIMEOUT)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise
            raise _Unserving("dropped the connection") from None
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            raise _Unserving(reason(exc)) from None

    async def _from_now(self) -> None:
        first = next(iter(self.prefixes.values()))
        found = await self.connection.run(lambda c: c.get_prefix(first, keys_only=True),
                                          "start a watch")
        revision = int(found.header.revision) + 1
        self.next_revision = {ns: revision for ns in self.prefixes}

    async def _stream(self, client: aetcd.Client) -> None:
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        watches = []
        pumps: list[asyncio.Task[None]] = []
        try:
            for ns, prefix in self.prefixes.items():
                watch = await asyncio.wait_for(
                    client.watch_prefix(prefix, start_revision=self.next_revision[ns]),
                    ATTEMPT_TIMEOUT)
                watches.append(watch)
                pumps.append(asyncio.create_task(self._pump(ns, watch, events)))
            await self._check(client)  # the member serves (it has a quorum, it answers)
            self.connection.available = True
            self._live = True
            if self._down:
                log.info("storage watch: following %s again", self.connection.uri.uri)
                self._down = False
            if self._reread:
                self._reread = False
                self._report(None)
            loop = asyncio.get_running_loop()
            next_check = loop.time() + CHECK_EVERY
            while True:
                try:
                    ns, event = await asyncio.wait_for(
                        events.get(), max(0.0, next_check - loop.time()))
                except TimeoutError:
                    await self._check(client)
                    next_check = loop.time() + CHECK_EVERY
                    continue
                if isinstance(event, BaseException):
                    raise event
                key = event.kv.key[len(self.prefixes[ns]):].decode(errors="replace")
                self.next_revision[ns] = int(event.kv.mod_revision) + 1
                if KEY.fullmatch(key):  # not a key of the storage's (written by hand): skip
                    self._report((ns, key))
        finally:
            for pump in pumps:
                pump.cancel()
            for watch in watches:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(watch.cancel(), 0.5)

    @staticmethod
    async def _pump(ns: str, watch: Any, events: asyncio.Queue[tuple[str, Any]]) -> None:
        try:
            async for event in watch:
                await events.put((ns, event))
            await events.put((ns, _Cut("the watch stream ended")))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await events.put((ns, exc))
