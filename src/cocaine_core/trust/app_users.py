"""Apps as users of their own: the node's side of isolation (``cocaine node --app-uids``).

A node that runs as root gives each app an unprivileged uid (and the gid of the same number)
from a range, for the node's life: a redeploy keeps it. Before an isolated app's template
starts, its unpacked code is made readable by its group only and its engine socket
connectable by it; the template then confines itself (``sandbox.py``) before it loads the
app's code. A uid is never one the machine already uses: one with a passwd or group entry,
or one any process runs as, is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import logging
import os
import pwd
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from cocaine_core.appinfo import AppUser
from cocaine_core.errors import AppLoadError, NodeError

if TYPE_CHECKING:
    from cocaine_core.appinfo import AppInfo

log = logging.getLogger("cocaine.node")

#: The range of ``--app-uids`` when the node runs as root and none is given.
DEFAULT_APP_UIDS = (61000, 61999)
#: The uids a range may hold: above the usual login users, below the overflow and -1.
UID_BOUNDS = (1000, 2**31 - 2)
#: The widest range (uids).
MAX_RANGE_WIDTH = 1_000_000
#: Most entries of a code folder prepared for its app (the archive's member limit bounds
#: it anyway).
MAX_CODE_ENTRIES = 2_000_000


def parse_app_uids(value: object, euid: int | None = None) -> tuple[int, int] | None:
    """The range ``--app-uids`` gives: ``LOW-HIGH``, ``none`` (no isolation) or None (the
    default: ``DEFAULT_APP_UIDS`` as root, no isolation otherwise).

    :raises NodeError: naming ``--app-uids``, for a bad range or a range given without root.
    """
    euid = os.geteuid() if euid is None else euid
    if value is None:
        return DEFAULT_APP_UIDS if euid == 0 else None
    text = str(value).strip()
    if text.lower() == "none":
        return None
    low_text, dash, high_text = text.partition("-")
    low, high = _number(low_text), _number(high_text)
    lowest, highest = UID_BOUNDS
    if not dash or low is None or high is None or not lowest <= low <= high <= highest \
            or high - low + 1 > MAX_RANGE_WIDTH:
        raise NodeError(f"--app-uids (or 'app-uids' in the config file) must be LOW-HIGH, "
                        f"uids from {lowest} to {highest}, LOW <= HIGH, at most "
                        f"{MAX_RANGE_WIDTH:,} wide (e.g. {DEFAULT_APP_UIDS[0]}-"
                        f"{DEFAULT_APP_UIDS[1]}), or none; got {text!r}")
    if euid != 0:
        raise NodeError(f"--app-uids {text} needs the node to run as root (it runs as uid "
                        f"{euid}): only root can run apps as other users; leave it out")
    return low, high


def _number(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdecimal() and len(text) <= 10 else None


def key_folder() -> Path:
    """The node user's key folder: ``$XDG_CONFIG_HOME/cocaine`` or ``~/.config/cocaine``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cocaine"


#: Where nodes of one machine claim the uids they hand out (a lock file each, held for the
#: node's life): two nodes never give one uid to two apps, whose processes could then signal
#: each other, and whose removal would stop the other's (every process of an app's uid is).
UID_CLAIMS = Path("/run/cocaine-uids")


def claim_uid(uid: int, folder: Path = UID_CLAIMS) -> IO[bytes] | None:
    """Lock ``uid`` (the open file holding the lock: closing it, or the end of the process
    however it ends, lets it go), or None if another node of this machine holds it."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(folder / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return os.fdopen(fd, "rb", buffering=0)


class AppUsers:
    """Hands each app name a uid of its own from ``low..high``, for the node's life; a uid
    is claimed machine-wide first (``claim_uid``), so nodes sharing a machine never share
    one."""

    def __init__(self, low: int, high: int, hide: list[Path] | None = None,
                 claims: Path = UID_CLAIMS) -> None:
        self.low, self.high = low, high
        self.claims = claims
        #: The lock of each uid this node handed out (held until the node ends).
        self._claimed: dict[int, IO[bytes]] = {}
        self._users: dict[str, AppUser] = {}
        self._hide = tuple(str(Path(os.path.realpath(path))) for path in
                           [*(hide or []), key_folder()])

    @property
    def setting(self) -> str:
        """The range as ``--app-uids`` spells it."""
        return f"{self.low}-{self.high}"

    def user_for(self, name: str) -> AppUser:
        """The user app ``name`` runs as (allocated at its first start).

        :raises NodeError: if no uid of the range is free, naming ``--app-uids``.
        """
        user = self._users.get(name)
        if user is None:
            uid = self._free_uid()
            user = AppUser(uid, uid, self._hide)
            self._users[name] = user
            log.info("app %s runs as uid %d", name, user.uid)
        return user

    def _free_uid(self) -> int:
        taken = {user.uid for user in self._users.values()}
        running = _running_uids()
        for uid in range(self.low, self.high + 1):
            if uid in taken or uid in running or _known(uid):
                continue
            claim = claim_uid(uid, self.claims)
            if claim is None:  # another node of this machine hands it out
                continue
            self._claimed[uid] = claim
            return uid
        raise NodeError(f"no uid is free in --app-uids {self.setting} for another app "
                        f"({len(taken)} app(s) hold one; the others have a passwd or group "
                        f"entry, run processes or are another node's): give the node a "
                        f"wider --app-uids range, or other nodes of this machine other ones")

    def info(self) -> dict[str, int]:
        """Each app's uid, by app name."""
        return {name: user.uid for name, user in sorted(self._users.items())}


