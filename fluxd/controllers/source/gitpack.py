"""A fetched Git pack, resolved in one pass into a table of objects.

A GitRepository reconcile needs one commit's tree, once. Fetching into a repository on
disk makes dulwich write the pack, index it (one full inflate of every object), verify
it, and then every object read looks the sha up in the index and inflates it again,
following delta chains each time. Here the pack is received into memory (spilling to a
temporary file past a budget), walked once front to back — every object inflated
exactly once, deltas applied against bases already resolved — and its contents kept in
an arena that also spills to a file past the budget. Reading a blob is then a dict
look-up and a slice.

The pack format (``Documentation/gitformat-pack.txt``): ``PACK``, version 2 or 3, the
object count, then per object a type and size varint header, for ``OFS_DELTA`` a
negative offset to its base, for ``REF_DELTA`` the base's object id, and zlib data; the
pack ends with the SHA-1 of everything before it, which is checked.

Bounds: one object at most ``max_object`` bytes, all objects together ``max_total``
inflated, the pack as sent at most twice ``max_total`` (framing aside, a pack is never
larger than what it inflates to). A ``checkpoint`` callable, called per chunk received and
per object resolved, stops the work by raising: the caller's cancellation.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from dulwich.objects import ShaFile
from dulwich.pack import apply_delta

if TYPE_CHECKING:
    from dulwich.objects import ObjectID

__all__ = ["MAX_INFLATED", "MAX_OBJECT_SIZE", "NoHaves", "PackError", "PackObjects",
           "PackSpool", "fetch_objects", "format_size"]

_COMMIT, _TREE, _BLOB, _TAG = 1, 2, 3, 4
_OFS_DELTA, _REF_DELTA = 6, 7
_TYPE_NAMES = {_COMMIT: b"commit", _TREE: b"tree", _BLOB: b"blob", _TAG: b"tag"}

#: bytes of pack and of inflated objects kept in memory before spilling to a file
DEFAULT_MEMORY_BUDGET = 32 * 1024 * 1024
#: the largest Git object fluxd inflates (an object is whole in memory once)
MAX_OBJECT_SIZE = 128 * 1024 * 1024
#: the most one fetch may inflate to, all objects together (spilled past the budget)
MAX_INFLATED = 1024 * 1024 * 1024


class PackError(Exception):
    """The pack is malformed, truncated, or refers to objects it does not hold."""


class NoHaves:
    """A graph walker for a fetch into nothing: no ``have`` lines, nothing shallow."""

    shallow: frozenset[bytes] = frozenset()

    def __next__(self) -> ObjectID | None:
        return None

    def ack(self, sha: ObjectID, /) -> None:
        return None

    def nak(self) -> None:
        return None


def _temporary_file(directory: Path | None) -> Any:
    """An unlinked file for what no longer fits the memory budget; its owner closes it."""
    return tempfile.TemporaryFile(prefix="fluxd-pack-",
                                  dir=str(directory) if directory else None)


class _Spill:
    """Byte strings appended to memory, then to an unlinked temporary file."""

    def __init__(self, directory: Path | None, budget: int) -> None:
        self._dir = directory
        self._budget = budget
        self._held = 0
        self._memory: list[bytes] = []
        self._file: Any = None
        self._end = 0

    def _spill_file(self) -> Any:
        if self._file is None:
            self._file = _temporary_file(self._dir)
        return self._file

    def put(self, data: bytes) -> int | tuple[int, int]:
        """Store ``data``; the handle is a list index (memory) or (offset, length)."""
        if self._held + len(data) <= self._budget:
            self._held += len(data)
            self._memory.append(data)
            return len(self._memory) - 1
        file = self._spill_file()
        file.write(data)
        offset = self._end
        self._end += len(data)
        return (offset, len(data))

    def get(self, handle: int | tuple[int, int]) -> bytes:
        if isinstance(handle, int):
            return self._memory[handle]
        offset, length = handle
        self._file.flush()
        data: bytes = os.pread(self._file.fileno(), length, offset)
        if len(data) != length:
            raise PackError("spilled object data is truncated")
        return data

    def close(self) -> None:
        self._memory.clear()
        if self._file is not None:
            self._file.close()
            self._file = None


def _no_checkpoint() -> None:
    return None


class PackSpool:
    """The receiving end of ``fetch_pack``'s ``pack_data`` callback: one growing buffer in
    memory, moved to an unlinked temporary file once it passes the budget. A pack larger
    than ``max_size`` is refused as it arrives, and ``checkpoint`` runs before each chunk
    is kept."""

    def __init__(self, directory: Path | None = None,
                 budget: int = DEFAULT_MEMORY_BUDGET, *, max_size: int = 2 * MAX_INFLATED,
                 checkpoint: Callable[[], None] = _no_checkpoint) -> None:
        self._dir = directory
        self._budget = budget
        self._max_size = max_size
        self._checkpoint = checkpoint
        self._buffer = bytearray()
        self._size = 0
        self._file: Any = None

    def write(self, data: bytes) -> int:
        self._checkpoint()
        if self._size + len(data) > self._max_size:
            # an endless stream would otherwise fill the spill directory's disk
            raise PackError(f"the pack sent is larger than {format_size(self._max_size)}, "
                            "twice fluxd's limit for one fetch ([git] max_fetch_size)")
        if self._file is None and self._size + len(data) > self._budget:
            self._file = _temporary_file(self._dir)
            self._file.write(self._buffer)
            self._buffer = bytearray()
        if self._file is not None:
            self._file.write(data)
        else:
            self._buffer += data
        self._size += len(data)
        return len(data)

    @property
    def size(self) -> int:
        return self._size

    def buffer(self) -> bytearray | mmap.mmap:
        if self._file is None:
            return self._buffer
        self._file.flush()
        return mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)

    def close(self) -> None:
        self._buffer = bytearray()
        if self._file is not None:
            self._file.close()
            self._file = None


def _inflate(buf: memoryview, pos: int, size: int) -> tuple[bytes, int]:
    """Inflate the zlib stream at ``pos`` that must yield ``size`` bytes; returns the data
    and the position just past the stream."""
    inflater = zlib.decompressobj()
    # deflate grows incompressible data by a few bytes per 16 KiB block
    step = size + (size >> 10) + 64
    fed = pos
    parts: list[bytes] = []
    total = 0
    try:
        while not inflater.eof:
            if fed >= len(buf):
                raise PackError("pack is truncated inside an object")
            chunk = buf[fed:fed + step]
            fed += len(chunk)
            # a header may declare any size: zlib's limit must stay a Py_ssize_t
            out = inflater.decompress(chunk, min(size + 1 - total, sys.maxsize))
            parts.append(out)
            total += len(out)
            if total > size:
                raise PackError("object inflates past the size in its header")
            # data left unconsumed because of max_length is not possible here: the
            # stream would then exceed ``size``
    except zlib.error as exc:
        raise PackError(f"corrupt object data: {exc}") from None
    if total != size:
        raise PackError("object inflates short of the size in its header")
    end = fed - len(inflater.unused_data)
    return parts[0] if len(parts) == 1 else b"".join(parts), end


class PackObjects:
    """Every object of one pack, by hex object id, with ``repo[sha]``-style access."""

    def __init__(self, spill_dir: Path | None = None,
                 budget: int = DEFAULT_MEMORY_BUDGET, *,
                 max_object: int = MAX_OBJECT_SIZE, max_total: int = MAX_INFLATED,
                 checkpoint: Callable[[], None] = _no_checkpoint) -> None:
        self._arena = _Spill(spill_dir, budget)
        self._max_object = max_object
        self._max_total = max_total
        self._checkpoint = checkpoint
        self._inflated = 0
        #: hex id → (type number, arena handle)
        self._objects: dict[bytes, tuple[int, int | tuple[int, int]]] = {}

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, sha: object) -> bool:
        return sha in self._objects

    def type_of(self, sha: bytes) -> int:
        return self._objects[sha][0]

    def data(self, sha: bytes) -> bytes:
        """The object's content (a blob's bytes, a tree's raw entries, …)."""
        _type, handle = self._objects[sha]
        return self._arena.get(handle)

    def __getitem__(self, sha: bytes) -> ShaFile:
        type_num, handle = self._objects[sha]
        return ShaFile.from_raw_string(type_num, self._arena.get(handle),
                                       sha=cast("ObjectID", sha))

    def close(self) -> None:
        self._objects.clear()
        self._arena.close()

    def __enter__(self) -> PackObjects:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add(self, type_num: int, content: bytes) -> bytes:
        self._inflated += len(content)
        if self._inflated > self._max_total:
            raise PackError(f"the pack inflates past {format_size(self._max_total)}, fluxd's "
                            "limit for one fetch ([git] max_fetch_size)")
        header = b"%s %d\x00" % (_TYPE_NAMES[type_num], len(content))
        digest = hashlib.sha1(header)
        digest.update(content)
        sha = digest.hexdigest().encode()
        if sha not in self._objects:
            self._objects[sha] = (type_num, self._arena.put(content))
        return sha

    def load(self, pack: bytes | bytearray | mmap.mmap) -> None:
        """Resolve every object of ``pack`` (a whole pack stream) into the table."""
        buf = memoryview(pack)
        try:
            self._load(buf)
        except IndexError:
            # a header running past the end (the checksum only says the sender meant it)
            raise PackError("pack is truncated inside an object header") from None
        except MemoryError:
            raise PackError("the pack does not fit in memory") from None
        finally:
            buf.release()

    def _check_size(self, size: int, start: int) -> None:
        if size > self._max_object:
            raise PackError(f"object at {start} declares {size} bytes, over fluxd's "
                            f"{format_size(self._max_object)} limit for one Git object ([git] "
                            "max_object_size)")

    def _load(self, buf: memoryview) -> None:
        if len(buf) < 32 or bytes(buf[:4]) != b"PACK":
            raise PackError("not a Git pack")
        version, count = struct.unpack(">II", buf[4:12])
        if version not in (2, 3):
            raise PackError(f"unsupported pack version {version}")
        end = len(buf) - 20
        if hashlib.sha1(buf[:end]).digest() != buf[end:]:
            raise PackError("pack checksum mismatch: the pack is corrupt or truncated")
        buf = buf[:end]  # objects only: reading past them is an IndexError
        resolver = _Resolver(self)
        pos = 12
        for _ in range(count):
            self._checkpoint()
            start = pos
            if pos >= end:
                raise PackError("pack holds fewer objects than its header says")
            byte = buf[pos]
            pos += 1
            type_num = (byte >> 4) & 7
            size = byte & 15
            shift = 4
            while byte & 0x80:
                byte = buf[pos]
                pos += 1
                size |= (byte & 0x7F) << shift
                shift += 7
                self._check_size(size, start)
            self._check_size(size, start)
            if type_num == _OFS_DELTA:
                byte = buf[pos]
                pos += 1
                back = byte & 0x7F
                while byte & 0x80:
                    byte = buf[pos]
                    pos += 1
                    back = ((back + 1) << 7) | (byte & 0x7F)
                    if back > start:
                        break
                if not 0 < back <= start:
                    raise PackError(f"delta at {start} refers to no object before it")
                delta, pos = _inflate(buf, pos, size)
                resolver.offset_delta(start, start - back, delta)
            elif type_num == _REF_DELTA:
                base_id = bytes(buf[pos:pos + 20]).hex().encode()
                pos += 20
                delta, pos = _inflate(buf, pos, size)
                resolver.ref_delta(start, base_id, delta)
            elif type_num in _TYPE_NAMES:
                content, pos = _inflate(buf, pos, size)
                resolver.resolved(start, self._add(type_num, content))
            else:
                raise PackError(f"unknown object type {type_num} at {start}")
        if pos != end:
            raise PackError("pack has data after its last object")
        resolver.finish()

    def _apply(self, base_sha: bytes, delta: bytes) -> bytes:
        type_num, handle = self._objects[base_sha]
        base = self._arena.get(handle)
        source, target = _delta_sizes(delta)
        if source != len(base):
            raise PackError(f"delta against {base_sha.decode()} expects a base of {source} "
                            f"bytes, not {len(base)}")
        if target > self._max_object:
            raise PackError(f"a delta would make an object of {target} bytes, over fluxd's "
                            f"{format_size(self._max_object)} limit for one Git object ([git] "
                            "max_object_size)")
        try:
            content = b"".join(apply_delta(base, delta))
        except Exception as exc:  # dulwich raises ApplyDeltaError/AssertionError
            raise PackError(f"delta against {base_sha.decode()} does not apply: {exc}") \
                from None
        return self._add(type_num, content)


