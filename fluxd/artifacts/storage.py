"""The artifact store: files on disk under Flux's layout, their digests, and their removal.

Contract (after ``fluxcd/pkg`` ``artifact/storage``):

* An artifact lives at ``<kind lowercase>/<namespace>/<name>/<file>`` under ``root`` and is
  advertised at ``http://<advertised>/<path>`` (``<advertised>/<path>`` when the advertised
  address already has a scheme).
* Every write is atomic: the bytes go to a temporary file in the artifact's directory,
  which is chmod'ed 0600, stamped with the clock's time and renamed into place.
  Readers (the HTTP server, consumers) see the old file or the new one, never a part.
* Writes are not fsync'ed unless the store is ``durable`` (as Flux, which does not sync
  either): artifacts are a cache rebuilt from their sources, kept on an emptyDir that a
  node crash discards, and every reconcile checks the stored digest, so a file torn by a
  power loss is found and rebuilt. ``durable`` syncs the file before the rename and its
  directory after it, for stores on persistent volumes that outlive the node.
* ``digest`` is ``<algo>:<hex>`` of the stored (for tarballs: compressed) bytes.
* Garbage collection keeps the current artifact, drops others older than the retention
  TTL, then drops the oldest until at most ``retention_records`` files remain. Age is the
  file's mtime, which the store sets from the injected clock.
* Operations on one object must not overlap (the work queue never runs one key twice at
  once); operations on different objects may run in parallel threads.

All methods here block on the filesystem. Controllers call the ``*_async`` twins, which
run them in a worker thread (``anyio.to_thread.run_sync``): ``archive_async``,
``store_file_async``, ``symlink_async``, ``verify_async``, ``exists_async``,
``garbage_collect_async`` and ``remove_all_async``. Cancelling the awaiting task waits for
the thread to finish, so no half-done write is ever abandoned. ``url_for`` and
``local_path`` do no I/O; ``sweep_temporary_files`` runs once at start-up, before the loop
is busy.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ParamSpec, Protocol, TypeVar

import anyio.to_thread

from fluxd.artifacts.ignore import Matcher
from fluxd.artifacts.tarball import TYPE_DIR, TYPE_REG, GzipWriter, TarWriter
from fluxd.clock import Clock

__all__ = [
    "DIGEST_ALGORITHMS",
    "ArchiveError",
    "ArtifactRecord",
    "ArtifactStore",
    "artifact_dir",
    "artifact_path",
]

log = logging.getLogger("fluxd.artifacts")

#: ``--artifact-digest-algo`` values fluxd supports (Flux also registers blake3).
DIGEST_ALGORITHMS = ("sha256", "sha384", "sha512", "sha1")

DIR_MODE = 0o750
FILE_MODE = 0o600
EXE_FILE_MODE = 0o700
ARTIFACT_FILE_MODE = 0o600

#: Temporary files of unfinished writes start with this; GC skips them.
TEMP_PREFIX = ".fluxd-tmp-"
_LOCK_SUFFIX = ".lock"
_CHUNK = 1 << 20

P = ParamSpec("P")
T = TypeVar("T")


class ArchiveError(Exception):
    """The source tree could not be archived (e.g. a file changed while being read)."""


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def _hasher(algo: str) -> _Hasher:
    if algo not in DIGEST_ALGORITHMS:
        raise ValueError(f"unsupported digest algorithm {algo!r} "
                         f"(supported: {', '.join(DIGEST_ALGORITHMS)})")
    return hashlib.new(algo)


def _check_segment(what: str, value: str) -> str:
    if not value or value in (".", "..") or "/" in value or "\x00" in value:
        raise ValueError(f"invalid artifact {what} {value!r}")
    return value


def artifact_dir(kind: str, namespace: str, name: str) -> str:
    """``<kind lowercase>/<namespace>/<name>``."""
    return "/".join((_check_segment("kind", kind.lower()),
                     _check_segment("namespace", namespace), _check_segment("name", name)))


def artifact_path(kind: str, namespace: str, name: str, file_name: str) -> str:
    """``<kind lowercase>/<namespace>/<name>/<file>``."""
    return f"{artifact_dir(kind, namespace, name)}/{_check_segment('file name', file_name)}"


@dataclass(frozen=True)
class ArtifactRecord:
    """What a source's ``status.artifact`` says about a stored file."""

    path: str
    url: str
    digest: str
    size: int
    last_update_time: datetime.datetime
    revision: str = ""


class _Sink:
    """Writes to the temp file while hashing and counting what was written."""

    def __init__(self, out: BinaryIO, hasher: _Hasher) -> None:
        self.out = out
        self.hasher = hasher
        self.size = 0

    def __call__(self, data: bytes) -> None:
        self.out.write(data)
        self.hasher.update(data)
        self.size += len(data)


