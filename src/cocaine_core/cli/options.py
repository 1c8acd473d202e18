"""Options shared by the commands that talk to a node: where it is, how long to wait for it."""

from __future__ import annotations

from typing import Annotated

import typer

NodeOption = Annotated[str, typer.Option("--node", help="The node's endpoint.")]

#: Each command gives its own default: a quick look waits less than a deploy.
WaitOption = Annotated[float, typer.Option(
    "--wait", help="Most seconds to wait for the node's answer. If nothing listens at the "
                   "endpoint, the command says so at once.")]
