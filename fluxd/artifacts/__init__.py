"""Artifacts: where sources leave their output and consumers pick it up.

* :mod:`~fluxd.artifacts.storage` — :class:`ArtifactStore`: Flux's storage layout,
  reproducible tarballs, digests, atomic writes, garbage collection.
* :mod:`~fluxd.artifacts.ignore` — ``.sourceignore`` matching as Flux does it.
* :mod:`~fluxd.artifacts.extract` — safe extraction for consumers.
* :mod:`~fluxd.artifacts.server` — the Flux-compatible artifact HTTP server.
* :mod:`~fluxd.artifacts.bus` — the in-process announcement of new artifacts.

This package imports nothing from fluxd but :mod:`fluxd.clock` and :mod:`fluxd.logging`.
"""

from fluxd.artifacts.bus import ArtifactBus, ArtifactEvent, SourceKey
from fluxd.artifacts.extract import (
    ExtractError,
    ExtractSummary,
    UnsafeArchiveError,
    extract_tarball,
    extract_tarball_async,
)
from fluxd.artifacts.ignore import Matcher, source_matcher
from fluxd.artifacts.storage import ArchiveError, ArtifactRecord, ArtifactStore

__all__ = [
    "ArchiveError",
    "ArtifactBus",
    "ArtifactEvent",
    "ArtifactRecord",
    "ArtifactStore",
    "ExtractError",
    "ExtractSummary",
    "Matcher",
    "SourceKey",
    "UnsafeArchiveError",
    "extract_tarball",
    "extract_tarball_async",
    "source_matcher",
]
