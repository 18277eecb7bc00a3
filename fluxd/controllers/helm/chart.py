"""A HelmRelease's chart: the HelmChart made from ``spec.chart``, and the chart archive
of whichever source the release takes its chart from.

``HelmChartTemplate`` keeps the HelmChart ``<namespace>-<name>`` (in the chart source's
namespace) equal to the template — server-side applied with the origin labels, only when
the one in the cache differs — and deletes it when the HelmRelease switches to
``chartRef``, moves it, or goes (Flux's ``HelmChartTemplate`` reconciler).

``ChartLoader`` reads a chart archive's metadata once per artifact digest (an in-sync
reconcile reads no archive), and prepares the chart helm is given: the archive itself,
or — for an OCIRepository, whose chart version Flux suffixes with ``+<digest[:12]>`` so
that a new digest of the same tag is an upgrade — a copy unpacked with the version
rewritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from fluxd import helmchart, semver
from fluxd.api.helm import HelmReleaseSpec
from fluxd.api.source import API_VERSION as SOURCE_API_VERSION
from fluxd.artifacts.extract import ExtractError, extract_tarball
from fluxd.controllers.helm.crds import CRDError, read_crds
from fluxd.controllers.helm.target import ChartSource, helm_chart_name
from fluxd.kube.errors import NotFound
from fluxd.lru import LRU

Obj = dict[str, Any]

NAME_LABEL = "helm.toolkit.fluxcd.io/name"
NAMESPACE_LABEL = "helm.toolkit.fluxcd.io/namespace"
FIELD_MANAGER = "helm-controller"


class ChartClient(Protocol):
    async def apply(self, obj: Obj, *, force: bool = False, dry_run: bool = False,
                    field_manager: str | None = None,
                    subresource: str | None = None) -> Obj: ...

    async def delete(self, api_version: str, kind: str, name: str,
                     namespace: str | None = None, *, propagation: str = ...,
                     dry_run: bool = ..., preconditions: dict[str, str] | None = ...
                     ) -> Obj: ...


class ObjectSource(Protocol):
    def get(self, namespace: str, name: str) -> Obj | None: ...


def desired_helm_chart(namespace: str, name: str, spec: HelmReleaseSpec,
                       interval: str) -> Obj:
    """The HelmChart Flux builds from the template (``buildHelmChartFromTemplate``)."""
    assert spec.chart is not None
    template = spec.chart
    tspec = template.spec
    chart_spec: Obj = {
        "chart": tspec.chart,
        "version": tspec.version,
        "sourceRef": {"kind": tspec.source_ref.kind, "name": tspec.source_ref.name},
        "interval": tspec.interval or interval,
        "reconcileStrategy": tspec.reconcile_strategy,
    }
    if tspec.values_files:
        chart_spec["valuesFiles"] = list(tspec.values_files)
    if tspec.ignore_missing_values_files:
        chart_spec["ignoreMissingValuesFiles"] = True
    if tspec.verify is not None:
        verify = tspec.verify.to_json()
        chart_spec["verify"] = {k: v for k, v in verify.items()
                                if k in ("provider", "secretRef")}
    labels = dict((template.metadata.labels or {}) if template.metadata else {})
    labels.update({NAME_LABEL: name, NAMESPACE_LABEL: namespace})
    metadata: Obj = {"name": helm_chart_name(namespace, name),
                     "namespace": tspec.source_ref.namespace or namespace,
                     "labels": labels}
    if template.metadata and template.metadata.annotations:
        metadata["annotations"] = dict(template.metadata.annotations)
    return {"apiVersion": SOURCE_API_VERSION, "kind": "HelmChart", "metadata": metadata,
            "spec": chart_spec}


def _same(desired: Obj, found: Obj | None) -> bool:
    if found is None:
        return False
    meta, want = found.get("metadata") or {}, desired["metadata"]
    if any((meta.get("labels") or {}).get(k) != v for k, v in want["labels"].items()):
        return False
    if any((meta.get("annotations") or {}).get(k) != v
           for k, v in (want.get("annotations") or {}).items()):
        return False
    have = found.get("spec") or {}
    return all(have.get(k) == v for k, v in desired["spec"].items())


@dataclass
class TemplateOutcome:
    """What reconciling the template did: ``action`` is created/configured/unchanged
    (or "" when there is no template), ``deleted`` the HelmChart removed."""

    action: str = ""
    deleted: str = ""
    message: str = ""


class HelmChartTemplate:
    """Keeps the HelmChart of ``spec.chart`` (see the module docstring)."""

    def __init__(self, client: ChartClient, charts: ObjectSource) -> None:
        self._client = client
        self._charts = charts

    async def reconcile(self, obj: Obj, spec: HelmReleaseSpec | None,
                        status: Mapping[str, Any], *, deleting: bool = False
                        ) -> tuple[TemplateOutcome, str | None]:
        """The template reconciled; returns the outcome and the new ``status.helmChart``
        (None: remove it)."""
        meta = obj["metadata"]
        ns, name = meta["namespace"], meta["name"]
        current = status.get("helmChart") or None
        outcome = TemplateOutcome()
        wanted: str | None = None
        if spec is not None and spec.chart is not None:
            wanted = f"{spec.chart.spec.source_ref.namespace or ns}/{helm_chart_name(ns, name)}"
        if current and (deleting or current != wanted):
            if spec is not None and spec.suspend:
                return outcome, current
            await self._delete(current)
            outcome.deleted = current
            current = None
        if deleting or spec is None or spec.chart is None:
            return outcome, current
        desired = desired_helm_chart(ns, name, spec, str(spec.interval))
        dmeta = desired["metadata"]
        found = self._charts.get(dmeta["namespace"], dmeta["name"])
        ref = spec.chart.spec.source_ref
        subject = f"HelmChart/{dmeta['namespace']}/{dmeta['name']}"
        where = f"'{ref.kind}/{dmeta['namespace']}/{ref.name}'"
        if _same(desired, found):
            outcome.action = "unchanged"
            outcome.message = f"{subject} with SourceRef {where} is in-sync"
        else:
            await self._client.apply(desired, force=True, field_manager=FIELD_MANAGER)
            outcome.action = "created" if found is None else "configured"
            outcome.message = f"{subject} {outcome.action} with SourceRef {where}"
        return outcome, wanted

    async def _delete(self, ref: str) -> None:
        ns, _, chart = ref.partition("/")
        with contextlib.suppress(NotFound):
            await self._client.delete(SOURCE_API_VERSION, "HelmChart", chart, ns)


# --------------------------------------------------------------------------- archives


class ChartError(Exception):
    """A chart archive that cannot be read."""


@dataclass(frozen=True)
class Chart:
    """The chart a release is made from."""

    #: the archive in the artifact store
    archive: Path
    name: str
    #: the version the release records (``+<digest[:12]>`` for an OCIRepository)
    version: str
    app_version: str
    #: the OCI artifact digest (``sha256:…``) for an OCIRepository, else ""
    oci_digest: str
    #: the artifact's revision and digest
    revision: str
    digest: str

    @property
    def versioned_name(self) -> str:
        """Flux's ``VersionedChartName``: ``<name>@<version>``."""
        return f"{self.name}@{self.version}"

    @property
    def rewritten(self) -> bool:
        """The version differs from the archive's: helm gets an unpacked copy."""
        return bool(self.oci_digest)


