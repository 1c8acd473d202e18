"""``cocaine cluster``: make a cluster's key, and see the nodes a node's cluster holds."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cocaine_core.cli.options import KeyOption, NodeOption, ServerKeyOption, WaitOption, client
from cocaine_core.protocol import DEFAULT_ENDPOINT

cluster_app = typer.Typer(help="A cluster of nodes: its key, its nodes.", no_args_is_help=True)


@cluster_app.command("key")
def key(
    file: Annotated[Path | None, typer.Argument(
        help="Where to write the new key (mode 0600); copy it to every node.")] = None,
    storage: Annotated[str | None, typer.Option(
        help="Put the key in this shared store (etcd://...) instead of a file.")] = None,
    cluster: Annotated[str | None, typer.Option(
        help="With --storage: the cluster's name.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an existing key (every node using it is cut off).")] = False,
) -> None:
    """Make a new cluster key: nodes started with --cluster NAME and this key are peers."""
    from cocaine_core.cluster.discovery import CLUSTER_NAME
    from cocaine_core.cluster.key import store_key, write_key_file
    from cocaine_core.errors import NodeError
    from cocaine_core.storages import Closable, open_storage

    if (file is None) == (storage is None):
        raise NodeError("give a FILE to write the key to, or --storage URI --cluster NAME to "
                        "put it in a shared store (not both)")
    if file is not None:
        if cluster is not None:
            raise NodeError("--cluster goes with --storage; a key file serves any cluster "
                            "name: pass the name to cocaine node --cluster")
        write_key_file(file, force=force)
        typer.echo(f"wrote a new cluster key to {file} (mode 0600): copy it to every node of "
                   f"the cluster and start each with --cluster NAME --cluster-key {file}")
        return
    if cluster is None or not CLUSTER_NAME.fullmatch(cluster):
        raise NodeError("--storage needs --cluster NAME (1 to 63 letters, digits, '-', '_')")
    store = open_storage(str(storage))
    try:
        store_key(store, cluster, force=force)
    finally:
        if isinstance(store, Closable):
            store.close()
    typer.echo(f"put a new key for cluster {cluster} in {storage}: nodes started with "
               f"--storage {storage} --cluster {cluster} use it")


@cluster_app.command("nodes")
def nodes(
    node: NodeOption = DEFAULT_ENDPOINT,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    wait: WaitOption = 10.0,
    key: KeyOption = None,
    server_key: ServerKeyOption = None,
) -> None:
    """The nodes this node sees in its cluster: their apps and load, when last heard."""
    with client(node, wait, key, server_key) as node_client:
        data = node_client.control("cluster-nodes")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo("\n".join(node_lines(data)))


def node_lines(data: dict[str, Any]) -> list[str]:
    """``cocaine cluster nodes`` as text lines, within 80 columns."""
    lines = [f"cluster {data['cluster']}: {len(data['nodes'])} node(s)"]
    for entry in data["nodes"]:
        me = " (this node)" if entry.get("self") else ""
        lines.append(f"{entry['name']:.24}{me}  {entry['state']}  heard "
                     f"{_ago(entry['heard'])}  {entry['endpoint']}  link {entry['link']}")
        for app, load in sorted(entry["apps"].items()):
            lines.append(f"    {app:.30}  {load['state']:<9} free {load['free']:<5} "
                         f"queued {load['queued']}")
        if not entry["apps"]:
            lines.append("    (no apps)")
    down = [link["endpoint"] for link in data.get("links", []) if not link["up"]]
    if down:
        lines.append(f"links not up: {', '.join(down)}")
    return lines


def _ago(seconds: float) -> str:
    return "now" if seconds < 0.5 else f"{seconds:.1f} s ago" if seconds < 120 else \
        time.strftime("%H:%M:%S", time.localtime(time.time() - seconds))
