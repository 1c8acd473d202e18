"""What ``cocaine run`` and ``cocaine node`` share: host a node until a signal says stop.

SIGINT and SIGTERM drain every app and stop the node; with ``reload_on_sighup``, SIGHUP makes
the running apps match storage. Signal handlers only set an event or start a task: the work
happens on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cocaine_core.node import Node

log = logging.getLogger("cocaine.node")

#: Runs a coroutine beside the node until the node stops (a source watcher, a reload).
Background = Callable[[Coroutine[Any, Any, None]], None]


def host(node: Node, ready: Callable[[Node, Background], Awaitable[None]], *,
         reload_on_sighup: bool = False) -> None:
    """Start ``node``, then await ``ready(node, background)``; serve until SIGINT or SIGTERM,
    then drain every app and stop the node (also when starting it failed)."""
    asyncio.run(_host(node, ready, reload_on_sighup))


async def _host(node: Node, ready: Callable[[Node, Background], Awaitable[None]],
                reload_on_sighup: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    tasks: set[asyncio.Task[None]] = set()

    def background(coroutine: Coroutine[Any, Any, None]) -> None:
        task = loop.create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def reload() -> None:
        log.info("SIGHUP: applying what changed in storage")
        if node.endpoint.curve is not None:
            node.endpoint.curve.reload()  # --client-keys
        background(_reload(node))

    if reload_on_sighup:
        loop.add_signal_handler(signal.SIGHUP, reload)
    async def start() -> None:
        await node.start()
        await ready(node, background)

    try:
        # A signal during the start (an app whose code hangs while it loads) is heard too:
        # the start is cancelled, not waited for.
        starting = loop.create_task(start())
        stopping = loop.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            log.info("stopping while starting: the start is abandoned")
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        else:
            starting.result()  # a start that failed says why
            await stopping
        stopping.cancel()
        log.info("stopping: draining %d app(s)", len(node.apps))
    finally:
        for task in list(tasks):
            task.cancel()
        await node.stop()
    log.info("node stopped")


async def _reload(node: Node) -> None:
    """SIGHUP's work: the apps made to match storage; a storage that cannot be reached (or
    read) is one log line, and what runs keeps running."""
    from cocaine_core.errors import CocaineError

    try:
        await node.load_from_storage(retry=True)
    except CocaineError as exc:
        log.error("SIGHUP: storage could not be read (%s); the apps running keep running", exc)
