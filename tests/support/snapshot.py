"""Artifacts in memory for build tests: ``snapshot_of`` makes a ``Snapshot`` from files by
path, with every parent directory (and any empty directory named)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

from fluxd.artifacts.snapshot import Snapshot


def snapshot_of(files: Mapping[str, str], *empty: str, dedent: bool = False) -> Snapshot:
    """``files`` by relative path (their text dedented when ``dedent``), the directories
    holding them and the ``empty`` ones."""
    data = {path: (textwrap.dedent(text).lstrip("\n") if dedent else text).encode()
            for path, text in files.items()}
    directories = set(empty)
    for path in [*files, *empty]:
        while "/" in path:
            path = path.rsplit("/", 1)[0]
            directories.add(path)
    return Snapshot.of(data, directories)
