"""``cocaine node``: run a node in production (apps from storage, deploys, restarts)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cocaine_core.errors import NodeError
from cocaine_core.ports import DEFAULT_PORT_RANGE, PortAllocator
from cocaine_core.protocol import DEFAULT_ENDPOINT

if TYPE_CHECKING:
    from cocaine_core.cli.hosting import Background
    from cocaine_core.node import Node

log = logging.getLogger("cocaine.node")

SETTINGS = ("listen", "storage", "run-dir", "port-range", "log-format", "log-level", "name",
            "max-upload")


def default_storage() -> str:
    """``files:///var/lib/cocaine`` for root, else under the user's data folder."""
    if os.geteuid() == 0:
        return "files:///var/lib/cocaine"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return f"files://{Path(data) / 'cocaine'}"


def default_run_dir() -> Path:
    """``/run/cocaine`` for root, else under the user's runtime folder (or /tmp)."""
    if os.geteuid() == 0:
        return Path("/run/cocaine")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "cocaine" if runtime else Path(f"/tmp/cocaine-{os.getuid()}")


def read_config(path: Path) -> dict[str, Any]:
    """Settings from a TOML or JSON file, with the same names as the options."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise NodeError(f"cannot read the config file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise NodeError(f"the config file {path} is not valid "
                        f"{'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from None
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise NodeError(f"the config file {path} has unknown settings {', '.join(unknown)}; "
                        f"known: {', '.join(SETTINGS)}")
    return data


def node(
    listen: Annotated[str | None, typer.Option(help=f"Endpoint [{DEFAULT_ENDPOINT}].")] = None,
    storage: Annotated[str | None, typer.Option(help="Storage URI [files:// under the data "
                                                     "folder].")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Private folder for sockets and unpacked "
                                                      "code.")] = None,
    port_range: Annotated[str | None, typer.Option(
        help=f"Ports for drivers without an endpoint [{DEFAULT_PORT_RANGE[0]}-"
             f"{DEFAULT_PORT_RANGE[1]}].")] = None,
    config: Annotated[Path | None, typer.Option(help="A TOML or JSON file with these "
                                                     "settings.")] = None,
    log_format: Annotated[str | None, typer.Option(help="auto, rich, plain or json.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
    name: Annotated[str | None, typer.Option(help="The node's name [the host name].")] = None,
    max_upload: Annotated[int | None, typer.Option(help="Largest code archive in bytes "
                                                        "[100 MiB].")] = None,
) -> None:
    """Run a node: serve the apps in storage, take deploys; SIGTERM drains, SIGHUP reloads."""
    from cocaine_core.cli.hosting import host
    from cocaine_core.cli.logs import setup_logging
    from cocaine_core.node import DEFAULT_MAX_UPLOAD, Node
    from cocaine_core.storages import open_storage

    settings = read_config(config) if config else {}
    given = {"listen": listen, "storage": storage, "run-dir": run_dir, "port-range": port_range,
             "log-format": log_format, "log-level": log_level, "name": name,
             "max-upload": max_upload}
    settings.update({k: v for k, v in given.items() if v is not None})
    setup_logging(str(settings.get("log-level", "info")),
                  str(settings.get("log-format", "auto")))
    ports = PortAllocator.parse(str(settings["port-range"])) if "port-range" in settings \
        else PortAllocator()
    run = Path(settings.get("run-dir") or default_run_dir())
    with _exclusive(run):
        _clean_run_dir(run)
        the_node = Node(listen=str(settings.get("listen", DEFAULT_ENDPOINT)), run_dir=run,
                        name=settings.get("name"), ports=ports,
                        storage=open_storage(str(settings.get("storage") or default_storage())),
                        max_upload=int(settings.get("max-upload", DEFAULT_MAX_UPLOAD)))
        host(the_node, _ready, reload_on_sighup=True)


async def _ready(node: Node, background: Background) -> None:
    assert node.storage is not None
    log.info("node ready: %d app(s) from %s", len(node.apps), node.storage.uri)


@contextlib.contextmanager
def _exclusive(run_dir: Path) -> Iterator[None]:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(run_dir, 0o700)
    except OSError as exc:
        raise NodeError(f"cannot use the run folder {run_dir}: {exc.strerror}; choose one "
                        f"with --run-dir") from None
    lock = open(run_dir / "node.lock", "w")  # noqa: SIM115 - held for the node's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise NodeError(f"another node is running with the run folder {run_dir}; give this "
                        f"one its own --run-dir") from None
    try:
        yield
    finally:
        lock.close()


def _clean_run_dir(run_dir: Path) -> None:
    # Left by a node that was killed: sockets, half-finished uploads, unpacked code.
    for entry in run_dir.iterdir():
        if entry.name == "node.lock":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
