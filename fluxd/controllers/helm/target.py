"""Where a HelmRelease's release lives and what it is made from: Flux's naming rules.

* the release is ``spec.releaseName``, else ``[<targetNamespace>-]<name>``; a name over
  Helm's 53 characters becomes its first 40, a dash and the first 12 hex digits of its
  sha256 (Flux's ``ShortenName``);
* it is installed into ``spec.targetNamespace`` (else the HelmRelease's namespace) and
  stored (Helm's release Secrets) in ``spec.storageNamespace`` (else the same);
* ``spec.chart`` makes a HelmChart ``<namespace>-<name>`` in the chart source's namespace;
  ``spec.chartRef`` names an existing OCIRepository, HelmChart or ExternalArtifact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fluxd.api.helm import HelmReleaseSpec

#: Helm's limit on a release name
MAX_RELEASE_NAME = 53


def shorten(name: str) -> str:
    """``name`` within Helm's 53 characters, as Flux shortens it."""
    if len(name) <= MAX_RELEASE_NAME:
        return name
    return f"{name[:40]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class ReleaseTarget:
    """A HelmRelease's release: its name, namespace and storage namespace."""

    name: str
    namespace: str
    storage_namespace: str

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the release in Helm's storage."""
        return (self.storage_namespace, self.name)

    def full_name(self, version: int) -> str:
        """Flux's ``FullReleaseName``: ``<namespace>/<name>.v<version>``."""
        return f"{self.namespace}/{self.name}.v{version}"


def release_target(namespace: str, name: str, spec: HelmReleaseSpec) -> ReleaseTarget:
    """The release of the HelmRelease ``namespace/name`` with ``spec``."""
    if spec.release_name:
        release = spec.release_name
    elif spec.target_namespace:
        release = f"{spec.target_namespace}-{name}"
    else:
        release = name
    return ReleaseTarget(name=shorten(release),
                         namespace=spec.target_namespace or namespace,
                         storage_namespace=spec.storage_namespace or namespace)


@dataclass(frozen=True)
class ChartSource:
    """The object a HelmRelease takes its chart artifact from."""

    kind: str
    namespace: str
    name: str

    @property
    def key(self) -> str:
        """``<Kind>/<namespace>/<name>``: the index key and the artifact bus's."""
        return f"{self.kind}/{self.namespace}/{self.name}"

    @property
    def shown(self) -> str:
        return f"{self.kind} '{self.namespace}/{self.name}'"


def helm_chart_name(namespace: str, name: str) -> str:
    """Flux's ``GetHelmChartName``: the HelmChart made from ``spec.chart``."""
    return f"{namespace}-{name}"


def chart_source(namespace: str, name: str, spec: HelmReleaseSpec) -> ChartSource:
    """The chart source of the HelmRelease ``namespace/name``: the HelmChart made from
    its template, or what ``chartRef`` names."""
    if spec.chart_ref is not None:
        ref = spec.chart_ref
        return ChartSource(ref.kind, ref.namespace or namespace, ref.name)
    assert spec.chart is not None  # the model requires one of the two
    source_ns = spec.chart.spec.source_ref.namespace or namespace
    return ChartSource("HelmChart", source_ns, helm_chart_name(namespace, name))


def source_index(obj: Mapping[str, Any]) -> list[str]:
    """HelmReleases by ``<Kind>/<namespace>/<name>`` of their chart source."""
    spec = HelmReleaseSpec.spec_of(obj)
    if spec is None:
        return []
    meta = obj["metadata"]
    return [chart_source(meta.get("namespace", ""), meta["name"], spec).key]


def dependency_index(obj: Mapping[str, Any]) -> list[str]:
    """HelmReleases by ``<namespace>/<name>`` of each HelmRelease they depend on."""
    spec = HelmReleaseSpec.spec_of(obj)
    if spec is None:
        return []
    ns = obj["metadata"].get("namespace", "")
    return [f"{d.namespace or ns}/{d.name}" for d in spec.depends_on or []]


def values_index(obj: Mapping[str, Any]) -> list[str]:
    """HelmReleases by ``<Kind>/<namespace>/<name>`` of their ``valuesFrom`` objects."""
    spec = HelmReleaseSpec.spec_of(obj)
    if spec is None:
        return []
    ns = obj["metadata"].get("namespace", "")
    return [f"{ref.kind}/{ns}/{ref.name}" for ref in spec.values_from or []]


__all__ = ["ChartSource", "ReleaseTarget", "chart_source", "dependency_index",
           "helm_chart_name", "release_target", "shorten", "source_index", "values_index"]
