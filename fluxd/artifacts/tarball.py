"""Reproducible ``.tar.gz`` writing, header for header as Go's ``archive/tar`` writes them.

Flux builds artifacts with Go's ``archive/tar`` (``fluxcd/pkg`` ``artifact/storage/
archive.go``). To keep the same tar stream, this module emits headers the way Go's writer
does rather than with :mod:`tarfile` (which appends ``/`` to directory names, uses other
PAX header names and pads the archive to a 10 KiB record):

* USTAR when the name fits (ASCII, <= 100 bytes or splittable into a 155-byte prefix and a
  100-byte name), otherwise a PAX ``x`` header named ``<dir>/PaxHeaders.0/<file>``;
* numbers as zero-padded octal with a NUL terminator, checksum as six digits, NUL, space;
* the archive ends with two zero blocks and nothing else.

The gzip member has mtime 0, no file name, XFL 0 and OS 255, as Go's ``compress/gzip``
writes by default. The deflate data comes from zlib, so the compressed bytes (and so the
digest) differ from Flux's for the same tree: only the uncompressed tar stream is the same.
"""

from __future__ import annotations

import posixpath
import struct
import zlib
from collections.abc import Callable

__all__ = ["BLOCK", "GzipWriter", "TarWriter"]

BLOCK = 512
_NAME_SIZE = 100
_PREFIX_SIZE = 155
_MAX_OCTAL_SIZE = 8**11
_ZERO_BLOCK = bytes(BLOCK)

TYPE_REG = b"0"
TYPE_DIR = b"5"
_TYPE_PAX = b"x"


class GzipWriter:
    """A single gzip member written through ``sink``; :meth:`close` writes the trailer."""

    def __init__(self, sink: Callable[[bytes], object], level: int = 6) -> None:
        self._sink = sink
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._crc = 0
        self._size = 0
        # magic, CM=deflate, FLG=0, MTIME=0, XFL=0, OS=255 (unknown)
        sink(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        chunk = self._deflate.compress(data)
        if chunk:
            self._sink(chunk)

    def close(self) -> None:
        self._sink(self._deflate.flush())
        self._sink(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))


def _is_ascii(name: bytes) -> bool:
    return all(0 < b < 0x80 for b in name)


def _to_ascii(name: bytes) -> bytes:
    return bytes(b for b in name if 0 < b < 0x80)


def _octal(value: int, width: int) -> bytes:
    """Go's ``formatOctal``: zero-padded digits and a NUL, or all zeros if too big."""
    if value < 0 or value >= 8 ** (width - 1):
        value = 0
    return b"%0*o\x00" % (width - 1, value)


def _field(value: bytes, width: int) -> bytes:
    return value[:width].ljust(width, b"\x00")


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """Go's ``splitUSTARPath``: (prefix, name) for a long ASCII name, or None."""
    length = len(name)
    if length <= _NAME_SIZE or not _is_ascii(name):
        return None
    if length > _PREFIX_SIZE + 1:
        length = _PREFIX_SIZE + 1
    elif name[length - 1:length] == b"/":
        length -= 1
    i = name.rfind(b"/", 0, length)
    suffix_len = len(name) - i - 1
    if i <= 0 or suffix_len > _NAME_SIZE or suffix_len == 0 or i > _PREFIX_SIZE:
        return None
    return name[:i], name[i + 1:]


def _pax_record(key: bytes, value: bytes) -> bytes:
    size = len(key) + len(value) + 3
    size += len(str(size))
    record = b"%d %s=%s\n" % (size, key, value)
    if len(record) != size:
        record = b"%d %s=%s\n" % (len(record), key, value)
    return record


def _header(*, name: bytes, mode: int, size: int, typeflag: bytes,
            prefix: bytes = b"", devices: bool = True) -> bytes:
    fields = [
        _field(name, 100),
        _octal(mode, 8),
        _octal(0, 8),  # uid
        _octal(0, 8),  # gid
        _octal(size, 12),
        _octal(0, 12),  # mtime: Go writes the zero time as the Unix epoch
        b" " * 8,  # checksum placeholder
        typeflag,
        bytes(100),  # linkname
        b"ustar\x0000",
        bytes(32),  # uname
        bytes(32),  # gname
        _octal(0, 8) if devices else bytes(8),
        _octal(0, 8) if devices else bytes(8),
        _field(prefix, _PREFIX_SIZE),
    ]
    block = bytearray(b"".join(fields).ljust(BLOCK, b"\x00"))
    checksum = sum(block)
    block[148:156] = b"%06o\x00 " % checksum
    return bytes(block)


class TarWriter:
    """Writes entries with fixed owner, times and the given mode, Go style."""

    def __init__(self, sink: Callable[[bytes], object]) -> None:
        self._sink = sink
        self._pending_pad = 0

    def _pad(self) -> None:
        if self._pending_pad:
            self._sink(bytes(self._pending_pad))
            self._pending_pad = 0

    def add_header(self, name: bytes, *, mode: int, size: int, typeflag: bytes) -> None:
        """Start an entry; for regular files the caller then writes exactly ``size`` bytes."""
        self._pad()
        pax: dict[bytes, bytes] = {}
        ustar_ok = True
        if len(name) > _NAME_SIZE or not _is_ascii(name):
            pax[b"path"] = name
            if _split_ustar(name) is None:
                ustar_ok = False
        if size >= _MAX_OCTAL_SIZE:
            pax[b"size"] = str(size).encode()
            ustar_ok = False
        if ustar_ok:
            split = _split_ustar(name)
            prefix, short = split if split is not None else (b"", name)
            self._sink(_header(name=short, mode=mode, size=size, typeflag=typeflag,
                               prefix=prefix))
        else:
            data = b"".join(_pax_record(k, pax[k]) for k in sorted(pax))
            head, tail = posixpath.split(name)
            pax_name = _to_ascii(posixpath.join(head, b"PaxHeaders.0", tail))
            pax_name = pax_name[:_NAME_SIZE].rstrip(b"/")
            self._sink(_header(name=pax_name, mode=0, size=len(data), typeflag=_TYPE_PAX,
                               devices=False))
            self._sink(data)
            self._sink(bytes(-len(data) % BLOCK))
            self._sink(_header(name=_to_ascii(name), mode=mode, size=size,
                               typeflag=typeflag))
        self._pending_pad = -size % BLOCK

    def write(self, data: bytes) -> None:
        self._sink(data)

    def close(self) -> None:
        self._pad()
        self._sink(_ZERO_BLOCK * 2)