def oci_version(version: str, revision: str) -> tuple[str, str]:
    """Flux's ``mutateChartWithSourceRevision`` for an OCIRepository artifact revision
    (``<tag>@sha256:<hex>`` or ``sha256:<hex>``): the version with the digest's first
    12 characters as build metadata, and the digest."""
    digest = revision
    if "@" in revision:
        tag, _, digest = revision.partition("@")
        try:
            same = semver.parse(tag) == semver.parse(version)
        except semver.SemverError:
            raise ChartError(f"failed parsing artifact revision {tag}") from None
        if not same:
            raise ChartError(f"artifact revision {tag} does not match chart version "
                             f"{version}")
    algo, _, hexpart = digest.partition(":")
    if not algo or len(hexpart) < 12:
        raise ChartError(f"invalid artifact revision {revision}")
    try:
        parsed = semver.parse(version)
        return str(semver.Version(parsed.major, parsed.minor, parsed.patch,
                                  parsed.prerelease, hexpart[:12])), digest
    except semver.SemverError as exc:
        raise ChartError(f"failed to set SemVer metadata on chart version {version}: "
                         f"{exc}") from None


class ChartLoader:
    """Chart metadata by artifact digest, and the chart to hand to helm."""

    def __init__(self, *, limits: helmchart.Limits | None = None, max_entries: int = 1024
                 ) -> None:
        self._limits = limits or helmchart.Limits()
        self._meta: LRU[str, dict[str, Any]] = LRU(max_entries)
        self._crds: LRU[str, list[Obj]] = LRU(max_entries)

    async def load(self, source: ChartSource, archive: Path, revision: str, digest: str
                   ) -> Chart:
        meta = self._meta.get(digest) if digest else None
        if meta is None:
            try:
                meta = await asyncio.to_thread(helmchart.metadata_from_archive, archive,
                                               self._limits)
            except (helmchart.MetadataError, OSError) as exc:
                raise ChartError(str(exc)) from None
            if not meta.get("name") or not meta.get("version"):
                raise ChartError("the chart's metadata has no name or no version")
            if digest:
                self._meta.put(digest, meta)
        name, version = str(meta.get("name") or ""), str(meta.get("version") or "")
        oci_digest = ""
        if source.kind == "OCIRepository":
            version, oci_digest = oci_version(version, revision)
        return Chart(archive=archive, name=name, version=version,
                     app_version=str(meta.get("appVersion") or ""), oci_digest=oci_digest,
                     revision=revision, digest=digest)

    async def crds(self, chart: Chart) -> list[Obj]:
        """The CRDs of the chart's ``crds/``, read once per artifact digest (callers must
        not change them)."""
        found = self._crds.get(chart.digest) if chart.digest else None
        if found is None:
            try:
                found = await asyncio.to_thread(read_crds, chart.archive,
                                                limits=self._limits)
            except CRDError as exc:
                raise ChartError(str(exc)) from None
            if chart.digest:
                self._crds.put(chart.digest, found)
        return found

    async def prepare(self, chart: Chart, scratch: Path) -> Path:
        """What helm installs: the archive, or for a rewritten version an unpacked copy
        under ``scratch`` whose Chart.yaml carries it."""
        if not chart.rewritten:
            return chart.archive
        return await asyncio.to_thread(_unpack_with_version, chart.archive, scratch,
                                       chart.version)


def _unpack_with_version(archive: Path, scratch: Path, version: str) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="chart-", dir=scratch))
    try:
        extract_tarball(archive, dest, symlinks="skip")
        entries = list(dest.iterdir())
        if len(entries) != 1 or not entries[0].is_dir():
            raise ChartError("the chart archive does not hold one chart directory")
        chart_dir = entries[0]
        chart_file = chart_dir / helmchart.CHART_FILE
        meta = yaml.safe_load(chart_file.read_bytes())
        if not isinstance(meta, dict):
            raise ChartError("Chart.yaml is not a mapping")
        meta["version"] = version
        chart_file.write_text(yaml.safe_dump(meta, sort_keys=False))
        return chart_dir
    except (ExtractError, OSError, yaml.YAMLError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise ChartError(f"could not unpack the chart: {exc}") from None


__all__ = ["Chart", "ChartError", "ChartLoader", "HelmChartTemplate", "TemplateOutcome",
           "desired_helm_chart", "oci_version"]
