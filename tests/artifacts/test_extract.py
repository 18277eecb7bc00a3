"""Safe extraction: hostile tarballs are refused and leave nothing behind."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxd.artifacts.extract import (
    ExtractError,
    UnsafeArchiveError,
    extract_tarball,
    extract_tarball_async,
)
from fluxd.artifacts.storage import ArtifactStore
from fluxd.clock import FakeClock
from tests.artifacts.trees import entry, make_tree, regular_files, tarball

MiB = 1 << 20


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def assert_refused(archive: Path, dest: Path, match: str, **limits: object) -> None:
    """The extraction fails with UnsafeArchiveError and leaves dest's parent as it was."""
    before = sorted(os.listdir(dest.parent))
    with pytest.raises(UnsafeArchiveError, match=match):
        extract_tarball(archive, dest, **limits)  # type: ignore[arg-type]
    assert not dest.exists()
    assert sorted(os.listdir(dest.parent)) == before


# -- what a good archive gives --------------------------------------------------------------


def test_a_store_archive_extracts_to_the_same_files_and_modes(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "storage", clock=FakeClock(), advertised="x")
    files = {"a.yaml": b"a", "dir/b.yaml": b"b" * 5000, "run.sh": b"#!/bin/sh\n"}
    source = make_tree(tmp_path / "src", files, executables=frozenset({"run.sh"}),
                       dirs=("empty",))
    record = store.archive("GitRepository", "ns", "n", source, "a.tar.gz")
    dest = tmp_path / "out"
    summary = extract_tarball(store.local_path(record.path), dest)
    assert regular_files(dest) == files
    assert (dest / "empty").is_dir()
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) & 0o700 == 0o700
    assert stat.S_IMODE((dest / "a.yaml").stat().st_mode) & 0o111 == 0
    assert (summary.files, summary.bytes) == (3, 5011)


def test_an_existing_empty_destination_is_replaced(workdir: Path) -> None:
    archive = write(workdir / "a.tgz", tarball([(entry("x"), b"x")]))
    (workdir / "out").mkdir()
    extract_tarball(archive, workdir / "out")
    assert (workdir / "out/x").read_bytes() == b"x"


def test_a_non_empty_destination_is_refused(workdir: Path) -> None:
    archive = write(workdir / "a.tgz", tarball([(entry("x"), b"x")]))
    make_tree(workdir / "out", {"keep": "me"})
    with pytest.raises(ExtractError, match="not empty"):
        extract_tarball(archive, workdir / "out")
    assert regular_files(workdir / "out") == {"keep": b"me"}


def test_a_hard_link_to_an_earlier_file_becomes_a_copy(workdir: Path) -> None:
    archive = write(workdir / "a.tgz", tarball([
        (entry("orig.yaml"), b"content"),
        (entry("copy.yaml", tarfile.LNKTYPE, linkname="orig.yaml"), None)]))
    extract_tarball(archive, workdir / "out")
    assert (workdir / "out/copy.yaml").read_bytes() == b"content"
    assert (workdir / "out/copy.yaml").stat().st_ino != (workdir / "out/orig.yaml").stat().st_ino


def test_an_uncompressed_tar_is_read_when_asked(workdir: Path) -> None:
    archive = write(workdir / "a.tar", tarball([(entry("x"), b"x")], compress=False))
    extract_tarball(archive, workdir / "out", compressed=False)
    assert (workdir / "out/x").read_bytes() == b"x"


def test_directories_stay_usable_whatever_mode_the_archive_gives(workdir: Path) -> None:
    archive = write(workdir / "a.tgz", tarball([
        (entry("locked", tarfile.DIRTYPE, mode=0o000), None), (entry("locked/x"), b"x")]))
    extract_tarball(archive, workdir / "out")
    assert (workdir / "out/locked/x").read_bytes() == b"x"


@pytest.mark.anyio
async def test_extraction_runs_in_a_worker_thread(workdir: Path) -> None:
    archive = write(workdir / "a.tgz", tarball([(entry("x"), b"x")]))
    summary = await extract_tarball_async(archive, workdir / "out")
    assert summary.files == 1


# -- hostile archives -----------------------------------------------------------------------


def test_a_name_climbing_out_with_dotdot_is_refused(workdir: Path) -> None:
    archive = write(workdir / "a.tgz", tarball([(entry("ok"), b"ok"), (entry("../x"), b"x")]))
    assert_refused(archive, workdir / "out", r"'\.\./x'.*leaves the destination")
    assert not (workdir / "x").exists()


def test_a_dotdot_hidden_in_the_middle_of_a_name_is_refused(workdir: Path) -> None:
    archive = write(workdir / "a.tgz", tarball([(entry("a/../../x"), b"x")]))
    assert_refused(archive, workdir / "out", "leaves the destination")


def test_an_absolute_name_is_refused(workdir: Path) -> None:
    archive = write(workdir / "a.tgz", tarball([(entry("/etc/x"), b"x")]))
    assert_refused(archive, workdir / "out", r"'/etc/x'.*absolute")


def test_a_backslash_in_a_name_is_refused_as_flux_does(workdir: Path) -> None:
    archive = write(workdir / "a.tgz", tarball([(entry("..\\x"), b"x")]))
    assert_refused(archive, workdir / "out", "backslash")


