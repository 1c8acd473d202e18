"""Packing an app's code for a deploy, and unpacking it safely on the node.

``pack_source`` makes a gzip'ed tar of ``args.source`` (a file or a folder), named by its base
name inside the archive. ``check_archive`` refuses, before anything is written, an archive with
absolute paths, ``..`` members, links pointing outside it, or special files; ``unpack`` then
extracts it with the standard library's ``data`` filter as a second line of defence.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import posixpath
import tarfile
from pathlib import Path

from cocaine_core.errors import NodeError

SKIP = {"__pycache__", ".git", ".hg", ".svn", ".venv", ".mypy_cache", ".pytest_cache",
        ".ruff_cache"}


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


def check_archive(data: bytes, max_unpacked: int = 1 << 30) -> list[str]:
    """Every member name of a safe archive; NodeError naming the first unsafe member."""
    names: list[str] = []
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                _check_member(member)
                total += max(member.size, 0)
                if total > max_unpacked:
                    raise NodeError(f"the archive unpacks to more than {max_unpacked} bytes")
                names.append(member.name)
    except tarfile.TarError as exc:
        raise NodeError(f"the code archive is not a valid tar archive: {exc}") from None
    except (EOFError, OSError) as exc:
        raise NodeError(f"the code archive is damaged: {exc}") from None
    if not names:
        raise NodeError("the code archive is empty")
    return names


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if name.startswith("/") or posixpath.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise NodeError(f"the archive member {name!r} has an absolute path; refused")
    if ".." in Path(name).parts:
        raise NodeError(f"the archive member {name!r} climbs out with '..'; refused")
    if member.issym() or member.islnk():
        target = member.linkname
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if posixpath.isabs(target) or resolved == ".." or resolved.startswith("../"):
            raise NodeError(f"the archive member {name!r} links outside the archive "
                            f"({target!r}); refused")
    elif not (member.isfile() or member.isdir()):
        raise NodeError(f"the archive member {name!r} is a special file; refused")


def unpack(data: bytes, destination: Path) -> None:
    """Check, then extract ``data`` into ``destination`` (created)."""
    check_archive(data)
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        tar.extractall(destination, filter="data")
