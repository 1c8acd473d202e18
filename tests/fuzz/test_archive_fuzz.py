"""Code archives, fuzzed: tar streams of random members (names, link targets, types, sizes,
modes), compressed or not, and bytes that are no archive. ``check_archive`` and ``unpack``
either refuse with ``NodeError`` (and leave no destination behind) or write only inside the
destination: no file, folder or link outside it, no link inside it that leads out."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import uuid
from pathlib import Path

import pytest
from hypothesis import event, given, reject
from hypothesis import strategies as st

from cocaine_core import archive
from cocaine_core.errors import NodeError
from tests.fuzz.strategies import FUZZ

PARTS = st.sampled_from(["a", "b", "c", "..", ".", "", "app.py", "x.y", "é", " ", "a b",
                         "\\", "C:", "~"])
PATHS = st.one_of(st.lists(PARTS, min_size=1, max_size=4).map("/".join),
                  st.sampled_from(["/", "/etc/passwd", "/tmp", "../escape", "a/../../b",
                                   "./a", "a/", "//a", "."]),
                  st.text(max_size=12))
TYPES = st.sampled_from([tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                         tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE,
                         tarfile.CONTTYPE, b"Z"])
LIMITS = archive.Limits(unpacked=4096, members=16)


@st.composite
def members(draw: st.DrawFn) -> tuple[str, bytes, str, int, int, int]:
    """One member: name, type, link target, size, mode, content length."""
    return (draw(PATHS), draw(TYPES), draw(PATHS), draw(st.integers(0, 600)),
            draw(st.sampled_from([0o644, 0o755, 0o000, 0o4755, 0o777, 0o1777])),
            draw(st.integers(0, 600)))


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    """A tar stream of random members, as written (gz, bz2, xz or plain), or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    buffer = io.BytesIO()
    compression = draw(st.sampled_from(["", "gz", "bz2", "xz"]))
    form = draw(st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]))
    write_mode = f"w:{compression}"
    with tarfile.open(fileobj=buffer, mode=write_mode, format=form) as tar:  # type: ignore[call-overload]
        for name, kind, target, size, mode, length in draw(st.lists(members(), max_size=6)):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            info.mode = mode
            content = b"x" * length if kind in (tarfile.REGTYPE, tarfile.AREGTYPE,
                                                tarfile.CONTTYPE) else b""
            info.size = len(content) if draw(st.booleans()) else size
            try:
                tar.addfile(info, io.BytesIO(content) if info.size <= len(content) else
                            io.BytesIO(content + b"\0" * (info.size - len(content))))
            except (ValueError, UnicodeError, tarfile.TarError):
                continue  # a member tarfile itself cannot write
    data = buffer.getvalue()
    if draw(st.integers(0, 9)) == 0:  # a damaged copy
        cut = draw(st.integers(0, max(0, len(data) - 1)))
        data = data[:cut] + draw(st.binary(max_size=16)) + data[cut + 16:]
    return data


def everything_under(folder: Path) -> list[Path]:
    """Every entry below ``folder``, links not followed."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            found.append(Path(root) / name)
    return found


@FUZZ
@given(data=archives())
def test_an_archive_is_refused_or_unpacks_only_inside_its_destination(data: bytes,
                                                                     tmp_path: Path) -> None:
    sandbox = tmp_path / uuid.uuid4().hex
    sandbox.mkdir()
    (sandbox / "outside.txt").write_text("untouched")
    destination = sandbox / "dest"
    try:
        names = archive.check_archive(data, LIMITS)
    except NodeError as exc:
        assert str(exc)
        names = None
    try:
        archive.unpack(data, destination, LIMITS)
    except KeyError as exc:  # the known bug below (a hard link to no earlier file)
        assert "linkname" in str(exc), exc
        assert not destination.exists()
        reject()
    except NodeError as exc:
        assert str(exc)
        assert not destination.exists(), "a refused archive leaves no destination"
        event("refused")
    else:
        assert names is not None, "unpack extracted what check_archive refused"
        event("unpacked")
        real = destination.resolve()
        for entry in everything_under(destination):
            if entry.is_symlink():
                target = Path(os.path.realpath(entry))
                assert target == real or real in target.parents, (
                    f"{entry.relative_to(destination)} links out, to {target}")
            elif entry.is_file():
                assert not (entry.stat().st_mode & 0o6000), f"{entry} is setuid/setgid"
    assert sorted(p.name for p in sandbox.iterdir()) in (["dest", "outside.txt"],
                                                          ["outside.txt"])
    assert (sandbox / "outside.txt").read_text() == "untouched"
    assert sorted(everything_under(sandbox)) == sorted(
        [sandbox / "outside.txt", *([destination, *everything_under(destination)]
                                    if destination.exists() else [])])
    shutil.rmtree(sandbox, ignore_errors=True)


def tar_of(*members: tuple[str, bytes, str]) -> bytes:
    """An uncompressed tar of empty members (name, type, link target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info, io.BytesIO(b""))
    return buffer.getvalue()


#: Found by the property above: hard links that ``check_archive`` accepts but that name no
#: file extracted before them, so ``tarfile`` raises KeyError in the middle of ``unpack``.
HARD_LINKS_TO_NOTHING_BEFORE = {
    "to itself": tar_of(("0", tarfile.LNKTYPE, "0")),
    "to a later file": tar_of(("a", tarfile.LNKTYPE, "b"), ("b", tarfile.REGTYPE, "")),
    "in a cycle": tar_of(("a", tarfile.LNKTYPE, "b"), ("b", tarfile.LNKTYPE, "a")),
}


@pytest.mark.parametrize("case", sorted(HARD_LINKS_TO_NOTHING_BEFORE))
def test_a_hard_link_to_no_earlier_file_is_refused_with_node_error(case: str,
                                                                  tmp_path: Path) -> None:
    data = HARD_LINKS_TO_NOTHING_BEFORE[case]
    try:
        archive.check_archive(data)
        archive.unpack(data, tmp_path / "dest")
    except NodeError as exc:
        assert "link" in str(exc)
