"""Packing an app's code for a deploy, and unpacking it safely on the node.

``pack_source`` makes a gzip'ed tar of ``args.source`` (a file or a folder), named by its base
name inside the archive. ``check_archive`` refuses, before anything is written, an archive with
absolute paths, ``..`` members, links that lead outside it once every link exists (followed the
way the kernel will), special files, or more members or bytes than the node's ``Limits``;
``unpack`` then extracts exactly the members checked, with the standard library's ``data``
filter as a second line of defence, and removes what it wrote if anything fails.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import lzma
import posixpath
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from cocaine_core.errors import NodeError

SKIP = {"__pycache__", ".git", ".hg", ".svn", ".venv", ".mypy_cache", ".pytest_cache",
        ".ruff_cache"}
#: Defaults of the node's archive limits (``cocaine node --max-unpacked``,
#: ``--max-archive-members``).
DEFAULT_MAX_UNPACKED = 512 * 2**20
DEFAULT_MAX_MEMBERS = 10_000
#: Links followed to resolve one path, as the kernel's own bound (``ELOOP`` past 40).
MAX_LINK_HOPS = 40


def pack_source(source: Path) -> bytes:
    """A ``.tar.gz`` of ``source`` (file or folder), caches and VCS folders left out.

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
        tar.add(str(source), arcname=source.name, filter=keep)
    return gzip.compress(buffer.getvalue(), compresslevel=6, mtime=0)


