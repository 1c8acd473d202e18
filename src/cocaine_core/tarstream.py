"""The tar stream of a code archive as the node reads it: decompressed up to a bound, and each
header checked before ``tarfile`` acts on it.

``tarfile``'s parsing of a header member (a PAX header, a GNU long name) holds the GIL for as long
as the header is big, and for the square of a run of digits in a PAX header, and reads headers in
a row recursively: so every header member is bounded (``Member``, ``check_header``) before
tarfile reads it, and a PAX header's records are checked first (``check_pax``). ``Limits`` are the
node's settings.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import re
import tarfile
import zlib
from collections.abc import Iterator
from typing import Any

import attrs

from cocaine_core.errors import NodeError

#: Defaults of the node's archive limits (``cocaine node --max-unpacked``,
#: ``--max-archive-members``).
DEFAULT_MAX_UNPACKED = 512 * 2**20
DEFAULT_MAX_MEMBERS = 10_000
#: Bytes of one header member (PAX 'x', 'g' or 'X', GNU long name 'L' or long link 'K');
#: header members in a row before the member they describe (tarfile reads them recursively);
#: bytes of all global PAX headers ('g', copied into every later member) of one archive.
MAX_HEADER = 64 * 2**10
MAX_HEADERS_IN_A_ROW = 8
MAX_GLOBAL_HEADERS = 4 * 2**10
#: Digits in a row in a PAX header (tarfile's search for ``hdrcharset`` costs their square).
MAX_DIGITS = 64
_PAX_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_HEADER_TYPES = (*_PAX_TYPES, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_RECORD = re.compile(rb"([0-9]{1,20}) ")
_DIGITS = re.compile(rb"[0-9]{%d}" % (MAX_DIGITS + 1))


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

    @property
    def headers(self) -> int:
        """Most bytes of header members (PAX, GNU long names) in one archive: 1 KiB a member."""
        return self.members * 2**10 + MAX_HEADER


@contextlib.contextmanager
def open_tar(data: bytes, limits: Limits) -> Iterator[tarfile.TarFile]:
    raw: Any = io.BytesIO(data)
    if data.startswith(b"\x1f\x8b"):
        raw = gzip.GzipFile(fileobj=raw, mode="rb")
    elif data.startswith(b"BZh"):
        raw = bz2.BZ2File(raw)
    elif data.startswith(b"\xfd7zXZ\x00"):
        raw = lzma.LZMAFile(raw)  # noqa: SIM115 - closed with the tar file
    bounded: Any = Bounded(raw, limits)
    try:
        with tarfile.open(fileobj=bounded, mode="r:", tarinfo=Member) as tar:
            yield tar
    except tarfile.TarError as exc:
        raise NodeError(f"the code archive is not a valid tar archive: {exc}") from None
    except (EOFError, OSError, lzma.LZMAError, zlib.error) as exc:
        raise NodeError(f"the code archive is damaged: {exc}") from None


class Bounded:
    """A decompressed stream that refuses to go past ``limits.stream`` bytes, can be given
    back bytes read ahead (``unread``), and counts the header members read from it."""

    def __init__(self, raw: Any, limits: Limits) -> None:
        self.raw, self.limits, self.bound = raw, limits, limits.stream
        self.name = None
        self.ahead = b""
        self.in_a_row = self.header_bytes = self.global_bytes = 0

    def _refuse(self) -> NodeError:
        return NodeError(f"the code archive unpacks to more than {size(self.limits.unpacked)}, "
                         f"this node's limit (cocaine node --max-unpacked)")

    def read(self, size: int = -1) -> bytes:
        position = self.raw.tell() - len(self.ahead)
        if size is None or size < 0:
            size = self.bound - position + 1
        if position + size > self.bound:
            raise self._refuse()
        if not self.ahead:
            return bytes(self.raw.read(size))
        chunk, self.ahead = self.ahead[:size], self.ahead[size:]
        return chunk + bytes(self.raw.read(size - len(chunk))) if len(chunk) < size else chunk

    def unread(self, data: bytes) -> None:
        """Give back ``data``, just read: the next reads return it again."""
        self.ahead = data + self.ahead

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self.tell() + offset if whence == 1 else None
        if target is not None and target > self.bound:
            raise self._refuse()
        if self.ahead and target is not None and self.tell() <= target <= self.raw.tell():
            self.ahead = self.ahead[target - self.tell():]
            return target
        self.ahead = b""
        return int(self.raw.seek(offset if target is None else target, whence if target is
                                 None else 0))

    def tell(self) -> int:
        return int(self.raw.tell()) - len(self.ahead)


class Member(tarfile.TarInfo):
    """A tar header that is checked (``check_header``) before tarfile reads what follows it."""

    def _proc_member(self, tarfile: Any) -> Any:  # tarfile's documented hook for subclasses
        check_header(self, tarfile.fileobj)
        return super()._proc_member(tarfile)  # type: ignore[misc]


def check_header(member: tarfile.TarInfo, stream: Bounded) -> None:
    """Refuse a negative size, a sparse file, a header member too big or one too many in a
    row, and a PAX header tarfile would parse slowly, before tarfile reads any of it."""
    if member.type not in _HEADER_TYPES and member.type != tarfile.GNUTYPE_SPARSE \
            and member.size >= 0:
        stream.in_a_row = 0
        return
    where = f"the archive member {shown(member.name)} (at byte {member.offset})"
    if member.size < 0:
        raise NodeError(f"{where} has a negative size; refused")
    if member.type == tarfile.GNUTYPE_SPARSE:
        raise NodeError(f"{where} is a sparse file; refused")
    stream.in_a_row += 1
    stream.header_bytes += member.size
    if member.size > MAX_HEADER:
        raise NodeError(f"{where} is a header (PAX or GNU long name) of {size(member.size)}, "
                        f"more than the {size(MAX_HEADER)} a header may hold; refused")
    if stream.in_a_row > MAX_HEADERS_IN_A_ROW:
        raise NodeError(f"{where} is the header member number {stream.in_a_row} in a row; at "
                        f"most {MAX_HEADERS_IN_A_ROW} may precede a member; refused")
    if stream.header_bytes > stream.limits.headers:
        raise NodeError(f"{where}: the archive's header members (PAX, GNU long names) hold more "
                        f"than {size(stream.limits.headers)} together, 1 KiB for each member "
                        f"this node allows (cocaine node --max-archive-members); refused")
    if member.type == tarfile.XGLTYPE:
        stream.global_bytes += member.size
        if stream.global_bytes > MAX_GLOBAL_HEADERS:
            raise NodeError(f"{where}: the archive's global PAX headers hold more than "
                            f"{size(MAX_GLOBAL_HEADERS)} together; refused")
    if member.type in _PAX_TYPES:
        data = stream.read(-(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE)
        stream.unread(data)
        check_pax(data[:member.size], where)


def check_pax(data: bytes, where: str) -> None:
    """Refuse a PAX header that is not a sequence of ``LENGTH KEYWORD=VALUE\n`` records (tarfile
    would search past a record, again for each), that holds a run of digits too long, or that
    describes a sparse file."""
    if _DIGITS.search(data):
        raise NodeError(f"{where} is a PAX header with more than {MAX_DIGITS} digits in a row; "
                        f"refused")
    position = 0
    while position < len(data) and data[position]:
        match = _RECORD.match(data, position)
        end = position + int(match.group(1)) if match else 0
        equals = data.find(b"=", match.end(), end) if match else -1
        if not match or end > len(data) or equals <= match.end() or data[end - 1] != 10:
            raise NodeError(f"{where} is a PAX header whose record at byte {position} is not "
                            f"'LENGTH KEYWORD=VALUE' followed by a newline; refused")
        if data.startswith(b"GNU.sparse", match.end()):
            raise NodeError(f"{where} describes a sparse file; refused")
        position = end
    if data[position:].strip(b"\0"):
        raise NodeError(f"{where} is a PAX header with bytes after its last record; refused")


def shown(name: str) -> str:
    """``name`` quoted for a message, cut after 100 characters."""
    return repr(name if len(name) <= 100 else name[:100] + "...")


def size(count: int) -> str:
    unit = "MiB" if count >= 2**20 else "KiB" if count >= 2**10 else ""
    return f"{count / (2**20 if count >= 2**20 else 2**10):g} {unit} ({count} bytes)" if unit \
        else f"{count} bytes"
