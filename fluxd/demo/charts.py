"""The demo's Helm chart repository: the charts of the working copy, published as a chart
publisher would and served read-only on loopback.

``publish`` packages every chart directory under ``charts/`` (one holding a
``Chart.yaml``) with the real ``helm package`` and writes Helm's repository index
(``index.yaml``, chart URLs relative to it) next to the archives. ``serve`` is an async
context manager yielding the repository's URL while fluxd's artifact file server
(``fluxd.artifacts.server``: no listings, no ``..``, bounded connections) serves that
directory on a free loopback port. The charts are published once, at the demo's start.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fluxd.artifacts.server import create_app
from fluxd.clock import Clock, rfc3339
from fluxd.controllers.source.chartbuild import HelmCLI
from fluxd.helmchart import CHART_FILE, Limits, MetadataError, metadata_from_archive
from fluxd.listen import serve_app

#: where a Flux repository keeps its own charts
CHARTS_DIR = "charts"
INDEX = "index.yaml"
HOST = "127.0.0.1"
#: the most charts published (one archive and index entry each)
MAX_CHARTS = 20

log = logging.getLogger("fluxd.demo.charts")


@dataclass(frozen=True)
class Published:
    """One chart in the repository."""

    name: str
    version: str
    archive: Path


def chart_dirs(repo: Path) -> list[Path]:
    """The chart directories under ``<repo>/charts``, by name. Blocks."""
    root = repo / CHARTS_DIR
    if not root.is_dir():
        return []
    found = sorted(d for d in root.iterdir() if d.is_dir() and (d / CHART_FILE).is_file())
    if len(found) > MAX_CHARTS:
        raise OSError(f"{root} holds {len(found)} charts, more than the demo publishes "
                      f"({MAX_CHARTS})")
    return found


def index_document(entries: list[tuple[dict[str, Any], str, str]], *, generated: str
                   ) -> dict[str, Any]:
    """Helm's repository index of charts given as (``Chart.yaml`` metadata, archive file
    name, archive sha256 hex): entries by chart name, newest version first as Helm sorts
    them when it loads an index."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for meta, filename, digest in entries:
        by_name.setdefault(str(meta["name"]), []).append(
            {**meta, "urls": [filename], "digest": digest, "created": generated})
    return {"apiVersion": "v1", "generated": generated,
            "entries": {name: list(reversed(versions))
                        for name, versions in sorted(by_name.items())}}


def _describe(archive: Path, limits: Limits) -> tuple[dict[str, Any], str, str]:
    try:
        meta = metadata_from_archive(archive, limits)
    except MetadataError as exc:
        raise OSError(f"{archive.name}: {exc}") from None
    with archive.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return meta, archive.name, digest


async def publish(repo: Path, dest: Path, *, helm: HelmCLI,
                  limits: Limits | None = None) -> list[Published]:
    """Package the charts of the working copy at ``repo`` into ``dest`` and index them;
    what was published (OSError when helm or a chart fails)."""
    limits = limits or Limits()
    await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
    dirs = await asyncio.to_thread(chart_dirs, repo)
    entries = []
    published = []
    for chart_dir in dirs:
        archive = await helm.package(chart_dir, dest=dest)
        meta, filename, digest = await asyncio.to_thread(_describe, archive, limits)
        entries.append((meta, filename, digest))
        published.append(Published(str(meta["name"]), str(meta["version"]), archive))
    index = index_document(entries, generated=rfc3339(helm.clock.now()))
    text = yaml.safe_dump(index, sort_keys=False)
    await asyncio.to_thread((dest / INDEX).write_text, text)
    return published


@asynccontextmanager
async def serve(root: Path, *, clock: Clock) -> AsyncIterator[str]:
    """Serve the files under ``root`` at ``http://127.0.0.1:<port>`` until the block ends."""
    async with serve_app(f"{HOST}:0", create_app(root), what="demo chart repository",
                         log=log, clock=clock) as listener:
        yield listener.url
