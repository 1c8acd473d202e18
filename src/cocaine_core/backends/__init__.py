"""The slave backend contract: how an engine has slave processes started and stopped.

A backend is registered by name in ``cocaine_register_slave_backends`` and chosen by the
manifest's ``engine.backend`` (``process`` is built in). The engine makes one per app and
drives it from the node's asyncio loop; the backend reports back through the ``BackendEvents``
it was given. Everything a backend needs is in its constructor: nothing is attached later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cocaine_core.appinfo import AppInfo


class BackendEvents(Protocol):
    """What a backend tells its engine. Every call comes from the node's asyncio loop."""

    def slave_spawned(self, slave_id: str, pid: int) -> None:
        """A slave process asked for with ``spawn`` now exists (not yet configured)."""

    def slave_exited(self, slave_id: str, status: int) -> None:
        """A slave process has ended; ``status`` is its exit code, or minus the signal."""

    def spawn_failed(self, slave_id: str, reason: str) -> None:
        """A slave asked for could not be started (a fork failed: a limit, not the code)."""

    def backend_lost(self, status: int) -> None:
        """What the backend needs to spawn (its template process) died after it had
        started, and every slave it had with it: their exits are reported right after this
        call. ``spawn`` now fails until the engine makes a new backend."""


class SlaveBackend(Protocol):
    """Starts and stops one app's slave processes (``engine.backend``).

    Made by the engine as ``backend_class(app, endpoint, runtime, events,
    startup_timeout=seconds)``: ``endpoint`` is the engine's ROUTER that slaves connect to
    (and name themselves on with their slave id), ``runtime`` is the language's runtime
    module (see ``cocaine_core.languages``).
    """

    def __init__(self, app: AppInfo, endpoint: str, runtime: str, events: BackendEvents, *,
                 startup_timeout: float) -> None: ...

    async def start(self) -> None:
        """Get ready to spawn (e.g. start a template that imports the app); raise
        ``AppLoadError`` with a reason a person can act on if the app's code cannot load,
        within ``startup_timeout``."""

    def spawn(self, slave_id: str) -> None:
        """Start a slave that will connect to the endpoint as ``slave_id``; report it through
        ``events.slave_spawned`` or ``events.spawn_failed``. Raise ``AppLoadError`` if the
        backend cannot spawn at all (not started, or lost)."""

    # Optional: ``spawn_many(slave_ids: list[str]) -> None``, ``spawn`` for several slaves
    # in one request (the ``process`` backend: one message to its template); the pool uses it
    # when it grows by several at once, and ``spawn`` for each where a backend lacks it.

    def signal(self, slave_id: str, signum: int) -> None:
        """Send ``signum`` to a slave, if it still exists."""

    async def stop(self) -> None:
        """Kill whatever is left, wait until it is reaped, and release every resource."""
