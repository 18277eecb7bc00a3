"""Building a HelmChart's chart archive, as Flux's chart builders do
(``internal/helm/chart``), with the real ``helm`` CLI doing the packaging.

Contract:

- ``build_remote`` pulls a chart version from a ``chartrepo.Remote`` (Flux's
  ``remoteChartBuilder``); ``build_local`` builds the chart at a path inside an extracted
  source artifact, a directory or a packaged ``.tgz`` (Flux's ``localChartBuilder``).
  Both return a ``Build`` (name, version, path of the archive, the values files merged,
  whether it was packaged, how many dependencies were resolved) or raise ``BuildError``
  carrying Flux's reason (``InvalidChartReference``, ``ChartPullError``,
  ``MetadataPatchError``, ``ValuesFilesError``, ``DependencyBuildError``,
  ``ChartPackageError``) and message (``<summary>: <cause>``).
- ``BuildOptions.version_metadata`` becomes the version's SemVer build metadata
  (``6.0.0`` → ``6.0.0+3``). When the cached chart (the current artifact) has the name
  and version the build would produce and the build is not forced, nothing is pulled or
  packaged: the cached archive is the result.
- Values files are merged in order (maps deeply, anything else replaced) and written over
  the chart's ``values.yaml`` before packaging. From a Helm repository they are paths in
  the chart (``values.yaml`` meaning the chart's defaults); from a source artifact they
  are paths in the artifact, confined to it. ``ignore_missing_values_files`` skips the
  missing ones.
- A chart pulled with nothing to change is stored as the repository sent it. Anything
  else (a chart directory, new values, a new version) is packaged by ``helm package
  --version <version>``, so the archive is exactly what Helm writes.
- Before a chart directory is packaged, the dependencies missing from its ``charts/``
  are placed there (``Dependencies``, see ``chartdeps``), where ``helm package`` picks
  them up.

File work runs in worker threads; ``helm`` runs as an async subprocess with a timeout and
an isolated home.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from fluxd import semver
from fluxd.artifacts.extract import ExtractError, extract_tarball
from fluxd.clock import Clock
from fluxd.controllers.source import helmindex
from fluxd.controllers.source.chartrepo import (
    ChartRef,
    ChartReferenceError,
    Remote,
    RepositoryError,
)
from fluxd.helmchart import (
    CHART_FILE,
    Limits,
    MetadataError,
    load_yaml,
    merge_maps,
    metadata,
    metadata_from_archive,
    yaml_problem,
)
from fluxd.tools import find_tool

__all__ = [
    "Build", "BuildError", "BuildOptions", "BuildReason", "Dependencies", "HelmCLI",
    "Limits", "MetadataError", "build_local", "build_remote", "find_helm", "load_yaml",
    "metadata", "metadata_from_archive", "secure_join", "validate", "yaml_problem",
]

VALUES_FILE = "values.yaml"
#: Flux's ``RemoteReference.Validate`` (``^([-a-z0-9]+/?\.?)+$``), written so that a
#: backtracking engine stays linear on long names
_CHART_NAME = re.compile(r"[-a-z0-9]+(?:(?:/\.?|\.)[-a-z0-9]+)*(?:/\.?|\.)?")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class BuildReason:
    """Why a build failed: Flux's ``BuildErrorReason``."""

    reason: str
    summary: str


CHART_REFERENCE = BuildReason("InvalidChartReference", "invalid chart reference")
CHART_PULL = BuildReason("ChartPullError", "chart pull error")
METADATA_PATCH = BuildReason("MetadataPatchError", "chart metadata patch error")
VALUES_FILES = BuildReason("ValuesFilesError", "values files merge error")
DEPENDENCY_BUILD = BuildReason("DependencyBuildError", "dependency build error")
CHART_PACKAGE = BuildReason("ChartPackageError", "chart package error")

#: reasons that only a spec change can fix (Flux's ``IsPersistentBuildErrorReason``)
PERSISTENT = frozenset({CHART_REFERENCE, METADATA_PATCH, VALUES_FILES})
#: reasons that mark BuildFailed; the others mark FetchFailed (``observeChartBuild``)
BUILD_FAILURES = frozenset({METADATA_PATCH, VALUES_FILES, DEPENDENCY_BUILD, CHART_PACKAGE})


class BuildError(Exception):
    """A failed build: ``<summary>: <cause>``; ``build`` is what the build had found out
    by then (name and version), when it got that far."""

    def __init__(self, reason: BuildReason, cause: str) -> None:
        super().__init__(f"{reason.summary}: {cause}")
        self.reason = reason
        self.build: Build | None = None