def sha256(data: bytes) -> str:
    """The hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


@attrs.frozen
class Limits:
    """What a node unpacks of one code archive at most (``cocaine node`` settings)."""

    #: Total bytes of the members' contents (``--max-unpacked``).
    unpacked: int = DEFAULT_MAX_UNPACKED
    #: Members: files, folders and links (``--max-archive-members``).
    members: int = DEFAULT_MAX_MEMBERS

    @property
    def stream(self) -> int:
        """Most bytes of tar stream (contents, headers, padding) read before giving up."""
        return self.unpacked + self.members * 4 * tarfile.BLOCKSIZE + 2**20


def check_archive(data: bytes, limits: Limits | None = None) -> list[str]:
    """Every member name of a safe archive; NodeError naming the first unsafe member or the
    limit it passes. Nothing is written, and at most ``limits.stream`` bytes are
    decompressed (a bomb is refused as soon as it passes the limit)."""
    limits = limits or Limits()
    with _open(data, limits) as tar:
        return [member.name for member in _checked_members(tar, limits)]


def unpack(data: bytes, destination: Path, limits: Limits | None = None,
           cancelled: Callable[[], bool] | None = None) -> None:
    """Check, then extract ``data`` into ``destination`` (created). On any failure (an unsafe
    or damaged archive, a full disk, ``cancelled()`` turning true) ``destination`` is removed
    and NodeError says why."""
    limits = limits or Limits()
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with _open(data, limits) as tar:
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


@contextlib.contextmanager
def _open(data: bytes, limits: Limits) -> Iterator[tarfile.TarFile]:
    raw: Any = io.BytesIO(data)
    if data.startswith(b"\x1f\x8b"):
        raw = gzip.GzipFile(fileobj=raw, mode="rb")
    elif data.startswith(b"BZh"):
        raw = bz2.BZ2File(raw)
    elif data.startswith(b"\xfd7zXZ\x00"):
        raw = lzma.LZMAFile(raw)  # noqa: SIM115 - closed with the tar file
    bounded: Any = _Bounded(raw, limits)
    try:
        with tarfile.open(fileobj=bounded, mode="r:") as tar:
            yield tar
    except tarfile.TarError as exc:
        raise NodeError(f"the code archive is not a valid tar archive: {exc}") from None
    except (EOFError, OSError, lzma.LZMAError, zlib.error) as exc:
        raise NodeError(f"the code archive is damaged: {exc}") from None


class _Bounded:
    """A decompressed stream that refuses to go past ``limits.stream`` bytes."""

    def __init__(self, raw: Any, limits: Limits) -> None:
        self.raw, self.limits = raw, limits
        self.name = None

    def _refuse(self) -> NodeError:
        return NodeError(f"the code archive unpacks to more than {_size(self.limits.unpacked)}, "
                         f"this node's limit (cocaine node --max-unpacked)")

    def read(self, size: int = -1) -> bytes:
        position = self.raw.tell()
        if size is None or size < 0:
            size = self.limits.stream - position + 1
        if position + size > self.limits.stream:
            raise self._refuse()
        return bytes(self.raw.read(size))

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self.raw.tell() + offset if whence == 1 else None
        if target is not None and target > self.limits.stream:
            raise self._refuse()
        return int(self.raw.seek(offset, whence))

    def tell(self) -> int:
        return int(self.raw.tell())


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
        total += max(member.size, 0) if member.isfile() else 0
        if total > limits.unpacked:
            raise NodeError(f"the code archive unpacks to more than {_size(limits.unpacked)}, "
                            f"this node's limit (cocaine node --max-unpacked)")
        kind = "dir" if member.isdir() else "link" if member.issym() else \
            "hard" if member.islnk() else "file"
        if name in kinds and not (kind == "dir" and kinds[name] == "dir"):
            raise NodeError(f"the archive member {member.name!r} appears twice; refused")
        kinds[name] = kind
        if kind == "link":
            links[name] = member.linkname
        members.append(member)
    if not members:
        raise NodeError("the code archive is empty")
    written: set[str] = set()  # files (and hard links to them) extracted so far, in order
    for member in members:  # where each will be once every link exists
        name = posixpath.normpath(member.name)
        _resolve(name, links, member.name)
        if member.islnk():
            target = _resolve(posixpath.normpath(member.linkname), links, member.name)
            if target not in written:
                raise NodeError(f"the archive member {member.name!r} is a hard link to "
                                f"{member.linkname!r}, which is not a file of the archive "
                                f"before it; refused")
        if member.isfile() or member.islnk():
            written.add(name)
    return members


def _check_member(member: tarfile.TarInfo) -> str:
    name = member.name
    if name.startswith("/") or posixpath.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise NodeError(f"the archive member {name!r} has an absolute path; refused")
    if ".." in Path(name).parts:
        raise NodeError(f"the archive member {name!r} climbs out with '..'; refused")
    normal = posixpath.normpath(name)
    if member.issym() or member.islnk():
        if normal == ".":
            raise NodeError(f"the archive member {name!r} would replace the folder it is "
                            f"unpacked into with a link; refused")
        if posixpath.isabs(member.linkname) or not member.linkname:
            raise NodeError(f"the archive member {name!r} links outside the archive "
                            f"({member.linkname!r}); refused")
    elif not (member.isfile() or member.isdir()):
        raise NodeError(f"the archive member {name!r} is a special file; refused")
    return normal


def _resolve(path: str, links: dict[str, str], member: str) -> str:
    """Where ``path`` leads once the archive is unpacked, following its links the way the
    kernel will (at most ``MAX_LINK_HOPS``); NodeError if it leaves the archive."""
    parts: list[str] = []
    todo = list(reversed(path.split("/")))
    hops = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise NodeError(f"the archive member {member!r} links outside the archive "
                                f"(through its links, {path!r} leads above it); refused")
            parts.pop()
            continue
        parts.append(part)
        target = links.get("/".join(parts))
        if target is None:
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            raise NodeError(f"the archive member {member!r} goes through more than "
                            f"{MAX_LINK_HOPS} links (a loop?); refused")
        parts.pop()
        if target.startswith("/"):
            raise NodeError(f"the archive member {member!r} links outside the archive "
                            f"({target!r}); refused")
        todo.extend(reversed(target.split("/")))
    return "/".join(parts) or "."


def _size(count: int) -> str:
    return f"{count / 2**20:g} MiB ({count} bytes)" if count >= 2**20 else f"{count} bytes"
