"""``cocaine app deploy|list|info|remove|restart``: manage the apps of a running node."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cocaine_core import archive
from cocaine_core.cli.options import KeyOption, NodeOption, ServerKeyOption, WaitOption, client
from cocaine_core.errors import CocaineError, ManifestError, Problem
from cocaine_core.jsontext import loads_lenient
from cocaine_core.protocol import DEFAULT_ENDPOINT

app_app = typer.Typer(help="Deploy and manage the apps of a node.", no_args_is_help=True)


def pack_app(manifest_path: Path) -> tuple[dict[str, Any], bytes]:
    """Read a manifest and pack its ``args.source``; the manifest's source becomes the packed
    name (the node unpacks the code into the app's own folder). An ``exec`` app has no
    source: its manifest's whole folder is packed, so that its command, relative to the
    manifest, runs the same on the node."""
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError([Problem("", f"cannot read {manifest_path}: {exc.strerror}")],
                            source=str(manifest_path)) from None
    data = loads_lenient(text, source=str(manifest_path))
    args = data.get("args") if isinstance(data, dict) else None
    if isinstance(data, dict) and data.get("type") == "exec":
        return data, pack_folder(manifest_path.resolve().parent)
    source = args.get("source") if isinstance(args, dict) else None
    if not isinstance(source, str) or not source:
        raise ManifestError([Problem("args.source", "is required to deploy: the app's code "
                                                    "to pack")], source=str(manifest_path))
    path = Path(source).expanduser()
    if not path.is_absolute():
        path = (manifest_path.resolve().parent / path).resolve()
    if not path.exists():
        raise ManifestError([Problem("args.source", f"{path} does not exist")],
                            source=str(manifest_path))
    manifest = copy.deepcopy(data)
    manifest["args"]["source"] = path.name
    return manifest, archive.pack_source(path)


def pack_folder(folder: Path) -> bytes:
    """Pack the whole folder of an ``exec`` app, saying what goes (and what looks like a
    secret) first; one larger than a node unpacks is refused before it is packed."""
    try:
        files, size, secrets = archive.survey(folder)
    except OSError as exc:
        raise CocaineError(f"cannot read the app's folder {folder}: {exc.strerror}") from None
    if size > archive.DEFAULT_MAX_UNPACKED:
        raise CocaineError(
            f"the app's folder {folder} holds {size / 2**20:.0f} MiB in {files} files, more "
            f"than a node unpacks ({archive.DEFAULT_MAX_UNPACKED >> 20} MiB unless it was "
            f"started with a larger --max-unpacked): an exec app's whole folder is packed, so "
            f"keep only the app in it")
    typer.echo(f"packing {folder} (an exec app: its whole folder): {files} files, "
               f"{size / 2**20:.1f} MiB", err=True)
    if secrets:
        typer.echo(f"warning: these look like secrets and are packed with the app: "
                   f"{', '.join(secrets)}; move them out of the app's folder if the app does "
                   f"not need them", err=True)
    return archive.pack_source(folder, contents=True)


@app_app.command("deploy")
def deploy(
    manifest: Annotated[Path, typer.Argument(help="The app's manifest.")],
    name: Annotated[str | None, typer.Option(help="App name (default: from the file).")] = None,
    node: NodeOption = DEFAULT_ENDPOINT,
    wait: WaitOption = 120.0,
    key: KeyOption = None,
    server_key: ServerKeyOption = None,
) -> None:
    """Pack the app's code, upload it with its manifest, and start it on the node."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from cocaine_core.manifest import app_name_for

    app_name = name or app_name_for(manifest)
    data, code = pack_app(manifest)
    with client(node, wait, key, server_key) as node_client, Progress(
            TextColumn(f"uploading {app_name}"), BarColumn(), DownloadColumn(),
            transient=True, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("upload", total=len(code))
        begun = node_client.control("upload-begin", size=len(code))
        step = int(begun["chunk-size"])
        for offset in range(0, len(code), step):
            node_client.control("upload-chunk", upload=begun["upload"], offset=offset,
                           data=code[offset:offset + step])
            progress.update(task, completed=min(len(code), offset + step))
        result = node_client.control("deploy", name=app_name, manifest=data,
                                upload=begun["upload"], sha256=archive.sha256(code))
    typer.echo(f"deployed {result['name']} version {result['version']} "
               f"({len(code)} bytes, sha256 {result['sha256'][:12]}): {result['state']}")


@app_app.command("list")
def list_apps(
    node: NodeOption = DEFAULT_ENDPOINT,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    wait: WaitOption = 10.0,
    key: KeyOption = None,
    server_key: ServerKeyOption = None,
) -> None:
    """List the node's apps, a line each: state, slaves, queue, jobs, tasks."""
    from cocaine_core.cli import views

    with client(node, wait, key, server_key) as node_client:
        apps = node_client.control("info")["apps"]
    if as_json:
        typer.echo(json.dumps(apps, indent=2))
        return
    typer.echo("\n".join(views.app_list_lines(apps, views.width())))


@app_app.command("info")
def app_info(
    name: Annotated[str, typer.Argument(help="The app.")],
    node: NodeOption = DEFAULT_ENDPOINT,
    wait: WaitOption = 10.0,
    key: KeyOption = None,
    server_key: ServerKeyOption = None,
) -> None:
    """Show one app: state, pool, jobs, slaves, tasks, and what is deployed (JSON)."""
    with client(node, wait, key, server_key) as node_client:
        typer.echo(json.dumps(node_client.control("app-info", name=name), indent=2))


@app_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The app.")],
    node: NodeOption = DEFAULT_ENDPOINT,
    wait: WaitOption = 120.0,
    key: KeyOption = None,
    server_key: ServerKeyOption = None,
) -> None:
    """Stop an app (draining it) and remove it from the node's storage."""
    with client(node, wait, key, server_key) as node_client:
        node_client.control("remove", name=name)
    typer.echo(f"removed {name}")


@app_app.command("restart")
def restart(
    name: Annotated[str, typer.Argument(help="The app.")],
    node: NodeOption = DEFAULT_ENDPOINT,
    wait: WaitOption = 120.0,
    key: KeyOption = None,
    server_key: ServerKeyOption = None,
) -> None:
    """Start an app again from storage, on fresh slaves, without dropping a request."""
    with client(node, wait, key, server_key) as node_client:
        result = node_client.control("restart", name=name)
    typer.echo(f"restarted {name}: {result['state']}")
