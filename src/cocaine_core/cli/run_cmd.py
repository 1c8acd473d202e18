"""``cocaine run MANIFEST``: host one app in this process, for development."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from cocaine_core.manifest import Manifest, app_name_for, load_manifest
from cocaine_core.node import Node
from cocaine_core.protocol import DEFAULT_ENDPOINT

log = logging.getLogger("cocaine.run")


def register(app: typer.Typer) -> None:
    """Add ``run`` to the CLI."""
    app.command("run")(run)


def run(
    manifest: Annotated[Path, typer.Argument(help="The app's manifest (JSON).")],
    name: Annotated[str | None, typer.Option(help="App name (default: from the file).")] = None,
    listen: Annotated[str, typer.Option(help="Endpoint clients call.")] = DEFAULT_ENDPOINT,
    reload: Annotated[bool, typer.Option("--reload", help="Restart slaves when the source "
                                                          "changes.")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    log_format: Annotated[str, typer.Option(help="auto, rich, plain or json.")] = "auto",
) -> None:
    """Host one app from MANIFEST on this machine until Ctrl-C (development)."""
    from cocaine_core.cli.logs import setup_logging

    setup_logging(log_level, log_format)
    checked = load_manifest(manifest)
    asyncio.run(_run(checked, name or app_name_for(manifest), listen, reload))


async def _run(manifest: Manifest, name: str, listen: str, reload: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    node = Node(listen=listen)
    watcher: asyncio.Task[None] | None = None
    try:
        await node.start()
        engine = await node.add_app(name, manifest)
        native = sorted(d.task.event for d in engine.drivers if d.task.type == "native-server")
        if native:
            log.info("serving app '%s' on %s (events: %s); try: cocaine call %s %s; "
                     "Ctrl-C stops", name, node.listen, ", ".join(native), name, native[0])
        else:
            log.info("running app '%s' (tasks: %s); Ctrl-C stops", name,
                     ", ".join(f"{d.task.name} ({d.task.type})" for d in engine.drivers))
        if reload:
            watcher = loop.create_task(_watch(manifest, engine))
        await stop.wait()
        log.info("stopping: draining app '%s'", name)
    finally:
        if watcher is not None:
            watcher.cancel()
        await node.stop()


async def _watch(manifest: Manifest, engine: object) -> None:
    import watchfiles

    source = manifest.args.get("source")
    path = (manifest.root / source) if isinstance(source, str) else manifest.root
    target = path if path.is_dir() else path.parent
    async for changes in watchfiles.awatch(target, debounce=100, step=50,
                                           watch_filter=watchfiles.PythonFilter()):
        log.info("source changed (%d file(s)); restarting slaves", len(changes))
        await engine.restart()  # type: ignore[attr-defined]
