"""``cocaine_core.archive``: what a code archive may hold, checked before anything is written."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import threading
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


# -- headers and paths a hostile archive may hold (issue 13, found after the first fixes) ------


def pax_header(body: bytes, kind: bytes = tarfile.XHDTYPE) -> bytes:
    """A raw header member holding ``body`` (a PAX header by default), padded."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = kind
    header.size = len(body)
    return header.tobuf(tarfile.USTAR_FORMAT) + body + b"\0" * (-len(body) % 512)


def record(keyword: bytes, value: bytes) -> bytes:
    """One PAX record, ``LENGTH KEYWORD=VALUE\\n``, its length counting itself."""
    body = b" " + keyword + b"=" + value + b"\n"
    length = len(body) + len(str(len(body)))
    length = len(body) + len(str(length))
    return str(length).encode() + body


def app_member(name: str = "app.py", kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = 6 if kind == tarfile.REGTYPE else 0
    return info.tobuf(tarfile.USTAR_FORMAT) + (b"x = 1\n" + b"\0" * 506 if info.size else b"")


def huge_pax_archive(size: int = 400 * 2**20) -> bytes:
    """The prober's archive: a PAX ``comment`` of ``size`` bytes before ``app.py``, gzip'ed
    (400 MiB make about 400 KB)."""
    out = io.BytesIO()
    rest = len(b" comment=") + size + 1
    length = rest + len(str(rest + len(str(rest))))
    prefix = f"{length} comment=".encode()
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = length
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0) as packed:
        packed.write(header.tobuf(tarfile.USTAR_FORMAT) + prefix)
        chunk = b"x" * 2**20
        for _ in range(size // len(chunk)):
            packed.write(chunk)
        packed.write(b"\n" + b"\0" * (-length % 512) + app_member() + b"\0" * 1024)
    return out.getvalue()


class Stalls:
    """The longest a thread sleeping 1 ms at a time waited for its turn (the GIL) meanwhile."""

    def __enter__(self) -> Stalls:
        self.worst, self.done = 0.0, threading.Event()
        self.thread = threading.Thread(target=self._tick)
        self.thread.start()
        return self

    def _tick(self) -> None:
        last = time.perf_counter()
        while not self.done.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            self.worst, last = max(self.worst, now - last), now

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=60)


def test_a_huge_pax_header_is_refused_before_it_is_read():
    """The prober's 400 MiB PAX header was accepted after 6.5 s here (53 s on the node), the
    memory 1.2 GB up and other threads stalled 4.9 s; now it is refused at its header."""
    code = huge_pax_archive()
    with Stalls() as stalls:
        started = time.monotonic()
        with pytest.raises(NodeError, match=r"'././@PaxHeader' \(at byte 0\) is a header .* "
                                            r"of 400 MiB .*more than the 64 KiB"):
            archive.check_archive(code)
        took = time.monotonic() - started
    print(f"\n400 MiB PAX header refused in {took:.3f} s, worst stall {stalls.worst:.3f} s")
    assert took < 1 and stalls.worst < 0.5


def test_a_pax_header_of_digits_does_not_stall_other_threads():
    """tarfile's search for ``hdrcharset`` costs the square of a run of digits: a 279-byte
    archive held the GIL 7.9 s."""
    code = gzip.compress(pax_header(record(b"comment", b"1" * 65_000)) + app_member()
                         + b"\0" * 1024)
    with Stalls() as stalls, pytest.raises(NodeError, match="more than 64 digits in a row"):
        archive.check_archive(code)
    assert stalls.worst < 0.5


