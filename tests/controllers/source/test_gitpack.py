"""The one-pass pack reader, against packs written by the real ``git pack-objects``."""

from __future__ import annotations

import hashlib
import random
import struct
import zlib
from pathlib import Path

import pytest

from fluxd.controllers.source.gitpack import PackError, PackObjects, PackSpool, fetch_objects
from tests.support.gitserver import _run_git, git


def make_history(root: Path) -> Path:
    """A repository whose files change a little per commit, so packs carry delta chains."""
    repo = root / "src"
    git("init", "--quiet", "--initial-branch=main", repo)
    rng = random.Random(7)
    lines = [f"line {i}: {rng.random()}\n" for i in range(400)]
    for round_ in range(6):
        for f in range(8):
            lines[rng.randrange(len(lines))] = f"changed {round_} {f}\n"
            (repo / f"file{f}.txt").write_text("".join(lines[f:] + lines[:f]))
        (repo / "bin.dat").write_bytes(rng.randbytes(3000))
        (repo / "empty").write_bytes(b"")
        git("add", "-A", cwd=repo)
        git("commit", "--quiet", "-m", f"round {round_}", cwd=repo)
    git("tag", "-a", "v1", "-m", "annotated", cwd=repo)
    return repo


def pack_of(repo: Path, revs: str, *flags: str) -> bytes:
    listed = _run_git(("rev-list", "--objects", *revs.split()), cwd=repo,
                      input=None, env=None, timeout=60, check=True).stdout
    done = _run_git(("pack-objects", "--stdout", *flags), cwd=repo, input=listed, env=None,
                    timeout=60, check=True)
    return done.stdout


def all_objects(repo: Path) -> dict[bytes, tuple[str, bytes]]:
    ids = git("rev-list", "--objects", "--all", cwd=repo).stdout.split()
    ids = [i for i in ids if len(i) == 40]
    out: dict[bytes, tuple[str, bytes]] = {}
    for sha in ids:
        kind = git("cat-file", "-t", sha, cwd=repo).stdout.strip()
        data = _run_git(("cat-file", kind, sha), cwd=repo, input=None, env=None, timeout=60,
                        check=True).stdout
        out[sha.encode()] = (kind, data)
    return out


@pytest.fixture(scope="module")
def history(
        tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[bytes, tuple[str, bytes]]]:
    repo = make_history(tmp_path_factory.mktemp("pack"))
    return repo, all_objects(repo)


KINDS = {"commit": 1, "tree": 2, "blob": 3, "tag": 4}


@pytest.mark.parametrize("flags", [("--delta-base-offset",), (), ("--depth=50",
                                                                  "--window=50")],
                         ids=["ofs-delta", "ref-delta", "long-chains"])
@pytest.mark.parametrize("budget", [1 << 30, 2048], ids=["in-memory", "spilled"])
def test_every_object_matches_git_cat_file(history: tuple[Path, dict[bytes, tuple[str, bytes]]],
                                           flags: tuple[str, ...], budget: int,
                                           tmp_path: Path) -> None:
    repo, expected = history
    data = pack_of(repo, "--all", *flags)
    with PackObjects(tmp_path, budget=budget) as objects:
        objects.load(data)
        assert len(objects) == len(expected)
        for sha, (kind, content) in expected.items():
            assert objects.type_of(sha) == KINDS[kind]
            assert objects.data(sha) == content
        tag = objects[git("rev-parse", "v1", cwd=repo).stdout.strip().encode()]
        assert tag.type_name == b"tag"
        if budget < 4096:
            assert list(tmp_path.iterdir()) == []  # spilled to an unlinked file


def test_the_pack_really_holds_both_kinds_of_delta(
        history: tuple[Path, dict[bytes, tuple[str, bytes]]]) -> None:
    repo, _ = history
    for flags, delta_type in ((("--delta-base-offset",), 6), ((), 7)):
        types = _object_types(pack_of(repo, "--all", *flags))
        assert delta_type in types, types


