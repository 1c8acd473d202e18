"""Code archives a node receives in pieces (``upload-begin``, ``upload-chunk``), then deploys.

Each upload is a file in the run folder's ``uploads/``. The node keeps at most
``UploadLimits.count`` open at once, announcing at most ``UploadLimits.space`` bytes together;
one left untouched for ``UploadLimits.idle`` seconds is dropped by a timer. Past the limits,
``upload-begin`` is a 503 that says when to try again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import attrs

from cocaine_core.errors import BusyError, NodeError, NotFoundError

log = logging.getLogger("cocaine.control")

UPLOAD_CHUNK = 1 << 20


@attrs.frozen
class UploadLimits:
    """Uploads a node keeps open at once (``cocaine node --max-uploads``, ``--upload-space``,
    ``--upload-idle``)."""

    #: Uploads begun and not yet deployed or expired, node-wide.
    count: int = 16
    #: Bytes those uploads announced, together.
    space: int = 1 << 30
    #: Seconds an upload may go untouched before it is dropped (on a timer).
    idle: float = 300.0


@attrs.define
class Upload:
    """A code archive being received in pieces."""

    id: str
    size: int
    path: Path
    received: int = 0
    touched: float = attrs.field(factory=time.monotonic)


class Uploads:
    """The node's open uploads, within its ``UploadLimits``."""

    def __init__(self, limits: UploadLimits | None = None) -> None:
        self.limits = limits or UploadLimits()
        self.open: dict[str, Upload] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def begin(self, size: Any, max_upload: int, folder: Path) -> Upload:
        """A new upload of ``size`` bytes (a file in ``folder``).

        :raises NodeError: a bad size, or over ``max_upload``.
        :raises BusyError: the node's limits on open uploads are reached (503).
        """
        self.drop_stale()
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise NodeError("upload-begin needs 'size', the archive's length in bytes")
        if size > max_upload:
            raise NodeError(f"the code archive is {size} bytes, over this node's upload limit "
                            f"of {max_upload} bytes (cocaine node --max-upload)")
        self._check_room(size)
        folder.mkdir(parents=True, exist_ok=True)
        upload_id = uuid.uuid4().hex
        fd, path = tempfile.mkstemp(prefix=f"{upload_id}.", dir=folder)
        os.close(fd)
        upload = self.open[upload_id] = Upload(upload_id, size, Path(path))
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return upload

    def append(self, upload_id: Any, data: Any, offset: Any) -> Upload:
        """Append ``data`` at ``offset``; NodeError if it is not the next piece."""
        upload = self.get(upload_id)
        if not isinstance(data, bytes) or offset != upload.received:
            raise NodeError(f"upload-chunk needs 'data' (bytes) at 'offset' {upload.received}")
        if upload.received + len(data) > upload.size:
            self.forget(upload)
            raise NodeError("the upload is longer than the size it announced; start again")
        with open(upload.path, "ab") as f:
            f.write(data)
        upload.received += len(data)
        upload.touched = time.monotonic()
        return upload

    def get(self, upload_id: Any) -> Upload:
        """The open upload ``upload_id``; NotFoundError (404) if there is none."""
        upload = self.open.get(upload_id) if isinstance(upload_id, str) else None
        if upload is None:
            raise NotFoundError("no such upload (it finished, or was idle for too long); start "
                                "again with upload-begin")
        return upload

    def forget(self, upload: Upload) -> None:
        """Drop an upload and its file."""
        self.open.pop(upload.id, None)
        upload.path.unlink(missing_ok=True)

    def drop_stale(self) -> None:
        """Drop the uploads idle for longer than ``limits.idle``."""
        now = time.monotonic()
        for upload in list(self.open.values()):
            if now - upload.touched > self.limits.idle:
                log.info("upload %s dropped: idle for %.0f s", upload.id, now - upload.touched)
                self.forget(upload)

    async def close(self) -> None:
        """Stop the timer and drop every upload (the node is stopping)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        for upload in list(self.open.values()):
            self.forget(upload)

    def _check_room(self, size: int) -> None:
        limits = self.limits
        announced = sum(upload.size for upload in self.open.values())
        if len(self.open) < limits.count and announced + size <= limits.space:
            return
        now = time.monotonic()
        soonest = min((u.touched + limits.idle - now for u in self.open.values()), default=0.0)
        why = (f"{len(self.open)} uploads are open, this node's limit (cocaine node "
               f"--max-uploads {limits.count})" if len(self.open) >= limits.count else
               f"the open uploads announced {announced} bytes; {size} more would pass this "
               f"node's limit of {limits.space} bytes (cocaine node --upload-space)")
        raise BusyError(f"{why}; try again when one finishes, or in {max(soonest, 0):.0f} s "
                        f"when the oldest idle one expires")

    async def _sweep(self) -> None:
        while self.open:
            await asyncio.sleep(min(max(self.limits.idle / 4, 0.05), 5.0))
            self.drop_stale()
