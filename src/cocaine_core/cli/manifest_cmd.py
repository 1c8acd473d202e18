"""``cocaine manifest check FILE``: every problem by key path, or the resolved manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cocaine_core.errors import ManifestError

manifest_app = typer.Typer(help="Work with app manifests.", no_args_is_help=True)


@manifest_app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="The manifest to check.")],
) -> None:
    """Print the manifest's problems (exit 1), or the manifest with every default (exit 0)."""
    from cocaine_core.manifest import load_manifest

    try:
        manifest = load_manifest(file)
    except ManifestError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(manifest.to_dict(), indent=2))