def _file_mode(st: os.stat_result) -> int:
    return EXE_FILE_MODE if st.st_mode & 0o111 else FILE_MODE


def _walk(root: Path, ignore: Matcher | None) -> Iterator[tuple[str, Path, os.stat_result]]:
    """(relative name, path, lstat) in ``filepath.Walk`` order: depth first, each directory's
    names sorted bytewise; the root itself first as ``.``. Symlinks and special files are
    left out; excluded directories are still entered unless no ``!`` rule could bring any
    of their contents back (Flux walks them, so the result is the same)."""
    prune = ignore is None or ignore.prunes()
    check = ignore.walk_checker() if ignore is not None else None

    def visit(path: Path, parts: list[str]) -> Iterator[tuple[str, Path, os.stat_result]]:
        with os.scandir(path) as it:
            names = sorted((e.name for e in it), key=os.fsencode)
        for entry_name in names:
            child = path / entry_name
            st = child.lstat()
            is_dir = stat.S_ISDIR(st.st_mode)
            if not (is_dir or stat.S_ISREG(st.st_mode)):
                continue
            child_parts = [*parts, entry_name]
            excluded = check is not None and check(child_parts, is_dir)
            if not excluded:
                yield "/".join(child_parts), child, st
            if is_dir and not (excluded and prune):
                yield from visit(child, child_parts)

    yield ".", root, root.stat()
    yield from visit(root, [])


@dataclass(frozen=True)
class TreeEntry:
    """One entry of a tree held in memory (e.g. read straight from Git objects), given to
    ``archive_entries`` in the order ``archive`` walks a directory (root ``.`` first, then
    depth first with each directory's names in byte order), filtered as it filters."""

    name: str
    is_dir: bool
    executable: bool = False
    data: bytes = b""