@dataclass
class Build:
    """What a build produced (Flux's ``chart.Build``)."""

    name: str = ""
    version: str = ""
    #: the chart archive; None when the build did not complete
    path: Path | None = None
    values_files: list[str] = field(default_factory=list)
    resolved_dependencies: int = 0
    packaged: bool = False

    @property
    def has_metadata(self) -> bool:
        return bool(self.name and self.version)

    @property
    def complete(self) -> bool:
        return self.has_metadata and self.path is not None

    def summary(self) -> str:
        """Flux's ``Build.Summary``, e.g. ``packaged 'podinfo' chart with version '6.0.0'
        and merged values files [values-prod.yaml]``."""
        if not self.has_metadata:
            return "no chart build"
        action = "new"
        if self.path is not None:
            action = "packaged" if self.packaged else "pulled"
        text = f"{action} '{self.name}' chart with version '{self.version}'"
        if self.values_files:
            text += f" and merged values files [{' '.join(self.values_files)}]"
        return text


@dataclass
class BuildOptions:
    """Flux's ``BuildOptions``."""

    version_metadata: str = ""
    values_files: list[str] = field(default_factory=list)
    #: the values files the cached chart was built with, when recorded
    cached_values_files: list[str] | None = None
    ignore_missing_values_files: bool = False
    #: the current artifact's archive, to skip a build that would give the same chart
    cached_chart: Path | None = None
    force: bool = False

    def effective_values_files(self) -> list[str]:
        """``values_files``, except that ``[values.yaml]`` alone means none."""
        if len(self.values_files) == 1 and \
                posixpath.normpath(self.values_files[0]) == VALUES_FILE:
            return []
        return self.values_files


# --------------------------------------------------------------------------- metadata


def validate(meta: dict[str, Any]) -> None:
    """Helm's ``Metadata.Validate``; sanitises the name and version in place."""
    try:
        problem = helmindex.validate_chart_version(meta)
    except helmindex.InvalidIndex as exc:
        raise MetadataError(f"validation: {exc}") from None
    if problem is not None:
        raise MetadataError(f"validation: {problem}")


def with_version_metadata(version: str, build: str) -> str:
    """Masterminds' ``NewVersion(version).SetMetadata(build).String()``."""
    try:
        parsed = semver.parse(version)
    except semver.SemverError as exc:
        raise BuildError(METADATA_PATCH, "failed to parse version from chart metadata as "
                                         f"SemVer: {exc}") from None
    try:
        return str(semver.Version(parsed.major, parsed.minor, parsed.patch,
                                  parsed.prerelease, build))
    except semver.SemverError as exc:
        raise BuildError(METADATA_PATCH, "failed to set SemVer metadata on chart version: "
                                         f"{exc}") from None


# --------------------------------------------------------------------------- values


class _Loader(yaml.CSafeLoader):
    """YAML as ``sigs.k8s.io/yaml`` reads it into Go values: timestamps stay text."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
}


def _json_keys(value: Any) -> Any:
    """Map keys as text, as YAML→JSON conversion leaves them."""
    if isinstance(value, dict):
        return {_key_text(k): _json_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_keys(v) for v in value]
    return value


def _key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)


def read_values(data: bytes, reference: str) -> dict[str, Any]:
    """A values file as a map (empty when the file is)."""
    try:
        doc = next(iter(yaml.load_all(data, Loader=_Loader)), None)
    except yaml.YAMLError as exc:
        raise BuildError(VALUES_FILES, f"unmarshaling values from '{reference}' failed: "
                                       f"{yaml_problem(exc)}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise BuildError(VALUES_FILES, f"unmarshaling values from '{reference}' failed: "
                                       "the values are not a map")
    result: dict[str, Any] = _json_keys(doc)
    return result


def secure_join(root: Path, relative: str) -> Path:
    """``relative`` under ``root``, ``..`` clamped at ``root`` (``securejoin.SecureJoin``
    on a tree without symlinks, which extracted artifacts are)."""
    cleaned = posixpath.normpath("/" + relative.replace("\\", "/")).lstrip("/")
    return root.joinpath(*[p for p in cleaned.split("/") if p])


def merge_file_values(base: Path, paths: list[str], *, ignore_missing: bool,
                      limits: Limits) -> tuple[dict[str, Any], list[str]]:
    """Values files in the source artifact at ``base``, merged in order; and the files
    that took part. Blocks."""
    merged: dict[str, Any] = {}
    used: list[str] = []
    for reference in paths:
        path = secure_join(base, reference)
        shown = "/" + path.relative_to(base).as_posix() if path != base else ""
        try:
            regular = path.is_file()
        except OSError:
            regular = False
        if not regular:
            if ignore_missing and not path.exists():
                continue
            raise BuildError(VALUES_FILES, f"no values file found at path '{shown}' "
                                           f"(reference '{reference}')")
        if path.stat().st_size > limits.file_size:
            raise BuildError(VALUES_FILES, f"size of '{reference}' exceeds "
                                           f"'{limits.file_size}' bytes limit")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BuildError(VALUES_FILES, f"could not read values from file '{reference}':"
                                           f" {exc.strerror or exc}") from None
        merged = merge_maps(merged, read_values(data, reference))
        used.append(reference)
    return merged, used


def _is_chart_file(relative: str) -> bool:
    """Whether Helm's loader puts this chart path in ``Chart.Files`` (the files a
    HelmRepository chart's values files may be)."""
    return (relative not in (CHART_FILE, VALUES_FILE, "Chart.lock", "values.schema.json")
            and not relative.startswith(("templates/", "charts/")))


