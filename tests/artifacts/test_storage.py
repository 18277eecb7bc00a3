"""The artifact store: Flux's layout, reproducible tarballs, atomic writes, GC on a fake clock."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from fluxd.artifacts.ignore import Matcher, source_matcher
from fluxd.artifacts.storage import (
    TEMP_PREFIX,
    ArchiveError,
    ArtifactStore,
    artifact_path,
)
from fluxd.clock import FakeClock
from tests.artifacts.trees import file_names, make_tree, members, names

KIND, NS, NAME = "GitRepository", "flux-system", "podinfo"
FILES = {
    "kustomization.yaml": "resources:\n- deploy.yaml\n",
    "deploy.yaml": "kind: Deployment\n",
    "apps/base/app.yaml": "kind: Service\n",
    "apps/prod/patch.yaml": "spec: {}\n",
    "scripts/run.sh": "#!/bin/sh\necho hi\n",
}


def archive(store: ArtifactStore, source: Path, file_name: str = "a.tar.gz", *,
            ignore: Matcher | None = None, name: str = NAME) -> Path:
    record = store.archive(KIND, NS, name, source, file_name, ignore=ignore)
    return store.local_path(record.path)


# -- layout and URLs ------------------------------------------------------------------------


def test_artifact_path_is_lowercase_kind_namespace_name_file() -> None:
    assert artifact_path("GitRepository", "flux-system", "podinfo", "abc.tar.gz") == \
        "gitrepository/flux-system/podinfo/abc.tar.gz"


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a\x00"])
def test_artifact_path_refuses_segments_that_would_leave_the_object_directory(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid artifact"):
        artifact_path("GitRepository", "ns", bad, "f.tar.gz")


def test_url_is_http_on_the_advertised_host_port(tmp_path: Path, clock: FakeClock) -> None:
    store = ArtifactStore(tmp_path, clock=clock, advertised="localhost:9090")
    assert store.url_for("gitrepository/ns/n/f.tar.gz") == \
        "http://localhost:9090/gitrepository/ns/n/f.tar.gz"


def test_url_keeps_the_scheme_of_an_advertised_url(tmp_path: Path, clock: FakeClock) -> None:
    store = ArtifactStore(tmp_path, clock=clock, advertised="https://artifacts.example/")
    assert store.url_for("/gitrepository/ns/n/f.tar.gz") == \
        "https://artifacts.example/gitrepository/ns/n/f.tar.gz"


def test_local_path_refuses_paths_that_leave_the_root(store: ArtifactStore) -> None:
    for bad in ("../etc/passwd", "a/../../b", "", "/"):
        with pytest.raises(ValueError):
            store.local_path(bad)
    assert store.local_path("/gitrepository/ns/n/f") == store.root / "gitrepository/ns/n/f"


def test_an_unknown_digest_algorithm_is_refused_up_front(tmp_path: Path,
                                                         clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="unsupported digest algorithm"):
        ArtifactStore(tmp_path, clock=clock, advertised="x", digest_algo="md5")


# -- archive format -------------------------------------------------------------------------


def test_archive_record_carries_path_url_digest_of_the_compressed_file_and_size(
        store: ArtifactStore, tmp_path: Path, clock: FakeClock) -> None:
    source = make_tree(tmp_path / "src", FILES)
    record = store.archive(KIND, NS, NAME, source, "abc.tar.gz", revision="main@sha1:abc")
    data = store.local_path(record.path).read_bytes()
    assert record.path == "gitrepository/flux-system/podinfo/abc.tar.gz"
    assert record.url == ("http://source-controller.flux-system.svc.cluster.local./"
                          "gitrepository/flux-system/podinfo/abc.tar.gz")
    assert record.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert record.size == len(data)
    assert record.revision == "main@sha1:abc"
    assert record.last_update_time == clock.now()


def test_same_content_gives_the_same_bytes_whatever_mtimes_owners_and_creation_order(
        store: ArtifactStore, tmp_path: Path) -> None:
    first = make_tree(tmp_path / "one", FILES, executables=frozenset({"scripts/run.sh"}))
    second = tmp_path / "two"
    for rel in reversed(list(FILES)):  # created in the other order
        make_tree(second, {rel: FILES[rel]},
                  executables=frozenset({"scripts/run.sh"}) & {rel})
    for i, path in enumerate(sorted(second.rglob("*"))):
        os.utime(path, (1_000_000 + i * 7919, 2_000_000 + i * 104729))
        if path.is_file():
            path.chmod(path.stat().st_mode | 0o044)  # group/other bits do not matter
    a = archive(store, first, "one.tar.gz")
    b = archive(store, second, "two.tar.gz")
    assert a.read_bytes() == b.read_bytes()


def test_entries_are_normalised_as_flux_does(store: ArtifactStore, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", FILES, executables=frozenset({"scripts/run.sh"}),
                       dirs=("empty",))
    for info in members(archive(store, source)):
        assert (info.uid, info.gid, info.uname, info.gname, info.mtime) == (0, 0, "", "", 0)
        if info.isdir():
            assert info.mode == 0o750, info.name
        elif info.name == "scripts/run.sh":
            assert info.mode == 0o700
        else:
            assert info.mode == 0o600, info.name


def test_entries_are_relative_and_in_walk_order_with_the_root_first(
        store: ArtifactStore, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", {"b.txt": "b", "a/x": "x", "a.txt": "a"})
    # filepath.Walk order: each directory's names sorted, depth first ("a" < "a.txt")
    assert names(archive(store, source)) == [".", "a", "a/x", "a.txt", "b.txt"]


def test_gzip_header_has_no_name_and_a_zero_mtime(store: ArtifactStore,
                                                  tmp_path: Path) -> None:
    data = archive(store, make_tree(tmp_path / "src", FILES)).read_bytes()
    assert data[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        assert tar.getnames()[0] == "."


def test_symlinks_and_special_files_are_left_out(store: ArtifactStore,
                                                 tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", {"real.yaml": "a: 1\n", "dir/x": "x"})
    (source / "link.yaml").symlink_to("real.yaml")
    (source / "dirlink").symlink_to("dir")
    (source / "escape").symlink_to("/etc/passwd")
    os.mkfifo(source / "fifo")
    assert names(archive(store, source)) == [".", "dir", "dir/x", "real.yaml"]


def test_empty_directories_are_kept(store: ArtifactStore, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", {}, dirs=("a/empty",))
    assert names(archive(store, source)) == [".", "a", "a/empty"]


def test_archive_of_a_missing_directory_fails(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="invalid dir path"):
        store.archive(KIND, NS, NAME, tmp_path / "nope", "a.tar.gz")


def test_archive_applies_the_ignore_rules(store: ArtifactStore, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", {**FILES, ".git/HEAD": "ref", "logo.png": "png",
                                          ".github/workflows/ci.yaml": "on: push"})
    assert file_names(archive(store, source, ignore=source_matcher(source))) == set(FILES)


def test_an_excluded_directory_still_yields_a_file_a_negation_brings_back(
        store: ArtifactStore, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", {"vendor/a": "a", "vendor/keep.yaml": "k",
                                          ".sourceignore": "vendor/\n!vendor/keep.yaml\n"})
    got = names(archive(store, source, ignore=source_matcher(source)))
    assert got == [".", ".sourceignore", "vendor/keep.yaml"]


def test_tar_stream_is_byte_for_byte_what_go_archive_tar_writes_for_flux(
        store: ArtifactStore, tmp_path: Path) -> None:
    go = shutil.which("go")
    if go is None:
        pytest.skip("needs the go toolchain")
    program = tmp_path / "flux_archive.go"
    program.write_text(GO_FLUX_ARCHIVE)
    env = {**os.environ, "GOCACHE": str(tmp_path / "gocache"), "GOPATH": str(tmp_path / "gp"),
           "GO111MODULE": "off", "GOTOOLCHAIN": "local", "GOPROXY": "off", "GOFLAGS": ""}
    subprocess.run([go, "build", "-o", str(tmp_path / "flux_archive"), str(program)],
                   env=env, check=True, capture_output=True, timeout=240)
    source = make_tree(tmp_path / "src", {
        **FILES, "ünïcode/fïle.txt": "u", "g" * 120: "long name without a split point",
        "d" * 60 + "/" + "e" * 70 + "/" + "f" * 90: "long name with a ustar prefix",
        "big.bin": os.urandom(70_000)}, executables=frozenset({"scripts/run.sh"}),
        dirs=("empty",))
    (source / "link").symlink_to("deploy.yaml")
    expected = subprocess.run([str(tmp_path / "flux_archive"), str(source)], check=True,
                              capture_output=True, timeout=60).stdout
    assert gzip.decompress(archive(store, source).read_bytes()) == expected


GO_FLUX_ARCHIVE = """
// fluxcd/pkg artifact/storage/archive.go without the filter, as an uncompressed stream.
package main

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"time"
)

