"""``cocaine run MANIFEST``: host one app in this process, for development."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cocaine_core.protocol import DEFAULT_ENDPOINT

if TYPE_CHECKING:
    from cocaine_core.cli.hosting import Background
    from cocaine_core.engine import Engine
    from cocaine_core.manifest import Manifest
    from cocaine_core.node import Node

log = logging.getLogger("cocaine.run")


def run(
    manifest: Annotated[Path, typer.Argument(help="The app's manifest (JSON).")],
    name: Annotated[str | None, typer.Option(help="App name (default: from the file).")] = None,
    listen: Annotated[str, typer.Option(help="Endpoint clients call.")] = DEFAULT_ENDPOINT,
    reload: Annotated[bool, typer.Option("--reload", help="Restart slaves when the source "
                                                          "changes.")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    log_format: Annotated[str, typer.Option(help="auto, rich, plain or json.")] = "auto",
    curve: Annotated[bool, typer.Option("--curve", help="CurveZMQ with a key pair made now "
                                                        "(logged: clients pass it as "
                                                        "--server-key).")] = False,
) -> None:
    """Host one app from MANIFEST on this machine until Ctrl-C (development)."""
    from cocaine_core.cli import plugin_flags
    from cocaine_core.cli.hosting import host
    from cocaine_core.cli.logs import setup_logging
    from cocaine_core.manifest import app_name_for, load_manifest
    from cocaine_core.node import Node
    from cocaine_core.plugin_options import parse_given

    setup_logging(log_level, log_format)
    checked = load_manifest(manifest)
    app_name = name or app_name_for(manifest)

    async def ready(node: Node, background: Background) -> None:
        engine = await node.add_app(app_name, checked)
        native = sorted(d.task.event for d in engine.drivers if d.task.type == "native-server")
        if native:
            log.info("serving app '%s' on %s (events: %s); try: cocaine call %s %s; "
                     "Ctrl-C stops", app_name, node.listen, ", ".join(native), app_name,
                     native[0])
        else:
            log.info("running app '%s' (tasks: %s); Ctrl-C stops", app_name,
                     ", ".join(f"{d.task.name} ({d.task.type})" for d in engine.drivers))
        if reload:
            background(_watch(checked, engine))

    host(Node(listen=listen, curve=curve, options=parse_given(dict(plugin_flags.GIVEN))), ready)


async def _watch(manifest: Manifest, engine: Engine) -> None:
    import watchfiles

    source = manifest.args.get("source")
    path = (manifest.root / source) if isinstance(source, str) else manifest.root
    target = path if path.is_dir() else path.parent
    # A Python app: its .py files. Any other (exec: a program in any language, maybe built
    # in place): every file of its folder, save packages and caches (node_modules, .git...).
    watched = (watchfiles.PythonFilter() if manifest.type == "python" else
               watchfiles.DefaultFilter())
    async for changes in watchfiles.awatch(target, debounce=100, step=50,
                                           watch_filter=watched):
        log.info("source changed (%d file(s)); restarting slaves", len(changes))
        await engine.restart()