class _Resolver:
    """Deltas waiting for their base, resolved the moment it is: by the base's offset
    (``OFS_DELTA`` whose base is itself still waiting) or by its id (``REF_DELTA``)."""

    def __init__(self, objects: PackObjects) -> None:
        self._objects = objects
        self._by_offset: dict[int, bytes] = {}
        self._started: set[int] = set()
        self._on_offset: dict[int, list[tuple[int, bytes]]] = {}
        self._on_id: dict[bytes, list[tuple[int, bytes]]] = {}

    def offset_delta(self, start: int, base: int, delta: bytes) -> None:
        self._started.add(start)
        sha = self._by_offset.get(base)
        if sha is not None:
            self.resolved(start, self._objects._apply(sha, delta))
        elif base in self._started:
            self._on_offset.setdefault(base, []).append((start, delta))
        else:
            raise PackError(f"delta at {start} refers to no object before it")

    def ref_delta(self, start: int, base_id: bytes, delta: bytes) -> None:
        self._started.add(start)
        if base_id in self._objects:
            self.resolved(start, self._objects._apply(base_id, delta))
        else:
            self._on_id.setdefault(base_id, []).append((start, delta))

    def resolved(self, start: int, sha: bytes) -> None:
        self._started.add(start)
        todo = [(start, sha)]
        while todo:
            offset, sha = todo.pop()
            self._by_offset[offset] = sha
            for waiting, delta in self._on_offset.pop(offset, ()):
                todo.append((waiting, self._objects._apply(sha, delta)))
            for waiting, delta in self._on_id.pop(sha, ()):
                todo.append((waiting, self._objects._apply(sha, delta)))

    def finish(self) -> None:
        if self._on_id or self._on_offset:
            missing = sorted(base.decode() for base in self._on_id) or ["(a delta chain)"]
            raise PackError(f"pack refers to objects it does not hold: "
                            f"{', '.join(missing[:3])}")