def merge_chart_values(chart_dir: Path, paths: list[str], *, ignore_missing: bool,
                       limits: Limits) -> tuple[dict[str, Any], list[str]]:
    """Values files inside a pulled chart merged in order (``values.yaml`` is the chart's
    own defaults); and the files that took part. Blocks."""
    merged: dict[str, Any] = {}
    used: list[str] = []
    for reference in paths:
        relative = posixpath.normpath(reference)
        if relative == VALUES_FILE:
            own = chart_dir / VALUES_FILE
            values = read_values(own.read_bytes(), reference) if own.is_file() else {}
            merged = merge_maps(merged, values)
            used.append(reference)
            continue
        path = chart_dir / relative
        inside = not relative.startswith(("../", "/")) and relative != ".."
        if not (inside and _is_chart_file(relative) and path.is_file()):
            if ignore_missing:
                continue
            raise BuildError(VALUES_FILES, "failed to merge chart values: no values file "
                                           f"found at path '{reference}'")
        if path.stat().st_size > limits.file_size:
            raise BuildError(VALUES_FILES, f"size of '{reference}' exceeds "
                                           f"'{limits.file_size}' bytes limit")
        merged = merge_maps(merged, read_values(path.read_bytes(), reference))
        used.append(reference)
    return merged, used


def encode_values(values: Mapping[str, Any]) -> bytes:
    """Values as ``values.yaml`` (keys sorted, as Go's YAML encoder writes a map)."""
    if not values:
        return b""
    return yaml.safe_dump(dict(values), default_flow_style=False, sort_keys=True,
                          allow_unicode=True).encode()


def overwrite_default_values(chart_dir: Path, values: Mapping[str, Any] | None) -> bool:
    """Flux's ``OverwriteChartDefaultValues``: write ``values`` over the chart's
    ``values.yaml``; False when there is nothing to write or nothing changes. Blocks."""
    if values is None:
        return False
    target = chart_dir / VALUES_FILE
    if not target.is_file():
        raise BuildError(VALUES_FILES, f"failed to locate values file: {VALUES_FILE}")
    data = encode_values(values)
    if target.read_bytes() == data:
        return False
    target.write_bytes(data)
    return True


# --------------------------------------------------------------------------- helm


def find_helm(configured: str | None) -> str | None:
    """The helm binary (``fluxd.tools.find_tool``); None when there is none."""
    return find_tool("helm", configured)


