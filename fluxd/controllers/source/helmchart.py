"""The HelmChart reconciler: a chart from a HelmRepository, an OCI registry or a
GitRepository's artifact in, a chart archive out.

It runs on the source driver (``driver.SourceReconciler``: finalizer, suspend, steps,
shielded status patch, bus, events). The steps, in Flux's order:

- **storage**: the shared storage step (an artifact gone from storage is built again;
  old files are garbage-collected; ``status.url`` is the ``latest.tar.gz`` link).
- **source**: the ``sourceRef`` object from the cache, its artifact from the cache or,
  when the bus is ahead of the cache, from the bus. A missing source (``FetchFailed``/
  ``SourceUnavailable``) or one without an artifact yet (``NoSourceArtifact``) is waited
  for, not a failure with backoff: the source's next artifact enqueues this chart at once
  (see ``fluxd.controllers.source.controllers``). ``status.observedSourceArtifactRevision``
  records the artifact used.
- **build** (``chartbuild``): from a ``default`` HelmRepository, the version selected in
  the stored index and the chart downloaded with the repository's credentials; from an
  ``oci`` HelmRepository, the tag selected and the chart layer pulled; from a
  GitRepository, the chart at ``spec.chart`` in the extracted artifact, its missing
  dependencies resolved (``chartdeps``: ``file://`` in the source, others from the
  HelmRepository in this namespace whose normalized URL matches, else straight from the
  URL) and packaged with ``helm package``. ``valuesFiles`` are merged into the chart's
  ``values.yaml``. Versions get build metadata as Flux gives them: ``+<generation>`` with
  values files, ``+<first 12 hex of the source revision>`` with ``reconcileStrategy:
  Revision`` (both: ``+<hex>.<generation>``). A chart of the same name and version as the
  stored one is not pulled or packaged again unless the spec changed.
- **artifact**: ``<name>-<version>.tgz`` stored atomically, revision = the chart version,
  ``latest.tar.gz`` pointing at it, published on the bus after the status write.

Conditions and events are Flux's: ``FetchFailed`` (``SourceUnavailable``,
``NoSourceArtifact``, ``AuthenticationFailed``, ``InvalidChartReference``,
``ChartPullError``), ``BuildFailed`` (``ValuesFilesError``, ``DependencyBuildError``,
``ChartPackageError``, ``MetadataPatchError``), ``StorageOperationFailed``;
``ArtifactOutdated``/``NewChart``; ``ArtifactInStorage`` and Ready with the build summary
(``pulled 'podinfo' chart with version '6.0.0'``) and reason ``ChartPullSucceeded`` or
``ChartPackageSucceeded``, which is also the new-artifact event. Invalid references,
values files and version metadata stall until the spec changes (or the source sends a
new artifact).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluxd.artifacts.bus import SourceKey
from fluxd.artifacts.extract import ExtractError, extract_tarball
from fluxd.clock import rfc3339
from fluxd.config import parse_duration
from fluxd.controllers.source import chartbuild, helmgetter, helmrepository
from fluxd.controllers.source.chartbuild import Build, BuildError, BuildOptions, HelmCLI
from fluxd.controllers.source.chartdeps import DependencyManager, RepositoryResolver
from fluxd.controllers.source.chartrepo import (
    HTTPChartRepository,
    OCIChartRepository,
    Remote,
    RepositoryError,
)
from fluxd.controllers.source.driver import (
    ARTIFACT_IN_STORAGE,
    ARTIFACT_OUTDATED,
    CONTROLLER,
    FETCH_FAILED,
    STORAGE_FAILED,
    NewArtifact,
    SourceReconciler,
    StepError,
    StepWaiting,
)
from fluxd.oci.auth import AuthenticationError, Keychain
from fluxd.oci.client import OCIError, Reference, tls_context
from fluxd.runtime import conditions as cond
from fluxd.runtime.informer import Informer
from fluxd.runtime.reconcile import StallingError
from fluxd.runtime.status import StatusPatcher

log = logging.getLogger("fluxd.source.helmchart")

__all__ = ["CONTROLLER", "KIND", "HelmChartReconciler", "repository_url_index",
           "source_index"]

KIND = "HelmChart"
STORAGE_KIND = "helmchart"
HELM_REPOSITORY = "HelmRepository"
GIT_REPOSITORY = "GitRepository"
BUCKET = "Bucket"
LATEST_LINK = "latest.tar.gz"
BUILD_FAILED = "BuildFailed"
SOURCE_VERIFIED = "SourceVerified"
#: Flux's summarize order for HelmChart
OWNED = (cond.READY, STORAGE_FAILED, FETCH_FAILED, BUILD_FAILED, ARTIFACT_OUTDATED,
         ARTIFACT_IN_STORAGE, SOURCE_VERIFIED, cond.STALLED, cond.RECONCILING)
NEGATIVE = (STORAGE_FAILED, FETCH_FAILED, BUILD_FAILED, ARTIFACT_OUTDATED)

PULL_SUCCEEDED = "ChartPullSucceeded"
PACKAGE_SUCCEEDED = "ChartPackageSucceeded"
DEFAULT_TIMEOUT = 60.0

Obj = dict[str, Any]


def source_index(obj: Obj) -> list[str]:
    """HelmCharts by ``<kind>/<name>`` of their source (Flux's ``SourceIndexKey``)."""
    ref = (obj.get("spec") or {}).get("sourceRef") or {}
    return [f"{ref.get('kind', '')}/{ref.get('name', '')}"] if ref.get("name") else []


def repository_url_index(obj: Obj) -> list[str]:
    """HelmRepositories by normalized URL (Flux's ``HelmRepositoryURLIndexKey``)."""
    url = str((obj.get("spec") or {}).get("url") or "")
    try:
        helmgetter.parse_url(url)
    except helmgetter.InvalidURL:
        return []
    normalized = helmgetter.normalize_url(url)
    return [normalized] if normalized else []


def reason_for(build: Build) -> str:
    if not build.complete:
        return ""
    return PACKAGE_SUCCEEDED if build.packaged else PULL_SUCCEEDED


def _revision_hex(kind: str, revision: str) -> str:
    """The first 12 hex of a source revision (``main@sha1:<hex>``, ``sha256:<hex>``)."""
    value = revision
    if kind == GIT_REPOSITORY:
        value = value.rpartition("@")[2]
        value = value.rpartition(":")[2] if ":" in value else value.rpartition("/")[2]
    elif ":" in value:
        value = value.partition(":")[2]
    return value[:12]


@dataclass(frozen=True)
class Source:
    kind: str
    obj: Obj
    #: the artifact (path, url, revision, digest), None for an ``oci`` HelmRepository
    artifact: Obj | None


class HelmChartReconciler(SourceReconciler):
    KIND = KIND
    STORAGE_KIND = STORAGE_KIND
    OWNED = OWNED
    NEGATIVE = NEGATIVE

    def __init__(self, *, sources: Mapping[str, Informer], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: the informers of the source kinds, by kind (HelmRepository is also where
        #: dependency repositories are found, by its ``url`` index)
        self.sources = sources

    # --- what the driver asks -------------------------------------------------------

    def ready_message(self, patcher: StatusPatcher) -> str:
        return cond.message_of(patcher.conditions, ARTIFACT_IN_STORAGE) or \
            super().ready_message(patcher)

    def recovered_message(self, patcher: StatusPatcher) -> str:
        return self.ready_message(patcher)

    def recovered_reason(self, patcher: StatusPatcher) -> str:
        return cond.reason_of(patcher.conditions, ARTIFACT_IN_STORAGE) or \
            cond.SUCCEEDED_REASON

    def _limits(self) -> chartbuild.Limits:
        helm = self.settings.helm
        return chartbuild.Limits(chart_size=helm.chart_max_size,
                                 file_size=helm.chart_file_max_size)

    def _helm(self) -> HelmCLI:
        return HelmCLI(chartbuild.find_helm(self.settings.tools.helm),
                       timeout=self.settings.helm.package_timeout)

    # --- steps ----------------------------------------------------------------------

    async def steps(self, obj: Obj, patcher: StatusPatcher) -> NewArtifact | None:
        spec = obj.get("spec") or {}
        ref = spec.get("sourceRef") or {}
        if spec.get("verify"):
            if ref.get("kind") != HELM_REPOSITORY:
                raise StallingError("spec.verify is only supported when spec.sourceRef.kind "
                                    "is 'HelmRepository'", reason="InvalidVerification")
            raise StallingError("chart signature verification (spec.verify) is not "
                                "supported by fluxd yet", reason="VerificationError")
        await self.reconcile_storage(obj, patcher, link=LATEST_LINK)
        patcher.delete_condition(SOURCE_VERIFIED)
        source = self._source(obj, patcher)
        if source.artifact is not None:
            patcher.set_field("observedSourceArtifactRevision", source.artifact["revision"])
        with tempfile.TemporaryDirectory(prefix="fluxd-helmchart-") as tmp:
            work = Path(tmp)
            try:
                if source.kind == HELM_REPOSITORY:
                    build = await self._build_from_repository(obj, patcher, source, work)
                else:
                    build = await self._build_from_artifact(obj, patcher, source, work)
            except BuildError as exc:
                self._observe(patcher, exc.build)
                raise self._failure(patcher, exc) from exc
            self._observe(patcher, build)
            if build.resolved_dependencies:
                await self.recorder.event(
                    obj, reason="ResolvedDependencies", trace=True,
                    message=f"resolved {build.resolved_dependencies} chart dependencies")
            return await self._reconcile_artifact(obj, patcher, build)

    # --- source -----------------------------------------------------------------------

    def _source(self, obj: Obj, patcher: StatusPatcher) -> Source:
        ns = obj["metadata"].get("namespace", "")
        ref = (obj.get("spec") or {}).get("sourceRef") or {}
        kind, name = str(ref.get("kind") or ""), str(ref.get("name") or "")
        informer = self.sources.get(kind)
        if informer is None:
            message = (f"failed to get source: {BUCKET} sources are not supported by fluxd "
                       "yet" if kind == BUCKET else
                       f"failed to get source: unsupported source kind '{kind}', must be one "
                       f"of: [{HELM_REPOSITORY} {GIT_REPOSITORY} {BUCKET}]")
            patcher.mark_true(FETCH_FAILED, "SourceUnavailable", message)
            raise StallingError(message, reason="UnsupportedSourceKind")
        found = informer.get(ns, name)
        if found is None:
            plural = f"{kind.lower()}s" if not kind.endswith("y") else f"{kind[:-1].lower()}ies"
            raise StepWaiting(f"failed to get source: {plural}.source.toolkit.fluxcd.io "
                              f"\"{name}\" not found", reason="SourceUnavailable",
                              condition=FETCH_FAILED, requeue_after=self._source_retry(),
                              warn=True)
        artifact = self._artifact(kind, found)
        oci = kind == HELM_REPOSITORY and (found.get("spec") or {}).get("type") == "oci"
        if not oci and (artifact is None or not self.store.exists(str(artifact["path"]))):
            raise StepWaiting(f"no artifact available for {kind} source '{name}'",
                              reason="NoSourceArtifact", condition=FETCH_FAILED,
                              requeue_after=self._source_retry())
        return Source(kind, found, None if oci else artifact)

    def _source_retry(self) -> float:
        """How soon a chart waiting for its source looks again; the source's next
        artifact on the bus usually comes first."""
        return self.settings.reconcile.requeue_dependency

    def _artifact(self, kind: str, source: Obj) -> Obj | None:
        """A source's artifact: its status's, unless the bus already announced a newer
        one (the cache can trail the bus by a moment)."""
        meta = source["metadata"]
        artifact = (source.get("status") or {}).get("artifact")
        latest = self.bus.last(SourceKey(kind, meta.get("namespace", ""), meta["name"]))
        if latest is not None and (not artifact or artifact.get("digest") != latest.digest):
            try:
                path = latest.path.relative_to(self.store.root).as_posix()
            except ValueError:
                return dict(artifact) if artifact else None
            return {"path": path, "url": latest.url, "revision": latest.revision,
                    "digest": latest.digest}
        return dict(artifact) if artifact else None

    # --- build ------------------------------------------------------------------------

    def _options(self, obj: Obj, patcher: StatusPatcher) -> BuildOptions:
        spec = obj.get("spec") or {}
        values_files = list(spec.get("valuesFiles") or [])
        if spec.get("valuesFile"):
            values_files.insert(0, str(spec["valuesFile"]))
        opts = BuildOptions(
            values_files=values_files,
            ignore_missing_values_files=bool(spec.get("ignoreMissingValuesFiles")),
            force=obj["metadata"].get("generation") != patcher.get_field("observedGeneration"))
        artifact = patcher.get_field("artifact")
        if artifact:
            opts.cached_chart = self.store.local_path(str(artifact["path"]))
            observed = patcher.get_field("observedValuesFiles")
            opts.cached_values_files = list(observed) if observed is not None else None
        return opts

    async def _build_from_repository(self, obj: Obj, patcher: StatusPatcher, source: Source,
                                     work: Path) -> Build:
        spec = obj.get("spec") or {}
        repo = source.obj
        url = str((repo.get("spec") or {}).get("url") or "")
        try:
            helmgetter.parse_url(url)
        except helmgetter.InvalidURL as exc:
            message = f"invalid Helm repository URL: {exc}"
            patcher.mark_true(FETCH_FAILED, "URLInvalid", message)
            raise StallingError(message, reason="URLInvalid") from exc
        normalized = helmgetter.normalize_url(url)
        remote: Remote
        if (repo.get("spec") or {}).get("type") == "oci":
            if not normalized.startswith("oci://"):
                message = f"failed to construct Helm client: invalid OCI registry URL: {url}"
                patcher.mark_true(FETCH_FAILED, cond.FAILED_REASON, message)
                raise StallingError(message, reason=cond.FAILED_REASON)
            remote = await self._oci_repository(repo, normalized)
        else:
            options, context = await helmrepository.client_options(self, repo,
                                                                   self._timeout(repo))
            assert source.artifact is not None
            remote = HTTPChartRepository(
                normalized, options, context,
                index_path=self.store.local_path(str(source.artifact["path"])),
                index_max_size=self.settings.helm.index_max_size,
                chart_max_size=self.settings.helm.chart_max_size)
        opts = self._options(obj, patcher)
        if opts.effective_values_files():
            opts.version_metadata = str(obj["metadata"].get("generation", 0))
        return await chartbuild.build_remote(
            remote, str(spec.get("chart") or ""), str(spec.get("version") or ""),
            work / "chart.tgz", opts, helm=self._helm(), limits=self._limits())

    async def _build_from_artifact(self, obj: Obj, patcher: StatusPatcher, source: Source,
                                   work: Path) -> Build:
        spec = obj.get("spec") or {}
        ns = obj["metadata"].get("namespace", "")
        assert source.artifact is not None
        source_dir = work / "source"
        archive = self.store.local_path(str(source.artifact["path"]))
        try:
            await asyncio.to_thread(extract_tarball, archive, source_dir, max_bytes=None)
        except (ExtractError, OSError) as exc:
            raise StepError(f"artifact untar error: {exc}", reason=cond.FAILED_REASON,
                            condition=FETCH_FAILED) from exc
        opts = self._options(obj, patcher)
        if spec.get("reconcileStrategy") == "Revision":
            opts.version_metadata = _revision_hex(source.kind,
                                                  str(source.artifact.get("revision", "")))
        if opts.effective_values_files():
            generation = str(obj["metadata"].get("generation", 0))
            opts.version_metadata += ("." if opts.version_metadata else "") + generation
        dependencies = DependencyManager(self._dependency_repositories(ns),
                                         limits=self._limits())
        return await chartbuild.build_local(
            source_dir, str(spec.get("chart") or ""), work / "chart.tgz", opts,
            dependencies=dependencies, helm=self._helm(), limits=self._limits())

    @staticmethod
    def _timeout(repo: Obj) -> float:
        text = (repo.get("spec") or {}).get("timeout")
        return (parse_duration(text) if text else DEFAULT_TIMEOUT) or DEFAULT_TIMEOUT

    async def _oci_repository(self, repo: Obj, url: str) -> OCIChartRepository:
        """An OCI chart repository with the HelmRepository's credentials: a
        dockerconfigjson or username/password ``secretRef``, a TLS ``certSecretRef``."""
        ns = repo["metadata"].get("namespace", "")
        spec = repo.get("spec") or {}
        keychain = None
        secret_name = (spec.get("secretRef") or {}).get("name")
        if secret_name:
            secret = await self.secret(ns, secret_name)
            try:
                if secret.get("type") == "kubernetes.io/dockerconfigjson":
                    keychain = Keychain.from_secret(secret)
                else:
                    data = self.secret_data(secret)
                    username = data.get("username", b"").decode()
                    password = data.get("password", b"").decode()
                    if bool(username) != bool(password):
                        raise ValueError(f"invalid '{secret_name}' secret data: required "
                                         "fields 'username' and 'password'")
                    if username:
                        registry = Reference.parse(f"{url}/probe").registry
                        keychain = Keychain.static(registry, username, password)
            except (AuthenticationError, OCIError, ValueError) as exc:
                raise StepError(f"failed to configure Helm client: {exc}",
                                reason="AuthenticationFailed", condition=FETCH_FAILED) \
                    from exc
        context = None
        cert_name = (spec.get("certSecretRef") or {}).get("name")
        if cert_name:
            data = self.secret_data(await self.secret(ns, cert_name))
            try:
                context = await asyncio.to_thread(
                    lambda: tls_context(ca_pem=data.get("ca.crt"), cert_pem=data.get("tls.crt"),
                                        key_pem=data.get("tls.key")))
            except (OSError, ValueError) as exc:
                raise StepError(f"failed to construct Helm client's TLS config: {exc}",
                                reason="AuthenticationFailed", condition=FETCH_FAILED) \
                    from exc
        return OCIChartRepository(url, clock=self.clock, keychain=keychain,
                                  insecure=bool(spec.get("insecure")), ssl_context=context,
                                  timeout=self._timeout(repo),
                                  chart_max_size=self.settings.helm.chart_max_size)

    def _dependency_repositories(self, namespace: str) -> RepositoryResolver:
        """Flux's ``namespacedChartRepositoryCallback``: the repository of a dependency
        URL, with the credentials and stored index of the HelmRepository in ``namespace``
        whose normalized URL it is; without one, the URL as it is, anonymously."""
        async def resolve(url: str) -> Remote:
            informer = self.sources[HELM_REPOSITORY]
            matches = [r for r in informer.by_index("url", url)
                       if r["metadata"].get("namespace", "") == namespace]
            repo: Obj = matches[0] if matches else {
                "metadata": {"name": "", "namespace": namespace},
                "spec": {"url": url, "timeout": "60s"}}
            try:
                if url.startswith("oci://"):
                    return await self._oci_repository(repo, url)
                options, context = await helmrepository.client_options(self, repo,
                                                                       self._timeout(repo))
            except StepError as exc:
                raise RepositoryError(str(exc)) from exc
            artifact = self._artifact(HELM_REPOSITORY, repo) if matches else None
            index_path = None
            if artifact and self.store.exists(str(artifact["path"])):
                index_path = self.store.local_path(str(artifact["path"]))
            return HTTPChartRepository(url, options, context, index_path=index_path,
                                       index_max_size=self.settings.helm.index_max_size,
                                       chart_max_size=self.settings.helm.chart_max_size)

        return resolve

    # --- observing the build ----------------------------------------------------------

    @staticmethod
    def _observe(patcher: StatusPatcher, build: Build | None) -> None:
        """Flux's ``observeChartBuild`` for what a build found out (success or not)."""
        if build is None:
            return
        artifact = patcher.get_field("artifact")
        if build.has_metadata and (
                build.name != patcher.get_field("observedChartName")
                or not artifact or artifact.get("revision") != build.version):
            if artifact:
                patcher.mark_true(ARTIFACT_OUTDATED, "NewChart", build.summary())
            patcher.progressive_status(cond.PROGRESSING_REASON,
                                       f"building artifact: {build.summary()}", drift=True)
        if build.complete:
            patcher.delete_condition(FETCH_FAILED)
            patcher.delete_condition(BUILD_FAILED)

    @staticmethod
    def _failure(patcher: StatusPatcher, exc: BuildError) -> Exception:
        """The condition a build error marks (BuildFailed for what went wrong building,
        FetchFailed for what went wrong getting the chart) and the error to raise."""
        build_failure = exc.reason in chartbuild.BUILD_FAILURES
        condition = BUILD_FAILED if build_failure else FETCH_FAILED
        patcher.delete_condition(FETCH_FAILED if build_failure else BUILD_FAILED)
        if exc.reason in chartbuild.PERSISTENT:
            patcher.mark_true(condition, exc.reason.reason, str(exc))
            return StallingError(str(exc), reason=exc.reason.reason)
        return StepError(str(exc), reason=exc.reason.reason, condition=condition)

    # --- artifact ---------------------------------------------------------------------

    async def _reconcile_artifact(self, obj: Obj, patcher: StatusPatcher,
                                  build: Build) -> NewArtifact | None:
        meta = obj["metadata"]
        ns, name = meta.get("namespace", ""), meta["name"]
        assert build.path is not None
        current = patcher.get_field("artifact")
        if current and self.store.local_path(str(current["path"])) == build.path:
            await self.recorder.event(obj, reason="ArtifactUpToDate", trace=True,
                                      message="artifact up-to-date with remote revision: "
                                              f"'{build.version}'")
            self._mark_stored(patcher, build)
            return None
        try:
            record = await self.store.store_file_async(
                STORAGE_KIND, ns, name, f"{build.name}-{build.version}.tgz", build.path,
                revision=build.version)
        except (OSError, ValueError) as exc:
            raise StepError(f"unable to copy Helm chart to storage: {exc}",
                            reason="ArchiveOperationFailed", condition=STORAGE_FAILED) from exc
        patcher.set_field("artifact", {
            "path": record.path, "url": record.url, "revision": build.version,
            "digest": record.digest, "lastUpdateTime": rfc3339(record.last_update_time),
            "size": record.size})
        patcher.set_field("observedChartName", build.name)
        ignore_missing = bool((obj.get("spec") or {}).get("ignoreMissingValuesFiles"))
        patcher.set_field("observedValuesFiles",
                          list(build.values_files) if ignore_missing else None)
        try:
            patcher.set_field("url", await self.store.symlink_async(
                STORAGE_KIND, ns, name, LATEST_LINK, record.path.rpartition("/")[2]))
        except OSError as exc:
            await self.recorder.event(obj, reason="SymlinkUpdateFailed", trace=True,
                                      message=f"failed to update status URL symlink: {exc}")
        patcher.delete_condition(STORAGE_FAILED)
        self._mark_stored(patcher, build)
        await self.gc(obj, record.path)
        old = ((obj.get("status") or {}).get("artifact") or {}).get("digest")
        if old == record.digest:
            return None
        return NewArtifact(build.summary(), build.version, record.digest,
                           reason=reason_for(build))

    @staticmethod
    def _mark_stored(patcher: StatusPatcher, build: Build) -> None:
        artifact = patcher.get_field("artifact") or {}
        if (patcher.get_field("observedChartName") == build.name
                and artifact.get("revision") == build.version):
            patcher.delete_condition(ARTIFACT_OUTDATED)
            patcher.mark_true(ARTIFACT_IN_STORAGE, reason_for(build), build.summary())
