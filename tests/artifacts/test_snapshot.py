"""Artifacts read into memory once per digest, under the extraction rules."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
from pathlib import Path

import pytest

from fluxd.artifacts.extract import ExtractError, UnsafeArchiveError
from fluxd.artifacts.snapshot import Snapshot, SnapshotCache, read_snapshot

pytestmark = pytest.mark.anyio


def tarball(path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tar.addfile(info, io.BytesIO(entry[1]))
    return path


def special(name: str, type_: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = link
    return info


def test_files_and_directories_are_read_with_their_listing(tmp_path: Path) -> None:
    dir_entry = special("app/empty", tarfile.DIRTYPE)
    archive = tarball(tmp_path / "a.tar.gz", [("app/b.yaml", b"b"), ("app/a.yaml", b"a"),
                                              ("app/sub/c.yaml", b"c"), ("top.txt", b"t"),
                                              dir_entry])
    snap = read_snapshot(archive)
    assert snap.files == {"app/b.yaml": b"b", "app/a.yaml": b"a", "app/sub/c.yaml": b"c",
                          "top.txt": b"t"}
    assert snap.size == 4
    assert snap.listdir("") == (("app",), ("top.txt",))
    assert snap.listdir("app") == (("empty", "sub"), ("a.yaml", "b.yaml"))
    assert list(snap.walk("app")) == ["app/a.yaml", "app/b.yaml", "app/sub/c.yaml"]
    assert snap.is_dir("app/empty") and not snap.is_dir("app/a.yaml")


def test_symlinks_are_skipped_and_hard_links_copied(tmp_path: Path) -> None:
    archive = tarball(tmp_path / "a.tar.gz", [
        ("a", b"data"), special("link", tarfile.SYMTYPE, "/etc/passwd"),
        special("hard", tarfile.LNKTYPE, "a")])
    assert read_snapshot(archive).files == {"a": b"data", "hard": b"data"}


@pytest.mark.parametrize("entries, message", [
    ([("../escape", b"x")], "leaves the destination"),
    ([("/abs", b"x")], "absolute"),
    ([special("dev", tarfile.CHRTYPE)], "device"),
    ([special("fifo", tarfile.FIFOTYPE)], "FIFO"),
    ([special("hard", tarfile.LNKTYPE, "missing")], "hard link"),
])
def test_unsafe_entries_are_refused(
        tmp_path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]],
        message: str) -> None:
    with pytest.raises(UnsafeArchiveError, match=message):
        read_snapshot(tarball(tmp_path / "a.tar.gz", entries))


def test_limits_hold(tmp_path: Path) -> None:
    archive = tarball(tmp_path / "a.tar.gz", [("a", b"x" * 100), ("b", b"y" * 100)])
    with pytest.raises(UnsafeArchiveError, match="exceeds the limit of 150 bytes"):
        read_snapshot(archive, max_bytes=150)
    with pytest.raises(UnsafeArchiveError, match="more than 1 entries"):
        read_snapshot(archive, max_files=1)


def test_a_corrupt_archive_is_an_extract_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ExtractError):
        read_snapshot(bad)


def test_writing_out_reproduces_the_tree(tmp_path: Path) -> None:
    archive = tarball(tmp_path / "a.tar.gz", [("app/a.yaml", b"a"), ("b", b"b"),
                                              special("d/e", tarfile.DIRTYPE)])
    dest = tmp_path / "out"
    dest.mkdir()
    read_snapshot(archive).write_to(dest)
    assert (dest / "app/a.yaml").read_bytes() == b"a"
    assert (dest / "b").read_bytes() == b"b"
    assert (dest / "d/e").is_dir()


async def test_one_read_serves_every_consumer_of_a_digest(tmp_path: Path) -> None:
    archive = tarball(tmp_path / "a.tar.gz", [("a", b"a")])
    cache = SnapshotCache()
    got = await asyncio.gather(*(cache.get("sha256:1", archive) for _ in range(10)))
    assert cache.reads == 1
    assert all(g is got[0] for g in got)
    assert await cache.cached("sha256:1", archive) is got[0]


async def test_a_file_rewritten_in_place_is_read_again(tmp_path: Path) -> None:
    archive = tarball(tmp_path / "a.tar.gz", [("a", b"a")])
    cache = SnapshotCache()
    await cache.get("sha256:1", archive)
    tarball(archive, [("a", b"changed")])
    os.utime(archive, ns=(1, 1))
    assert await cache.cached("sha256:1", archive) is None
    assert (await cache.get("sha256:1", archive)).files == {"a": b"changed"}
    assert cache.reads == 2


async def test_the_cache_keeps_the_most_recent_within_its_budget(tmp_path: Path) -> None:
    cache = SnapshotCache(max_bytes=250)
    for i in range(4):
        await cache.get(f"sha256:{i}", tarball(tmp_path / f"{i}.tar.gz", [("a", b"x" * 100)]))
    assert len(cache) == 2
    assert await cache.cached("sha256:0", tmp_path / "0.tar.gz") is None
    assert await cache.cached("sha256:3", tmp_path / "3.tar.gz") is not None
    big = tarball(tmp_path / "big.tar.gz", [("a", b"x" * 1000)])
    await cache.get("sha256:big", big)
    assert await cache.cached("sha256:big", big) is None  # read, not kept


async def test_a_failed_read_reaches_every_waiter(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    cache = SnapshotCache()
    results = await asyncio.gather(*(cache.get("sha256:bad", bad) for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, ExtractError) for r in results)


def test_only_the_files_and_directories_asked_for_are_written(tmp_path: Path) -> None:
    snap = Snapshot.of({"app/a.yaml": b"a", "app/sub/b.yaml": b"b", "other/c.yaml": b"c"},
                       {"app", "app/sub", "app/empty", "other"})

    written = snap.write_to(tmp_path, files={"app/sub/b.yaml", "not/there"},
                            directories={"app/empty", "not-a-directory"})

    assert written == 1
    found = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert found == ["app", "app/empty", "app/sub", "app/sub/b.yaml"]
    assert (tmp_path / "app/sub/b.yaml").read_bytes() == b"b"


def test_everything_is_written_when_nothing_is_named(tmp_path: Path) -> None:
    snap = Snapshot.of({"app/a.yaml": b"a", "top": b"t"}, {"app", "app/empty"})

    assert snap.write_to(tmp_path) == 2

    found = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert found == ["app", "app/a.yaml", "app/empty", "top"]