def _object_types(pack: bytes) -> set[int]:
    """The pack types at each object start, walking with zlib (independent of the reader)."""
    count = struct.unpack(">I", pack[8:12])[0]
    pos, types = 12, set()
    for _ in range(count):
        byte = pack[pos]
        pos += 1
        kind = (byte >> 4) & 7
        while byte & 0x80:
            byte = pack[pos]
            pos += 1
        if kind == 6:
            while pack[pos] & 0x80:
                pos += 1
            pos += 1
        elif kind == 7:
            pos += 20
        d = zlib.decompressobj()
        d.decompress(pack[pos:])
        pos = len(pack) - len(d.unused_data)
        types.add(kind)
    return types


def with_checksum(body: bytes) -> bytes:
    return body + hashlib.sha1(body).digest()


def one_object_pack(kind: int, declared: int, payload: bytes) -> bytes:
    """A pack of one object whose header declares ``declared`` bytes (builders below)."""
    return pack(varint_header(kind, declared) + zlib.compress(payload))


def test_a_corrupt_or_truncated_pack_is_refused(
        history: tuple[Path, dict[bytes, tuple[str, bytes]]], tmp_path: Path) -> None:
    repo, _ = history
    data = bytearray(pack_of(repo, "--all", "--delta-base-offset"))
    data[len(data) // 2] ^= 0xFF
    with PackObjects(tmp_path) as objects, pytest.raises(PackError, match="checksum"):
        objects.load(bytes(data))
    with PackObjects(tmp_path) as objects, pytest.raises(PackError, match="checksum"):
        objects.load(bytes(data[: len(data) // 3]))
    with PackObjects(tmp_path) as objects, pytest.raises(PackError, match="not a Git pack"):
        objects.load(b"<html>login</html>" * 3)


@pytest.mark.parametrize("declared, payload, message", [
    (5, b"hello world", "past the size"),
    (50, b"hello world", "short of the size"),
])
def test_an_object_whose_size_lies_is_refused(declared: int, payload: bytes,
                                              message: str) -> None:
    with PackObjects() as objects, pytest.raises(PackError, match=message):
        objects.load(one_object_pack(3, declared, payload))


def test_a_pack_with_fewer_objects_than_announced_is_refused() -> None:
    body = one_object_pack(3, 5, b"hello")[:-20]
    body = body[:8] + struct.pack(">I", 2) + body[12:]
    with PackObjects() as objects, pytest.raises(PackError, match="fewer objects"):
        objects.load(with_checksum(body))


def test_a_thin_pack_missing_its_bases_is_refused(
        history: tuple[Path, dict[bytes, tuple[str, bytes]]]) -> None:
    repo, _ = history
    thin = _run_git(("pack-objects", "--stdout", "--thin", "--revs"), cwd=repo,
                    input=b"HEAD\n^HEAD~1\n", env=None, timeout=60, check=True).stdout
    assert 7 in _object_types(thin)
    with PackObjects() as objects, pytest.raises(PackError, match="does not hold"):
        objects.load(thin)


def test_a_large_pack_spools_to_a_file_and_resolves_the_same(
        history: tuple[Path, dict[bytes, tuple[str, bytes]]], tmp_path: Path) -> None:
    repo, expected = history
    data = pack_of(repo, "--all", "--delta-base-offset")

    def receive(spool: PackSpool) -> None:
        for i in range(0, len(data), 1000):
            spool.write(data[i:i + 1000])

    with fetch_objects(receive, spill_dir=tmp_path, budget=4096) as objects:
        assert {sha: objects.data(sha) for sha in expected} == {
            sha: content for sha, (_kind, content) in expected.items()}
    assert list(tmp_path.iterdir()) == []


def test_a_header_running_past_the_end_is_refused() -> None:
    body = b"PACK" + struct.pack(">II", 2, 1) + b"\xb5\xff\xff"  # size varint never ends
    with PackObjects() as objects, pytest.raises(PackError, match="inside an object header"):
        objects.load(with_checksum(body))


@pytest.mark.parametrize("budget", [1 << 20, 4], ids=["in-memory", "spilled"])
def test_a_bad_pack_is_a_pack_error_whether_or_not_it_was_spilled(budget: int,
                                                                 tmp_path: Path) -> None:
    """A spilled pack is mapped; the failure's traceback still holds views of the mapping
    while it propagates, which must not turn the error into another one."""
    for pack in (one_object_pack(3, 50, b"hello world"),
                 with_checksum(b"PACK" + struct.pack(">II", 2, 1) + b"\xb5\xff\xff")):
        with pytest.raises(PackError):
            fetch_objects(lambda spool, pack=pack: spool.write(pack), spill_dir=tmp_path,
                          budget=budget)
    assert list(tmp_path.iterdir()) == []


# -- hostile packs: built here object by object ---------------------------------------------


def varint_header(kind: int, size: int) -> bytes:
    out = bytearray()
    byte = (kind << 4) | (size & 15)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


def ofs_encoding(back: int) -> bytes:
    out = [back & 0x7F]
    back >>= 7
    while back:
        back -= 1
        out.append(0x80 | (back & 0x7F))
        back >>= 7
    return bytes(reversed(out))


def delta_size(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def copy_whole(size: int) -> bytes:
    """A delta instruction copying ``size`` bytes from offset 0 of the base."""
    size_bytes = size.to_bytes(3, "little")
    flags = 0x80 | sum(0x10 << i for i in range(3) if size_bytes[i])
    return bytes([flags]) + bytes(b for b in size_bytes if b)


def doubling_delta(base_size: int) -> bytes:
    return (delta_size(base_size) + delta_size(2 * base_size) + copy_whole(base_size) * 2)


def pack(*entries: bytes) -> bytes:
    return with_checksum(b"PACK" + struct.pack(">II", 2, len(entries)) + b"".join(entries))


def blob_id(data: bytes) -> bytes:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).digest()


def test_objects_and_deltas_over_the_size_limit_are_refused() -> None:
    big = b"x" * 2048
    with PackObjects(max_object=1024) as objects, pytest.raises(PackError, match="declares"):
        objects.load(pack(varint_header(3, len(big)) + zlib.compress(big)))
    # each delta doubles its base: a few hundred bytes of pack would inflate without end
    base = b"y" * 100
    entries = [varint_header(3, len(base)) + zlib.compress(base)]
    offsets, size, at = [12], len(base), 12 + len(entries[0])
    for _ in range(8):
        delta = doubling_delta(size)
        entry = (varint_header(6, len(delta)) + ofs_encoding(at - offsets[-1])
                 + zlib.compress(delta))
        entries.append(entry)
        offsets.append(at)
        at += len(entry)
        size *= 2
    with PackObjects(max_object=4096) as objects, \
            pytest.raises(PackError, match="a delta would make an object of 6400 bytes"):
        objects.load(pack(*entries))
    with PackObjects(max_object=1 << 20) as objects:
        objects.load(pack(*entries))
        assert objects.data(blob_id(base * 256).hex().encode()) == base * 256


def test_a_pack_inflating_past_the_total_limit_is_refused() -> None:
    blobs = [varint_header(3, 100) + zlib.compress(bytes([i]) * 100) for i in range(20)]
    with PackObjects(max_total=1000) as objects, pytest.raises(PackError, match="inflates past"):
        objects.load(pack(*blobs))


def test_deltas_may_wait_for_bases_later_in_the_pack() -> None:
    """A REF_DELTA before its base, an OFS_DELTA on that REF_DELTA, and a reversed chain
    of REF_DELTAs: all resolve once the base arrives (git index-pack accepts these)."""
    base = b"base content\n" * 10
    delta_a = delta_size(len(base)) + delta_size(2 * len(base)) + copy_whole(len(base)) * 2
    entry_a = varint_header(7, len(delta_a)) + blob_id(base) + zlib.compress(delta_a)
    a = base * 2
    delta_c = delta_size(len(a)) + delta_size(len(a) + 3) + copy_whole(len(a)) + b"\x03abc"
    entry_c = (varint_header(6, len(delta_c)) + ofs_encoding(len(entry_a))
               + zlib.compress(delta_c))
    entry_b = varint_header(3, len(base)) + zlib.compress(base)
    with PackObjects() as objects:
        objects.load(pack(entry_a, entry_c, entry_b))
        assert objects.data(blob_id(a).hex().encode()) == a
        assert objects.data(blob_id(a + b"abc").hex().encode()) == a + b"abc"
    # a chain of REF_DELTAs in reverse: each waits for the next one
    contents = [b"v0" * 50]
    for i in range(1, 300):
        contents.append(contents[-1] + b"%d" % i)
    entries = []
    for i in range(len(contents) - 1, 0, -1):
        src, dst = contents[i - 1], contents[i]
        delta = (delta_size(len(src)) + delta_size(len(dst)) + copy_whole(len(src))
                 + bytes([len(dst) - len(src)]) + dst[len(src):])
        entries.append(varint_header(7, len(delta)) + blob_id(src) + zlib.compress(delta))
    entries.append(varint_header(3, len(contents[0])) + zlib.compress(contents[0]))
    with PackObjects() as objects:
        objects.load(pack(*entries))
        assert len(objects) == len(contents)
        assert objects.data(blob_id(contents[-1]).hex().encode()) == contents[-1]


def test_an_endless_size_or_offset_varint_is_refused_at_once() -> None:
    endless_size = b"\xb5" + b"\xff" * 50_000 + b"\x01"
    with PackObjects() as objects, pytest.raises(PackError, match="declares"):
        objects.load(pack(endless_size))
    blob = varint_header(3, 5) + zlib.compress(b"hello")
    endless_offset = varint_header(6, 5) + b"\xff" * 50_000 + b"\x01" + zlib.compress(b"x")
    with PackObjects() as objects, pytest.raises(PackError, match="no object before it"):
        objects.load(pack(blob, endless_offset))


# -- bounds on the stream, and stopping on request ------------------------------------------


class Stopped(Exception):
    """What the tests' checkpoint raises (the caller's own error: gitpack passes it on)."""


class StopAfter:
    """A checkpoint that stops the work at its ``calls``-th call, as a reconcile's
    cancellation set between two chunks or objects would."""

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.made = 0

    def __call__(self) -> None:
        self.made += 1
        if self.made >= self.calls:
            raise Stopped


def test_a_checkpoint_stops_the_receive_at_the_next_chunk(tmp_path: Path) -> None:
    kept: list[int] = []

    def receive(spool: PackSpool) -> None:
        for i in range(1000):  # an endless stream, as far as the spool can tell
            spool.write(b"x" * 4096)
            kept.append(i)

    stop = StopAfter(5)
    with pytest.raises(Stopped):
        fetch_objects(receive, spill_dir=tmp_path, budget=8192, checkpoint=stop)
    assert kept == [0, 1, 2, 3]  # the fifth chunk was refused, none after it was asked
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_stops_the_resolution_at_the_next_object(
        history: tuple[Path, dict[bytes, tuple[str, bytes]]]) -> None:
    repo, expected = history
    data = pack_of(repo, "--all", "--delta-base-offset")
    stop = StopAfter(10)
    with PackObjects(checkpoint=stop) as objects:
        with pytest.raises(Stopped):
            objects.load(data)
        # nine objects read, the tenth refused (a delta may resolve with its base)
        assert stop.made == 10 and len(objects) <= 9 < len(expected)


def test_a_pack_sent_past_twice_the_fetch_limit_is_refused_as_it_arrives(
        tmp_path: Path) -> None:
    sent: list[int] = []

    def receive(spool: PackSpool) -> None:
        for i in range(1000):
            spool.write(b"x" * 1000)
            sent.append(i)

    with pytest.raises(PackError, match=r"the pack sent is larger than 8000 bytes, twice "
                                        r"fluxd's limit for one fetch \(\[git\] "
                                        r"max_fetch_size\)"):
        fetch_objects(receive, spill_dir=tmp_path, budget=1024, max_total=4000)
    assert len(sent) == 8
