"""The HelmChart reconciler: a chart from a HelmRepository, an OCI registry or a
GitRepository's artifact in, a chart archive out.

It runs on the runtime's one driver (``SourceReconciler``: finalizer, suspend, steps,
shielded status summary and patch, bus, events). Flux's steps, in Flux's order, after a
check of ``spec.verify`` (not supported yet: it stalls):

- **storage**: the shared storage step (an artifact gone from storage is built again;
  old files are garbage-collected; ``status.url`` is the ``latest.tar.gz`` link).
- **source**: the ``sourceRef`` object from the cache, its artifact from the cache or,
  when the bus is ahead of the cache, from the bus. A missing source (``FetchFailed``/
  ``SourceUnavailable``) or one without an artifact yet (``NoSourceArtifact``) is waited
  for, not a failure with backoff: the source's next artifact enqueues this chart at once
  (see ``fluxd.controllers.source``). ``status.observedSourceArtifactRevision``
  records the artifact used.
  Then the chart is built (``chartbuild``), in a temporary directory the driver removes
  once the steps are over: from a ``default`` HelmRepository, the version selected in
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fluxd.api.source import API_VERSION, HelmChartSpec, HelmRepositorySpec
from fluxd.artifacts.bus import SourceKey
from fluxd.artifacts.extract import ExtractError, extract_tarball
from fluxd.clock import rfc3339
from fluxd.controllers.source import chartbuild, helmgetter, helmrepository
from fluxd.controllers.source.chartbuild import Build, BuildError, BuildOptions, HelmCLI
from fluxd.controllers.source.chartdeps import DependencyManager, RepositoryResolver
from fluxd.controllers.source.chartrepo import (
    HTTPChartRepository,
    OCIChartRepository,
    Remote,
    RepositoryError,
)
from fluxd.controllers.source.reconciler import (
    ARTIFACT_IN_STORAGE,
    ARTIFACT_OUTDATED,
    CONTROLLER,
    FETCH_FAILED,
    STORAGE_FAILED,
    NewArtifact,
    SourceReconciler,
    SourceRun,
    StepError,
    StepWaiting,
)
from fluxd.oci.auth import AuthenticationError, Keychain
from fluxd.oci.client import OCIError, Reference, tls_context
from fluxd.runtime import conditions as cond
from fluxd.runtime.driver import Step
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
#: Flux's summarize order for HelmChart (helmChartReadyCondition): a failure's own
#: condition gives Ready its reason and message before Stalled and Reconciling do
OWNED = (STORAGE_FAILED, FETCH_FAILED, BUILD_FAILED, ARTIFACT_OUTDATED,
         ARTIFACT_IN_STORAGE, SOURCE_VERIFIED, cond.STALLED, cond.RECONCILING, cond.READY)
NEGATIVE = (STORAGE_FAILED, FETCH_FAILED, BUILD_FAILED, ARTIFACT_OUTDATED)

PULL_SUCCEEDED = "ChartPullSucceeded"
PACKAGE_SUCCEEDED = "ChartPackageSucceeded"

Obj = dict[str, Any]


def source_index(obj: Obj) -> list[str]:
    """HelmCharts by ``<kind>/<name>`` of their source (Flux's ``SourceIndexKey``)."""
    spec = HelmChartSpec.spec_of(obj)
    return [f"{spec.source_ref.kind}/{spec.source_ref.name}"] \
        if spec and spec.source_ref.name else []


def repository_url_index(obj: Obj) -> list[str]:
    """HelmRepositories by normalized URL (Flux's ``HelmRepositoryURLIndexKey``)."""
    try:
        url = helmrepository.repository_spec(obj).url
        helmgetter.parse_url(url)
    except (ValidationError, helmgetter.InvalidURL):
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


def _plural(kind: str) -> str:
    return f"{kind[:-1].lower()}ies" if kind.endswith("y") else f"{kind.lower()}s"


@dataclass(frozen=True)
class Source:
    kind: str
    obj: Obj
    #: the artifact (path, url, revision, digest), None for an ``oci`` HelmRepository
    artifact: Obj | None
    #: the HelmRepository's spec, for a HelmRepository source
    repository: HelmRepositorySpec | None = None


@dataclass
class ChartRun(SourceRun[HelmChartSpec]):
    """What the HelmChart steps hand each other."""

    #: the chart built by the source step, its archive in the temporary directory
    build: Build | None = None


@dataclass
class HelmChartReconciler(SourceReconciler[HelmChartSpec, ChartRun]):
    API_VERSION = API_VERSION
    KIND = KIND
    SPEC = HelmChartSpec
    RUN = ChartRun
    STORAGE_KIND = STORAGE_KIND
    OWNED = OWNED
    NEGATIVE = NEGATIVE
    LINK = LATEST_LINK
    #: Flux's HelmChart words this line as its kustomize-controller does
    SUSPENDED = "Reconciliation is suspended for this object"

    #: the informers of the source kinds, by kind (HelmRepository is also where
    #: dependency repositories are found, by its ``url`` index)
    sources: Mapping[str, Informer] = field(kw_only=True)

    def steps(self) -> list[Step[ChartRun]]:
        return [self.check_spec, self.reconcile_storage, self.reconcile_source,
                self.reconcile_artifact]

    # --- what the driver asks -------------------------------------------------------

    def ready_message(self, run: ChartRun) -> str:
        return cond.message_of(run.patcher.conditions, ARTIFACT_IN_STORAGE) or \
            super().ready_message(run)

    def recovered_message(self, run: ChartRun) -> str:
        return self.ready_message(run)

    def recovered_reason(self, run: ChartRun) -> str:
        return cond.reason_of(run.patcher.conditions, ARTIFACT_IN_STORAGE) or \
            cond.SUCCEEDED_REASON

    def _limits(self) -> chartbuild.Limits:
        helm = self.settings.helm
        return chartbuild.Limits(chart_size=helm.chart_max_size,
                                 file_size=helm.chart_file_max_size)

    def _helm(self) -> HelmCLI:
        return HelmCLI(chartbuild.find_helm(self.settings.tools.helm), clock=self.clock,
                       timeout=self.settings.helm.package_timeout)

    # --- steps ----------------------------------------------------------------------

    async def check_spec(self, run: ChartRun) -> None:
        """What fluxd cannot serve stalls the object (retrying cannot help)."""
        spec = run.spec
        if spec.verify is not None:
            if spec.source_ref.kind != HELM_REPOSITORY:
                raise StallingError("spec.verify is only supported when spec.sourceRef.kind "
                                    "is 'HelmRepository'", reason="InvalidVerification")
            raise StallingError("chart signature verification (spec.verify) is not "
                                "supported by fluxd yet", reason="VerificationError")

    async def reconcile_source(self, run: ChartRun) -> None:
        """Find the source and its artifact, then build the chart from it into the
        reconcile's temporary directory (``run.build``)."""
        patcher = run.patcher
        patcher.delete_condition(SOURCE_VERIFIED)
        source = self._source(run)
        if source.artifact is not None:
            patcher.set_field("observedSourceArtifactRevision", source.artifact["revision"])
        work = Path(run.resources.enter_context(
            tempfile.TemporaryDirectory(prefix="fluxd-helmchart-")))
        try:
            if source.repository is not None:
                build = await self._build_from_repository(run, source, work)
            else:
                build = await self._build_from_artifact(run, source, work)
        except BuildError as exc:
            self._observe(patcher, exc.build)
            raise self._failure(patcher, exc) from exc
        self._observe(patcher, build)
        if build.resolved_dependencies:
            await self.recorder.event(
                run.obj, reason="ResolvedDependencies", trace=True,
                message=f"resolved {build.resolved_dependencies} chart dependencies")
        run.build = build

    async def reconcile_artifact(self, run: ChartRun) -> None:
        """Store the built chart as ``<name>-<version>.tgz`` with a ``latest.tar.gz``
        link, unless it is the stored artifact already."""
        obj, patcher, build = run.obj, run.patcher, run.build
        assert build is not None and build.path is not None
        ns, name = run.namespace, run.name
        current = patcher.get_field("artifact")
        if current and self.store.local_path(str(current["path"])) == build.path:
            await self.trace(obj, reason="ArtifactUpToDate",
                             message="artifact up-to-date with remote revision: "
                                     f"'{build.version}'")
            self._mark_stored(patcher, build)
            return
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
        patcher.set_field("observedValuesFiles", list(build.values_files)
                          if run.spec.ignore_missing_values_files else None)
        await self.link(run, record.path.rpartition("/")[2])
        patcher.delete_condition(STORAGE_FAILED)
        self._mark_stored(patcher, build)
        await self.gc(obj, record.path)
        old = ((obj.get("status") or {}).get("artifact") or {}).get("digest")
        if old != record.digest:
            run.new = NewArtifact(build.summary(), build.version, record.digest,
                                  reason=reason_for(build))

    # --- source -----------------------------------------------------------------------

    def _source(self, run: ChartRun) -> Source:
        ref = run.spec.source_ref
        kind, name = ref.kind, ref.name
        informer = self.sources.get(kind)
        if informer is None:
            message = (f"failed to get source: {BUCKET} sources are not supported by fluxd "
                       "yet" if kind == BUCKET else
                       f"failed to get source: unsupported source kind '{kind}', must be one "
                       f"of: [{HELM_REPOSITORY} {GIT_REPOSITORY} {BUCKET}]")
            # FetchFailed says the source is unavailable, Ready and Stalled say why
            run.patcher.mark_true(FETCH_FAILED, "SourceUnavailable", message)
            raise StallingError(message, reason="UnsupportedSourceKind")
        found = informer.get(run.namespace, name)
        if found is None:
            raise StepWaiting(f"failed to get source: {_plural(kind)}.source.toolkit.fluxcd.io "
                              f"\"{name}\" not found", reason="SourceUnavailable",
                              condition=FETCH_FAILED, requeue_after=self._source_retry(),
                              warn=True)
        repository = None
        if kind == HELM_REPOSITORY:
            try:
                repository = helmrepository.repository_spec(found)
            except ValidationError as exc:
                # the repository is stalled on it; its fix reaches this chart by its
                # next artifact, or by the retry
                raise StepWaiting(f"failed to get source: {HELM_REPOSITORY} '{name}' has an "
                                  "invalid spec", reason="SourceUnavailable",
                                  condition=FETCH_FAILED,
                                  requeue_after=self._source_retry()) from exc
        artifact = self._artifact(kind, found)
        oci = repository is not None and repository.type == helmrepository.OCI_TYPE
        if not oci and (artifact is None or not self.store.exists(str(artifact["path"]))):
            raise StepWaiting(f"no artifact available for {kind} source '{name}'",
                              reason="NoSourceArtifact", condition=FETCH_FAILED,
                              requeue_after=self._source_retry())
        return Source(kind, found, None if oci else artifact, repository)

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

    def _options(self, run: ChartRun) -> BuildOptions:
        spec, patcher = run.spec, run.patcher
        opts = BuildOptions(
            values_files=list(spec.values_files or []),
            ignore_missing_values_files=bool(spec.ignore_missing_values_files),
            force=patcher.generation != patcher.get_field("observedGeneration"))
        artifact = patcher.get_field("artifact")
        if artifact:
            opts.cached_chart = self.store.local_path(str(artifact["path"]))
            observed = patcher.get_field("observedValuesFiles")
            opts.cached_values_files = list(observed) if observed is not None else None
        return opts

    async def _build_from_repository(self, run: ChartRun, source: Source,
                                     work: Path) -> Build:
        repo = source.repository
        assert repo is not None
        url = repo.url
        try:
            helmgetter.parse_url(url)
        except helmgetter.InvalidURL as exc:
            raise StallingError(f"invalid Helm repository URL: {exc}", reason="URLInvalid",
                                condition=FETCH_FAILED) from exc
        normalized = helmgetter.normalize_url(url)
        remote: Remote
        if repo.type == helmrepository.OCI_TYPE:
            if not normalized.startswith("oci://"):
                raise StallingError("failed to construct Helm client: invalid OCI registry "
                                    f"URL: {url}", reason=cond.FAILED_REASON,
                                    condition=FETCH_FAILED)
            remote = await self._oci_repository(run.namespace, repo, normalized)
        else:
            options, context = await helmrepository.client_options(
                self, run.namespace, repo, helmrepository.timeout_of(repo))
            assert source.artifact is not None
            remote = HTTPChartRepository(
                normalized, options, context,
                index_path=self.store.local_path(str(source.artifact["path"])),
                index_max_size=self.settings.helm.index_max_size,
                chart_max_size=self.settings.helm.chart_max_size)
        opts = self._options(run)
        if opts.effective_values_files():
            opts.version_metadata = str(run.patcher.generation)
        return await chartbuild.build_remote(
            remote, run.spec.chart, run.spec.version, work / "chart.tgz", opts,
            helm=self._helm(), limits=self._limits())

    async def _build_from_artifact(self, run: ChartRun, source: Source, work: Path) -> Build:
        spec = run.spec
        assert source.artifact is not None
        source_dir = work / "source"
        archive = self.store.local_path(str(source.artifact["path"]))
        try:
            await asyncio.to_thread(extract_tarball, archive, source_dir, max_bytes=None)
        except (ExtractError, OSError) as exc:
            raise StepError(f"artifact untar error: {exc}", reason=cond.FAILED_REASON,
                            condition=FETCH_FAILED) from exc
        opts = self._options(run)
        if spec.reconcile_strategy == "Revision":
            opts.version_metadata = _revision_hex(source.kind,
                                                  str(source.artifact.get("revision", "")))
        if opts.effective_values_files():
            generation = str(run.patcher.generation)
            opts.version_metadata += ("." if opts.version_metadata else "") + generation
        dependencies = DependencyManager(self._dependency_repositories(run.namespace),
                                         limits=self._limits())
        return await chartbuild.build_local(
            source_dir, spec.chart, work / "chart.tgz", opts,
            dependencies=dependencies, helm=self._helm(), limits=self._limits())

    async def _oci_repository(self, namespace: str, repo: HelmRepositorySpec | None,
                              url: str) -> OCIChartRepository:
        """An OCI chart repository with the HelmRepository's credentials (None: no
        HelmRepository, anonymous): a dockerconfigjson or username/password
        ``secretRef``, a TLS ``certSecretRef``."""
        keychain = None
        secret_ref = repo.secret_ref if repo is not None else None
        if secret_ref is not None and secret_ref.name:
            secret = await self.secret(namespace, secret_ref.name)
            try:
                if secret.get("type") == "kubernetes.io/dockerconfigjson":
                    keychain = Keychain.from_secret(secret)
                else:
                    data = self.secret_data(secret)
                    username = data.get("username", b"").decode()
                    password = data.get("password", b"").decode()
                    if bool(username) != bool(password):
                        raise ValueError(f"invalid '{secret_ref.name}' secret data: "
                                         "required fields 'username' and 'password'")
                    if username:
                        registry = Reference.parse(f"{url}/probe").registry
                        keychain = Keychain.static(registry, username, password)
            except (AuthenticationError, OCIError, ValueError) as exc:
                raise StepError(f"failed to configure Helm client: {exc}",
                                reason="AuthenticationFailed", condition=FETCH_FAILED) \
                    from exc
        context = None
        cert_ref = repo.cert_secret_ref if repo is not None else None
        if cert_ref is not None and cert_ref.name:
            data = self.secret_data(await self.secret(namespace, cert_ref.name))
            try:
                context = await asyncio.to_thread(
                    lambda: tls_context(ca_pem=data.get("ca.crt"), cert_pem=data.get("tls.crt"),
                                        key_pem=data.get("tls.key")))
            except (OSError, ValueError) as exc:
                raise StepError(f"failed to construct Helm client's TLS config: {exc}",
                                reason="AuthenticationFailed", condition=FETCH_FAILED) \
                    from exc
        return OCIChartRepository(url, clock=self.clock, keychain=keychain,
                                  insecure=bool(repo is not None and repo.insecure),
                                  ssl_context=context,
                                  timeout=helmrepository.timeout_of(repo),
                                  chart_max_size=self.settings.helm.chart_max_size)

    def _dependency_repositories(self, namespace: str) -> RepositoryResolver:
        """Flux's ``namespacedChartRepositoryCallback``: the repository of a dependency
        URL, with the credentials and stored index of the HelmRepository in ``namespace``
        whose normalized URL it is; without one, the URL as it is, anonymously."""
        async def resolve(url: str) -> Remote:
            informer = self.sources[HELM_REPOSITORY]
            found: Obj | None = None
            repo: HelmRepositorySpec | None = None
            for candidate in informer.by_index("url", url):
                if candidate["metadata"].get("namespace", "") != namespace:
                    continue
                try:
                    repo = helmrepository.repository_spec(candidate)
                except ValidationError:
                    continue
                found = candidate
                break
            try:
                if url.startswith("oci://"):
                    return await self._oci_repository(namespace, repo, url)
                options, context = await helmrepository.client_options(
                    self, namespace, repo, helmrepository.timeout_of(repo))
            except StepError as exc:
                raise RepositoryError(str(exc)) from exc
            artifact = self._artifact(HELM_REPOSITORY, found) if found is not None else None
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
        """The error to raise for a build error, naming the condition it marks
        (BuildFailed for what went wrong building, FetchFailed for what went wrong getting
        the chart); the other one goes."""
        build_failure = exc.reason in chartbuild.BUILD_FAILURES
        condition = BUILD_FAILED if build_failure else FETCH_FAILED
        patcher.delete_condition(FETCH_FAILED if build_failure else BUILD_FAILED)
        if exc.reason in chartbuild.PERSISTENT:
            return StallingError(str(exc), reason=exc.reason.reason, condition=condition)
        return StepError(str(exc), reason=exc.reason.reason, condition=condition)

    @staticmethod
    def _mark_stored(patcher: StatusPatcher, build: Build) -> None:
        artifact = patcher.get_field("artifact") or {}
        if (patcher.get_field("observedChartName") == build.name
                and artifact.get("revision") == build.version):
            patcher.delete_condition(ARTIFACT_OUTDATED)
            patcher.mark_true(ARTIFACT_IN_STORAGE, reason_for(build), build.summary())
