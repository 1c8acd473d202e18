"""The hooks a cocaine plugin may implement, grouped by the stage at which they are called.

Every hook is called through pluggy with keyword arguments; an implementation may accept any
subset of them. Hooks only ever gain arguments: none is renamed or removed once released.

This module imports no other part of cocaine but the leaf modules of the types hooks receive
(``appinfo``, ``errors``, ``events``, ``manifest_model``, ``node_view``), so the plugin host
and the manifest can import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pluggy

if TYPE_CHECKING:
    import typer

    from cocaine_core.appinfo import AppInfo, SlaveInfo
    from cocaine_core.errors import Problem
    from cocaine_core.events import Event
    from cocaine_core.manifest_model import Manifest
    from cocaine_core.node_view import NodeView

hookspec = pluggy.HookspecMarker("cocaine")


@runtime_checkable
class Registrar(Protocol):
    """What a registration hook receives as ``registry``: one method, ``add``."""

    def add(self, name: str, implementation: Any) -> None:
        """Register ``implementation`` under ``name``, a non-empty string.

        The name is credited to the plugin whose hook is running (``cocaine plugins`` shows it).
        A name another plugin also registers fails loudly, naming both distributions.
        """


# ---------------------------------------------------------------------------------------------
# Registration: called once, when the plugin host first loads its plugins, on every plugin
# that implements the hook. Names take effect once the call is over, in the order the plugins
# loaded: of two plugins adding one name, the first loaded keeps it and the other fails.
# ---------------------------------------------------------------------------------------------


@hookspec
def cocaine_register_languages(registry: Registrar) -> None:
    """Register languages: the ``type`` at the top of a manifest.

    Called once when plugins load. Call ``registry.add(name, language)`` for each
    language; ``language`` is an object following ``cocaine_core.languages.Language``.
    A name another plugin also registers fails loudly, naming both distributions.

    :param registry: a ``Registrar`` for languages; its ``add(name, implementation)`` is all
        you need.
    :returns: nothing.
    """


@hookspec
def cocaine_register_drivers(registry: Registrar) -> None:
    """Register drivers: the ``type`` of a task in a manifest.

    Called once when plugins load. Call ``registry.add(name, driver_class)``;
    ``driver_class`` follows ``cocaine_core.drivers.Driver`` (its ``keys`` declare and check
    the task keys it owns).

    :param registry: a ``Registrar`` for drivers.
    :returns: nothing.
    """


@hookspec
def cocaine_register_storages(registry: Registrar) -> None:
    """Register storages: the scheme of the node's ``--storage`` URI (``files://...``).

    Called once when plugins load. Call ``registry.add(scheme, factory)``; the
    factory is called with the parsed URI and returns a ``cocaine_core.storages.Storage``.

    :param registry: a ``Registrar`` for storages.
    :returns: nothing.
    """


@hookspec
def cocaine_register_slave_backends(registry: Registrar) -> None:
    """Register slave backends: the manifest's ``engine.backend`` (``"process"`` built in).

    Called once when plugins load. Call ``registry.add(name, backend_class)``;
    the class follows ``cocaine_core.slaves.SlaveBackend``.

    :param registry: a ``Registrar`` for slave backends.
    :returns: nothing.
    """


@hookspec
def cocaine_register_engine_keys(registry: Registrar) -> None:
    """Register extra ``engine`` keys a plugin owns, such as ``resource-limits``.

    Called once when plugins load. Call ``registry.add(key, spec)`` with a
    ``cocaine_core.schema.Key``; the core then accepts the key in manifests, fills its default
    and checks its type, and leaves the meaning to the plugin.

    :param registry: a ``Registrar`` for engine keys.
    :returns: nothing.
    """


@hookspec
def cocaine_register_discoveries(registry: Registrar) -> None:
    """Register discoveries: the node's ``--discovery`` (how it finds the other nodes).

    Called once when plugins load. Call ``registry.add(name, factory)``; the factory is
    called with the ``Node`` (its storage, name and endpoint) and returns a
    ``cocaine_core.cluster.discovery.Discovery``, or raises ``NodeError`` saying what the node
    lacks for it.

    :param registry: a ``Registrar`` for discoveries.
    :returns: nothing.
    """


@hookspec
def cocaine_register_node_options(registry: Registrar) -> None:
    """Register options of ``cocaine node`` and ``cocaine run`` a plugin owns (``--metrics``).

    Called once when plugins load. Call ``registry.add(name, option)`` with a
    ``cocaine_core.plugin_options.PluginOption`` (help, metavar, parse); both commands then
    accept ``--NAME VALUE``, the node's config file the key ``NAME``, and the parsed value
    reaches the node-level hooks as ``node.options[NAME]``. A name the core uses is refused.

    :param registry: a ``Registrar`` for node options.
    :returns: nothing.
    """


# ---------------------------------------------------------------------------------------------
# Manifest: called when a manifest is checked (cocaine manifest check, deploy, run).
# ---------------------------------------------------------------------------------------------


@hookspec
def cocaine_validate_manifest(manifest: Manifest) -> list[Problem | str] | None:
    """Check the parts of a manifest a plugin owns, after the core's own checks passed.

    Called for every installed plugin, every time a manifest is checked. Return the problems
    found (``cocaine_core.errors.Problem`` with a key path, or a plain string), or ``None`` /
    an empty list. The core gathers every plugin's problems and reports them all at once. An
    exception raised here is reported as a problem naming the plugin, not as a crash.

    :param manifest: the parsed ``cocaine_core.manifest_model.Manifest``, every default filled in.
    :returns: a list of problems, or None.
    """


# ---------------------------------------------------------------------------------------------
# Slave lifecycle: called by the engine around every slave (and template) process.
# ---------------------------------------------------------------------------------------------


@hookspec
def cocaine_app_starting(app: AppInfo) -> None:
    """Prepare for an app about to start (before its first slave or template exists).

    Called in the node process. Raising fails the app's start with the plugin's message.

    :param app: the app: its name, manifest and run folder.
    :returns: nothing.
    """


@hookspec
def cocaine_slave_spawned(app: AppInfo, slave: SlaveInfo) -> None:
    """Confine or observe a slave process that now exists but has not been configured.

    Called in the node process, after the process exists and before it is configured, so
    isolation applied here (cgroups) is in force before any app code runs. A template process
    (one that imports the app and forks slaves) passes through this hook too, before it imports
    the app, with ``slave.template`` set. Raising fails that spawn with the plugin's message
    (``str(exception)``), and the engine kills the process.

    :param app: the app the slave belongs to.
    :param slave: the slave: ``id``, ``pid``, ``template``.
    :returns: nothing.
    """


@hookspec
def cocaine_slave_exited(app: AppInfo, slave: SlaveInfo, status: int) -> str | None:
    """Observe the end of a slave process (or template), and optionally explain it.

    Called in the node process once the process has been reaped. A plugin that knows why the
    process ended (the cgroups plugin knows when the kernel killed it for memory) returns a
    short explanation, which the engine adds to the log and to the errors of the slave's jobs
    (``"out of memory: the app's cgroup limit is 64 MiB"``); otherwise it returns None.

    :param app: the app the slave belonged to.
    :param slave: the slave that ended.
    :param status: its exit code, or minus the signal number that ended it.
    :returns: an explanation, or None.
    """


@hookspec
def cocaine_app_stopped(app: AppInfo) -> None:
    """Clean up after an app whose every process has ended.

    Called in the node process when an app stops (removed, redeployed or the node exits).

    :param app: the app that stopped.
    :returns: nothing.
    """


@hookspec
def cocaine_app_info(app: AppInfo) -> dict[str, Any] | None:
    """Add a plugin's section to ``cocaine info`` for one app.

    Called in the node process each time info is asked for. Return a small JSON-able dict,
    which appears under the plugin's name, or None.

    :param app: the app being described.
    :returns: a dict, or None.
    """


# ---------------------------------------------------------------------------------------------
# Node: called in the node process, on its asyncio loop, around a running node.
# ---------------------------------------------------------------------------------------------


@hookspec
def cocaine_node_started(node: NodeView) -> Awaitable[None] | None:
    """Start what a plugin runs beside a node (an exporter's listener, say).

    Called once the node listens, before the apps in its storage start. May return an
    awaitable, which is awaited (at most 30 s). Raising (or an awaitable that raises) fails
    the node's start with the plugin's message, so name what is wrong and how to fix it.

    :param node: the node: ``name``, ``endpoint``, ``options``, ``run_dir``, ``curve``,
        ``info()``.
    :returns: None or an awaitable.
    """


@hookspec
def cocaine_node_stopping(node: NodeView) -> Awaitable[None] | None:
    """Stop what ``cocaine_node_started`` started.

    Called once when the node stops, after its apps have drained (also when its start failed
    part of the way). May return an awaitable, awaited at most 10 s; a failure is logged.

    :param node: the node.
    :returns: None or an awaitable.
    """


@hookspec
def cocaine_event(event: Event) -> None:
    """Observe a lifecycle event (an app deployed, a slave ended and why...).

    The events: an app deployed, started, broken, stopped or removed; a slave spawned or
    ended, and why; the node started or stopping.

    Called in the process that emits it (the node), for every event; events are few (never
    one per job). Must return at once: it runs on the node's loop.

    :param event: ``app``, ``topic`` (``cocaine_core.events.TOPICS``), ``time``, ``node``
        and ``data``.
    :returns: nothing.
    """


# ---------------------------------------------------------------------------------------------
# CLI: called when the ``cocaine`` command starts.
# ---------------------------------------------------------------------------------------------


@hookspec
def cocaine_register_commands(cli: typer.Typer) -> None:
    """Add sub-commands to the ``cocaine`` command line.

    Called once when the CLI starts. Add commands with ``@cli.command()`` or groups with
    ``cli.add_typer(...)``.

    :param cli: the root ``typer.Typer`` application.
    :returns: nothing.
    """
