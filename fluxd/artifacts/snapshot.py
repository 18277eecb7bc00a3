"""Artifacts read into memory once per digest, for consumers that read many of them.

A thousand Kustomizations on one GitRepository all read the same artifact. Extracting
it for each of them makes the work grow with the square of the repository; here it is
read once, by digest, into a ``Snapshot`` (its regular files by relative path), and each
consumer takes the files it needs, or writes out those it needs when it wants a real
directory (no tar parsing then).

Contract:

* ``read_snapshot`` applies the extraction rules of ``extract``: relative names that stay
  inside, symlinks skipped, hard links only to files read earlier (copied), devices,
  FIFOs and sparse files refused, ``max_bytes`` of content (counted as decompressed) and
  ``max_files`` entries. Blocking.
* ``SnapshotCache`` keeps the most recently used snapshots up to ``max_bytes`` of
  content (a bigger artifact is read but not kept). Concurrent requests for one digest
  share one read. A cached snapshot is used only while its file has the size and
  modification time it had when read, so a file rebuilt in place is read again; the
  caller checks the digest before asking (a snapshot is keyed by the digest it was
  asked for).
* Use it from one event loop; reads run in worker threads.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import tarfile
import zlib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fluxd.artifacts.extract import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FILES,
    ExtractError,
    UnsafeArchiveError,
    _parts,
)
from fluxd.lru import LRU

__all__ = ["Snapshot", "SnapshotCache", "read_snapshot"]

_FILE_MODE = 0o644


@dataclass(frozen=True)
class Snapshot:
    """An artifact's regular files by relative POSIX path, and its directories."""

    files: Mapping[str, bytes]
    directories: frozenset[str]
    size: int
    #: directory ("" is the root) → (sub-directory names, file names), each sorted
    children: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(
        default_factory=dict)

    @classmethod
    def of(cls, files: Mapping[str, bytes], directories: set[str]) -> Snapshot:
        dirs: dict[str, set[str]] = {"": set()}
        names: dict[str, list[str]] = {"": []}
        for path in directories:
            parent, _, name = path.rpartition("/")
            dirs.setdefault(parent, set()).add(name)
            dirs.setdefault(path, set())
            names.setdefault(path, [])
        for path in files:
            parent, _, name = path.rpartition("/")
            names.setdefault(parent, []).append(name)
        children = {d: (tuple(sorted(dirs.get(d, ()))), tuple(sorted(names.get(d, ()))))
                    for d in {*dirs, *names}}
        return cls(files=dict(files), directories=frozenset(directories),
                   size=sum(len(v) for v in files.values()), children=children)

    def listdir(self, directory: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(sub-directory names, file names) directly under ``directory`` ("" is the
        root), each sorted."""
        return self.children.get(directory, ((), ()))

    def is_dir(self, path: str) -> bool:
        return path == "" or path in self.directories

    def walk(self, top: str) -> Iterator[str]:
        """Every file path under ``top``, depth first in name order."""
        dirs, files = self.listdir(top)
        entries = sorted([(d, True) for d in dirs] + [(f, False) for f in files])
        for name, is_dir in entries:
            path = f"{top}/{name}" if top else name
            if is_dir:
                yield from self.walk(path)
            else:
                yield path

    def write_to(self, dest: Path, *, files: Collection[str] | None = None,
                 directories: Collection[str] = ()) -> int:
        """Write the files under ``dest`` (an existing, empty directory) at their relative
        paths: all of them, or only ``files`` (names the snapshot does not hold are
        skipped) and the ``directories`` named besides, even when empty. Returns the
        number of files written. Blocking."""
        if files is None:
            files, directories = self.files.keys(), self.directories
        for directory in sorted(d for d in directories if d in self.directories):
            (dest / directory).mkdir(parents=True, exist_ok=True)
        written = 0
        for path in files:
            data = self.files.get(path)
            if data is None:
                continue
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         _FILE_MODE)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            written += 1
        return written


def read_snapshot(archive: Path, *, max_bytes: int | None = DEFAULT_MAX_BYTES,
                  max_files: int | None = DEFAULT_MAX_FILES) -> Snapshot:
    """The files of the gzip-compressed tar ``archive`` (see the module docstring)."""
    files: dict[str, bytes] = {}
    directories: set[str] = set()
    total = 0
    current = "(archive start)"
    try:
        with archive.open("rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as unzipped, \
                tarfile.open(fileobj=io.BufferedReader(unzipped, 1 << 16),
                             mode="r|", encoding="utf-8",
                             errors="surrogateescape") as tar:
            for entries, member in enumerate(tar, 1):
                current = member.name
                if max_files is not None and entries > max_files:
                    raise UnsafeArchiveError(f"tar entry {current!r}: the archive has more "
                                             f"than {max_files} entries")
                parts = _parts(member.name, "name", current)
                name = "/".join(parts)
                if member.isdir():
                    if name:
                        directories.add(name)
                    continue
                if member.issym():
                    continue
                if member.isreg() or member.islnk():
                    if not parts:
                        raise UnsafeArchiveError(f"tar entry {current!r}: not a file name")
                    if member.islnk():
                        target = "/".join(_parts(member.linkname, "hard link target",
                                                 current))
                        if target not in files:
                            raise UnsafeArchiveError(
                                f"tar entry {current!r}: hard link to "
                                f"{member.linkname!r}, which is not a file read earlier "
                                "from this archive")
                        data = files[target]
                    else:
                        source = tar.extractfile(member)
                        assert source is not None
                        data = source.read()
                    total += len(data)
                    if max_bytes is not None and 0 <= max_bytes < total:
                        raise UnsafeArchiveError(f"tar entry {current!r}: the extracted "
                                                 f"content exceeds the limit of {max_bytes} "
                                                 "bytes")
                    files[name] = data
                    for i in range(1, len(parts)):
                        directories.add("/".join(parts[:i]))
                    continue
                raise UnsafeArchiveError(f"tar entry {current!r} is a device, FIFO or "
                                         "sparse file, which is not allowed")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ExtractError(f"corrupt archive near entry {current!r}: {exc}") from None
    return Snapshot.of(files, directories)


@dataclass
class _Entry:
    snapshot: Snapshot
    stat: tuple[int, int]


@dataclass
class SnapshotCache:
    """Recently used snapshots by digest (see the module docstring)."""

    max_bytes: int = 64 << 20
    _entries: LRU[str, _Entry] = field(init=False)
    _reading: dict[str, asyncio.Future[Snapshot]] = field(default_factory=dict)
    #: counters for tests and diagnostics
    reads: int = 0

    def __post_init__(self) -> None:
        self._entries = LRU(self.max_bytes, weigh=lambda entry: entry.snapshot.size)

    def _stat(self, archive: Path) -> tuple[int, int]:
        st = archive.stat()
        return st.st_size, st.st_mtime_ns

    async def cached(self, digest: str, archive: Path) -> Snapshot | None:
        """The snapshot of ``digest`` if it is kept and ``archive`` is unchanged since it
        was read (then its digest needs no new check); None otherwise."""
        entry = self._entries.peek(digest)
        if entry is None:
            return None
        try:
            # one stat of a file in fluxd's own storage: cheaper than a thread hop
            stat = self._stat(archive)
        except OSError:
            return None
        if entry.stat != stat:
            return None
        self._entries.get(digest)  # used: the most recent now
        return entry.snapshot

    async def get(self, digest: str, archive: Path) -> Snapshot:
        stat = await asyncio.to_thread(self._stat, archive)
        entry = self._entries.peek(digest)
        if entry is not None and entry.stat == stat:
            self._entries.get(digest)  # used: the most recent now
            return entry.snapshot
        pending = self._reading.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Snapshot] = asyncio.get_running_loop().create_future()
        self._reading[digest] = future
        try:
            self.reads += 1
            snapshot = await asyncio.to_thread(read_snapshot, archive)
        except BaseException as exc:
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved here; waiters get it from the future
            else:
                future.cancel()
            raise
        finally:
            self._reading.pop(digest, None)
        future.set_result(snapshot)
        # a snapshot bigger than the whole cache is not kept
        self._entries.put(digest, _Entry(snapshot, stat))
        return snapshot

    def __len__(self) -> int:
        return len(self._entries)