def _known(uid: int) -> bool:
    """Whether the machine has a user or a group with this number."""
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            continue
    return False


def _running_uids() -> set[int]:
    """Every uid any live process runs as (real, effective, saved or filesystem)."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{entry}/status", "rb") as f:
            for line in f:
                if line.startswith((b"Uid:", b"Gid:")):
                    found.update(int(n) for n in line.split()[1:5])
    return found


def grant_code(root: Path, gid: int) -> None:
    """Make the code folder ``root`` readable (never writable) by group ``gid`` and nobody
    else: owner root, group ``gid``, ``g+rX``, ``g-w``, ``o-rwx``; links are left as they
    are and never followed."""
    count = 0
    for folder, folders, files in os.walk(root):
        for name in [None, *folders, *files]:
            path = folder if name is None else os.path.join(folder, name)
            count += 1
            if count > MAX_CODE_ENTRIES:
                raise NodeError(f"the code folder {root} holds more than {MAX_CODE_ENTRIES} "
                                f"entries")
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                continue
            mode = stat.S_IMODE(info.st_mode) & 0o700  # no setuid, sticky, g or o bits
            mode |= 0o040 | (0o010 if stat.S_ISDIR(info.st_mode) or mode & 0o100 else 0)
            os.chown(path, 0, gid, follow_symlinks=False)
            os.chmod(path, mode)


def grant_socket(path: Path, gid: int) -> None:
    """Let group ``gid`` (and root) connect to the unix socket at ``path``."""
    os.chown(path, 0, gid, follow_symlinks=False)
    os.chmod(path, 0o660)


def keep_private(*folders: Path) -> None:
    """Make each existing folder root's alone (0700), whatever an earlier run left."""
    for folder in folders:
        with contextlib.suppress(FileNotFoundError):
            if os.stat(folder).st_mode & 0o077:
                os.chmod(folder, 0o700)


def tighten_storage(root: Path) -> None:
    """Make a storage folder others could read private (0700), and say so."""
    try:
        mode = stat.S_IMODE(os.stat(root).st_mode)
    except OSError:
        return
    if mode & 0o077:
        os.chmod(root, 0o700)
        log.warning("the storage folder %s was readable by others (mode %o): made it 0700, "
                    "so that apps, which run as users of their own, cannot read it", root, mode)


def isolation_config(app: AppInfo, endpoint: str) -> dict[str, Any] | None:
    """Get an isolated app's code and engine socket ready for its user, and return what its
    template's ``configure`` says of isolation (None: the app is not isolated). Blocking:
    run it in a thread.

    :raises AppLoadError: if the code is not a deployed app's (its folder is not the
        node's to hand over).
    """
    user = app.user
    if user is None:
        return None
    code = Path(os.path.realpath(app.root or app.manifest.root))
    code_dir = Path(os.path.realpath(app.run_dir)) / "code"
    if code_dir not in code.parents:
        raise AppLoadError(f"app '{app.name}' cannot run as a user of its own: its code "
                           f"({code}) is not a deployed copy in the node's run folder",
                           code_fault=False)
    reach = [str(code)]
    try:
        keep_private(Path(app.run_dir), code_dir)
        grant_code(code, user.gid)
        if endpoint.startswith("ipc://"):
            grant_socket(Path(endpoint[len("ipc://"):]), user.gid)
            reach.append(endpoint[len("ipc://"):])
    except OSError as exc:
        raise AppLoadError(f"app '{app.name}': cannot hand its code or socket to its user "
                           f"(uid {user.uid}): {exc.filename}: {exc.strerror}",
                           code_fault=False) from None
    return {"uid": user.uid, "gid": user.gid, "reach": reach,
            "private": [str(app.run_dir)], "hide": list(user.hide)}


#: The node's environment variables an isolated app keeps (by name, or by prefix when the
#: name ends in ``*``): what a locale, a Python and cocaine's plugin loading need; no
#: operator's secrets, no paths of the node's own (``TMPDIR``, ``XDG_*``).
APP_ENVIRONMENT = ("PATH", "LANG", "LANGUAGE", "LC_*", "TZ", "TERM", "PYTHON*",
                   "COCAINE_LOAD_PLUGINS", "COCAINE_DISABLE_PLUGINS", "COCAINE_STRICT_PLUGINS",
                   "VIRTUAL_ENV")


def app_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What of the node's ``environ`` an isolated app's processes get (``APP_ENVIRONMENT``)."""
    def kept(name: str) -> bool:
        return any(name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern
                   for pattern in APP_ENVIRONMENT)

    return {name: value for name, value in environ.items() if kept(name)}