def test_a_symlink_escape_cannot_be_written_through_when_symlinks_are_skipped(
        workdir: Path) -> None:
    outside = workdir / "outside"
    outside.mkdir()
    archive = write(workdir / "a.tgz", tarball([
        (entry("evil", tarfile.SYMTYPE, linkname=str(outside)), None),
        (entry("evil/pwned"), b"gotcha")]))
    summary = extract_tarball(archive, workdir / "out")
    assert list(outside.iterdir()) == []
    assert not (workdir / "out/evil").is_symlink()
    assert (workdir / "out/evil/pwned").read_bytes() == b"gotcha"
    assert summary.skipped_symlinks == 1


def test_a_symlink_escape_is_refused_when_symlinks_are_rejected(workdir: Path) -> None:
    outside = workdir / "outside"
    outside.mkdir()
    archive = write(workdir / "a.tgz", tarball([
        (entry("evil", tarfile.SYMTYPE, linkname="../outside"), None),
        (entry("evil/pwned"), b"gotcha")]))
    assert_refused(archive, workdir / "out", r"'evil' is a symlink", symlinks="reject")
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("target", ["../../etc/passwd", "/etc/passwd", "not-in-archive"])
def test_a_hard_link_to_anything_but_an_earlier_entry_is_refused(workdir: Path,
                                                                 target: str) -> None:
    archive = write(workdir / "a.tgz", tarball([
        (entry("a"), b"a"), (entry("h", tarfile.LNKTYPE, linkname=target), None)]))
    assert_refused(archive, workdir / "out", r"'h'")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_and_fifo_entries_are_refused(workdir: Path, kind: bytes) -> None:
    archive = write(workdir / "a.tgz", tarball([(entry("dev/sda", kind), None)]))
    assert_refused(archive, workdir / "out", r"'dev/sda' is a device or FIFO")


def test_a_gzip_bomb_is_stopped_at_the_limit(workdir: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = entry("bomb")
        info.size = 64 * MiB
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    archive = write(workdir / "a.tgz", gzip.compress(raw.getvalue(), compresslevel=9))
    assert archive.stat().st_size < MiB // 8
    assert_refused(archive, workdir / "out", r"'bomb'.*exceeds the limit of 1048576",
                   max_bytes=MiB)


def test_the_limit_counts_decompressed_bytes_not_what_headers_declare(workdir: Path) -> None:
    # a 4 MiB PAX extended header: no file content at all, yet 4 MiB to decompress
    info = entry("innocent")
    info.pax_headers = {"comment": "z" * (4 * MiB)}
    archive = write(workdir / "a.tgz", tarball([(info, b"tiny")]))
    assert_refused(archive, workdir / "out", "decompressed archive exceeds the limit",
                   max_bytes=MiB)


def test_content_over_the_limit_is_refused_before_it_is_written(workdir: Path) -> None:
    archive = write(workdir / "a.tgz", tarball([(entry("a"), b"a" * 600),
                                                (entry("b"), b"b" * 600)]))
    assert_refused(archive, workdir / "out", r"'b'.*exceeds the limit of 1000", max_bytes=1000)


def test_too_many_entries_are_refused(workdir: Path) -> None:
    archive = write(workdir / "a.tgz", tarball([(entry(f"f{i}"), b"") for i in range(6)]))
    assert_refused(archive, workdir / "out", r"'f5'.*more than 5 entries", max_files=5)


def test_unlimited_means_no_size_check(workdir: Path) -> None:
    archive = write(workdir / "a.tgz", tarball([(entry("a"), b"a" * 5000)]))
    extract_tarball(archive, workdir / "out", max_bytes=-1, max_files=None)
    assert (workdir / "out/a").stat().st_size == 5000


def test_a_corrupt_archive_is_an_error_and_leaves_nothing(workdir: Path) -> None:
    good = tarball([(entry("a"), os.urandom(50_000))])
    archive = write(workdir / "a.tgz", good[: len(good) // 2])
    before = sorted(os.listdir(workdir))
    with pytest.raises(ExtractError):
        extract_tarball(archive, workdir / "out")
    assert sorted(os.listdir(workdir)) == before
    with pytest.raises(ExtractError):
        extract_tarball(write(workdir / "b.tgz", b"not gzip at all"), workdir / "out")


def test_a_file_where_a_directory_is_needed_is_an_error(workdir: Path) -> None:
    archive = write(workdir / "a.tgz", tarball([(entry("a"), b"a"), (entry("a/b"), b"b")]))
    with pytest.raises(ExtractError, match="'a/b'"):
        extract_tarball(archive, workdir / "out")
    assert not (workdir / "out").exists()


# -- round trip -----------------------------------------------------------------------------

segment = st.text(alphabet="abcxyz_-.", min_size=1, max_size=8).filter(
    lambda s: s not in (".", ".."))
tree = st.dictionaries(st.lists(segment, min_size=1, max_size=4).map("/".join),
                       st.binary(max_size=3000), max_size=25).filter(
    lambda files: not any(a != b and b.startswith(a + "/") for a in files for b in files))


@settings(max_examples=60, deadline=None)
@given(files=tree, executable=st.sets(st.integers(0, 24)))
def test_archive_then_extract_round_trips_every_regular_file(files: dict[str, bytes],
                                                             executable: set[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = sorted(files)
        exe = frozenset(n for i, n in enumerate(names) if i in executable)
        source = make_tree(root / "src", files, executables=exe)
        store = ArtifactStore(root / "storage", clock=FakeClock(), advertised="x")
        record = store.archive("Bucket", "ns", "b", source, "a.tar.gz")
        extract_tarball(store.local_path(record.path), root / "out")
        assert regular_files(root / "out") == files
        for name in names:
            mode = (root / "out" / name).stat().st_mode
            assert bool(mode & 0o100) == (name in exe), name
