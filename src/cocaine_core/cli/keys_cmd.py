"""``cocaine keys generate|show|authorize|list|revoke``: who may control a node.

``generate`` and ``show`` act on your own key (``~/.config/cocaine/id_ed25519``);
``authorize``, ``list`` and ``revoke`` on the keys a node authorizes, in its storage
(``--storage``, or the ``storage`` of the node's ``--config``), so run them where the node's
storage is (as the node's user), and nodes sharing a storage share the change at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from cocaine_core.cli.options import KeyOption
from cocaine_core.errors import TrustError

if TYPE_CHECKING:
    from cocaine_core.storages import Storage
    from cocaine_core.trust.keyring import KeyRing

T = TypeVar("T")

keys_app = typer.Typer(help="Make your key; authorize, list and revoke a node's keys.",
                       no_args_is_help=True)

StorageOption = Annotated[str | None, typer.Option(
    "--storage", help="The node's storage URI [the node's default: files:// under its data "
                      "folder].")]
ConfigOption = Annotated[Path | None, typer.Option(
    "--config", help="The node's config file, to take its storage from.")]


def _storage(storage: str | None, config: Path | None) -> Storage:
    """The node's storage, which must exist: a mistyped --storage is an error, never a new,
    empty storage that no node reads."""
    from urllib.parse import unquote, urlsplit

    from cocaine_core.cli.node_cmd import default_storage, read_config
    from cocaine_core.storages import open_storage

    if storage is None and config is not None:
        storage = read_config(config).get("storage")
    uri = str(storage or default_storage())
    parts = urlsplit(uri)
    if parts.scheme == "files" and not Path(unquote(parts.path)).is_dir():
        raise TrustError(f"no storage at {uri}: give the node's own --storage (or its "
                         f"--config); a node keeps its storage in "
                         f"{default_storage()} by default, for the user running it")
    return open_storage(uri)


def _write(what: str, store: Storage, change: Callable[[], T]) -> T:
    """Run ``change`` on the node's keys in ``store``; a storage that refuses it is an error
    saying what to do, never a traceback."""
    try:
        return change()
    except OSError as exc:
        raise TrustError(f"cannot {what} in {store.uri}: {exc.strerror}; run this as the "
                         f"node's user (the one who may write its storage)") from None


@keys_app.command("generate")
def generate(
    key: KeyOption = None,
    comment: Annotated[str | None, typer.Option(help="A note kept with the public key "
                                                     "[user@host].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key (requests "
                                                        "signed with it are then refused "
                                                        "everywhere).")] = False,
) -> None:
    """Make an Ed25519 key pair: the private key (mode 0600) and its .pub file."""
    from cocaine_core.trust.keys import default_key_path
    from cocaine_core.trust.keys import generate as make

    path = key or default_key_path()
    signer = make(path, comment=comment, force=force)
    typer.echo(f"made {path} and {path}.pub\nfingerprint {signer.fingerprint}\n"
               f"{signer.public.openssh()}\n"
               f"to control a node, have its operator run: cocaine keys authorize {path}.pub")


@keys_app.command("show")
def show(key: KeyOption = None) -> None:
    """Print your public key, its fingerprint and the Curve key a node's --client-keys
    takes for it."""
    from cocaine_core.trust.curve import curve_keypair
    from cocaine_core.trust.keys import Signer, default_key_path

    path = key or default_key_path()
    signer = Signer.load(path)
    typer.echo(f"{signer.public.openssh()}\nfingerprint {signer.fingerprint}\n"
               f"curve {curve_keypair(signer)[0].decode()}")


@keys_app.command("authorize")
def authorize(
    key: Annotated[str, typer.Argument(metavar="PUBKEY|FILE", help="A .pub file, or the "
                                                                   "'ssh-ed25519 AAAA…' "
                                                                   "line itself.")],
    storage: StorageOption = None,
    config: ConfigOption = None,
) -> None:
    """Let the key control the node (deploy, remove, restart, list, info)."""
    from cocaine_core.trust.keys import read_public

    public = read_public(key)
    store = _storage(storage, config)
    entry = _write("authorize the key", store, lambda: _ring_of(store).authorize(public))
    typer.echo(f"authorized {entry.key.fingerprint}"
               + (f" ({entry.key.comment})" if entry.key.comment else "")
               + f" in {store.uri}")
    if "PRIVATE KEY" in _head(key):
        typer.echo(f"note: {key} is a private key; only its public half was stored. A private "
                   f"key stays with its owner: if it was copied here, make a new one", err=True)


@keys_app.command("revoke")
def revoke(
    fingerprint: Annotated[str, typer.Argument(help="The key's fingerprint (SHA256:…, as "
                                                    "cocaine keys list shows it), or its "
                                                    ".pub file.")],
    storage: StorageOption = None,
    config: ConfigOption = None,
) -> None:
    """Refuse the key's requests from now on, on every node sharing this storage."""
    from cocaine_core.trust.keys import read_public

    if not fingerprint.strip().startswith("SHA256:") and (
            Path(fingerprint).expanduser().is_file() or fingerprint.startswith("ssh-")):
        fingerprint = read_public(fingerprint).fingerprint
    store = _storage(storage, config)
    ring = _ring_of(store)
    before = ring.find(fingerprint)
    entry = _write("revoke the key", store, lambda: ring.revoke(fingerprint))
    left = sum(1 for other in ring.entries() if other.active)
    name = entry.key.fingerprint + (f" ({entry.key.comment})" if entry.key.comment else "")
    if before is not None and not before.active:
        typer.echo(f"{name} was already revoked, on {_when(before.revoked or 0)}")
        return
    typer.echo(f"revoked {name} in {store.uri}"
               + ("" if left else "; no key is authorized now: nobody can control the node "
                                  "until one is (cocaine keys authorize)"))


@keys_app.command("list")
def list_keys(
    storage: StorageOption = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the node's keys, authorized and revoked, and its CurveZMQ public key."""
    from cocaine_core.trust import curve

    store = _storage(storage, config)
    entries = _ring_of(store).entries()
    finder = getattr(curve, "server_public_key", None)
    server = finder(store) if finder else None
    if as_json:
        typer.echo(json.dumps({"keys": [entry.to_json() for entry in entries],
                               "curve-key": server}, indent=2))
        return
    for entry in entries:
        state = ("authorized" if entry.active else
                 f"revoked {_when(entry.revoked or 0)}")
        typer.echo(f"{entry.key.fingerprint}  {state:<28}  added {_when(entry.added)}  "
                   f"{entry.key.comment}")
    if not entries:
        typer.echo("no keys: the node authorizes its user's key at its first start")
    if server:
        typer.echo(f"curve key (clients pass --server-key): {server}")


def _ring_of(store: Storage) -> KeyRing:
    from cocaine_core.trust.keyring import KeyRing

    return KeyRing(store)


def _head(given: str) -> str:
    """The start of the file ``given`` names ("" if it names none)."""
    try:
        with open(Path(given).expanduser(), "rb") as f:
            return f.read(200).decode("utf-8", "replace")
    except OSError:
        return ""


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(moment)) + " UTC"
