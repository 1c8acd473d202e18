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
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from cocaine_core import archive
from cocaine_core.errors import NodeError, StorageError, StorageUnavailable
from cocaine_core.storages import ConditionalStorage, Storage

log = logging.getLogger("cocaine.store")


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
        """Read a stored record; StorageError if it is not one."""
        try:
            fields = json.loads(data)
            return cls(**fields)
        except (ValueError, TypeError) as exc:
            raise StorageError(f"not an app record: {exc}") from None


class AppStore:
    """Apps in a storage, and their code unpacked under ``code_dir`` to run."""

    def __init__(self, storage: Storage, code_dir: Path,
                 limits: archive.Limits | None = None) -> None:
        self.storage = storage
        self.code_dir = code_dir
        #: What one archive may unpack to (the node's ``--max-unpacked`` and
        #: ``--max-archive-members``).
        self.limits = limits or archive.Limits()

    def records(self) -> dict[str, AppRecord]:
        """Every stored app whose record and code are whole; the others are logged."""
        records: dict[str, AppRecord] = {}
        for name in self.storage.keys("apps"):
            try:
                record = AppRecord.from_json(self.storage.get("apps", name))
            except StorageUnavailable:
                raise  # never taken for "no app": the node would stop what runs
            except (StorageError, KeyError) as exc:
                log.error("storage: app record '%s' is unreadable (%s); skipped", name, exc)
                continue
            if not self.storage.exists("code", record.code_key):
                log.error("storage: the code of app '%s' (%s) is missing; skipped: deploy "
                          "it again", name, record.code_key)
                continue
            records[name] = record
        return records

    def get(self, name: str) -> AppRecord | None:
        """The stored record of ``name``, if any."""
        try:
            return AppRecord.from_json(self.storage.get("apps", name))
        except KeyError:
            return None

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