def _delta_sizes(delta: bytes) -> tuple[int, int]:
    """The base and result sizes a delta starts with (two little-endian varints)."""
    pos = 0
    sizes = []
    for _ in range(2):
        value = shift = 0
        while True:
            if pos >= len(delta) or shift > 63:
                raise PackError("a delta's header is malformed")
            byte = delta[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        sizes.append(value)
    return sizes[0], sizes[1]


def format_size(size: int) -> str:
    """A limit as its messages show it: whole MiB, else bytes."""
    mib = 1024 * 1024
    return f"{size // mib} MiB" if size % mib == 0 else f"{size} bytes"


def fetch_objects(fetch_pack: Callable[[PackSpool], object], *,
                  spill_dir: Path | None = None, budget: int = DEFAULT_MEMORY_BUDGET,
                  max_object: int = MAX_OBJECT_SIZE, max_total: int = MAX_INFLATED,
                  checkpoint: Callable[[], None] = _no_checkpoint) -> PackObjects:
    """Run ``fetch_pack`` (which writes the pack into the spool it is given) and resolve
    what it received; ``checkpoint`` runs per chunk and per object (it raises to stop)."""
    spool = PackSpool(spill_dir, budget, max_size=2 * max_total, checkpoint=checkpoint)
    objects = PackObjects(spill_dir, budget, max_object=max_object, max_total=max_total,
                          checkpoint=checkpoint)
    try:
        fetch_pack(spool)
        if spool.size:
            buffer = spool.buffer()
            try:
                objects.load(buffer)
            finally:
                if isinstance(buffer, mmap.mmap):
                    _close_mapping(buffer)
    except BaseException:
        objects.close()
        raise
    finally:
        spool.close()
    return objects


def _close_mapping(mapping: mmap.mmap) -> None:
    """Unmap now, unless a failure's traceback still holds a view of it (the frames of the
    parser): the mapping then goes when that exception does."""
    with contextlib.suppress(BufferError):
        mapping.close()
