"""Safe extraction of artifact tarballs, for the controllers that consume them.

Contract (after ``fluxcd/pkg`` ``tar.Untar`` as the consumers call it, with
``WithSkipSymlinks``):

* Entry names must be relative and stay inside the destination: absolute names, ``..``
  segments and backslashes are refused (``validRelPath``).
* Regular files and directories are written; files keep their permission bits, directories
  get the owner's ``rwx`` added. Times are not restored.
* Symlinks are dropped without being created (``symlinks="skip"``, what Flux's consumers
  do) or refused (``symlinks="reject"``, ``Untar``'s default). Never created, they cannot be
  written through.
* Hard links are refused when they point outside the archive's own files; a link to a file
  extracted earlier becomes a copy of it. (Go's reader reports a hard link as an empty
  regular file and Flux writes that; nothing fluxd or Flux produces contains one.)
* Devices and FIFOs are refused.
* Size: the bytes the gzip layer actually produces are counted as they are read, so a
  compression bomb stops at the limit whatever the headers claim. File contents may total
  ``max_bytes``; tar's own headers get an allowance of 1.5 KiB per entry on top. At most
  ``max_files`` entries (of any type).
* All or nothing: entries go to a temporary directory beside ``dest``, renamed to ``dest``
  on success (``dest`` must be absent or an empty directory) and removed on any error.

Violations raise :class:`UnsafeArchiveError`, which names the entry; a corrupt archive
raises :class:`ExtractError`.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import anyio.to_thread

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FILES",
    "ExtractError",
    "ExtractSummary",
    "UnsafeArchiveError",
    "extract_tarball",
    "extract_tarball_async",
]

#: Flux's ``DefaultMaxUntarSize``.
DEFAULT_MAX_BYTES = 100 << 20
DEFAULT_MAX_FILES = 100_000

_IMPLICIT_DIR_MODE = 0o750
_PER_ENTRY_ALLOWANCE = 1536  # header block, padding and some slack per entry
_READ_AHEAD_ALLOWANCE = 64 << 10
_CHUNK = 1 << 20


class ExtractError(Exception):
    """The archive could not be extracted (corrupt, truncated, conflicting entries)."""


class UnsafeArchiveError(ExtractError):
    """The archive tried something it may not: escape, special files, too big, too many."""


@dataclass(frozen=True)
class ExtractSummary:
    files: int
    directories: int
    bytes: int
    skipped_symlinks: int


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Budget(Exception):
    """Raised from inside tarfile's reads; turned into UnsafeArchiveError with a name."""


class _CountingReader(io.RawIOBase):
    """Counts decompressed bytes and stops reading past ``limit`` (None: no limit)."""

    def __init__(self, raw: _Readable, limit: int | None) -> None:
        self._raw = raw
        self.limit = limit
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(len(view))
        n = len(data)
        view[:n] = data
        self.count += n
        if self.limit is not None and self.count > self.limit:
            raise _Budget
        return n


def _parts(name: str, what: str, entry: str) -> list[str]:
    if not name:
        raise UnsafeArchiveError(f"tar entry with an empty {what}")
    if name.startswith("/"):
        raise UnsafeArchiveError(f"tar entry {entry!r}: absolute {what} {name!r}")
    if "\\" in name:
        raise UnsafeArchiveError(f"tar entry {entry!r}: backslash in {what} {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"tar entry {entry!r}: {what} {name!r} leaves the "
                                 "destination")
    return parts


def extract_tarball(archive: Path, dest: Path, *, max_bytes: int | None = DEFAULT_MAX_BYTES,
                    max_files: int | None = DEFAULT_MAX_FILES,
                    symlinks: Literal["skip", "reject"] = "skip",
                    compressed: bool = True) -> ExtractSummary:
    """Extract the (gzip-compressed unless ``compressed=False``) tar ``archive`` to ``dest``.

    ``max_bytes`` / ``max_files`` of None (or negative bytes, as Flux's -1) mean no limit.
    Blocking; see :func:`extract_tarball_async`.
    """
    if max_bytes is not None and max_bytes < 0:
        max_bytes = None
    dest = Path(os.path.abspath(dest))
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise ExtractError(f"destination {dest} exists and is not a directory")
    if dest.is_dir() and any(dest.iterdir()):
        raise ExtractError(f"destination {dest} is not empty")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    try:
        with contextlib.ExitStack() as stack:
            file = stack.enter_context(archive.open("rb"))
            raw: _Readable = file
            if compressed:
                unzipped = gzip.GzipFile(fileobj=file, mode="rb")
                stack.callback(unzipped.close)
                raw = unzipped
            summary = _extract_stream(raw, tmp, max_bytes=max_bytes, max_files=max_files,
                                      symlinks=symlinks)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


async def extract_tarball_async(archive: Path, dest: Path, *,
                                max_bytes: int | None = DEFAULT_MAX_BYTES,
                                max_files: int | None = DEFAULT_MAX_FILES,
                                symlinks: Literal["skip", "reject"] = "skip",
                                compressed: bool = True) -> ExtractSummary:
    """:func:`extract_tarball` in a worker thread."""
    call = functools.partial(extract_tarball, archive, dest, max_bytes=max_bytes,
                             max_files=max_files, symlinks=symlinks, compressed=compressed)
    return await anyio.to_thread.run_sync(call)


