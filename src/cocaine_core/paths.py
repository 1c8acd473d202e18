"""What a node may bind, delete or load on its disk.

A node keeps apps' records in its storage folder and its own things in its run folder. An
``ipc://`` bind unlinks whatever file has that path first (libzmq does, to clear a stale
socket), and cleaning the run folder deletes: both must only ever touch what the node itself
made. The node registers its folders here while it runs (``guard``); the ZeroMQ drivers ask
``check_ipc_path`` before each bind, and the python language asks ``deployed_root`` to keep a
deployed app's ``args.source`` inside its uploaded code.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
import threading
from pathlib import Path

from cocaine_core.errors import NodeError

#: What a node creates in its run folder; cleaning it removes these and nothing else.
RUN_MARKER = ".cocaine-run"
RUN_LOCK = "node.lock"
RUN_FOLDERS = ("code", "uploads")
#: An engine's slave socket: ``<app>.<8 hex digits>`` (see ``Engine.__init__``).
ENGINE_SOCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.[0-9a-f]{8}$")

_lock = threading.Lock()
#: Folders no manifest endpoint may bind in (storage, run folders), with how many nodes hold
#: each, and the folders holding deployed apps' code.
_protected: dict[Path, int] = {}
_code_roots: dict[Path, int] = {}


def real(path: str | Path) -> Path:
    """``path`` made absolute with its folder's links resolved (the last part kept as is)."""
    path = Path(os.path.abspath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (both already ``real``)."""
    return path == folder or folder in path.parents


def guard(*, protected: list[Path], code_root: Path | None) -> None:
    """Register a running node's folders (undo with ``unguard`` and the same arguments)."""
    with _lock:
        for folder in protected:
            key = real(folder)
            _protected[key] = _protected.get(key, 0) + 1
        if code_root is not None:
            key = real(code_root)
            _code_roots[key] = _code_roots.get(key, 0) + 1


def unguard(*, protected: list[Path], code_root: Path | None) -> None:
    """Forget folders registered by ``guard``."""
    with _lock:
        for registry, folders in ((_protected, protected),
                                  (_code_roots, [code_root] if code_root else [])):
            for folder in folders:
                key = real(folder)
                if registry.get(key, 0) <= 1:
                    registry.pop(key, None)
                else:
                    registry[key] -= 1


def deployed_root(root: Path | str) -> bool:
    """Whether ``root`` is a deployed app's unpacked code (under a node's code folder)."""
    path = real(root)
    with _lock:
        return any(inside(path, folder) for folder in _code_roots)


def protected_folder(path: str | Path) -> Path | None:
    """The node's storage or run folder ``path`` lies in (resolved), or None: no socket of
    an app's may be made there (it could take a name the node is about to use)."""
    resolved = real(path)
    with _lock:
        folders = list(_protected)
    return next((folder for folder in folders if inside(resolved, folder)), None)


def check_ipc_path(address: str, owner: str, *, protected: bool = True) -> None:
    """Refuse an ``ipc://`` path whose bind would delete a file that is not a stale socket.

    :param address: the path after ``ipc://`` (an abstract ``@name`` is always fine).
    :param protected: also refuse paths inside a node's storage or run folder.
    :raises NodeError: naming ``owner``, the path and why.
    """
    if not address or address.startswith("@") or address == "*":
        return
    path = real(address)
    folder = protected_folder(path) if protected else None
    if folder is not None:
        raise NodeError(f"{owner}: cannot bind ipc://{address}: {path} lies inside the "
                        f"node's folder {folder} (its storage or run folder), where a "
                        f"bind could delete the node's files; choose an ipc path "
                        f"elsewhere")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise NodeError(f"{owner}: cannot bind ipc://{address}: {exc.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise NodeError(f"{owner}: cannot bind ipc://{address}: {path} exists and is not a "
                        f"socket (binding would delete it); choose another path")
    if socket_in_use(str(path)):
        raise NodeError(f"{owner}: cannot bind ipc://{address}: the address is already in "
                        f"use; stop whatever listens there or choose another endpoint")


def check_node_listen(listen: str, name: str, storage_root: str | Path | None,
                      run_dir: Path) -> None:
    """Refuse an ``ipc://`` endpoint a node cannot listen on: a path libzmq would unlink,
    or one inside the storage or run folder, whose files the node manages."""
    if not listen.startswith("ipc://"):
        return
    check_ipc_path(listen[len("ipc://"):], f"node {name}", protected=False)
    where = real(listen[6:])
    for folder, what in ((storage_root, "storage"), (run_dir, "run")):
        if folder is not None and inside(where, real(folder)):
            raise NodeError(f"cannot listen on {listen}: it lies inside the {what} folder "
                            f"{folder}, whose files the node manages; choose another --listen")


def socket_in_use(path: str) -> bool:
    """Whether something listens on the unix socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            probe.connect(path)
        except (BlockingIOError, InterruptedError):
            return True  # accepted for later: a listener with a full backlog
        except OSError:
            return False
        return True


# -- the run folder ---------------------------------------------------------------------------


def check_run_dir(run_dir: Path, storage_root: Path | None) -> None:
    """Refuse a run folder that is, holds or lies inside the storage folder (every link
    followed: a run folder that is a link to storage is storage).

    :raises NodeError: naming both folders.
    """
    if storage_root is None:
        return
    run, storage = Path(os.path.realpath(run_dir)), Path(os.path.realpath(storage_root))
    if inside(run, storage) or inside(storage, run):
        raise NodeError(f"the run folder {run} and the storage folder {storage} overlap; the "
                        f"run folder is disposable and must be apart from storage: choose "
                        f"another --run-dir")


def prepare_run_dir(run_dir: Path) -> Path:
    """Make ``run_dir`` the node's private run folder and return it with every link resolved.

    It is created if missing. An existing folder must belong to this user, and be empty or
    already a node's run folder (it holds ``RUN_MARKER``): a folder with someone's files is
    refused before anything in it is touched, since a node cleans its run folder.

    :raises NodeError: naming the folder, what is wrong and what to do.
    """
    path = Path(os.path.realpath(run_dir))
    try:
        path.mkdir(parents=True, exist_ok=True)
        info = os.lstat(path)
        entries = sorted(os.listdir(path))
    except OSError as exc:
        raise NodeError(f"cannot use the run folder {path}: {exc.strerror}; choose one with "
                        f"--run-dir") from None
    if not stat.S_ISDIR(info.st_mode):
        raise NodeError(f"the run folder {path} is not a folder; choose one with --run-dir")
    if info.st_uid != os.getuid():
        raise NodeError(f"the run folder {path} belongs to user {info.st_uid}, not to this "
                        f"one ({os.getuid()}): a node's run folder is private; choose one of "
                        f"your own with --run-dir")
    if RUN_MARKER not in entries and [e for e in entries if e != RUN_LOCK]:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise NodeError(f"the run folder {path} holds files no node made ({shown}); a node "
                        f"cleans its run folder, so it must be empty or new: choose another "
                        f"with --run-dir")
    try:
        os.chmod(path, 0o700)
        os.close(os.open(path / RUN_MARKER, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    except OSError as exc:
        raise NodeError(f"cannot use the run folder {path}: {exc.strerror} ({RUN_MARKER}); "
                        f"choose one with --run-dir") from None
    return path


def open_run_lock(run_dir: Path) -> int:
    """Open (creating it, never following a link, never truncating) the run folder's lock
    file; return its descriptor."""
    try:
        return os.open(run_dir / RUN_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise NodeError(f"cannot open {run_dir / RUN_LOCK}: {exc.strerror} (a link there is "
                        f"refused); remove it or choose another --run-dir") from None


def clean_run_dir(run_dir: Path) -> list[str]:
    """Remove what an earlier node left in ``run_dir`` (its code, uploads and engine sockets),
    and nothing else; mark the folder as a node's. Returns the names of entries kept that the
    node did not make (say them: they do not belong in a run folder)."""
    foreign: list[str] = []
    for entry in run_dir.iterdir():
        name = entry.name
        if name in (RUN_LOCK, RUN_MARKER):
            continue
        if name in RUN_FOLDERS and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        elif ENGINE_SOCKET.match(name) and _is_socket(entry):
            with contextlib.suppress(OSError):
                entry.unlink()
        else:
            foreign.append(name)
    return sorted(foreign)


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False
