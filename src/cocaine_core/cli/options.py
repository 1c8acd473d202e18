"""Options shared by the commands that talk to a node: where it is, how long to wait for it,
the key that signs control requests and the node's CurveZMQ key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from cocaine_core.client import Client

NodeOption = Annotated[str, typer.Option(
    "--node", help="The node's endpoint; or several, comma-separated "
                   "(tcp://a:10053,tcp://b:10053): the first that can be reached serves, "
                   "and a request whose node dies before it answers is sent to the next.")]

#: Each command gives its own default: a quick look waits less than a deploy.
WaitOption = Annotated[float, typer.Option(
    "--wait", help="Most seconds to wait for the node's answer. If nothing listens at the "
                   "endpoint, the command says so at once.")]

KeyOption = Annotated[Path | None, typer.Option(
    "--key", envvar="COCAINE_KEY", show_envvar=True,
    help="The Ed25519 key that signs control requests [~/.config/cocaine/id_ed25519, "
         "made by cocaine keys generate].")]

ServerKeyOption = Annotated[str | None, typer.Option(
    "--server-key", envvar="COCAINE_SERVER_KEY", show_envvar=True,
    help="The node's CurveZMQ public key (or a file holding it), for a node run with "
         "--curve; cocaine info and cocaine keys list on the node show it.")]


def client(node: str, wait: float, key: Path | None = None,
           server_key: str | None = None, *, control: bool = True) -> Client:
    """A ``Client`` of ``node`` with the command's wait, signing key and server key. For a
    command that controls the node, the user's default key is made if there is none yet
    (as ``cocaine node`` does at its first start, which may be running right now)."""
    from cocaine_core.client import Client

    if control and key is None:
        _make_default_key()
    return Client(node, wait=wait, key=key, server_key=read_server_key(server_key))


def _make_default_key() -> None:
    import os

    import typer

    from cocaine_core.errors import TrustError
    from cocaine_core.trust.keys import KEY_ENV, default_key_path, load_or_create

    path = default_key_path()
    if os.environ.get(KEY_ENV) or os.path.lexists(path):
        return
    try:
        signer, made = load_or_create(path)
    except TrustError:
        return  # no place for it (no home): requests go unsigned and the node says why
    if made:
        typer.echo(f"made your key {path} ({signer.fingerprint}): a node you start "
                   f"authorizes it at its first start; on other nodes, have the operator "
                   f"run cocaine keys authorize {path}.pub", err=True)


def read_server_key(given: str | None) -> str | None:
    """The server key ``given`` on the command line: the key itself, or a file holding it."""
    if not given or len(given.strip()) == 40:
        return given
    path = Path(given).expanduser()
    try:
        if path.is_file() and path.stat().st_size <= 4096:
            return path.read_text().strip().split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        pass
    return given
