"""The dependencies of a chart directory a HelmChart packages, resolved as Flux's
``DependencyManager`` resolves them.

Contract:

- Only the dependencies missing from ``charts/`` are resolved (Helm's loader finds
  archives and chart directories there; names starting with ``_`` or ``.`` are not
  charts). ``Chart.lock`` (``requirements.lock`` for v1 charts) takes precedence over
  ``Chart.yaml``'s list. Like Flux, nothing is resolved when as many charts are present
  as are requested.
- A ``file://`` dependency (or one without a repository) is the chart at that path
  relative to the chart, confined to the source; its version must satisfy the
  constraint. A directory is packaged with ``helm package`` (its own ``.helmignore``
  applies), an archive is copied.
- Any other dependency names a repository URL (``http(s)://`` or ``oci://``; ``@alias``
  references are refused). ``DependencyManager`` asks its resolver for a
  ``chartrepo.Remote`` per normalized URL (once per build), selects the version and
  downloads the chart archive, which must be a valid chart.
- Dependencies are placed in ``charts/`` as archives, one at a time. Failures are
  ``BuildError``s with Flux's ``DependencyBuildError`` reason and wording.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from fluxd import semver
from fluxd.controllers.source import helmgetter
from fluxd.controllers.source.chartbuild import (
    DEPENDENCY_BUILD,
    BuildError,
    HelmCLI,
    Limits,
    MetadataError,
    load_yaml,
    metadata,
    metadata_from_archive,
    secure_join,
    validate,
    yaml_problem,
)
from fluxd.controllers.source.chartrepo import ChartReferenceError, Remote, RepositoryError

__all__ = ["DependencyManager", "RepositoryResolver"]


#: a chart repository for a (normalized) dependency repository URL
RepositoryResolver = Callable[[str], Awaitable[Remote]]


@dataclass(frozen=True)
class Dependency:
    name: str
    version: str
    repository: str
    alias: str = ""

    @classmethod
    def of(cls, value: Any) -> Dependency:
        item = value if isinstance(value, Mapping) else {}
        return cls(name=str(item.get("name") or ""), version=str(item.get("version") or ""),
                   repository=str(item.get("repository") or ""),
                   alias=str(item.get("alias") or ""))

    @property
    def is_local(self) -> bool:
        return self.repository == "" or self.repository.startswith("file://")


def _validate_dependency_url(url: str) -> None:
    """Flux's ``ValidateDepURL``."""
    if url.startswith(("oci://", "https://", "http://")):
        return
    if url.startswith("@"):
        raise ValueError(f"aliased repository dependency is not supported: {url}")
    raise ValueError(f"invalid dependency repository URL: {url}")