@dataclass(frozen=True)
class HelmCLI:
    """The ``helm`` binary, run with a private, empty home so nothing of the host's Helm
    configuration (repositories, registry logins, plugins) takes part; one command may
    take ``timeout`` seconds on ``clock``."""

    binary: str | None
    clock: Clock
    timeout: float = 120.0

    async def package(self, chart_dir: Path, *, dest: Path, version: str | None = None
                      ) -> Path:
        """``helm package <chart_dir> [--version <version>] -d <dest>``: the archive."""
        if self.binary is None:
            raise OSError("the helm binary was not found: install it next to fluxd or on "
                          "PATH, or set [tools] helm")
        args = ["package", str(chart_dir), "--destination", str(dest)]
        if version is not None:
            args += ["--version", version]
        before = await asyncio.to_thread(_listing, dest)
        with tempfile.TemporaryDirectory(prefix="fluxd-helm-home-") as home:
            env = {"HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                   "HELM_CACHE_HOME": f"{home}/cache", "HELM_CONFIG_HOME": f"{home}/config",
                   "HELM_DATA_HOME": f"{home}/data"}
            proc = await asyncio.create_subprocess_exec(
                self.binary, *args, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            try:
                async with self.clock.timeout(self.timeout):
                    _, stderr = await proc.communicate()
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.shield(proc.wait())
                raise
        if proc.returncode != 0:
            raise OSError(_helm_error(stderr.decode(errors="replace")))
        written = sorted(await asyncio.to_thread(_listing, dest) - before)
        if len(written) != 1:
            raise OSError(f"helm package wrote {len(written)} files, expected one archive")
        return written[0]


def _listing(directory: Path) -> set[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return set(directory.iterdir())


def _helm_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error: ")]
    return "; ".join(errors or lines[-3:]) or "helm failed without a message"


async def _package(helm: HelmCLI, chart_dir: Path, version: str, out: Path) -> None:
    """``helm package`` into a scratch dir, then the archive moved to ``out``."""
    scratch = Path(tempfile.mkdtemp(prefix=".package-", dir=out.parent))
    try:
        try:
            async with helm.clock.timeout(helm.timeout + 5):
                made = await helm.package(chart_dir, dest=scratch, version=version)
        except TimeoutError:
            raise BuildError(CHART_PACKAGE, f"failed to package chart: helm package timed "
                                            f"out after {helm.timeout:g}s") from None
        except OSError as exc:
            raise BuildError(CHART_PACKAGE, f"failed to package chart: {exc}") from None
        await asyncio.to_thread(os.replace, made, out)
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)


def _extract_chart(archive: Path, dest: Path) -> Path:
    """Unpack a chart archive (safely, within the extraction limits); its chart
    directory. Blocks."""
    extract_tarball(archive, dest, symlinks="skip")
    entries = [p for p in dest.iterdir()]
    if len(entries) != 1 or not entries[0].is_dir():
        raise ExtractError("the archive does not hold one chart directory")
    return entries[0]


# --------------------------------------------------------------------------- dependencies


class Dependencies(Protocol):
    """Resolves the dependencies missing from a chart directory (``chartdeps``)."""

    async def build(self, work_dir: Path, chart_path: str, chart_dir: Path,
                    meta: dict[str, Any], helm: HelmCLI) -> int: ...


# --------------------------------------------------------------------------- builders


def _cached(build: Build, opts: BuildOptions, limits: Limits, requires_packaging: bool
            ) -> bool:
    """Point ``build`` at the cached chart when it has the same name and version (and the
    build is not forced). Blocks."""
    if opts.cached_chart is None or opts.force:
        return False
    try:
        meta = metadata_from_archive(opts.cached_chart, limits)
        validate(meta)
    except (MetadataError, OSError):
        return False  # a corrupt cached chart is ignored
    if meta.get("name") != build.name or meta.get("version") != build.version:
        return False
    build.path = opts.cached_chart
    build.values_files = list(opts.effective_values_files())
    if opts.cached_values_files is not None:
        build.values_files = list(opts.cached_values_files)
    build.packaged = requires_packaging
    return True


async def build_remote(remote: Remote, name: str, version: str, out: Path,
                       opts: BuildOptions, *, helm: HelmCLI, limits: Limits) -> Build:
    """Pull chart ``name`` at ``version`` (see the module docstring); the archive goes to
    ``out`` unless the cached chart is the result."""
    if not name:
        raise BuildError(CHART_REFERENCE, "no name set for remote chart reference")
    if not _CHART_NAME.fullmatch(name):
        raise BuildError(CHART_REFERENCE, f"invalid chart name '{name}': a valid name must be "
                                          "lower case letters and numbers and MAY be "
                                          "separated with dashes (-), slashes (/) or "
                                          "periods (.)")
    try:
        found = await remote.get_chart_version(name, version)
    except ChartReferenceError as exc:
        raise BuildError(CHART_REFERENCE, "failed to get chart version for remote reference: "
                                          f"{exc}") from None
    except RepositoryError as exc:
        raise BuildError(CHART_PULL, "failed to get chart version for remote reference: "
                                     f"{exc}") from None
    build = Build(name=found.name, version=found.version)
    if opts.version_metadata:
        build.version = with_version_metadata(build.version, opts.version_metadata)
    requires_packaging = bool(opts.effective_values_files()) or bool(opts.version_metadata)
    if await asyncio.to_thread(_cached, build, opts, limits, requires_packaging):
        return build
    try:
        with tempfile.TemporaryDirectory(prefix=".pull-", dir=out.parent) as tmp:
            await _pull(remote, found, build, Path(tmp), out, opts, requires_packaging,
                        helm=helm, limits=limits)
    except BuildError as exc:
        exc.build = exc.build or build
        raise
    return build


async def _pull(remote: Remote, found: ChartRef, build: Build, work: Path, out: Path,
                opts: BuildOptions, requires_packaging: bool, *, helm: HelmCLI,
                limits: Limits) -> None:
    download = work / "chart.tgz"
    try:
        await remote.download_chart(found, download)
    except RepositoryError as exc:
        raise BuildError(CHART_PULL, "failed to download chart for remote reference: "
                                     f"{exc}") from None
    if not requires_packaging:
        try:
            meta = await asyncio.to_thread(metadata_from_archive, download, limits)
            validate(meta)
        except MetadataError as exc:
            raise BuildError(CHART_PULL, "failed to load chart metadata from written chart: "
                                         f"{exc}") from None
        await asyncio.to_thread(os.replace, download, out)
        build.path = out
        return
    try:
        chart_dir = await asyncio.to_thread(_extract_chart, download, work / "chart")
    except (ExtractError, OSError) as exc:
        raise BuildError(CHART_PACKAGE, f"failed to load downloaded chart: {exc}") from None
    merged, used = await asyncio.to_thread(
        merge_chart_values, chart_dir, opts.values_files,
        ignore_missing=opts.ignore_missing_values_files, limits=limits)
    if await asyncio.to_thread(overwrite_default_values, chart_dir, merged):
        build.values_files = used
    await _package(helm, chart_dir, build.version, out)
    build.path = out
    build.packaged = True


async def build_local(work_dir: Path, chart_path: str, out: Path, opts: BuildOptions, *,
                      dependencies: Dependencies, helm: HelmCLI, limits: Limits
                      ) -> Build:
    """Build the chart at ``chart_path`` in the extracted source ``work_dir`` (see the
    module docstring); the archive goes to ``out`` unless the cached chart is the
    result. ``work_dir`` is scratch: the chart is changed in place."""
    if not chart_path:
        raise BuildError(CHART_REFERENCE, "no path set for local chart reference")
    if chart_path.startswith("/"):
        raise BuildError(CHART_REFERENCE, "local chart reference path is expected to be "
                                          "relative")
    path = secure_join(work_dir, chart_path)
    shown = path.relative_to(work_dir).as_posix() if path != work_dir else "."
    try:
        meta = await asyncio.to_thread(functools.partial(metadata, path, limits, shown=shown))
        validate(meta)
    except (MetadataError, OSError) as exc:
        raise BuildError(CHART_REFERENCE, str(exc)) from None
    build = Build(name=str(meta["name"]), version=str(meta["version"]))
    if opts.version_metadata:
        build.version = with_version_metadata(build.version, opts.version_metadata)
    is_dir = await asyncio.to_thread(path.is_dir)
    requires_packaging = (is_dir or bool(opts.version_metadata)
                          or bool(opts.effective_values_files()))
    if await asyncio.to_thread(_cached, build, opts, limits, requires_packaging):
        return build
    try:
        with tempfile.TemporaryDirectory(prefix=".unpack-", dir=out.parent) as tmp:
            await _package_local(work_dir, chart_path, path, meta, build, Path(tmp), out,
                                 opts, requires_packaging, dependencies=dependencies,
                                 helm=helm, limits=limits)
    except BuildError as exc:
        exc.build = exc.build or build
        raise
    return build


async def _package_local(work_dir: Path, chart_path: str, path: Path, meta: dict[str, Any],
                         build: Build, scratch: Path, out: Path, opts: BuildOptions,
                         requires_packaging: bool, *, dependencies: Dependencies,
                         helm: HelmCLI, limits: Limits) -> None:
    if not requires_packaging:  # a packaged chart, nothing to change: copied as it is
        try:
            await asyncio.to_thread(shutil.copyfile, path, out)
        except OSError as exc:
            raise BuildError(CHART_PULL, f"failed to copy chart: {exc}") from None
        build.path = out
        return
    merged: dict[str, Any] | None = None
    used: list[str] = []
    if opts.effective_values_files():
        merged, used = await asyncio.to_thread(
            merge_file_values, work_dir, opts.values_files,
            ignore_missing=opts.ignore_missing_values_files, limits=limits)
    is_dir = await asyncio.to_thread(path.is_dir)
    chart_dir = path
    if not is_dir:
        try:
            chart_dir = await asyncio.to_thread(_extract_chart, path, scratch / "chart")
        except (ExtractError, OSError) as exc:
            raise BuildError(CHART_PACKAGE, str(exc)) from None
    if await asyncio.to_thread(overwrite_default_values, chart_dir, merged):
        build.values_files = used
    if is_dir:
        build.resolved_dependencies = await dependencies.build(work_dir, chart_path,
                                                                chart_dir, meta, helm)
    await _package(helm, chart_dir, build.version, out)
    build.path = out
    build.packaged = requires_packaging