@pytest.mark.parametrize(("stream", "message"), [
    pytest.param(b"".join(pax_header(b"x" * 20 + b"\0" * 20, tarfile.GNUTYPE_LONGNAME)
                          for _ in range(9)) + app_member(), "number 9 in a row",
                 id="nine long names in a row (tarfile reads them recursively)"),
    pytest.param(b"".join(pax_header(record(b"k%d" % index, b"v" * 3000), tarfile.XGLTYPE)
                          + app_member(f"m{index}.py") for index in range(2)),
                 "global PAX headers hold more than 4 KiB", id="global headers over 4 KiB"),
    pytest.param(pax_header(b"3 " + b"a" * 30_000 + b"=b\n") + app_member(),
                 "is not 'LENGTH KEYWORD=VALUE'",
                 id="a record shorter than its keyword (tarfile scans past it, again and again)"),
    pytest.param(pax_header(record(b"comment", b"x") + b"garbage") + app_member(),
                 "record at byte 13 is not", id="bytes after the records"),
    pytest.param(pax_header(record(b"GNU.sparse.map", b"0,1")) + app_member(),
                 "sparse file", id="a PAX sparse file"),
    pytest.param(app_member("s.py", tarfile.GNUTYPE_SPARSE), "sparse file", id="a GNU sparse file"),
    pytest.param(pax_header(record(b"size", b"-1024")) + app_member(), "negative size",
                 id="a negative size"),
    pytest.param(pax_header(record(b"path", b"a\0b.py")) + app_member(),
                 "has a path with a NUL byte", id="a PAX path with a NUL byte (found by fuzzing)"),
    pytest.param(pax_header(record(b"linkpath", b"app\0.py")) + app_member(
        "l.py", tarfile.SYMTYPE), "has a link target with a NUL byte",
                 id="a PAX link target with a NUL byte"),
])
def test_hostile_headers_are_refused(stream, message, tmp_path):
    code = gzip.compress(stream + b"\0" * 1024)
    with pytest.raises(NodeError, match=message):
        archive.check_archive(code)
    with pytest.raises(NodeError):
        archive.unpack(code, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_headers_of_the_whole_archive_are_bounded():
    limits = archive.Limits(members=50)
    body = record(b"comment", b"x" * 60_000)
    code = gzip.compress(b"".join(pax_header(body) + app_member(f"m{index}.py")
                                  for index in range(5)) + b"\0" * 1024)
    with pytest.raises(NodeError, match=r"header members .* hold more than .*--max-archive"):
        archive.check_archive(code, limits)
    assert archive.check_archive(code) == [f"m{index}.py" for index in range(5)]


def nested(depth: int, name: str = "d") -> bytes:
    return tar(*(folder("/".join([name] * level)) for level in range(1, depth + 1)),
               tarfile.TarInfo("app.py"))


@pytest.mark.parametrize(("code", "message"), [
    pytest.param(nested(2000), "has a path 65 folders deep, more than 64",
                 id="2000 nested folders (RecursionError when removed)"),
    pytest.param(nested(65), "65 folders deep, more than 64", id="65 nested folders"),
    pytest.param(tar(tarfile.TarInfo(("n" * 200 + "/") * 6 + "x.py")),
                 "path of 1210 bytes, more than 1024",
                 id="a path over 1024 bytes"),
    pytest.param(tar(tarfile.TarInfo("n" * 256 + ".py")), "name of 259 bytes, more than 255",
                 id="a name over 255 bytes"),
    pytest.param(tar(link("l", "x/" * 40 + "d"), tarfile.TarInfo("/".join(["l"] + ["e"] * 30))),
                 "lies 71 folders deep once its links are followed", id="deep through a link"),
    pytest.param(tar(link("l", "./" * 500 + "x"), *(tarfile.TarInfo(f"l/{index}.py")
                                                     for index in range(30))),
                 "takes more than 100 steps a member", id="links too costly to follow"),
])
def test_paths_too_deep_or_long_are_refused(code, message, tmp_path):
    with pytest.raises(NodeError, match=message):
        archive.check_archive(code)
    with pytest.raises(NodeError, match=message):
        archive.unpack(code, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_paths_at_the_limits_are_kept(tmp_path):
    code = tar(tarfile.TarInfo("/".join(["d"] * 63 + ["n" * 252 + ".py"])))
    archive.unpack(code, tmp_path / "out")
    assert len(list((tmp_path / "out").rglob("*.py"))) == 1


def test_the_worst_archive_within_the_limits_is_quick():
    """Every header member at its limit, as many as the node allows, and every member's links
    at the most steps: checked in seconds, no other thread held up for long."""
    body = record(b"comment", b"ab=" * 21_000)
    members = b"".join(pax_header(body) + app_member(f"m{index}.py") for index in range(150))
    chain = [link("c0", ".")] + [link(f"c{hop}", f"c{hop - 1}/" + "./" * 49 + ".")
                                 for hop in range(1, 40)]
    links = tar(*chain, *(tarfile.TarInfo(f"c39/f{index}.py") for index in range(9000)),
                mode="w")
    code = gzip.compress(members + links[:-1024 * 2] + b"\0" * 1024)
    with Stalls() as stalls:
        started = time.monotonic()
        with pytest.raises(NodeError, match="steps a member"):
            archive.check_archive(code)
        took = time.monotonic() - started
    print(f"\nthe worst archive: refused in {took:.2f} s, worst stall {stalls.worst:.3f} s")
    assert took < 20 and stalls.worst < 0.5


def test_a_node_refuses_hostile_archives_and_keeps_answering(node_process):
    """Through a real node: the 400 MiB PAX header (accepted after 53 s, 1.1 GB more RSS and
    ``info`` 4.7 s slow before), a PAX header of digits, and 2000 nested folders (a 500
    RecursionError before) are each a 400 naming the member, while ``info`` answers quickly."""
    node = node_process()
    manifest = {"type": "python", "args": {"source": "app.py"},
                "tasks": {"echo": {"type": "native-server"}}}
    hostile = {"pax": huge_pax_archive(),
               "digits": gzip.compress(pax_header(record(b"comment", b"1" * 65_000))
                                       + app_member() + b"\0" * 1024),
               "nested": nested(2000)}
    answers: dict[str, object] = {}

    def deploy_all() -> None:
        with node.client() as client:
            for name, code in hostile.items():
                try:
                    answers[name] = client.control("deploy", name=name, manifest=manifest,
                                                   archive=code, sha256=archive.sha256(code))
                except Exception as exc:  # the answer is what is checked
                    answers[name] = exc

    with node.client() as client:
        rss = client.control("info")["rss-bytes"]
        deployer = threading.Thread(target=deploy_all)
        deployer.start()
        slowest = 0.0
        deadline = time.monotonic() + 120
        while deployer.is_alive() and time.monotonic() < deadline:
            started = time.monotonic()
            client.control("info")
            slowest = max(slowest, time.monotonic() - started)
        deployer.join(timeout=max(0.0, deadline - time.monotonic()))
        grew = client.control("info")["rss-bytes"] - rss
    assert not deployer.is_alive(), "the deploys were not answered within 120 s"
    print(f"\nhostile deploys: slowest info {slowest * 1000:.0f} ms, RSS +{grew / 2**20:.0f} MiB")
    for name, message in (("pax", "64 KiB"), ("digits", "digits in a row"),
                          ("nested", "folders deep")):
        error = answers[name]
        assert getattr(error, "code", None) == 400 and message in str(error), (name, error)
    assert slowest < 1.0 and grew < 200 * 2**20
