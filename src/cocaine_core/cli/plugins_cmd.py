"""``cocaine plugins``: what is installed, what each plugin registers, what failed."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List plugins: distribution, version, module, the types each registers, load errors."""
    from cocaine_core.plugins import KINDS, get_host

    host = get_host()
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in host.records], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("plugin", "distribution", "version", "module", "registers", "errors")
    for record in host.records:
        registers = "\n".join(f"{KINDS[kind][1]}s: {', '.join(names)}"
                              for kind, names in record.types.items() if names)
        errors = "\n".join(record.errors)
        table.add_row(record.name, record.distribution, record.version, record.module,
                      registers or "-", f"[red]{errors}[/]" if errors else "-")
    Console(width=max(160, Console().width)).print(table)
    if any(r.errors for r in host.records):
        typer.echo("Some plugins failed; the others work. COCAINE_DISABLE_PLUGINS=name skips "
                   "one; COCAINE_LOAD_PLUGINS='' loads none.", err=True)