def _extract_stream(raw: _Readable, root: Path, *, max_bytes: int | None,
                    max_files: int | None, symlinks: str) -> ExtractSummary:
    def allowance(entries: int) -> int | None:
        if max_bytes is None:
            return None
        return max_bytes + _PER_ENTRY_ALLOWANCE * (entries + 1) + _READ_AHEAD_ALLOWANCE

    counter = _CountingReader(raw, allowance(0))
    reader = io.BufferedReader(counter, buffer_size=64 << 10)
    files = directories = skipped = 0
    written = 0
    extracted: set[tuple[str, ...]] = set()
    made_dirs: set[tuple[str, ...]] = {()}
    current = "(archive start)"

    def over_limit(what: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"tar entry {current!r}: {what} exceeds the limit of "
                                  f"{max_bytes} bytes")

    def ensure_dir(parts: tuple[str, ...], mode: int) -> None:
        for i in range(1, len(parts) + 1):
            prefix = parts[:i]
            if prefix in made_dirs:
                continue
            target = root.joinpath(*prefix)
            try:
                target.mkdir(mode=mode if i == len(parts) else _IMPLICIT_DIR_MODE)
            except FileExistsError:
                if not stat.S_ISDIR(target.lstat().st_mode):
                    raise ExtractError(f"tar entry {current!r}: {'/'.join(prefix)!r} is "
                                       "not a directory") from None
            made_dirs.add(prefix)

    def write_file(parts: tuple[str, ...], mode: int, source: _Readable, size: int) -> int:
        nonlocal written
        ensure_dir(parts[:-1], _IMPLICIT_DIR_MODE)
        target = root.joinpath(*parts)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(target, flags, mode)
        except (IsADirectoryError, NotADirectoryError) as exc:
            raise ExtractError(f"tar entry {current!r}: cannot write: {exc}") from None
        copied = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                copied += len(chunk)
                written += len(chunk)
                if max_bytes is not None and written > max_bytes:
                    raise over_limit("the extracted content")
                out.write(chunk)
        if copied != size:
            raise ExtractError(f"tar entry {current!r}: wrote {copied} bytes, expected {size}")
        extracted.add(parts)
        return copied

    try:
        with tarfile.open(fileobj=reader, mode="r|", encoding="utf-8",
                          errors="surrogateescape") as tar:
            declared = 0
            for entries, member in enumerate(tar, 1):
                current = member.name
                counter.limit = allowance(entries)
                if max_files is not None and entries > max_files:
                    raise UnsafeArchiveError(f"tar entry {current!r}: the archive has more "
                                             f"than {max_files} entries")
                declared += max(member.size, 0)
                if max_bytes is not None and declared > max_bytes:
                    raise over_limit("the declared content")
                parts = tuple(_parts(member.name, "name", current))
                if member.isdir():
                    ensure_dir(parts, (member.mode & 0o777) | 0o700)
                    directories += 1
                elif member.type == tarfile.GNUTYPE_SPARSE:
                    raise UnsafeArchiveError(f"tar entry {current!r}: sparse files are not "
                                             "supported")
                elif member.isreg():
                    if not parts:
                        raise UnsafeArchiveError(f"tar entry {current!r}: not a file name")
                    source = tar.extractfile(member)
                    assert source is not None
                    write_file(parts, member.mode & 0o777, source, member.size)
                    files += 1
                elif member.issym():
                    if symlinks == "reject":
                        raise UnsafeArchiveError(
                            f"tar entry {current!r} is a symlink (to {member.linkname!r}), "
                            "which is not allowed")
                    skipped += 1
                elif member.islnk():
                    target = tuple(_parts(member.linkname, "hard link target", current))
                    if target not in extracted:
                        raise UnsafeArchiveError(
                            f"tar entry {current!r}: hard link to {member.linkname!r}, which "
                            "is not a file extracted earlier from this archive")
                    if not parts:
                        raise UnsafeArchiveError(f"tar entry {current!r}: not a file name")
                    original = root.joinpath(*target)
                    with original.open("rb") as source_file:
                        st = os.fstat(source_file.fileno())
                        write_file(parts, stat.S_IMODE(st.st_mode), source_file, st.st_size)
                    files += 1
                elif member.ischr() or member.isblk() or member.isfifo():
                    raise UnsafeArchiveError(f"tar entry {current!r} is a device or FIFO, "
                                             "which is not allowed")
                else:
                    raise UnsafeArchiveError(f"tar entry {current!r} has an unsupported "
                                             f"type {member.type!r}")
    except _Budget:
        raise UnsafeArchiveError(f"tar entry {current!r}: the decompressed archive exceeds "
                                 f"the limit of {max_bytes} bytes") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ExtractError(f"corrupt archive near entry {current!r}: {exc}") from None
    return ExtractSummary(files=files, directories=directories, bytes=written,
                          skipped_symlinks=skipped)
