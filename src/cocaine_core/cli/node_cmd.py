"""``cocaine node``: run a node in production (apps from storage, deploys, restarts)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cocaine_core.appinfo import MAX_SLAVES_RANGE, default_max_slaves
from cocaine_core.cli import plugin_flags
from cocaine_core.errors import NodeError
from cocaine_core.paths import check_run_dir, clean_run_dir, open_run_lock, prepare_run_dir
from cocaine_core.plugin_options import parse_given, registered
from cocaine_core.ports import DEFAULT_PORT_RANGE, PortAllocator
from cocaine_core.protocol import DEFAULT_ENDPOINT
from cocaine_core.storages import Closable, Storage

if TYPE_CHECKING:
    from cocaine_core.cli.hosting import Background
    from cocaine_core.cluster.cluster import ClusterSettings
    from cocaine_core.node import Node
    from cocaine_core.trust.app_users import AppUsers

log = logging.getLogger("cocaine.node")

SETTINGS = ("listen", "storage", "run-dir", "port-range", "log-format", "log-level", "name",
            "max-upload", "max-unpacked", "max-archive-members", "max-uploads", "upload-space",
            "upload-idle", "deploy-timeout", "max-slaves", "max-message", "client-backlog",
            "app-uids", "curve", "client-keys", "discovery", "cluster", "cluster-key",
            "cluster-listen", "peer", "events")

#: The numeric settings: kind, default, least and greatest value.
LIMITS: dict[str, tuple[type, float, float, float]] = {
    "max-upload": (int, 100 * 2**20, 1024, 4 * 2**30),
    "max-unpacked": (int, 512 * 2**20, 2**20, 64 * 2**30),
    "max-archive-members": (int, 10_000, 1, 1_000_000),
    "max-uploads": (int, 16, 1, 1024),
    "upload-space": (int, 2**30, 2**20, 2**40),
    "upload-idle": (float, 300.0, 1.0, 86_400.0),
    "deploy-timeout": (float, 120.0, 1.0, 3600.0),
    "max-slaves": (int, default_max_slaves(), *MAX_SLAVES_RANGE),
    "max-message": (int, 64 * 2**20, 2 * 2**20, 2**31),
    "client-backlog": (int, 64 * 2**20, 2**20, 2**32),
}


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
    known = [*SETTINGS, *registered()]  # and the plugins' options (--metrics)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise NodeError(f"the config file {path} has unknown settings {', '.join(unknown)}; "
                        f"known: {', '.join(known)}")
    return data


def limit(settings: dict[str, Any], key: str) -> Any:
    """The numeric setting ``key`` (its default if not given), checked against its range.

    :raises NodeError: naming the setting, the range and the value.
    """
    kind, default, low, high = LIMITS[key]
    value = settings.get(key, default)
    number = value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (kind is int and not float(value).is_integer()) or not low <= value <= high:
        unit = " s" if kind is float else ""
        raise NodeError(f"--{key} (or '{key}' in the config file) must be "
                        f"{'an integer' if kind is int else 'a number'} from {kind(low)} to "
                        f"{kind(high)}{unit}, got {value!r}")
    return kind(number)


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
    max_unpacked: Annotated[int | None, typer.Option(
        help="Most bytes one code archive may unpack to [512 MiB; 1 MiB to 64 GiB].")] = None,
    max_archive_members: Annotated[int | None, typer.Option(
        help="Most files, folders and links in one code archive [10000; 1 to "
             "1000000].")] = None,
    max_uploads: Annotated[int | None, typer.Option(
        help="Most uploads open at once [16; 1 to 1024].")] = None,
    upload_space: Annotated[int | None, typer.Option(
        help="Most bytes the open uploads may announce together [1 GiB; 1 MiB to "
             "1 TiB].")] = None,
    upload_idle: Annotated[float | None, typer.Option(
        help="Seconds an unfinished upload is kept untouched [300; 1 to 86400].")] = None,
    deploy_timeout: Annotated[float | None, typer.Option(
        help="Most seconds a deploy (or an app's first load) may take [120; 1 to "
             "3600].")] = None,
    max_slaves: Annotated[int | None, typer.Option(
        help="Most slaves of all apps together [from memory and pids; 1 to "
             "100000].")] = None,
    max_message: Annotated[int | None, typer.Option(
        help="Largest message a client may send, in bytes; a larger one drops its "
             "connection [64 MiB; 2 MiB to 2 GiB].")] = None,
    client_backlog: Annotated[int | None, typer.Option(
        help="Most bytes of answers held for a client that does not read them; past it "
             "its requests are cancelled [64 MiB; 1 MiB to 4 GiB].")] = None,
    app_uids: Annotated[str | None, typer.Option(
        help="Uids apps run as, one each (LOW-HIGH), when the node runs as root; none runs "
             "them as root [61000-61999 as root].")] = None,
    curve: Annotated[bool | None, typer.Option(
        "--curve/--no-curve", help="Encrypt and authenticate clients with CurveZMQ; they "
                                   "pass the key cocaine info shows as --server-key.")] = None,
    client_keys: Annotated[Path | None, typer.Option(
        help="With --curve: only clients whose key this file lists (ssh-ed25519 lines or "
             "Z85 Curve keys) may connect; SIGHUP reads it again.")] = None,
    discovery: Annotated[str | None, typer.Option(
        help="How this node makes itself known to the other nodes: etcd (registers in the "
             "--storage etcd://... it shares with them), mdns (its LAN), static (--peer) "
             "[with --cluster: static if --peer is given, else mdns; else none].")] = None,
    cluster: Annotated[str | None, typer.Option(
        help="Join the cluster of this name: share load with its other nodes.")] = None,
    cluster_key: Annotated[Path | None, typer.Option(
        help="The cluster's key (cocaine cluster key FILE makes one) [with a shared etcd "
             "store: the key stored there].")] = None,
    cluster_listen: Annotated[str | None, typer.Option(
        help="Where peers connect (tcp://HOST:PORT) [the --listen port + 1].")] = None,
    peer: Annotated[list[str] | None, typer.Option(
        help="A peer's link endpoint, tcp://HOST:PORT (its --listen port + 1); repeat for "
             "more; implies --discovery static.")] = None,
    events: Annotated[str | None, typer.Option(
        help="Publish lifecycle events (cocaine events) on this ZeroMQ endpoint, tcp://HOST:"
             "PORT or ipc://PATH [ipc:// in the run folder].")] = None,
) -> None:
    """Run a node: serve the apps in storage, take deploys; SIGTERM drains, SIGHUP reloads."""
    from cocaine_core.cli.logs import setup_logging
    from cocaine_core.storages import open_storage

    settings = read_config(config) if config else {}
    given = {"listen": listen, "storage": storage, "run-dir": run_dir, "port-range": port_range,
             "log-format": log_format, "log-level": log_level, "name": name,
             "max-upload": max_upload, "max-unpacked": max_unpacked,
             "max-archive-members": max_archive_members, "max-uploads": max_uploads,
             "upload-space": upload_space, "upload-idle": upload_idle,
             "deploy-timeout": deploy_timeout, "max-slaves": max_slaves,
             "max-message": max_message, "client-backlog": client_backlog,
             "app-uids": app_uids, "curve": curve, "client-keys": client_keys,
             "discovery": discovery, "cluster": cluster, "cluster-key": cluster_key,
             "cluster-listen": cluster_listen, "peer": peer or None, "events": events,
             **plugin_flags.GIVEN}
    settings.update({k: v for k, v in given.items() if v is not None})
    limits = {key: limit(settings, key) for key in LIMITS}
    setup_logging(str(settings.get("log-level", "info")),
                  str(settings.get("log-format", "auto")))
    cluster_settings = _cluster(settings)  # checked before anything is touched
    uids = _app_uids(settings)
    observers = _observers(settings)  # checked before a folder or a store is touched
    ports = PortAllocator.parse(str(settings["port-range"])) if "port-range" in settings \
        else PortAllocator()
    run = Path(settings.get("run-dir") or default_run_dir())
    store = open_storage(str(settings.get("storage") or default_storage()))
    try:
        _serve(settings, limits, uids, ports, run, store, cluster_settings, observers)
    finally:
        if isinstance(store, Closable):
            store.close()


def _serve(settings: dict[str, Any], limits: dict[str, Any], uids: tuple[int, int] | None,
           ports: PortAllocator, run: Path, store: Storage,
           cluster: ClusterSettings | None, observers: dict[str, Any]) -> None:
    """Run the node on ``store`` until it is told to stop."""
    from cocaine_core.archive import Limits
    from cocaine_core.cli.hosting import host
    from cocaine_core.node import Node
    from cocaine_core.uploads import UploadLimits

    discovery = settings.get("discovery")
    if discovery is not None and not isinstance(discovery, str):
        raise NodeError(f"'discovery' in the config file must be a name, got {discovery!r}")
    app_users = _app_users(uids, getattr(store, "root", None))
    check_run_dir(run, getattr(store, "root", None))
    run = prepare_run_dir(run)
    with _exclusive(run):
        _clean_run_dir(run)
        the_node = Node(listen=str(settings.get("listen", DEFAULT_ENDPOINT)), run_dir=run,
                        name=settings.get("name"), ports=ports, storage=store,
                        max_upload=limits["max-upload"],
                        limits=Limits(limits["max-unpacked"], limits["max-archive-members"]),
                        uploads=UploadLimits(limits["max-uploads"], limits["upload-space"],
                                             limits["upload-idle"]),
                        deploy_timeout=limits["deploy-timeout"],
                        max_slaves=limits["max-slaves"],
                        max_message=limits["max-message"],
                        client_backlog=limits["client-backlog"], app_users=app_users,
                        discovery=discovery, cluster=cluster, **_curve(settings),
                        **observers)
        try:
            host(the_node, _ready, reload_on_sighup=True)
        finally:
            _clean_run_dir(run)


def _observers(settings: dict[str, Any]) -> dict[str, Any]:
    """The event stream's endpoint (``--events``) and the plugins' options, checked."""
    from cocaine_core.event_stream import check_events_endpoint

    events = settings.get("events")
    if events is not None:
        try:
            events = check_events_endpoint(str(events))
        except ValueError as exc:
            raise NodeError(str(exc)) from None
    return {"events": events, "options": parse_given(
        {name: settings.get(name) for name in registered()})}


def _app_uids(settings: dict[str, Any]) -> tuple[int, int] | None:
    """The uids apps run as (``--app-uids``), or None (a warning if root opted out)."""
    from cocaine_core.trust.app_users import parse_app_uids

    uids = parse_app_uids(settings.get("app-uids"))
    if uids is None and settings.get("app-uids") is not None and os.geteuid() == 0:
        log.warning("--app-uids none: apps run as root, like the node; any app can read "
                    "storage, keys and every other app, and act as root")
    return uids


def _app_users(uids: tuple[int, int] | None, storage_root: Path | None) -> AppUsers | None:
    """The node's ``AppUsers`` for ``uids`` (None: apps run as the node's user), its storage
    folder made private from them."""
    from cocaine_core.trust.app_users import AppUsers, tighten_storage

    if uids is None:
        return None
    if storage_root is not None:
        tighten_storage(Path(storage_root))
    return AppUsers(*uids, hide=[Path(storage_root)] if storage_root else [])


def _cluster(settings: dict[str, Any]) -> ClusterSettings | None:
    """``--cluster`` and its companions (checked), or None without ``--cluster``."""
    from cocaine_core.cluster.cluster import ClusterSettings

    name = settings.get("cluster")
    companions = [k for k in ("cluster-key", "cluster-listen", "peer") if k in settings]
    if name is None:
        if companions:
            raise NodeError(f"--{companions[0]} needs --cluster NAME (the cluster to join)")
        return None
    key, listen, peers = (settings.get(k) for k in ("cluster-key", "cluster-listen", "peer"))
    if not isinstance(name, str) or (key is not None and not isinstance(key, str | Path)) or \
            (listen is not None and not isinstance(listen, str)):
        raise NodeError("'cluster' and 'cluster-listen' in the config file must be texts and "
                        "'cluster-key' a file name")
    if isinstance(peers, str):
        peers = [peers]
    if peers is not None and (not isinstance(peers, list) or
                              not all(isinstance(p, str) for p in peers)):
        raise NodeError(f"'peer' in the config file must be a list of endpoints, got {peers!r}")
    made = ClusterSettings(name, Path(key) if key is not None else None, listen,
                           tuple(peers or ()))
    made.check()
    return made


def _curve(settings: dict[str, Any]) -> dict[str, Any]:
    """``--curve`` and ``--client-keys`` (checked) as the node takes them."""
    curve, keys = settings.get("curve", False), settings.get("client-keys")
    if not isinstance(curve, bool):
        raise NodeError(f"'curve' in the config file must be true or false, got {curve!r}")
    if keys is not None and not isinstance(keys, str | Path):
        raise NodeError(f"'client-keys' in the config file must be a file name, got {keys!r}")
    return {"curve": curve, "client_keys": Path(keys) if keys is not None else None}


async def _ready(node: Node, background: Background) -> None:
    assert node.storage is not None
    log.info("node ready: %d app(s) from %s", len(node.apps), node.storage.uri)


@contextlib.contextmanager
def _exclusive(run_dir: Path) -> Iterator[None]:
    lock = open_run_lock(run_dir)  # held for the node's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise NodeError(f"another node is running with the run folder {run_dir}; give this "
                        f"one its own --run-dir") from None
    try:
        yield
    finally:
        os.close(lock)


def _clean_run_dir(run_dir: Path) -> None:
    # Left by a node that was killed (or by this one, stopping): its unpacked code, uploads
    # and engine sockets; nothing else is ever deleted.
    foreign = clean_run_dir(run_dir)
    if foreign:
        log.warning("the run folder %s holds %s, which no node made; left alone (give the "
                    "node a folder of its own with --run-dir)", run_dir, ", ".join(foreign))
