"""What a node keeps of its apps in storage, and the code it unpacks to run them.

Namespace ``apps`` holds one JSON record per app (manifest, checksum, version, time);
namespace ``code`` holds the packed code as ``<name>@<sha256[:16]>``. A deploy writes the code
first and the record last, so the record is the commit point: after a kill at any moment the
storage holds the old app or the new one, and code that no record points to is removed at the
next start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from cocaine_core import archive
from cocaine_core.errors import NodeError, StorageError, StorageUnavailable
from cocaine_core.manifest import check_app_name
from cocaine_core.storages import ConditionalStorage, Storage

log = logging.getLogger("cocaine.store")

#: What a stored code checksum and version may be (a storage others write to may hold
#: anything: a record that is not one is skipped, never followed).
SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_VERSION = 2**53
#: How deep a stored manifest may nest (a real one nests four or five levels).
MAX_DEPTH = 32


@attrs.frozen
class AppRecord:
    """One deployed app as stored: its manifest (as sent), code checksum and version."""

    name: str
    manifest: dict[str, Any]
    sha256: str
    version: int = 1
    deployed_at: float = attrs.field(factory=time.time)

    @property
    def code_key(self) -> str:
        """The key of this version's code in the ``code`` namespace."""
        return f"{self.name}@{self.sha256[:16]}"

    def to_json(self) -> bytes:
        """The record as stored."""
        return json.dumps(attrs.asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> AppRecord:
        """Read a stored record; StorageError if it is not one this node could have written
        (a storage others write to may hold anything)."""
        try:
            fields = json.loads(data)
            record = cls(**fields)
        except (ValueError, TypeError, RecursionError) as exc:  # nested past Python's limit
            raise StorageError(f"not an app record: {type(exc).__name__}") from None
        problem = _record_problem(record)
        if problem:
            raise StorageError(f"not an app record: {problem}")
        return record


def _record_problem(record: AppRecord) -> str | None:
    """What makes ``record`` one no node could have stored, if anything."""
    try:
        check_app_name(record.name)
    except NodeError:
        return f"its name {record.name!r} is no app name"
    if not isinstance(record.manifest, dict):
        return "its manifest is not a map"
    if _depth(record.manifest) > MAX_DEPTH:
        return f"its manifest nests deeper than {MAX_DEPTH} levels"
    if not isinstance(record.sha256, str) or not SHA256.fullmatch(record.sha256):
        return "its sha256 is not 64 hex digits"
    if isinstance(record.version, bool) or not isinstance(record.version, int) or \
            not 1 <= record.version <= MAX_VERSION:
        return f"its version {record.version!r} is not a whole number from 1"
    if isinstance(record.deployed_at, bool) or \
            not isinstance(record.deployed_at, int | float) or \
            not math.isfinite(record.deployed_at):
        return "its deployed_at is not a time"
    return None


def _depth(value: Any) -> int:
    """How deep maps and lists nest in ``value`` (counted without recursion)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                todo.extend((v, level + 1) for v in (item.values() if isinstance(item, dict)
                                                     else item))
    return deepest


class AppStore:
    """Apps in a storage, and their code unpacked under ``code_dir`` to run."""

    def __init__(self, storage: Storage, code_dir: Path,
                 limits: archive.Limits | None = None) -> None:
        self.storage = storage
        self.code_dir = code_dir
        #: What one archive may unpack to (the node's ``--max-unpacked`` and
        #: ``--max-archive-members``).
        self.limits = limits or archive.Limits()
        #: The records left out, by name, with the digest of the value logged (bounded by
        #: the records there are).
        self._skipped: dict[str, str] = {}

    def records(self) -> dict[str, AppRecord]:
        """Every stored app whose record and code are whole; the others are logged, each
        once until its record changes."""
        records: dict[str, AppRecord] = {}
        for name in self.storage.keys("apps"):
            data = b""
            try:
                data = self.storage.get("apps", name)
                record = AppRecord.from_json(data)
                if record.name != name:
                    raise StorageError(f"it names the app {record.name!r}")
                if not self.storage.exists("code", record.code_key):
                    self._skip(name, data, f"the code of app '{name}' ({record.code_key}) "
                                           f"is missing; skipped: deploy it again")
                    continue
            except StorageUnavailable:
                raise  # never taken for "no app": the node would stop what runs
            except (StorageError, KeyError) as exc:
                self._skip(name, data, f"app record '{name}' is unreadable ({exc}); skipped")
                continue
            self._skipped.pop(name, None)
            records[name] = record
        for gone in set(self._skipped) - set(records) - set(self.storage.keys("apps")):
            self._skipped.pop(gone, None)
        return records

    def _skip(self, name: str, data: bytes, message: str) -> None:
        """Log a record left out, once until its value changes (a bad record is read again
        at every change of the store, and must not fill the log)."""
        digest = archive.sha256(data)
        if self._skipped.get(name) != digest:
            self._skipped[name] = digest
            log.error("storage: %s", message)

    def get(self, name: str) -> AppRecord | None:
        """The stored record of ``name``, if any (StorageError if it is not one)."""
        try:
            record = AppRecord.from_json(self.storage.get("apps", name))
        except KeyError:
            return None
        if record.name != name:
            raise StorageError(f"the record stored as app '{name}' names the app "
                               f"{record.name!r}; remove it (cocaine app remove {name})")
        return record

    def save_code(self, record: AppRecord, code: bytes) -> None:
        """Store a version's code (before it is started: a full disk then refuses the deploy
        while nothing has changed). Until its record is saved, no record points to it."""
        self.storage.put("code", record.code_key, code)

    def save_record(self, record: AppRecord, code: bytes | None = None) -> None:
        """Store the record (the commit point), then drop the app's older code.

        The record is written only while its code is stored: on a storage that nodes share,
        another node starting meanwhile may have collected that code as an orphan. Then the
        code is stored again (when given) and the record written once more; without it,
        StorageError."""
        for attempt in range(2):
            if self._put_record(record):
                break
            if code is None or attempt:
                raise StorageError(f"the code of app '{record.name}' ({record.code_key}) "
                                   f"left the storage before its record was written; deploy "
                                   f"again")
            log.warning("app %s: its code left the storage before its record was written "
                        "(another node collected it); storing it again", record.name)
            self.save_code(record, code)
        self._drop_code(record.name, keep=record.code_key)

    def _put_record(self, record: AppRecord) -> bool:
        """Write ``record`` if its code is stored (in one step where the storage can)."""
        requires = [("code", record.code_key)]
        if isinstance(self.storage, ConditionalStorage):
            return self.storage.put_if_present("apps", record.name, record.to_json(), requires)
        if not self.storage.exists(*requires[0]):
            return False
        self.storage.put("apps", record.name, record.to_json())
        return True

    def drop_unrecorded(self, record: AppRecord) -> None:
        """Remove ``record``'s code if the stored record of its app points elsewhere (a
        deploy that stored its code, then failed)."""
        stored = self.get(record.name)
        if stored is None or stored.code_key != record.code_key:
            with contextlib.suppress(KeyError, OSError, StorageError):
                self.storage.remove("code", record.code_key)

    def remove(self, name: str) -> None:
        """Remove the record (the commit point), then its code."""
        self.storage.remove("apps", name)
        self._drop_code(name, keep=None)

    def collect_garbage(self) -> None:
        """Remove code that no record points to (left by a deploy killed half-way)."""
        live = {r.code_key for r in self.records().values()}
        for key in self.storage.keys("code"):
            if key not in live:
                log.info("storage: removing orphaned code %s", key)
                self.storage.remove("code", key)

    def _drop_code(self, name: str, keep: str | None) -> None:
        for key in self.storage.keys("code"):
            if key.split("@", 1)[0] == name and key != keep:
                self.storage.remove("code", key)

    def unpack(self, record: AppRecord, code: bytes | None = None,
               cancelled: Callable[[], bool] | None = None) -> Path:
        """The folder holding this version's code, unpacked (and checked) if need be; the
        code comes from storage unless given. It is unpacked into ``<sha>.partial`` first,
        which is removed if anything fails (or ``cancelled()`` turns true)."""
        folder = self.code_dir / record.name / record.sha256[:16]
        if folder.is_dir():
            return folder
        if code is None:
            code = self.storage.get("code", record.code_key)
        if archive.sha256(code) != record.sha256:
            raise NodeError(f"the stored code of app '{record.name}' does not match its "
                            f"checksum; deploy it again")
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            archive.unpack(code, staging, self.limits, cancelled)
            staging.rename(folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):  # the app's folder, if it holds nothing else
                folder.parent.rmdir()
            raise
        return folder

    def drop_partials(self) -> None:
        """Remove half-unpacked code (``*.partial``) a killed node left behind."""
        for staging in self.code_dir.glob("*/*.partial"):
            shutil.rmtree(staging, ignore_errors=True)

    def forget_unpacked(self, name: str, keep: Path | None = None) -> None:
        """Remove unpacked copies of ``name``'s code other than ``keep``."""
        folder = self.code_dir / name
        if not folder.is_dir():
            return
        for version in folder.iterdir():
            if version != keep:
                shutil.rmtree(version, ignore_errors=True)
        if keep is None:
            with contextlib.suppress(OSError):
                folder.rmdir()
