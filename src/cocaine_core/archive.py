"""Packing an app's code for a deploy, and unpacking it safely on the node.

``pack_source`` makes a gzip'ed tar of ``args.source`` (a file or a folder), named by its base
name inside the archive. ``check_archive`` refuses, before anything is written, an archive with
absolute paths, ``..`` members, links that lead outside it once every link exists (followed the
way the kernel will), special or sparse files, paths too deep or too long, header members (PAX,
GNU long names) too big, or more members or bytes than the node's ``Limits``; ``unpack`` then
extracts exactly the members checked, with the standard library's ``data`` filter as a second
line of defence, and removes what it wrote if anything fails.

Header members (PAX, GNU long names) are checked before ``tarfile`` reads them: see
``cocaine_core.tarstream``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import posixpath
import re
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

from cocaine_core.errors import NodeError
from cocaine_core.tarstream import (
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_UNPACKED,
    MAX_DIGITS,
    MAX_GLOBAL_HEADERS,
    MAX_HEADER,
    MAX_HEADERS_IN_A_ROW,
    Limits,
    open_tar,
    shown,
    size,
)

__all__ = ["DEFAULT_MAX_MEMBERS", "DEFAULT_MAX_UNPACKED", "MAX_DIGITS", "MAX_GLOBAL_HEADERS",
           "MAX_HEADER", "MAX_HEADERS_IN_A_ROW", "MAX_LINK_HOPS", "MAX_NAME_BYTES",
           "MAX_PATH_BYTES", "MAX_PATH_DEPTH", "MAX_STEPS_PER_MEMBER", "SKIP", "Limits",
           "check_archive", "pack_source", "sha256", "unpack"]

SKIP = {"__pycache__", ".git", ".hg", ".svn", ".venv", ".mypy_cache", ".pytest_cache",
        ".ruff_cache"}
#: Links followed to resolve one path, as the kernel's own bound (``ELOOP`` past 40).
MAX_LINK_HOPS = 40
#: Folders a member lies in, once its links are followed (deeper trees broke the node's own
#: recursive removal of them), bytes of a member's path or link target, and of one name in it.
MAX_PATH_DEPTH = 64
MAX_PATH_BYTES = 1024
MAX_NAME_BYTES = 255
#: Steps (names of a path or of a link's target) following every member's links may take,
#: for each member the node allows: bounds the time links may cost, whatever they are.
MAX_STEPS_PER_MEMBER = 100


def pack_source(source: Path, *, contents: bool = False) -> bytes:
    """A ``.tar.gz`` of ``source`` (file or folder), caches and VCS folders left out; with
    ``contents``, of what the folder ``source`` holds (its entries at the archive's top).

    The same files give the same bytes (no timestamps in the gzip header), so deploying
    unchanged code twice gives the same checksum.
    """
    buffer = io.BytesIO()

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if any(part in SKIP for part in parts) or info.name.endswith((".pyc", ".pyo")):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for entry in sorted(source.iterdir()) if contents else [source]:
            tar.add(str(entry), arcname=entry.name, filter=keep)
    return gzip.compress(buffer.getvalue(), compresslevel=6, mtime=0)


#: Names that look like secrets: warned of when a whole folder is packed.
SECRET_NAMES = re.compile(r"(^|/)(\.ssh|\.aws|\.gnupg|\.netrc|\.env|id_(rsa|dsa|ecdsa|ed25519)"
                          r"[^/]*|[^/]*\.(pem|key|p12|pfx))(/|$)")


def survey(folder: Path) -> tuple[int, int, list[str]]:
    """What packing ``folder``'s contents would take: files, bytes, and the paths that look
    like secrets (keys, ``.env``), without reading any file. Raises OSError as walking does."""
    files = size = 0
    secrets: list[str] = []
    for top, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if name not in SKIP]
        for name in names:
            path = os.path.join(top, name)
            relative = os.path.relpath(path, folder)
            if name.endswith((".pyc", ".pyo")):
                continue
            files += 1
            with contextlib.suppress(OSError):
                size += os.lstat(path).st_size
            if SECRET_NAMES.search(relative) and len(secrets) < 10:
                secrets.append(relative)
    return files, size, secrets


def sha256(data: bytes) -> str:
    """The hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def check_archive(data: bytes, limits: Limits | None = None) -> list[str]:
    """Every member name of a safe archive; NodeError naming the first unsafe member or the
    limit it passes. Nothing is written, and at most ``limits.stream`` bytes are
    decompressed (a bomb is refused as soon as it passes the limit)."""
    limits = limits or Limits()
    with open_tar(data, limits) as tar:
        return [member.name for member in _checked_members(tar, limits)]


def unpack(data: bytes, destination: Path, limits: Limits | None = None,
           cancelled: Callable[[], bool] | None = None) -> None:
    """Check, then extract ``data`` into ``destination`` (created). On any failure (an unsafe
    or damaged archive, a full disk, ``cancelled()`` turning true) ``destination`` is removed
    and NodeError says why."""
    limits = limits or Limits()
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with open_tar(data, limits) as tar:
            members = _checked_members(tar, limits)

            def each() -> Iterator[tarfile.TarInfo]:
                for member in members:
                    if cancelled is not None and cancelled():
                        raise NodeError("unpacking the code archive was cancelled")
                    yield member

            try:
                tar.extractall(destination, members=each(), filter="data")
            except (OSError, tarfile.TarError, KeyError) as exc:
                raise NodeError(f"the code archive could not be unpacked: {exc}") from None
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise


def _checked_members(tar: tarfile.TarFile, limits: Limits) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    kinds: dict[str, str] = {}
    links: dict[str, str] = {}
    total = 0
    for member in tar:  # each member is checked before the stream moves past its contents
        if len(members) >= limits.members:
            raise NodeError(f"the code archive has more than {limits.members} members, this "
                            f"node's limit (cocaine node --max-archive-members)")
        name = _check_member(member)
        member.pax_headers = {}  # applied already; kept, they would hold up to 1 KiB a member
        total += max(member.size, 0) if member.isfile() else 0
        if total > limits.unpacked:
            raise NodeError(f"the code archive unpacks to more than {size(limits.unpacked)}, "
                            f"this node's limit (cocaine node --max-unpacked)")
        kind = "dir" if member.isdir() else "link" if member.issym() else \
            "hard" if member.islnk() else "file"
        if name in kinds and not (kind == "dir" and kinds[name] == "dir"):
            raise NodeError(f"the archive member {shown(member.name)} appears twice; refused")
        kinds[name] = kind
        if kind == "link":
            links[name] = member.linkname
        members.append(member)
    if not members:
        raise NodeError("the code archive is empty")
    written: set[str] = set()  # files (and hard links to them) extracted so far, in order
    steps = [(len(members) + 100) * MAX_STEPS_PER_MEMBER]
    for member in members:  # where each will be once every link exists
        name = posixpath.normpath(member.name)
        where = _resolve(name, links, member.name, steps)
        if where.count("/") >= MAX_PATH_DEPTH:
            raise NodeError(f"the archive member {shown(member.name)} lies "
                            f"{where.count('/') + 1} folders deep once its links are followed, "
                            f"more than {MAX_PATH_DEPTH}; refused")
        if member.islnk():
            target = _resolve(posixpath.normpath(member.linkname), links, member.name, steps)
            if target not in written:
                raise NodeError(f"the archive member {shown(member.name)} is a hard link to "
                                f"{shown(member.linkname)}, which is not a file of the archive "
                                f"before it; refused")
        if member.isfile() or member.islnk():
            written.add(name)
    return members


def _check_member(member: tarfile.TarInfo) -> str:
    name, quoted = member.name, shown(member.name)
    _check_path(name, quoted, "path")
    if name.startswith("/") or posixpath.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise NodeError(f"the archive member {quoted} has an absolute path; refused")
    if ".." in Path(name).parts:
        raise NodeError(f"the archive member {quoted} climbs out with '..'; refused")
    if member.size < 0:  # a PAX 'size' may say so
        raise NodeError(f"the archive member {quoted} has a negative size; refused")
    normal = posixpath.normpath(name)
    if member.issym() or member.islnk():
        if normal == ".":
            raise NodeError(f"the archive member {quoted} would replace the folder it is "
                            f"unpacked into with a link; refused")
        if posixpath.isabs(member.linkname) or not member.linkname:
            raise NodeError(f"the archive member {quoted} links outside the archive "
                            f"({shown(member.linkname)}); refused")
        _check_path(member.linkname, quoted, "link target")
    elif not (member.isfile() or member.isdir()):
        raise NodeError(f"the archive member {quoted} is a special file; refused")
    return normal


def _check_path(path: str, shown: str, what: str) -> None:
    """Refuse a path (or link target) with a NUL byte (a PAX header can carry one; no file
    system takes it), too long, too deep, or with a name too long."""
    if "\0" in path:
        raise NodeError(f"the archive member {shown} has a {what} with a NUL byte; refused")
    size = len(path) if path.isascii() else len(path.encode("utf-8", "surrogatepass"))
    if size > MAX_PATH_BYTES:
        raise NodeError(f"the archive member {shown} has a {what} of {size} bytes, more than "
                        f"{MAX_PATH_BYTES}; refused")
    if size <= MAX_NAME_BYTES and path.count("/") < MAX_PATH_DEPTH:
        return  # the common case, quickly
    names = [name for name in path.split("/") if name not in ("", ".")]
    if len(names) > MAX_PATH_DEPTH:
        raise NodeError(f"the archive member {shown} has a {what} {len(names)} folders deep, "
                        f"more than {MAX_PATH_DEPTH}; refused")
    longest = max((len(name.encode("utf-8", "surrogatepass")) for name in names), default=0)
    if longest > MAX_NAME_BYTES:
        raise NodeError(f"the archive member {shown} has a {what} with a name of {longest} "
                        f"bytes, more than {MAX_NAME_BYTES}; refused")


def _resolve(path: str, links: dict[str, str], member: str, steps: list[int]) -> str:
    """Where ``path`` leads once the archive is unpacked, following its links the way the
    kernel will (at most ``MAX_LINK_HOPS``); NodeError if it leaves the archive or ``steps[0]``
    (what is left of the archive's steps) runs out."""
    parts: list[str] = []
    todo = list(reversed(path.split("/")))
    hops = 0
    steps[0] -= len(todo)
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise NodeError(f"the archive member {shown(member)} links outside the "
                                f"archive (through its links, {shown(path)} leads above it); "
                                f"refused")
            parts.pop()
            continue
        parts.append(part)
        target = links.get("/".join(parts))
        if target is None:
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            raise NodeError(f"the archive member {shown(member)} goes through more than "
                            f"{MAX_LINK_HOPS} links (a loop?); refused")
        parts.pop()
        if target.startswith("/"):
            raise NodeError(f"the archive member {shown(member)} links outside the archive "
                            f"({shown(target)}); refused")
        todo.extend(reversed(target.split("/")))
        steps[0] -= target.count("/") + 1
        if steps[0] < 0:
            raise NodeError(f"the archive member {shown(member)}: following the archive's links "
                            f"takes more than {MAX_STEPS_PER_MEMBER} steps a member; refused")
    return "/".join(parts) or "."


