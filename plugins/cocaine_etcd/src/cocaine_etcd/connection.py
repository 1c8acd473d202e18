"""The storage's link to etcd: a private asyncio loop in its own thread, one aetcd client per
member, and failover between them.

aetcd's client talks to one endpoint. ``EtcdConnection`` keeps one client per member of the
URI and uses the current one; when a request cannot reach it (refused, timed out, no leader)
it moves to the next member and tries again, each attempt bounded by ``ATTEMPT_TIMEOUT`` and
all of them by ``TOTAL_TIMEOUT``. When every attempt failed the request raises
``StorageUnavailable`` saying what was tried. Blocking callers (the Storage methods, called
in the node's threads) use ``call``; coroutines on the private loop (watches, leases) use
``run``; other loops use ``submit``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions
import grpc

from cocaine_core.errors import StorageError, StorageUnavailable
from cocaine_etcd.uri import PASSWORD_ENV, EtcdURI

log = logging.getLogger("cocaine.etcd")

T = TypeVar("T")

#: Seconds one request to one member may take (a 1 MiB chunk on a slow link included).
ATTEMPT_TIMEOUT = 2.0
#: Seconds a request may take in all, over every member, before StorageUnavailable: long
#: enough for a leader election (about 1 s with etcd's defaults), short enough for a CLI.
TOTAL_TIMEOUT = 5.0
#: Seconds after which a request gives up early when every member keeps refusing the
#: connection (no etcd process listens: it will not answer in the next few seconds either).
REFUSED_GIVE_UP = 1.0
#: Seconds to pause once every member failed in a row (a leader election in progress).
ROUND_PAUSE = 0.1
#: Seconds ``close`` waits for the loop's thread.
CLOSE_TIMEOUT = 2.0
#: gRPC channel options: reconnect quickly once a member is back (gRPC's default backoff
#: grows to 2 minutes), accept replies up to 64 MiB (a range of many app records), and
#: ping an idle connection to notice a vanished host (etcd allows a ping every 5 s).
CHANNEL_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 2000,
    "grpc.max_receive_message_length": 64 * 2**20,
    "grpc.max_send_message_length": 4 * 2**20,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    # Each channel its own connections: a channel made again after a member failed must
    # not share gRPC's global pool's connection still waiting out its reconnect backoff.
    "grpc.use_local_subchannel_pool": 1,
}

#: Why a request whose member's connection was closed under it moved on.
RESET = "dropped the connection (it was failing other requests)"

#: Errors that mean "this member cannot serve now": try the next one.
UNREACHABLE: tuple[type[BaseException], ...] = (
    aetcd.exceptions.ConnectionFailedError, aetcd.exceptions.ConnectionTimeoutError,
    aetcd.exceptions.WatchTimeoutError, asyncio.TimeoutError, TimeoutError, ConnectionError,
    OSError)


def reason(exc: BaseException) -> str:
    """Why a member could not serve a request, in a few words."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError
                  | aetcd.exceptions.ConnectionTimeoutError):
        return f"did not answer within {ATTEMPT_TIMEOUT:g} s"
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "connection refused" in lowered:
        return "refused the connection (is etcd running there?)"
    if "no leader" in lowered or "leader changed" in lowered:
        return "has no leader (no quorum: too few members running)"
    if "failed to connect" in lowered or "socket closed" in lowered:
        return "could not be connected to (is etcd running there?)"
    if "deadline" in lowered:
        return f"did not answer within {ATTEMPT_TIMEOUT:g} s"
    return text.splitlines()[0][:200]


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means the member could not serve (as opposed to a real answer)."""
    if isinstance(exc, UNREACHABLE):
        return True
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    if isinstance(exc, aetcd.exceptions.UnauthenticatedError):
        return "token" in str(exc).lower()  # expired: a new connection logs in again
    if isinstance(exc, aetcd.exceptions.ClientError):
        text = str(exc).lower()
        return "leader" in text or "unavailable" in text or "timed out" in text
    return False


class EtcdConnection:
    """aetcd clients for every member of ``uri``, on a private loop (module docstring)."""

    def __init__(self, uri: EtcdURI) -> None:
        self.uri = uri
        self.loop = asyncio.new_event_loop()
        self._current = 0
        self._closed = False
        self.available = True
        #: Called (in order) as the connection closes: the watches stop.
        self.on_close: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._run_loop, daemon=True,
                                        name=f"etcd {uri.prefix}")
        self._thread.start()
        # Clients are made on the loop: aetcd binds its events to the loop that runs them.
        self.clients: list[aetcd.Client] = self.submit(self._make_clients()).result(
            timeout=CLOSE_TIMEOUT)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _make_clients(self) -> list[aetcd.Client]:
        return [aetcd.Client(host=host, port=port, username=self.uri.username,
                             password=self.uri.password, timeout=ATTEMPT_TIMEOUT,
                             options=dict(CHANNEL_OPTIONS), connect_wait_timeout=2)
                for host, port in self.uri.endpoints]

    # -- entry points ------------------------------------------------------------------------

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the private loop; a future any thread can wait on."""
        if self._closed:
            coro.close()
            raise StorageUnavailable(f"the etcd storage {self.uri.uri} is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, op: Callable[[aetcd.Client], Awaitable[T]], what: str) -> T:
        """Run ``op(client)`` with failover and wait for it (from any thread but the loop's);
        StorageUnavailable if no member could serve it in ``TOTAL_TIMEOUT`` seconds."""
        self._not_on_loop()
        return self.wait(self.run(op, what), what, TOTAL_TIMEOUT + ATTEMPT_TIMEOUT + 1.0)

    def wait(self, coro: Coroutine[Any, Any, T], what: str, timeout: float) -> T:
        """Run ``coro`` (several requests, each through ``run``) on the private loop and wait
        at most ``timeout`` seconds for it (from any thread but the loop's)."""
        self._not_on_loop()
        future = self.submit(coro)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self.available = False
            raise self.unavailable(what, ["no answer in time"], timeout) from None
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            # Cancelled on the loop (the storage closing): never let a CancelledError out
            # to the caller's thread, where it would end the node's task silently.
            self.available = False
            raise self.unavailable(what, ["the request was cancelled (the storage is "
                                          "closing or its connection was reset)"]) from None

    def _not_on_loop(self) -> None:
        if threading.current_thread() is self._thread:
            raise RuntimeError("a blocking etcd storage call on the storage's own loop would "
                               "wait for itself; await EtcdConnection.run instead")

    def current(self) -> tuple[int, aetcd.Client]:
        """The member requests go to now: its index and client."""
        return self._current, self.clients[self._current]

    async def failed(self, index: int, close: bool = True) -> None:
        """Member ``index`` could not serve: move on to the next member (once, however many
        requests saw it fail) and, with ``close``, drop its connection (gRPC would wait up to
        its reconnect backoff before trying again, failing every request meanwhile, even
        once the member is back). Requests in flight on a dropped connection are cancelled;
        ``run`` sends them to the next member. ``close=False`` for a watch stream that just
        ended: the connection may still serve the other requests."""
        self.available = False
        if self._current == index:
            self._current = (index + 1) % len(self.clients)
        client = self.clients[index]
        if close and client.channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 1.0)

    async def run(self, op: Callable[[aetcd.Client], Awaitable[T]], what: str,
                  total: float = TOTAL_TIMEOUT) -> T:
        """On the private loop: ``op(client)`` on the current member, then the next ones
        while they cannot be reached, for at most ``total`` seconds; StorageUnavailable
        after that. Other errors (a real answer) pass through at once."""
        began = self.loop.time()
        deadline = began + total
        tried: list[str] = []
        refused_all = True
        while True:
            index = self._current
            client = self.clients[index]
            budget = min(ATTEMPT_TIMEOUT, max(0.05, deadline - self.loop.time()))
            try:
                result = await asyncio.wait_for(op(client), budget)
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # this request itself is being cancelled
                # The member's connection was closed under the request (another request
                # found the member failing): the member could not serve it; try the next.
                tried.append(f"{self.uri.endpoint_names()[index]} {RESET}")
                refused_all = False
                log.debug("etcd %s: connection reset under a request (%r)",
                          self.uri.endpoint_names()[index], exc)
                if self._current == index:
                    self._current = (index + 1) % len(self.clients)
            except BaseException as exc:
                if isinstance(exc, aetcd.exceptions.ClientError) and not is_unreachable(exc):
                    raise self.refused(what, exc) from None
                if not is_unreachable(exc):
                    raise
                why = reason(exc)
                refused_all = refused_all and why.startswith("refused")
                tried.append(f"{self.uri.endpoint_names()[index]} {why}")
                log.debug("etcd %s: %s", self.uri.endpoint_names()[index], exc)
                await self.failed(index)
            else:
                self.available = True
                return result
            left = deadline - self.loop.time()
            if left <= 0.05 or (refused_all and self.loop.time() - began >= REFUSED_GIVE_UP):
                self.available = False
                raise self.unavailable(what, tried, self.loop.time() - began)
            if len(tried) % len(self.clients) == 0:
                await asyncio.sleep(min(ROUND_PAUSE, left))

    def refused(self, what: str, exc: BaseException) -> StorageError:
        """The error for a request etcd answered with a refusal (login, permission)."""
        detail = (str(exc) or type(exc).__name__).splitlines()[0][:300]
        hint = ""
        if "authentication failed" in detail or "user name is empty" in detail:
            hint = (f"; check the user in the URI and ${PASSWORD_ENV}" if self.uri.username
                    else "; etcd requires a login: etcd://USER@HOST:PORT/PREFIX with the "
                         f"password in ${PASSWORD_ENV}")
        elif "space exceeded" in detail:
            hint = ("; etcd's database is full: compact and defragment it (etcdctl compact "
                    "REVISION; etcdctl defrag; etcdctl alarm disarm), and run etcd with "
                    "--auto-compaction-retention so it stays small (docs/cluster.md)")
        elif "permission denied" in detail:
            hint = f"; grant the user read-write on the prefix {self.uri.prefix}/"
        return StorageError(f"etcd at {self.uri.uri} refused to {what}: {detail}{hint}")

    def unavailable(self, what: str, tried: list[str],
                    elapsed: float = TOTAL_TIMEOUT) -> StorageUnavailable:
        """The error for a request no member could serve (what it tried, what to do)."""
        attempts = "; ".join(dict.fromkeys(tried)) or "no member answered"
        return StorageUnavailable(
            f"the app store is unavailable: etcd at {self.uri.uri} could not be reached to "
            f"{what} (tried for {elapsed:.1f} s: {attempts}). Nothing was changed by this "
            "request, or it was applied whole; retry it when etcd is back.")

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    def close(self) -> None:
        """Close the clients and stop the loop and its thread (bounded; idempotent)."""
        if self._closed:
            return
        self._closed = True
        for stop in self.on_close:
            with contextlib.suppress(Exception):
                stop()
        if self.loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._close_clients(), self.loop)
            with contextlib.suppress(Exception):
                future.result(timeout=CLOSE_TIMEOUT)
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=CLOSE_TIMEOUT)
        if not self._thread.is_alive():
            self.loop.close()

    async def _close_clients(self) -> None:
        for client in getattr(self, "clients", []):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 0.5)
        tasks = [t for t in asyncio.all_tasks(self.loop) if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=0.5)
