"""The ``files`` storage: ``files:///path`` keeps each value in ``<path>/<namespace>/<key>``.

Every write goes to a temporary file in the same folder, is fsync'ed, then renamed over the
old one (and the folder fsync'ed), so a kill at any moment leaves the old or the new value,
never half of one.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cocaine_core.errors import StorageError

KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
NAMESPACE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
#: Seconds after which a temporary file is surely no write in progress (a write takes
#: milliseconds; even a 4 GiB one on a slow disk, minutes).
STALE_TEMPORARY = 3600.0


class FileStorage:
    """Values as files in one folder per namespace."""

    def __init__(self, uri: str) -> None:
        parts = urlsplit(uri)
        if parts.scheme != "files" or parts.netloc not in ("", "localhost"):
            raise StorageError(f"a files storage URI is files:///absolute/path, got {uri!r}")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise StorageError(f"a files storage needs an absolute path, got {uri!r}")
        self.uri = uri
        self.root = Path(path)
        try:
            # Private from the start: apps that run as users of their own must not read it.
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the storage folder {self.root}: "
                               f"{exc.strerror}") from None
        self._clean_temporaries()

    def _path(self, namespace: str, key: str) -> Path:
        if not NAMESPACE.fullmatch(namespace):
            raise StorageError(f"bad storage namespace {namespace!r}")
        if not KEY.fullmatch(key):
            raise StorageError(f"bad storage key {key!r}: letters, digits, '_', '.', '@', '-'")
        return self.root / namespace / key

    def put(self, namespace: str, key: str, value: bytes) -> None:
        """Write atomically: temporary file, fsync, rename, fsync the folder."""
        path = self._path(namespace, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(value)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        _fsync_dir(path.parent)

    def get(self, namespace: str, key: str) -> bytes:
        """The value, or KeyError."""
        try:
            return self._path(namespace, key).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"{namespace}/{key}") from None

    def exists(self, namespace: str, key: str) -> bool:
        """Whether the key has a value."""
        return self._path(namespace, key).is_file()

    def keys(self, namespace: str) -> list[str]:
        """Every key, sorted (temporary files excluded)."""
        folder = self.root / namespace
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_file() and KEY.fullmatch(p.name))

    def remove(self, namespace: str, key: str) -> None:
        """Remove the key, if present."""
        path = self._path(namespace, key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            _fsync_dir(path.parent)

    def _clean_temporaries(self) -> None:
        # Left by a write that was killed before its rename: never a valid value. Only old
        # ones: another process sharing the storage (a node, `cocaine keys`) may be writing
        # one right now, and its write would fail without it.
        now = time.time()
        for temporary in self.root.glob("*/.*.tmp"):
            with contextlib.suppress(OSError):
                if now - temporary.lstat().st_mtime > STALE_TEMPORARY:
                    temporary.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
