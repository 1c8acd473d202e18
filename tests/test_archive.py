"""``cocaine_core.archive``: what a code archive may hold, checked before anything is written."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import pytest

from cocaine_core import archive
from cocaine_core.errors import NodeError


def tar(*members: tarfile.TarInfo, data: bytes = b"x = 1\n", mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as out:
        for member in members:
            if member.isfile():
                member.size = len(data)
                out.addfile(member, io.BytesIO(data))
            else:
                out.addfile(member)
    return buffer.getvalue()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def folder(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


def the_chain(depth: int = 8) -> list[tarfile.TarInfo]:
    """The issue's chain: ``b -> .``, ``a1 -> b/..``, ``a2 -> a1/..`` … each one level up."""
    members = [link("b", ".")]
    for level in range(1, depth + 1):
        members.append(link(f"a{level}", ("b" if level == 1 else f"a{level - 1}") + "/.."))
    return members


@pytest.mark.parametrize("members", [
    pytest.param(the_chain(), id="the issue's chain, 8 deep"),
    pytest.param(the_chain(1), id="one step: a -> b/.. with b -> ."),
    pytest.param([folder("d"), link("d/b", "."), link("d/a", "b/../.."),
                  link("d/c", "a/x")], id="from a folder"),
    pytest.param([link("x/y", "../z"), link("z", "..")], id="through a later link"),
    pytest.param([link("l", "s/../.."), folder("s")], id="a real folder then two up"),
    pytest.param([link("d", "."), tarfile.TarInfo("d/../../evil.py")], id="a member climbing"),
    pytest.param([link("up", "b/.."), link("b", "."), tarfile.TarInfo("up/evil.py")],
                 id="a file written through the chain"),
    pytest.param([link("h", "b/../../etc/passwd", tarfile.LNKTYPE), link("b", ".")],
                 id="a hard link through the chain"),
])
def test_links_resolving_outside_are_refused(members, tmp_path):
    code = tar(*members)
    with pytest.raises(NodeError, match=r"outside the archive|climbs out"):
        archive.check_archive(code)
    destination = tmp_path / "deep" / "er" / "code"
    with pytest.raises(NodeError):
        archive.unpack(code, destination)
    assert not destination.exists()


def test_link_loops_are_refused():
    with pytest.raises(NodeError, match="more than 40 links"):
        archive.check_archive(tar(link("a", "b"), link("b", "a"), tarfile.TarInfo("a/x.py")))


def test_links_inside_the_archive_are_kept(tmp_path):
    code = tar(tarfile.TarInfo("lib/shared.py"), link("pkg/shared.py", "../lib/shared.py"),
               link("here", "."), link("same", "here/lib/shared.py"),
               link("hard.py", "lib/shared.py", tarfile.LNKTYPE))
    archive.check_archive(code)
    archive.unpack(code, tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "shared.py").read_bytes() == b"x = 1\n"
    assert (tmp_path / "out" / "same").resolve() == (tmp_path / "out" / "lib" / "shared.py")


def test_a_name_twice_is_refused():
    with pytest.raises(NodeError, match="appears twice"):
        archive.check_archive(tar(tarfile.TarInfo("a.py"), link("a.py", "b.py")))


def test_over_the_member_limit_is_refused_at_once():
    code = tar(*(tarfile.TarInfo(f"m{index}.py") for index in range(50_000)))
    started = time.monotonic()
    with pytest.raises(NodeError, match=r"more than 10000 members.*--max-archive-members"):
        archive.check_archive(code)
    took = time.monotonic() - started
    print(f"\n50k members refused in {took:.2f} s")
    assert took < 5


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz", "w"])
def test_over_the_size_limit_is_refused_before_decompressing_it(mode):
    info = tarfile.TarInfo("big.bin")
    info.size = 600 * 2**20

    class Zeros(io.RawIOBase):
        left = info.size

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[override]
            count = min(len(buffer), self.left)
            buffer[:count] = bytes(count)
            self.left -= count
            return count

    buffer = io.BytesIO()
    if mode != "w:gz":  # bz2 and xz are slow to make: a small one, against a small limit
        info.size = 3 * 2**20
        Zeros.left = info.size
    with tarfile.open(fileobj=buffer, mode=mode) as out:
        out.addfile(info, Zeros())
    limits = archive.Limits(unpacked=archive.DEFAULT_MAX_UNPACKED if mode == "w:gz" else 2**20)
    started = time.monotonic()
    with pytest.raises(NodeError, match=r"unpacks to more than .*--max-unpacked"):
        archive.check_archive(buffer.getvalue(), limits)
    assert time.monotonic() - started < 2


def test_huge_pax_header_is_bounded():
    """A 50 MiB pax header is read only up to the limit, never whole into memory."""
    raw = io.BytesIO()
    record = b"comment=" + b"x" * (50 * 2**20)
    length = len(record) + 2
    length += len(str(length + len(str(length))))
    body = f"{length} ".encode() + record + b"\n"
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = len(body)
    raw.write(header.tobuf(tarfile.USTAR_FORMAT))
    raw.write(body + b"\0" * (-len(body) % 512))
    info = tarfile.TarInfo("a.py")
    raw.write(info.tobuf(tarfile.USTAR_FORMAT) + b"\0" * 1024)
    with pytest.raises(NodeError):
        archive.check_archive(raw.getvalue(), archive.Limits(unpacked=2**20, members=10))


def test_a_failed_unpack_removes_what_it_wrote(tmp_path):
    code = tar(tarfile.TarInfo("app.py"), tarfile.TarInfo("app.py/inner.py"))
    archive.check_archive(code)  # it is safe: only the filesystem can refuse it
    with pytest.raises(NodeError, match="could not be unpacked"):
        archive.unpack(code, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_cancelled_unpack_removes_what_it_wrote(tmp_path):
    code = tar(*(tarfile.TarInfo(f"m{index}.py") for index in range(20)))
    seen: list[int] = []

    def cancelled() -> bool:
        seen.append(1)
        return len(seen) > 5

    with pytest.raises(NodeError, match="cancelled"):
        archive.unpack(code, tmp_path / "out", cancelled=cancelled)
    assert not (tmp_path / "out").exists()
    assert os.listdir(tmp_path) == []


def test_limits_default_to_the_documented_values():
    assert archive.Limits() == archive.Limits(512 * 2**20, 10_000)
    assert Path(archive.__file__).exists()


@pytest.mark.parametrize("members", [
    pytest.param([link("a", "a", tarfile.LNKTYPE)], id="to itself"),
    pytest.param([link("a", "b", tarfile.LNKTYPE), tarfile.TarInfo("b")], id="to a later file"),
    pytest.param([link("a", "b", tarfile.LNKTYPE), link("b", "a", tarfile.LNKTYPE)],
                 id="in a cycle"),
    pytest.param([folder("d"), link("a", "d", tarfile.LNKTYPE)], id="to a folder"),
])
def test_hard_links_to_no_earlier_file_are_refused(members, tmp_path):
    code = tar(*members)
    with pytest.raises(NodeError, match="hard link"):
        archive.check_archive(code)
    with pytest.raises(NodeError):
        archive.unpack(code, tmp_path / "out")
    assert not (tmp_path / "out").exists()