func main() {
	dir := os.Args[1]
	tw := tar.NewWriter(os.Stdout)
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if m := fi.Mode(); !(m.IsRegular() || m.IsDir()) {
			return nil
		}
		h, err := tar.FileInfoHeader(fi, p)
		if err != nil {
			return err
		}
		if h.Name, err = filepath.Rel(dir, p); err != nil {
			return err
		}
		h.Gid, h.Uid, h.Uname, h.Gname = 0, 0, "", ""
		h.ModTime, h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}, time.Time{}
		if h.FileInfo().IsDir() {
			h.Mode = 0o750
		} else if fi.Mode()&0o111 != 0 {
			h.Mode = 0o700
		} else {
			h.Mode = 0o600
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		panic(err)
	}
}
"""


# -- atomic writes --------------------------------------------------------------------------


class ExplodingMatcher(Matcher):
    """Fails after a number of questions, i.e. half-way through writing a tarball."""

    def __init__(self, after: int) -> None:
        super().__init__([])
        self.left = after

    def match_parts(self, parts: Sequence[str], is_dir: bool) -> bool:
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("interrupted")
        return False

    def walk_checker(self) -> Callable[[Sequence[str], bool], bool]:
        return self.match_parts


def test_an_archive_interrupted_half_way_leaves_no_file_and_the_old_one_intact(
        store: ArtifactStore, tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", {f"f{i}.yaml": os.urandom(20_000) for i in range(20)})
    old = archive(store, make_tree(tmp_path / "old", {"old.yaml": "v1"}))
    old_bytes = old.read_bytes()
    with pytest.raises(RuntimeError, match="interrupted"):
        store.archive(KIND, NS, NAME, source, old.name, ignore=ExplodingMatcher(10))
    assert old.read_bytes() == old_bytes
    assert sorted(p.name for p in old.parent.iterdir()) == [old.name]


def test_an_interrupted_first_archive_leaves_nothing_behind(store: ArtifactStore,
                                                           tmp_path: Path) -> None:
    source = make_tree(tmp_path / "src", FILES)
    with pytest.raises(RuntimeError):
        store.archive(KIND, NS, NAME, source, "a.tar.gz", ignore=ExplodingMatcher(3))
    assert not store.exists(artifact_path(KIND, NS, NAME, "a.tar.gz"))
    assert list((store.root / "gitrepository/flux-system/podinfo").iterdir()) == []


def test_stored_artifacts_are_0600_and_stamped_with_the_clock(
        store: ArtifactStore, tmp_path: Path, clock: FakeClock) -> None:
    clock.advance(42)
    path = archive(store, make_tree(tmp_path / "src", FILES))
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_mtime == clock.now().timestamp()


def test_store_file_copies_bytes_or_a_file_atomically(store: ArtifactStore,
                                                      tmp_path: Path) -> None:
    index = b"apiVersion: v1\nentries: {}\n"
    record = store.store_file("HelmRepository", NS, "bitnami", "index-abc.yaml", index)
    assert store.local_path(record.path).read_bytes() == index
    assert record.digest == "sha256:" + hashlib.sha256(index).hexdigest()
    chart = tmp_path / "chart.tgz"
    chart.write_bytes(os.urandom(3_000_000))
    record = store.store_file("HelmChart", NS, "podinfo", "podinfo-6.0.0.tgz", chart,
                              revision="6.0.0")
    assert store.local_path(record.path).read_bytes() == chart.read_bytes()
    assert (record.size, record.revision) == (3_000_000, "6.0.0")


def test_symlink_points_at_the_current_file_and_is_replaced_atomically(
        store: ArtifactStore) -> None:
    store.store_file("HelmRepository", NS, "r", "index-1.yaml", b"one")
    store.store_file("HelmRepository", NS, "r", "index-2.yaml", b"two")
    url = store.symlink("HelmRepository", NS, "r", "index.yaml", "index-1.yaml")
    link = store.local_path("helmrepository/flux-system/r/index.yaml")
    assert url.endswith("/helmrepository/flux-system/r/index.yaml")
    assert link.read_bytes() == b"one"
    store.symlink("HelmRepository", NS, "r", "index.yaml", "index-2.yaml")
    assert (link.read_bytes(), os.readlink(link)) == (b"two", "index-2.yaml")
    assert not any(p.name.startswith(TEMP_PREFIX) for p in link.parent.iterdir())


# -- reading --------------------------------------------------------------------------------


def test_verify_accepts_the_recorded_digest_and_rejects_any_other(store: ArtifactStore) -> None:
    record = store.store_file("Bucket", NS, "b", "x.tar.gz", b"payload")
    assert store.verify(record.path, record.digest)
    assert store.verify(record.path, record.digest.upper().replace("SHA256", "sha256"))
    assert not store.verify(record.path, "sha256:" + "0" * 64)
    assert not store.verify(record.path, "nonsense")
    assert not store.verify(record.path, "md5:abc")
    assert not store.verify("bucket/flux-system/b/missing.tar.gz", record.digest)


def test_other_digest_algorithms_are_named_in_the_digest(tmp_path: Path,
                                                          clock: FakeClock) -> None:
    store = ArtifactStore(tmp_path, clock=clock, advertised="x", digest_algo="sha512")
    record = store.store_file("Bucket", NS, "b", "x", b"payload")
    assert record.digest == "sha512:" + hashlib.sha512(b"payload").hexdigest()
    assert store.verify(record.path, record.digest)


def test_exists_is_true_only_for_regular_files(store: ArtifactStore) -> None:
    record = store.store_file("HelmRepository", NS, "r", "index-1.yaml", b"one")
    store.symlink("HelmRepository", NS, "r", "index.yaml", "index-1.yaml")
    assert store.exists(record.path)
    assert not store.exists("helmrepository/flux-system/r/index.yaml")
    assert not store.exists("helmrepository/flux-system/r")
    assert not store.exists("../../etc/passwd")


# -- garbage collection ---------------------------------------------------------------------


def write_generations(store: ArtifactStore, clock: FakeClock, count: int,
                      step: float = 10) -> list[str]:
    paths = []
    for i in range(count):
        paths.append(store.store_file(KIND, NS, NAME, f"rev{i}.tar.gz", b"x" * i).path)
        clock.advance(step)
    return paths


def existing(store: ArtifactStore) -> list[str]:
    directory = store.root / "gitrepository/flux-system/podinfo"
    return sorted(p.name for p in directory.iterdir())


def test_gc_keeps_the_newest_records_within_the_ttl(store: ArtifactStore,
                                                     clock: FakeClock) -> None:
    paths = write_generations(store, clock, 4)
    removed = store.garbage_collect(KIND, NS, NAME, keep=paths[-1])
    assert removed == paths[:2]
    assert existing(store) == ["rev2.tar.gz", "rev3.tar.gz"]


def test_gc_removes_previous_artifacts_older_than_the_ttl(store: ArtifactStore,
                                                           clock: FakeClock) -> None:
    paths = write_generations(store, clock, 2)
    assert store.garbage_collect(KIND, NS, NAME, keep=paths[-1]) == []
    clock.advance(60)  # rev0 is 80 s old, rev1 70 s: both past the 60 s TTL
    assert store.garbage_collect(KIND, NS, NAME, keep=paths[-1]) == [paths[0]]
    assert existing(store) == ["rev1.tar.gz"]


def test_gc_never_removes_the_current_artifact_even_when_it_is_the_oldest(
        store: ArtifactStore, clock: FakeClock) -> None:
    paths = write_generations(store, clock, 4)
    clock.advance(1000)
    assert store.garbage_collect(KIND, NS, NAME, keep=paths[0]) == paths[1:]
    assert existing(store) == ["rev0.tar.gz"]


def test_gc_by_count_counts_the_current_artifact(store: ArtifactStore,
                                                 clock: FakeClock) -> None:
    paths = write_generations(store, clock, 3)
    assert store.garbage_collect(KIND, NS, NAME, keep=paths[0]) == [paths[1]]
    assert existing(store) == ["rev0.tar.gz", "rev2.tar.gz"]


def test_gc_takes_lock_files_along_and_cleans_dangling_symlinks(
        store: ArtifactStore, clock: FakeClock) -> None:
    paths = write_generations(store, clock, 3)
    directory = store.root / "gitrepository/flux-system/podinfo"
    (directory / "rev0.tar.gz.lock").write_text("")
    store.symlink(KIND, NS, NAME, "latest.tar.gz", "rev2.tar.gz")
    store.symlink(KIND, NS, NAME, "old.tar.gz", "rev0.tar.gz")
    (directory / f"{TEMP_PREFIX}inflight").write_text("")  # a write in progress
    removed = store.garbage_collect(KIND, NS, NAME, keep=paths[-1])
    assert removed == [paths[0], "gitrepository/flux-system/podinfo/old.tar.gz"]
    assert existing(store) == [f"{TEMP_PREFIX}inflight", "latest.tar.gz", "rev1.tar.gz",
                               "rev2.tar.gz"]


def test_gc_of_an_object_without_artifacts_removes_nothing(store: ArtifactStore) -> None:
    assert store.garbage_collect(KIND, NS, "never-stored", keep=None) == []


def test_remove_all_deletes_the_object_directory_only(store: ArtifactStore,
                                                      clock: FakeClock) -> None:
    write_generations(store, clock, 2)
    other = store.store_file(KIND, NS, "other", "a.tar.gz", b"a")
    assert store.remove_all(KIND, NS, NAME) == "gitrepository/flux-system/podinfo"
    assert not (store.root / "gitrepository/flux-system/podinfo").exists()
    assert store.exists(other.path)
    assert store.remove_all(KIND, NS, NAME) is None


def test_sweep_removes_leftovers_of_interrupted_writes(store: ArtifactStore) -> None:
    record = store.store_file(KIND, NS, NAME, "a.tar.gz", b"a")
    leftover = store.local_path(record.path).with_name(f"{TEMP_PREFIX}abc")
    leftover.write_bytes(b"partial")
    assert store.sweep_temporary_files() == [f"gitrepository/flux-system/podinfo/{leftover.name}"]
    assert existing(store) == ["a.tar.gz"]


# -- async twins ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_twins_run_the_same_operations_off_the_loop(
        store: ArtifactStore, tmp_path: Path, clock: FakeClock) -> None:
    source = make_tree(tmp_path / "src", FILES)
    record = await store.archive_async(KIND, NS, NAME, source, "a.tar.gz", revision="r1")
    assert await store.exists_async(record.path)
    assert await store.verify_async(record.path, record.digest)
    copy = await store.store_file_async(KIND, NS, NAME, "b.tar.gz", b"b")
    await store.symlink_async(KIND, NS, NAME, "latest.tar.gz", "b.tar.gz")
    clock.advance(120)
    assert await store.garbage_collect_async(KIND, NS, NAME, keep=copy.path) == [record.path]
    assert await store.remove_all_async(KIND, NS, NAME) == "gitrepository/flux-system/podinfo"


# -- durability -----------------------------------------------------------------------------


@pytest.mark.parametrize("durable", [False, True])
def test_only_a_durable_store_fsyncs_files_and_directories(
        tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch,
        durable: bool) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store = ArtifactStore(tmp_path / "store", clock=clock, advertised="h:1", durable=durable)
    make_tree(tmp_path / "src", FILES)
    path = archive(store, tmp_path / "src")
    store.symlink(KIND, NS, NAME, "latest.tar.gz", path.name)
    # a durable store syncs the archive, its directory after the rename, and the
    # directory after the link's rename; the default store syncs nothing
    assert len(synced) == (3 if durable else 0)
    with tarfile.open(path) as tar:
        assert "deploy.yaml" in tar.getnames()