class ArtifactStore:
    """Artifacts of all sources under one root directory (see the module docstring)."""

    def __init__(self, root: Path, *, clock: Clock, advertised: str,
                 digest_algo: str = "sha256", retention_records: int = 2,
                 retention_ttl: float = 60.0, durable: bool = False) -> None:
        _hasher(digest_algo)  # fail fast on an unknown algorithm
        self.root = Path(os.path.abspath(root))
        self.clock = clock
        self.advertised = advertised
        self.digest_algo = digest_algo
        self.retention_records = retention_records
        self.retention_ttl = retention_ttl
        self.durable = durable

    # -- paths and URLs ---------------------------------------------------------------------

    def url_for(self, path: str) -> str:
        """The URL the artifact at storage path ``path`` is served at (``SetArtifactURL``)."""
        path = path.lstrip("/")
        if self.advertised.startswith(("http://", "https://")):
            return f"{self.advertised.rstrip('/')}/{path}"
        return f"http://{self.advertised}/{path}"

    def local_path(self, path: str) -> Path:
        """The file for storage path ``path``; refuses paths that leave the root."""
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if not parts or ".." in parts or any("\x00" in p for p in parts):
            raise ValueError(f"invalid artifact path {path!r}")
        return self.root.joinpath(*parts)

    def _object_dir(self, kind: str, namespace: str, name: str) -> Path:
        return self.root / artifact_dir(kind, namespace, name)

    # -- writing ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _atomic_write(self, path: str) -> Iterator[_Sink]:
        """A sink to a temp file next to ``path``, renamed over it only on success."""
        final = self.local_path(path)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=final.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                sink = _Sink(out, _hasher(self.digest_algo))
                yield sink
                out.flush()
                if self.durable:
                    os.fsync(out.fileno())
            os.chmod(tmp, ARTIFACT_FILE_MODE)
            stamp = self.clock.now().timestamp()
            os.utime(tmp, (stamp, stamp))
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        if self.durable:
            _fsync_dir(final.parent)

    def _record(self, path: str, sink: _Sink, revision: str) -> ArtifactRecord:
        return ArtifactRecord(path=path, url=self.url_for(path),
                              digest=f"{self.digest_algo}:{sink.hasher.hexdigest()}",
                              size=sink.size, last_update_time=self.clock.now(),
                              revision=revision)

    def archive(self, kind: str, namespace: str, name: str, source_dir: Path, file_name: str,
                *, ignore: Matcher | None = None, revision: str = "") -> ArtifactRecord:
        """Store ``source_dir`` as a reproducible ``.tar.gz`` (Flux's ``Storage.Archive``).

        Regular files and directories only; names relative to ``source_dir``; uid/gid 0,
        no user/group names, zero times; modes 0750 (dirs), 0700 (executables), 0600.
        ``ignore`` excludes paths (see :mod:`fluxd.artifacts.ignore`); None keeps all.
        """
        source = Path(os.path.abspath(source_dir))
        if not source.is_dir():
            raise ArchiveError(f"invalid dir path: {source_dir}")
        path = artifact_path(kind, namespace, name, file_name)
        with self._atomic_write(path) as sink:
            gz = GzipWriter(sink)
            tar = TarWriter(gz.write)
            for rel, entry, st in _walk(source, ignore):
                rel_bytes = os.fsencode(rel)
                if stat.S_ISDIR(st.st_mode):
                    tar.add_header(rel_bytes, mode=DIR_MODE, size=0, typeflag=TYPE_DIR)
                    continue
                tar.add_header(rel_bytes, mode=_file_mode(st), size=st.st_size,
                               typeflag=TYPE_REG)
                _copy_exact(entry, st.st_size, tar.write)
            tar.close()
            gz.close()
        return self._record(path, sink, revision)

    def archive_entries(self, kind: str, namespace: str, name: str,
                        entries: Iterable[TreeEntry], file_name: str, *,
                        revision: str = "") -> ArtifactRecord:
        """Like ``archive``, from entries in memory: the same bytes as archiving the same
        tree checked out on disk, without writing and re-reading every file."""
        path = artifact_path(kind, namespace, name, file_name)
        with self._atomic_write(path) as sink:
            gz = GzipWriter(sink)
            tar = TarWriter(gz.write)
            for entry in entries:
                rel_bytes = os.fsencode(entry.name)
                if entry.is_dir:
                    tar.add_header(rel_bytes, mode=DIR_MODE, size=0, typeflag=TYPE_DIR)
                    continue
                tar.add_header(rel_bytes, mode=EXE_FILE_MODE if entry.executable
                               else FILE_MODE, size=len(entry.data), typeflag=TYPE_REG)
                tar.write(entry.data)
            tar.close()
            gz.close()
        return self._record(path, sink, revision)

    def store_file(self, kind: str, namespace: str, name: str, file_name: str,
                   data: bytes | Path, *, revision: str = "") -> ArtifactRecord:
        """Store ``data`` (bytes, or a file's contents) as is, e.g. a Helm index or chart."""
        path = artifact_path(kind, namespace, name, file_name)
        with self._atomic_write(path) as sink:
            if isinstance(data, Path):
                with data.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        sink(chunk)
            else:
                sink(data)
        return self._record(path, sink, revision)

    def symlink(self, kind: str, namespace: str, name: str, link_name: str,
                target_file: str) -> str:
        """Point ``link_name`` at ``target_file`` in the same object directory, replacing any
        previous link atomically; returns the link's URL (Flux's ``Storage.Symlink``).

        The link is relative (``target_file`` only), so the storage root may move.
        """
        link_path = artifact_path(kind, namespace, name, link_name)
        target = _check_segment("symlink target", target_file)
        link = self.local_path(link_path)
        link.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = link.with_name(f"{TEMP_PREFIX}{link_name}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(target, tmp)
        try:
            os.replace(tmp, link)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        if self.durable:
            _fsync_dir(link.parent)
        return self.url_for(link_path)

    # -- reading ----------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        """Whether ``path`` is a regular file (not a symlink), as ``ArtifactExist``."""
        try:
            return stat.S_ISREG(self.local_path(path).lstat().st_mode)
        except (OSError, ValueError):
            return False

    def verify(self, path: str, digest: str) -> bool:
        """Whether the file at ``path`` has ``digest`` (``<algo>:<hex>``). False when the file
        is missing or the digest is malformed or of an unsupported algorithm."""
        algo, sep, expected = digest.partition(":")
        if not sep or algo not in DIGEST_ALGORITHMS or not expected:
            return False
        hasher = _hasher(algo)
        try:
            with self.local_path(path).open("rb") as f:
                while chunk := f.read(_CHUNK):
                    hasher.update(chunk)
        except (OSError, ValueError):
            return False
        return hasher.hexdigest() == expected.lower()

    # -- removal ----------------------------------------------------------------------------

    def garbage_collect(self, kind: str, namespace: str, name: str,
                        keep: str | None) -> list[str]:
        """Remove old artifacts of one object; returns the removed storage paths.

        ``keep`` is the storage path of the current artifact, never removed. Others are
        removed when older than ``retention_ttl``; then the oldest go until at most
        ``retention_records`` files (the current one included) remain. A removed file's
        ``.lock`` companion goes with it, and symlinks left dangling are removed too.
        """
        directory = self._object_dir(kind, namespace, name)
        rel_dir = artifact_dir(kind, namespace, name)
        keep_local = self.local_path(keep) if keep else None
        now = self.clock.now().timestamp()
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return []
        files: list[tuple[float, str, Path]] = []
        for entry in entries:
            if (entry.name.startswith(TEMP_PREFIX) or entry.name.endswith(_LOCK_SUFFIX)
                    or not entry.is_file(follow_symlinks=False)):
                continue
            files.append((entry.stat(follow_symlinks=False).st_mtime, entry.name,
                          Path(entry.path)))
        files.sort()
        garbage: list[Path] = []
        survivors: list[Path] = []
        for mtime, _, file in files:
            if file != keep_local and now - mtime > self.retention_ttl:
                garbage.append(file)
            else:
                survivors.append(file)
        excess = len(survivors) - self.retention_records
        for file in survivors:  # oldest first
            if excess <= 0:
                break
            if file != keep_local:
                garbage.append(file)
                excess -= 1
        removed: list[str] = []
        for file in garbage:
            try:
                file.unlink()
            except FileNotFoundError:
                continue
            removed.append(f"{rel_dir}/{file.name}")
            with contextlib.suppress(FileNotFoundError):
                file.with_name(file.name + _LOCK_SUFFIX).unlink()
        for entry in entries:
            if entry.is_symlink() and not os.path.exists(entry.path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(f"{rel_dir}/{entry.name}")
        if removed:
            log.debug("garbage collected artifacts", extra={"removed": removed})
        return removed

    def remove_all(self, kind: str, namespace: str, name: str) -> str | None:
        """Remove an object's whole directory (on deletion); returns it, or None if absent."""
        directory = self._object_dir(kind, namespace, name)
        if not directory.exists():
            return None
        _rmtree(directory)
        return artifact_dir(kind, namespace, name)

    def sweep_temporary_files(self) -> list[str]:
        """Remove leftovers of writes cut short by a crash. Call once at start-up, before
        any controller writes."""
        removed = []
        if not self.root.is_dir():
            return []
        for dirpath, dirnames, filenames in os.walk(self.root):
            for file_name in [*filenames, *dirnames]:
                if file_name.startswith(TEMP_PREFIX):
                    full = Path(dirpath) / file_name
                    if full.is_dir() and not full.is_symlink():
                        _rmtree(full)
                    else:
                        full.unlink()
                    removed.append(full.relative_to(self.root).as_posix())
        return removed

    # -- async twins ------------------------------------------------------------------------

    async def archive_async(self, kind: str, namespace: str, name: str, source_dir: Path,
                            file_name: str, *, ignore: Matcher | None = None,
                            revision: str = "") -> ArtifactRecord:
        return await _in_thread(self.archive, kind, namespace, name, source_dir, file_name,
                                ignore=ignore, revision=revision)

    async def archive_entries_async(self, kind: str, namespace: str, name: str,
                                    entries: Iterable[TreeEntry], file_name: str, *,
                                    revision: str = "") -> ArtifactRecord:
        return await _in_thread(self.archive_entries, kind, namespace, name, entries,
                                file_name, revision=revision)

    async def store_file_async(self, kind: str, namespace: str, name: str, file_name: str,
                               data: bytes | Path, *, revision: str = "") -> ArtifactRecord:
        return await _in_thread(self.store_file, kind, namespace, name, file_name, data,
                                revision=revision)

    async def symlink_async(self, kind: str, namespace: str, name: str, link_name: str,
                            target_file: str) -> str:
        return await _in_thread(self.symlink, kind, namespace, name, link_name, target_file)

    async def verify_async(self, path: str, digest: str) -> bool:
        return await _in_thread(self.verify, path, digest)

    async def exists_async(self, path: str) -> bool:
        return await _in_thread(self.exists, path)

    async def garbage_collect_async(self, kind: str, namespace: str, name: str,
                                    keep: str | None) -> list[str]:
        return await _in_thread(self.garbage_collect, kind, namespace, name, keep)

    async def remove_all_async(self, kind: str, namespace: str, name: str) -> str | None:
        return await _in_thread(self.remove_all, kind, namespace, name)


async def _in_thread(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def _copy_exact(path: Path, size: int, write: Callable[[bytes], Any]) -> None:
    """Copy exactly ``size`` bytes of ``path`` (its size when walked)."""
    remaining = size
    with path.open("rb") as f:
        while remaining > 0:
            chunk = f.read(min(_CHUNK, remaining))
            if not chunk:
                raise ArchiveError(f"{path} shrank while it was archived")
            write(chunk)
            remaining -= len(chunk)
        if f.read(1):
            raise ArchiveError(f"{path} grew while it was archived")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rmtree(path: Path) -> None:
    shutil.rmtree(path)
