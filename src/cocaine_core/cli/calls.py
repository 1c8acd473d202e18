"""``cocaine call`` and ``cocaine info``: talk to a running node."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from cocaine_core.errors import ServiceError
from cocaine_core.protocol import DEFAULT_ENDPOINT

NodeOption = Annotated[str, typer.Option("--node", help="The node's endpoint.")]


def register(app: typer.Typer) -> None:
    """Add ``call`` and ``info`` to the CLI."""
    app.command("call")(call)
    app.command("info")(info)


def call(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="The app.")],
    event: Annotated[str, typer.Argument(help="The event (handler) to call.")],
    data: Annotated[str | None, typer.Argument(help="The request body; '-' reads stdin.")] = None,
    node: NodeOption = DEFAULT_ENDPOINT,
    timeout: Annotated[float | None, typer.Option(help="Most seconds the job may run.")] = None,
    deadline: Annotated[float | None, typer.Option(
        help="Seconds from now by which the job must start.")] = None,
    urgent: Annotated[bool, typer.Option("--urgent", help="Jump the queue.")] = False,
    wait: Annotated[float, typer.Option(help="Most seconds to wait for each part of the "
                                             "answer.")] = 60.0,
) -> None:
    """Call APP's EVENT and print the answer's chunks as they arrive."""
    from cocaine_core.client import Client

    body = sys.stdin.buffer.read() if data == "-" else (data or "").encode()
    if timeout is not None:
        wait = max(wait, timeout + 5)
    out = sys.stdout.buffer
    with Client(node, wait=wait) as client:
        try:
            for chunk in client.stream(app_name, event, body, timeout=timeout,
                                       deadline=deadline, urgent=urgent):
                out.write(chunk)
                out.flush()
        except ServiceError as exc:
            out.flush()
            typer.echo(f"error {exc.code}: {exc.message}", err=True)
            raise typer.Exit(1) from None
    if sys.stdout.isatty():
        out.write(b"\n")
        out.flush()


def info(
    node: NodeOption = DEFAULT_ENDPOINT,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the node's apps: pools, queues, jobs, latencies and slaves."""
    from cocaine_core.client import Client

    with Client(node, wait=10) as client:
        data = client.control("info")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    render_info(data)


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_info(data: dict[str, Any]) -> None:
    """Print node info as tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"node [bold]{data['node']}[/] {data['endpoint']} · pid {data['pid']} · "
                  f"up {data['uptime']:.0f} s · {data['requests']} requests · "
                  f"rss {(data.get('rss-bytes') or 0) / 2**20:.1f} MiB")
    table = Table("app", "state", "pool (busy/idle/total)", "queue", "done", "failed",
                  "timed out", "refused", "p50 ms", "p99 ms", "slaves' memory")
    for name, app in data["apps"].items():
        pool, jobs = app["pool"], app["jobs"]
        memory = sum(s.get("rss-bytes") or 0 for s in app["slaves"])
        state = app["state"] + (f": {app['broken']}" if app.get("broken") else "")
        table.add_row(name, state, f"{pool['busy']}/{pool['idle']}/{pool['total']} "
                                   f"(max {pool['limit']})",
                      f"{app['queue']['depth']}/{app['queue']['limit']}", str(jobs["done"]),
                      str(jobs["failed"]), str(jobs["timed-out"]), str(jobs["refused"]),
                      _ms(jobs["latency-ms"]["p50"]), _ms(jobs["latency-ms"]["p99"]),
                      f"{memory / 2**20:.1f} MiB")
    console.print(table)
    tasks = Table("app", "task", "type", "event", "details")
    for name, app in data["apps"].items():
        for task_name, task in app.get("tasks", {}).items():
            details = ", ".join(f"{k}={v}" for k, v in task.items() if k not in ("type",
                                                                                   "event"))
            tasks.add_row(name, task_name, task["type"], task["event"], details)
    if tasks.row_count:
        console.print(tasks)
    plugins = Table("app", "plugin", "details")
    for name, app in data["apps"].items():
        for key, section in app.items():
            if key not in CORE_APP_KEYS and isinstance(section, dict):
                plugins.add_row(name, key, ", ".join(f"{k}={v}" for k, v in _flat(section)))
    if plugins.row_count:
        console.print(plugins)


CORE_APP_KEYS = {"state", "pool", "queue", "jobs", "slaves", "spawns", "uptime", "tasks",
                 "broken", "deployed"}


def _flat(section: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in section.items():
        if isinstance(value, dict) and not prefix:
            items.extend(_flat(value, f"{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items
