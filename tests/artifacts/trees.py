"""Building source trees and inspecting tarballs for the artifact tests."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Mapping
from pathlib import Path


def make_tree(root: Path, files: Mapping[str, bytes | str], *,
              executables: frozenset[str] = frozenset(), dirs: tuple[str, ...] = ()) -> Path:
    """Write ``files`` (relative path -> content) under ``root``; mark some executable."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        path.chmod(0o755 if rel in executables else 0o644)
    for rel in dirs:
        (root / rel).mkdir(parents=True, exist_ok=True)
    return root


def members(archive: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(archive, "r:gz") as tar:
        return tar.getmembers()


def names(archive: Path) -> list[str]:
    return [m.name for m in members(archive)]


def file_names(archive: Path) -> set[str]:
    return {m.name for m in members(archive) if m.isreg()}


def regular_files(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every regular file under ``root``."""
    found = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def tarball(entries: list[tuple[tarfile.TarInfo, bytes | None]], *,
            compress: bool = True) -> bytes:
    """A (gzip-compressed) tar of hand-made entries, for crafting hostile archives."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    raw = buffer.getvalue()
    return gzip.compress(raw) if compress else raw


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, mode: int = 0o644,
          linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    return info