class DependencyManager:
    """Resolves the dependencies missing from a chart directory (Flux's
    ``DependencyManager``, one dependency at a time as Flux's default)."""

    def __init__(self, resolve: RepositoryResolver, *, limits: Limits) -> None:
        self._resolve = resolve
        self._limits = limits
        self._repositories: dict[str, Remote] = {}

    async def build(self, work_dir: Path, chart_path: str, chart_dir: Path, meta: dict[str, Any],
                    helm: HelmCLI) -> int:
        """Place the missing dependencies in ``chart_dir/charts``; how many there were."""
        requested = [Dependency.of(d) for d in meta.get("dependencies") or []]
        lock = await asyncio.to_thread(_lock_dependencies, chart_dir)
        if lock is not None:
            requested = lock
        present = await asyncio.to_thread(_subchart_names, chart_dir, self._limits)
        missing = _collect_missing(present, requested)
        for key, dep in missing.items():
            if dep.is_local:
                try:
                    await self._add_local(work_dir, chart_path, chart_dir, dep, helm)
                except (ValueError, OSError, MetadataError, BuildError) as exc:
                    raise BuildError(DEPENDENCY_BUILD, f"failed to add local dependency "
                                                       f"'{key}': {exc}") from None
            else:
                try:
                    await self._add_remote(chart_dir, dep)
                except (ValueError, OSError, MetadataError, ChartReferenceError,
                        RepositoryError) as exc:
                    raise BuildError(DEPENDENCY_BUILD, f"failed to add remote dependency "
                                                       f"'{key}': {exc}") from None
        return len(missing)

    async def _add_local(self, work_dir: Path, chart_path: str, chart_dir: Path,
                         dep: Dependency, helm: HelmCLI) -> None:
        parts = urlsplit(dep.repository)
        if parts.scheme not in ("", "file"):
            raise ValueError(f"'{dep.repository}' is not a local chart reference")
        local = secure_join(work_dir, posixpath.join(chart_path, parts.netloc,
                                                     parts.path.lstrip("/")))
        shown = "/" + local.relative_to(work_dir).as_posix() if local != work_dir else "/"
        if not await asyncio.to_thread(local.exists):
            raise ValueError(f"no chart found at '{shown}' (reference '{dep.repository}')")
        try:
            constraints = semver.parse_constraints(dep.version)
        except semver.SemverError as exc:
            raise ValueError(f"invalid version/constraint format '{dep.version}': "
                             f"{exc}") from None
        try:
            meta = await asyncio.to_thread(metadata, local, self._limits)
        except MetadataError as exc:
            raise ValueError(f"failed to load chart from '{shown}' (reference "
                             f"'{dep.repository}'): {exc}") from None
        try:
            version = semver.parse(str(meta.get("version") or ""))
        except semver.SemverError as exc:
            raise ValueError(str(exc)) from None
        if not constraints.check(version):
            raise ValueError(f"can't get a valid version for constraint '{dep.version}'")
        charts = chart_dir / "charts"
        if local.is_dir():
            try:
                await helm.package(local, dest=charts)
            except OSError as exc:
                raise ValueError(f"failed to load chart from '{shown}' (reference "
                                 f"'{dep.repository}'): {exc}") from None
        else:
            await asyncio.to_thread(_copy_into, local, charts)

    async def _add_remote(self, chart_dir: Path, dep: Dependency) -> None:
        url = helmgetter.normalize_url(dep.repository)
        _validate_dependency_url(url)
        repository = self._repositories.get(url)
        if repository is None:
            try:
                repository = await self._resolve(url)
            except (ValueError, OSError, RepositoryError) as exc:
                raise ValueError(f"failed to get chart repository for URL '{url}': "
                                 f"{exc}") from None
            self._repositories[url] = repository
        try:
            found = await repository.get_chart_version(dep.name, dep.version)
        except (ChartReferenceError, RepositoryError) as exc:
            raise ValueError(f"failed to get chart '{dep.name}' version '{dep.version}' from "
                             f"'{dep.repository}': {exc}") from None
        charts = chart_dir / "charts"
        await asyncio.to_thread(charts.mkdir, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".download-", suffix=".tgz", dir=charts)
        os.close(fd)
        download = Path(name)
        try:
            try:
                await repository.download_chart(found, download)
            except RepositoryError as exc:
                raise ValueError(f"chart download of version '{found.version}' failed: "
                                 f"{exc}") from None
            try:
                meta = await asyncio.to_thread(metadata_from_archive, download, self._limits)
                validate(meta)
            except MetadataError as exc:
                raise ValueError(f"failed to load downloaded archive of version "
                                 f"'{found.version}': {exc}") from None
            target = _free_name(charts, f"{meta['name']}-{meta['version']}.tgz")
            await asyncio.to_thread(os.replace, download, target)
        finally:
            await asyncio.to_thread(download.unlink, missing_ok=True)


def _free_name(directory: Path, name: str) -> Path:
    target = directory / name
    counter = 1
    while target.exists():
        target = directory / f"{counter}-{name}"
        counter += 1
    return target


def _copy_into(archive: Path, charts: Path) -> None:
    charts.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(archive, _free_name(charts, archive.name))


def _lock_dependencies(chart_dir: Path) -> list[Dependency] | None:
    """The dependencies of ``Chart.lock`` (or a v1 chart's ``requirements.lock``), which
    take precedence over the requested ones; None without a lock file."""
    for name in ("Chart.lock", "requirements.lock"):
        path = chart_dir / name
        if path.is_file():
            try:
                doc = load_yaml(path.read_bytes()) or {}
            except yaml.YAMLError as exc:
                raise BuildError(DEPENDENCY_BUILD, f"cannot load '{name}': "
                                                   f"{yaml_problem(exc)}") from None
            deps = doc.get("dependencies") if isinstance(doc, dict) else None
            return [Dependency.of(d) for d in deps or []]
    return None


def _subchart_names(chart_dir: Path, limits: Limits) -> list[str]:
    """The names of the charts in ``charts/`` as Helm's loader finds them: archives
    (``*.tgz``) and chart directories; names starting with ``_`` or ``.`` are skipped."""
    charts = chart_dir / "charts"
    if not charts.is_dir():
        return []
    names = []
    for entry in sorted(charts.iterdir()):
        if entry.name.startswith(("_", ".")):
            continue
        if entry.is_dir() or entry.suffix == ".tgz":
            try:
                meta = metadata(entry, limits)
            except (MetadataError, OSError):
                continue
            names.append(str(meta.get("name") or ""))
    return names


def _collect_missing(present: list[str], requested: list[Dependency]) -> dict[str, Dependency]:
    """Flux's ``collectMissing``: requested dependencies (by alias, else name) not among
    the present charts — nothing when the counts already agree."""
    if len(present) == len(requested):
        return {}
    missing: dict[str, Dependency] = {}
    for dep in requested:
        key = dep.alias or dep.name
        if key not in present:
            missing[key] = dep
    return missing
