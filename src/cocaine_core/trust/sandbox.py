"""The template's side of isolation: confine this process before it loads the app's code.

The node starts an isolated app's template as root, as any other; the ``configure`` message
says which user the app runs as and what it must reach (``app_users.isolation_config``).
After importing the language's runtime (our own code) and before loading the app (its code),
the template calls ``confine``, which:

1. makes a mount namespace of its own (``unshare(CLONE_NEWNS)``, every mount private);
2. opens the *chains* to what the app must reach: its code, its engine socket, the Python
   installation and every folder a module was imported from. A folder on the way that the
   app's user could not search (``/root``, mode 0700), or that lies in the node's run folder,
   is replaced by an empty tmpfs (mode 0711: passable, not listable) holding only the
   entries on the way, each bind-mounted from the original. So in the app's view ``/root``
   holds only ``.pyenv``, and the run folder only this app's code folder and socket: other
   apps' code and sockets do not exist there;
3. mounts an empty, read-only, mode-0 folder over the storage and key folders;
4. mounts a ``/proc`` of its own that shows only the app's own processes (where the kernel
   allows one per mount, 5.8 and later; else the machine's stays);
5. drops to the app's uid and gid for good (no supplementary groups, ``no_new_privs``), and
   checks it holds no capability left.

The slaves, forked from the template, inherit all of it. Nothing here falls open: any step
that fails raises ``SandboxError`` and the template refuses to load the app.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
import sys
from collections.abc import Iterable
from typing import Any

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
#: Most entries the reach set may hold (every module's folder counts once).
MAX_REACH = 10_000
#: What to do when isolation cannot work here.
OPT_OUT = ("or run apps as the node's own user with cocaine node --app-uids none (not "
           "recommended: every app can then read storage, keys and other apps)")

_LEAF = "\0"  # marks a trie node that is itself a reached path
#: The world-writable folders each isolated app gets a tmpfs of its own on, and their
#: options: bytes and files (inodes, kernel memory ``size`` does not count) both bounded;
#: their pages count against the app's memory limit, when it has one.
TMP_FOLDERS = {"/tmp": "mode=1777,size=256m,nr_inodes=16k",
               "/var/tmp": "mode=1777,size=256m,nr_inodes=16k",
               "/dev/shm": "mode=1777,size=64m,nr_inodes=4k",
               "/run/lock": "mode=1777,size=1m,nr_inodes=1k"}
#: The scratch folders covered while opening the chains (this process confines itself once).
_tmp_covered: set[str] = set()


class SandboxError(Exception):
    """Confining the template failed; the app must not load."""


def confine(spec: dict[str, Any], root: str) -> None:
    """Confine this process as ``spec`` says (see the module's docstring), then enter
    ``root``, the app's code folder.

    :raises SandboxError: naming the step that failed and what to do.
    """
    uid, gid = _ids(spec)
    private = _real_paths(spec.get("private") or [])
    hide = _real_paths(spec.get("hide") or [])
    reach = _reach(_real_paths(spec.get("reach") or []), private + hide)
    libc = ctypes.CDLL(None, use_errno=True)
    _call(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)",
          "the node needs CAP_SYS_ADMIN to isolate apps (a container may lack it): give it "
          "that capability, ")
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE, None, "making / private")
    # A folder to hide that lies on the way to something reached is opened like the run
    # folder: only the way through shows.
    covered = private + [path for path in hide if any(_inside(r, path) for r in reach)]
    _open_chains(libc, _trie(reach), "/", covered, uid, gid)
    for path in hide:
        if os.path.isdir(path) and not os.path.islink(path) and path not in covered:
            _mount(libc, "tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                   "mode=0,size=4k", f"hiding {path}")
    # Scratch folders of the app's own: nothing another app (or user) leaves or reads there.
    for path, options in TMP_FOLDERS.items():
        if path not in _tmp_covered and os.path.isdir(path) and not os.path.islink(path):
            _mount(libc, "tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, options,
                   f"making {path} the app's own")
    _tmp_covered.clear()
    # Best effort: a kernel before 5.8 shares one /proc per pid namespace, and a hidepid
    # there would change the whole machine's; it refuses "invisible" there.
    with contextlib.suppress(SandboxError):
        _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
               "hidepid=invisible", "mounting /proc")
    _drop(libc, uid, gid)
    # Its home is its own /tmp: writable (~/.cache works), private, gone with the app.
    os.environ.update({"HOME": "/tmp", "USER": str(uid), "LOGNAME": str(uid)})
    try:
        os.chdir(root)
    except OSError as exc:
        raise SandboxError(f"isolating the app: its code folder {root} is out of its reach "
                           f"({exc.strerror})") from None


def _ids(spec: dict[str, Any]) -> tuple[int, int]:
    uid, gid = spec.get("uid"), spec.get("gid")
    for name, value in (("uid", uid), ("gid", gid)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**31 - 1:
            raise SandboxError(f"isolating the app: its {name} {value!r} is not a uid above 0")
    assert isinstance(uid, int) and isinstance(gid, int)
    return uid, gid


def _real_paths(paths: Iterable[object]) -> list[str]:
    return [os.path.realpath(str(path)) for path in paths if path]


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _reach(given: list[str], excluded: list[str]) -> list[str]:
    """The paths to keep reachable: ``given`` (the code and the socket) and this
    interpreter's installation and import folders, except any inside ``excluded``."""
    found = set(given)
    candidates: list[str] = [sys.base_prefix, sys.prefix, *sys.path]
    for module in list(sys.modules.values()):
        where = getattr(module, "__file__", None)
        if isinstance(where, str):
            candidates.append(os.path.dirname(where))
    for path in candidates:
        if path and os.path.isabs(path):
            real = os.path.realpath(path)
            if os.path.exists(real) and not any(_inside(real, f) for f in excluded):
                found.add(real)
    if len(found) > MAX_REACH:
        raise SandboxError(f"isolating the app: more than {MAX_REACH} folders to reach")
    return sorted(found)


def _trie(paths: list[str]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in paths:
        node = root
        for part in [p for p in path.split("/") if p]:
            node = node.setdefault(part, {})
        node[_LEAF] = True
    return root


def _searchable(path: str, uid: int, gid: int) -> bool:
    info = os.stat(path)
    bit = (stat.S_IXUSR if info.st_uid == uid else
           stat.S_IXGRP if info.st_gid == gid else stat.S_IXOTH)
    return bool(info.st_mode & bit)


def _open_chains(libc: Any, node: dict[str, Any], path: str, covered: list[str], uid: int,
                 gid: int) -> None:
    """Make every path of the trie ``node`` (at ``path``) reachable by ``uid``/``gid``."""
    children = sorted(name for name in node if name != _LEAF)
    if not children:
        return
    try:
        cover = path != "/" and _LEAF not in node and (
            any(_inside(path, folder) for folder in covered) or not _searchable(path, uid, gid))
    except OSError as exc:
        raise SandboxError(f"isolating the app: cannot read {path}: {exc.strerror}") from None
    if cover or path in TMP_FOLDERS:
        # A scratch folder on the way (a run folder in /tmp) becomes the app's own too,
        # holding the way through.
        _cover(libc, path, children, TMP_FOLDERS.get(path, "mode=0711,size=64k"))
        if path in TMP_FOLDERS:
            _tmp_covered.add(path)
    for name in children:
        _open_chains(libc, node[name], os.path.join(path, name), covered, uid, gid)


def _cover(libc: Any, folder: str, names: list[str], options: str) -> None:
    """Mount an empty tmpfs (``options``) on ``folder`` holding only ``names``, each the
    original."""
    opened: list[tuple[str, int, bool]] = []
    try:
        for name in names:
            fd = os.open(os.path.join(folder, name), os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
            opened.append((name, fd, stat.S_ISDIR(os.fstat(fd).st_mode)))
        # 0711: passable, not listable, as the folder it stands for was to this user.
        _mount(libc, "tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, options,
               f"covering {folder}")
        for name, fd, is_folder in opened:
            target = os.path.join(folder, name)
            if is_folder:
                os.mkdir(target, 0o755)
            else:
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
            _mount(libc, f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC, None,
                   f"binding {target}")
    except OSError as exc:
        raise SandboxError(f"isolating the app: covering {folder}: {exc.strerror}") from None
    finally:
        for _, fd, _ in opened:
            os.close(fd)


def _mount(libc: Any, source: str | None, target: str, kind: str | None, flags: int,
           data: str | None, what: str) -> None:
    def arg(text: str | None) -> bytes | None:
        return None if text is None else os.fsencode(text)

    _call(libc.mount(arg(source), arg(target), arg(kind), ctypes.c_ulong(flags), arg(data)),
          f"{what} (mount)", "")


def _call(result: int, what: str, advice: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise SandboxError(f"isolating the app failed: {what}: {os.strerror(errno)}; "
                           f"{advice}{OPT_OUT}")


def _drop(libc: Any, uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` for good and check that nothing of root is left."""
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise SandboxError(f"isolating the app failed: becoming uid {uid}: "
                           f"{exc.strerror}; {OPT_OUT}") from None
    _call(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)", "")
    # setuid left the template undumpable, and so it stays: no slave (running the app's
    # handlers) may trace it or take its pipe to the node. Each slave makes itself dumpable
    # again (``become_dumpable``), so that it owns its /proc files (its oom_score_adj).
    status = _status()
    if (os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid)
            or os.getgroups() or status.get("CapEff", "1").strip("0")
            or status.get("CapPrm", "1").strip("0") or status.get("NoNewPrivs") != "1"):
        raise SandboxError(f"isolating the app failed: after dropping to uid {uid} the "
                           f"process still holds privileges ({status}); {OPT_OUT}")


def become_dumpable() -> None:
    """Make this process (a slave just forked from an undumpable template) own its /proc
    files again; nothing to do where it already does."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)


def _status() -> dict[str, str]:
    fields: dict[str, str] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("CapEff", "CapPrm", "NoNewPrivs"):
                fields[key] = value.strip()
    return fields
