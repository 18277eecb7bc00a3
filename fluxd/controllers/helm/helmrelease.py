"""The HelmRelease reconciler (Flux's helm-controller), on the runtime's driver.

The driver fetches the object, uninstalls the release and deletes the HelmChart when it
goes (``cleanup``), parses the spec once into ``HelmReleaseSpec``, stops when suspended,
then runs these steps in order over a ``HelmReleaseRun``:

    check_exprs → reconcile_chart_template → check_dependencies → resolve_chart →
    compose_values → prepare → release

``release`` is Flux's atomic release (``release.AtomicRelease``): the release's state is
decided in-process from Helm's storage Secret and the history — an in-sync release costs
a read of that Secret and no helm process — and each action runs the real ``helm``
binary through a loopback API proxy session (``fluxd.kube.proxy``) that carries the
impersonation and Helm's storage namespace. At most one action runs per release at a
time (a lock per storage namespace and release name, besides the queue's one reconcile
per object). A reconcile that fluxd's shutdown interrupts after its grace period kills
helm and marks a release it left ``pending-*`` failed on the spot; one left by a crash is
unlocked by the next reconcile (Flux's ``Unlock``).

What enqueues a HelmRelease, besides its own changes and reconcile requests (see
``fluxd.controllers.helm``): a new artifact of its chart source on the artifact bus, a
HelmRelease it depends on becoming Ready, a watched ConfigMap or Secret it takes values
from.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluxd import helmchart
from fluxd import logging as fluxlog
from fluxd.api.helm import API_VERSION, HelmReleaseSpec, Snapshot
from fluxd.artifacts.bus import ArtifactBus, SourceKey
from fluxd.artifacts.storage import ArtifactStore
from fluxd.clock import format_duration
from fluxd.config import Settings
from fluxd.controllers.helm import crds, drift, postrender, storage, values
from fluxd.controllers.helm.action import (
    ActionResult,
    Helm,
    HelmConnection,
    install_crd_policy,
    upgrade_crd_policy,
)
from fluxd.controllers.helm.chart import Chart, ChartError, ChartLoader, HelmChartTemplate
from fluxd.controllers.helm.release import AtomicRelease, ReleaseRequest
from fluxd.controllers.helm.target import (
    ChartSource,
    ReleaseTarget,
    chart_source,
    release_target,
)
from fluxd.kube import KubeClient, KubeError, NotFound
from fluxd.kube.proxy import ApiProxy
from fluxd.runtime import cel, dependency
from fluxd.runtime import conditions as cond
from fluxd.runtime.driver import Driver, EventType, Failure, Run, Step
from fluxd.runtime.informer import Informer
from fluxd.runtime.reconcile import (
    ReconcileError,
    Result,
    StallingError,
    WaitingError,
)

log = logging.getLogger("fluxd.helm")

Obj = dict[str, Any]

KIND = "HelmRelease"
CONTROLLER = "helm-controller"
OWNED = ("Released", "Remediated", "TestSuccess", "Drifted", cond.READY, cond.RECONCILING,
         cond.STALLED)

ARTIFACT_FAILED = "ArtifactFailed"
SOURCE_NOT_READY = "SourceNotReady"
VALUES_ERROR = "ValuesError"
DEPENDENCY_NOT_READY = "DependencyNotReady"
ACCESS_DENIED = "AccessDenied"
INVALID_CEL = "InvalidCELExpression"
UNINSTALL_FAILED = "UninstallFailed"
UNINSTALL_SUCCEEDED = "UninstallSucceeded"
INVENTORY_BUILD_FAILED = "InventoryBuildFailed"

#: the post-renderer's configuration file in a helm run's scratch directory
POST_RENDER_CONFIG = "post-render.json"
#: the source kinds a HelmRelease takes charts from
CHART_KINDS = ("HelmChart", "OCIRepository")
#: what a HelmChart template may point at (Flux's chart sources)
TEMPLATE_SOURCE_KINDS = ("HelmRepository", "GitRepository", "Bucket")


@dataclass
class HelmReleaseRun(Run[HelmReleaseSpec]):
    """What the HelmRelease steps hand each other."""

    target: ReleaseTarget = field(kw_only=True)
    source: ChartSource = field(kw_only=True)
    chart: Chart | None = None
    values: dict[str, Any] = field(default_factory=dict)
    config_digest: str = ""
    #: an action ran: the report logs the success and sends the event
    acted: bool = False


@dataclass
class HelmReleaseReconciler(Driver[HelmReleaseSpec, HelmReleaseRun]):
    """The HelmRelease's steps and hooks on the driver (see the module docstring)."""

    API_VERSION = API_VERSION
    KIND = KIND
    SPEC = HelmReleaseSpec
    RUN = HelmReleaseRun
    OWNED = OWNED
    SUSPENDED = "reconciliation is suspended for this object"

    client: KubeClient
    sources: Mapping[str, Informer] = field(kw_only=True)
    store: ArtifactStore = field(kw_only=True)
    bus: ArtifactBus = field(kw_only=True)
    settings: Settings = field(kw_only=True)
    helm: Helm = field(kw_only=True)
    proxy: ApiProxy = field(kw_only=True)
    #: where helm runs get their private scratch directories
    work_dir: Path = field(kw_only=True)
    #: where the post-renderer is served to helm's plugin (``postrender.serve``); None:
    #: the plugin runs ``fluxd helm-post-render`` itself
    post_render_socket: Path | None = field(default=None, kw_only=True)
    logger: logging.Logger = field(default=log, kw_only=True)
    charts: ChartLoader = field(init=False)
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict, init=False)
    _template: HelmChartTemplate = field(init=False)
    _storage: storage.ReleaseStorage = field(init=False)
    _plugin: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.charts = ChartLoader(limits=self.chart_limits)
        self._template = HelmChartTemplate(self.client, self.sources["HelmChart"])
        self._storage = storage.ReleaseStorage(self.client)

    def steps(self) -> list[Step[HelmReleaseRun]]:
        return [self.check_exprs, self.reconcile_chart_template, self.check_dependencies,
                self.resolve_chart, self.compose_values, self.prepare, self.release]

    def run_fields(self, obj: Obj, spec: HelmReleaseSpec, started: float) -> dict[str, Any]:
        ns, name = str(obj["metadata"]["namespace"]), str(obj["metadata"]["name"])
        return {"target": release_target(ns, name, spec),
                "source": chart_source(ns, name, spec)}

    def retry_interval_of(self, spec: HelmReleaseSpec, interval: float) -> float:
        return interval

    @property
    def requeue_dependency(self) -> float:
        return float(self.settings.reconcile.requeue_dependency)

    @property
    def chart_limits(self) -> helmchart.Limits:
        """``[helm] chart_max_size`` / ``chart_file_max_size`` for the charts read here."""
        helm = self.settings.helm
        return helmchart.Limits(chart_size=helm.chart_max_size,
                                file_size=helm.chart_file_max_size)

    def impersonated(self, spec: HelmReleaseSpec, namespace: str) -> str | None:
        account = spec.service_account_name or self.settings.access.default_service_account
        return f"system:serviceaccount:{namespace}:{account}" if account else None

    # --- prerequisites -------------------------------------------------------------------

    async def check_exprs(self, run: HelmReleaseRun) -> None:
        """Every ``readyExpr`` and ``healthCheckExprs`` compiled: an error stalls."""
        try:
            cel.compile_health_checks(
                [check.to_json() for check in run.spec.health_check_exprs or []])
            for dep in run.spec.depends_on or []:
                if dep.ready_expr:
                    cel.Expression.compile(dep.ready_expr, variables=cel.READY_EXPR_VARIABLES)
        except cel.CELError as exc:
            raise StallingError(str(exc), reason=INVALID_CEL) from exc

    async def reconcile_chart_template(self, run: HelmReleaseRun) -> None:
        """The HelmChart of ``spec.chart`` kept as the template says (or deleted when
        ``chartRef`` replaced it); ``status.helmChart`` names it."""
        spec = run.spec
        if spec.chart is not None:
            ref = spec.chart.spec.source_ref
            ns = ref.namespace or run.namespace
            if self.settings.access.no_cross_namespace_refs and ns != run.namespace:
                raise StallingError(
                    f"cannot access {ref.kind}/{ns}/{ref.name}, cross-namespace "
                    "references have been blocked", reason=ACCESS_DENIED)
        try:
            outcome, chart_ref = await self._template.reconcile(
                run.obj, spec, run.patcher.status)
        except KubeError as exc:
            message = f"failed to run server-side apply: {exc}"
            await self.event(run, reason="HelmChartSyncErr", message=message, trace=True)
            raise ReconcileError(message, reason=ARTIFACT_FAILED) from exc
        run.patcher.set_field("helmChart", chart_ref)
        if outcome.deleted:
            await self.event(run, reason="HelmChartDeleted",
                             message=f"deleted HelmChart '{outcome.deleted}'", trace=True)
        if outcome.action in ("created", "configured"):
            self.logger.info(outcome.message)
            await self.event(run, reason=f"HelmChart{outcome.action.capitalize()}",
                             message=outcome.message, trace=True)

    async def check_dependencies(self, run: HelmReleaseRun) -> None:
        """Every ``dependsOn`` HelmRelease Ready at its generation, or its ``readyExpr``
        true (Flux's ``checkDependencies``)."""
        if not run.spec.depends_on:
            return
        try:
            await dependency.check(
                self.client, api_version=API_VERSION, kind=KIND, obj=run.obj,
                depends_on=run.spec.depends_on,
                no_cross_namespace_refs=self.settings.access.no_cross_namespace_refs,
                not_found=lambda shown, dep: f"unable to get '{shown}' dependency: "
                                             f"helmreleases.helm.toolkit.fluxcd.io "
                                             f"\"{dep.name}\" not found")
        except dependency.CrossNamespaceRefused as exc:
            raise StallingError(str(exc), reason=ACCESS_DENIED) from exc
        except dependency.NotReady as exc:
            raise self.not_ready(str(exc)) from exc
        self.logger.info("all dependencies are ready")

    def not_ready(self, why: str) -> WaitingError:
        return WaitingError(why, reason=DEPENDENCY_NOT_READY,
                            requeue_after=self.requeue_dependency)

    async def resolve_chart(self, run: HelmReleaseRun) -> None:
        """The chart source Ready with an artifact, and the chart's metadata."""
        source = run.source
        if self.settings.access.no_cross_namespace_refs and source.namespace != run.namespace \
                and run.spec.chart_ref is not None:
            raise StallingError(f"cannot access {source.kind}/{source.namespace}/"
                                f"{source.name}, cross-namespace references have been "
                                "blocked", reason=ACCESS_DENIED)
        informer = self.sources.get(source.kind)
        if informer is None:
            raise StallingError(f"chart source kind {source.kind} is not supported by "
                                f"fluxd (supported: {', '.join(CHART_KINDS)})",
                                reason=ARTIFACT_FAILED)
        obj = informer.get(source.namespace, source.name)
        if obj is None:
            # a wait, not an error: a HelmChart just made from the template reaches the
            # cache, and its artifact the bus, which enqueues this HelmRelease
            raise WaitingError(
                f"could not get Source object: {source.kind} '{source.namespace}/"
                f"{source.name}' not found", reason=ARTIFACT_FAILED,
                requeue_after=self.requeue_dependency)
        announced = self.bus.last(SourceKey(source.kind, source.namespace, source.name))
        status = obj.get("status") or {}
        stored = status.get("artifact") or {}
        if announced is not None and announced.digest != stored.get("digest"):
            revision, digest, path = announced.revision, announced.digest, announced.path
        else:
            problem = _not_ready(obj)
            if problem:
                raise WaitingError(f"{source.kind} '{source.namespace}/{source.name}' is "
                                   f"not ready: {problem}", reason=SOURCE_NOT_READY,
                                   requeue_after=run.interval)
            revision, digest = str(stored.get("revision") or ""), str(stored.get("digest")
                                                                      or "")
            path = self.store.local_path(str(stored["path"]))
        try:
            run.chart = await self.charts.load(source, path, revision, digest)
        except ChartError as exc:
            if not path.exists():
                raise WaitingError("Source not ready: artifact not found. Retrying in "
                                   f"{format_duration(self.requeue_dependency)}",
                                   reason=ARTIFACT_FAILED,
                                   requeue_after=self.requeue_dependency) from exc
            raise ReconcileError(f"Could not load chart: {exc}",
                                 reason=ARTIFACT_FAILED) from exc

    async def compose_values(self, run: HelmReleaseRun) -> None:
        """``valuesFrom`` then ``values`` (Flux's ``ChartValuesFromReferences``)."""
        try:
            run.values = await values.compose(self.client, run.namespace, run.spec)
        except (values.ValuesError, KubeError) as exc:
            await self.event(run, type="Warning", reason=VALUES_ERROR, message=str(exc))
            raise ReconcileError(str(exc), reason=VALUES_ERROR) from exc
        run.config_digest = values.config_digest(run.values)

    async def prepare(self, run: HelmReleaseRun) -> Result | None:
        """Flux's last steps before the release: a changed release target uninstalls
        the old release first; failure counters reset on a new generation, chart or
        values (or ``resetAt``); the attempt recorded."""
        patcher, chart, spec = run.patcher, run.chart, run.spec
        assert chart is not None
        changed = target_changed(patcher.status, run.target, spec, chart.name)
        if changed:
            self.logger.info(f"release target configuration changed ({changed}): running "
                             "uninstall for current release")
            old = _current_target(patcher.status)
            if old is not None:
                await self._uninstall(run.obj, spec, old, patcher.get_field("history"))
            for name in ("history", "failures", "installFailures", "upgradeFailures",
                         "storageNamespace"):
                patcher.delete_field(name)
            return Result(requeue_after=0.0)
        patcher.set_field("storageNamespace", run.target.storage_namespace)
        if self.reset_requested(run):
            patcher.delete_field("failures")
            patcher.delete_field("installFailures")
            patcher.delete_field("upgradeFailures")
        why = must_reset_failures(patcher.status, patcher.generation, chart.version,
                                  run.config_digest)
        if why:
            self.logger.debug(f"resetting failure count ({why})")
            for name in ("failures", "installFailures", "upgradeFailures"):
                patcher.delete_field(name)
        patcher.set_field("lastAttemptedGeneration", patcher.generation)
        patcher.set_field("lastAttemptedRevision", chart.version)
        patcher.set_field("lastAttemptedRevisionDigest", chart.oci_digest or None)
        patcher.set_field("lastAttemptedConfigDigest", run.config_digest)
        patcher.delete_field("lastAttemptedValuesChecksum")
        patcher.delete_field("lastReleaseRevision")
        return None

    def reset_requested(self, run: HelmReleaseRun) -> bool:
        """Flux's ``ShouldHandleResetRequest``: ``resetAt`` equal to ``requestedAt`` and
        not handled yet."""
        annotations = run.obj["metadata"].get("annotations") or {}
        reset = annotations.get("reconcile.fluxcd.io/resetAt")
        if not reset or annotations.get(cond.RECONCILE_REQUEST_ANNOTATION) != reset or \
                run.patcher.get_field("lastHandledResetAt") == reset:
            return False
        run.patcher.set_field("lastHandledResetAt", reset)
        return True

    # --- the release -----------------------------------------------------------------------

    async def release(self, run: HelmReleaseRun) -> Result | None:
        chart = run.chart
        assert chart is not None
        patcher = run.patcher
        history = [Snapshot.model_validate(s) for s in patcher.get_field("history") or []]
        observed_pr = patcher.get_field("observedPostRenderersDigest")
        wanted_pr = postrender.post_renderers_digest(run.spec)
        observed_cm = patcher.get_field("observedCommonMetadataDigest")
        wanted_cm = postrender.common_metadata_digest(run.spec)
        changed = ""
        if history and (observed_pr or None) != wanted_pr:
            changed = "postrenderers digest has changed"
        elif history and (observed_cm or None) != wanted_cm:
            changed = "common metadata digest has changed"
        req = ReleaseRequest(obj=run.obj, spec=run.spec, target=run.target, chart=chart,
                             values=run.values, config_digest=run.config_digest,
                             patcher=patcher, history=history,
                             post_render_changed=changed)
        acted: list[str] = []

        async def event(type_: str, reason: str, message: str,
                        metadata: Mapping[str, str]) -> None:
            acted.append(reason)
            kind: EventType = "Warning" if type_ == "Warning" else "Normal"
            await self.event(run, type=kind, reason=reason, message=message,
                             metadata=metadata)

        hooks = drift.DriftHooks(
            self.client, self.clock, event=event, logger=self.logger,
            default_service_account=self.settings.access.default_service_account or "")
        engine = AtomicRelease(storage=self._storage, actions=_Actions(self, run),
                               snapshot=storage.snapshot, clock=self.clock, event=event,
                               detect_drift=hooks.detect_drift,
                               correct_drift=hooks.correct_drift, logger=self.logger)
        lock = self._locks.setdefault(run.target.key, asyncio.Lock())
        async with lock:
            try:
                await engine.reconcile(req)
            finally:
                run.acted = bool(acted)
                if acted or patcher.get_field("inventory") is None:
                    await self.record_inventory(run)
        if cond.is_true(patcher.conditions, cond.READY):
            patcher.set_field("observedPostRenderersDigest", wanted_pr)
            patcher.set_field("observedCommonMetadataDigest", wanted_cm)
        return Result(requeue_after=run.interval)

    async def record_inventory(self, run: HelmReleaseRun) -> None:
        """``status.inventory``: the objects of the current release (hooks excluded) and
        the chart's CRDs, as Flux lists them."""
        release = await self._storage.latest(run.target.storage_namespace, run.target.name)
        if release is None:
            run.patcher.delete_field("inventory")
            return
        entries: dict[str, Obj] = {}
        try:
            objects = release.objects()
            if run.chart is not None:
                objects += await self.charts.crds(run.chart)
            for obj in objects:
                api_version, kind = str(obj.get("apiVersion") or ""), str(obj.get("kind") or "")
                meta = obj.get("metadata") or {}
                if not api_version or not kind or not meta.get("name"):
                    continue
                namespace = str(meta.get("namespace") or "")
                try:
                    mapping = await self.client.mapping(api_version, kind)
                    namespace = (namespace or release.namespace) if mapping.namespaced else ""
                except KubeError:
                    namespace = namespace or release.namespace
                group, _, version = api_version.rpartition("/")
                ident = f"{namespace}_{meta['name']}_{group}_{kind}"
                entries[ident] = {"id": ident, "v": version}
        except (storage.StorageError, ChartError) as exc:
            await self.event(run, type="Warning", reason=INVENTORY_BUILD_FAILED,
                             message=f"failed to build inventory for {run.namespace}/"
                                     f"{run.name}: {exc}")
            return
        run.patcher.set_field("inventory", {"entries": [entries[k] for k in sorted(entries)]})

    # --- shutdown safety and uninstall ---------------------------------------------------

    async def unlock_interrupted(self, target: ReleaseTarget, before: int | None) -> None:
        """After helm was stopped mid-action (fluxd's shutdown, past its grace period):
        a release it left ``pending-*`` is marked failed now, not by the next start."""
        release = await self._storage.latest(target.storage_namespace, target.name)
        if release is not None and release.pending and release.version != before:
            await self._storage.unlock(target.storage_namespace, release)
            self.logger.info(f"marked release {target.full_name(release.version)} failed: "
                             "its helm action was interrupted")

    async def cleanup(self, obj: Obj, spec: HelmReleaseSpec | None) -> None:
        """Flux's ``reconcileDelete``: uninstall the release (unless suspended) and
        delete the HelmChart; a failed uninstall keeps the finalizer and is retried."""
        if spec is None or spec.suspend:
            return
        status = obj.get("status") or {}
        target = _current_target(status)
        if target is not None:
            await self._uninstall(obj, spec, target, status.get("history"))
        with contextlib.suppress(NotFound):
            await self._template.reconcile(obj, spec, status, deleting=True)

    async def _uninstall(self, obj: Obj, spec: HelmReleaseSpec, target: ReleaseTarget,
                         history: Sequence[Obj] | None) -> None:
        ns = obj["metadata"]["namespace"]
        if await self._storage.latest(target.storage_namespace, target.name) is None:
            return
        account = self.impersonated(spec, ns)
        if account:
            sa = account.rpartition(":")[2]
            try:
                await self.client.get("v1", "ServiceAccount", sa, ns)
            except NotFound:
                self.logger.error("skipping Helm release uninstallation: the service "
                                  f"account '{sa}' is gone")
                return
        outcome = await self.run_helm(spec, ns, target, "uninstall")
        latest = (history or [{}])[0] if history else {}
        full = target.full_name(int(latest.get("version") or 0)) if latest else target.name
        versioned = f"{latest.get('chartName', '')}@{latest.get('chartVersion', '')}"
        if not outcome.ok:
            message = f"Helm uninstall failed for release {full} with chart {versioned}: " \
                      f"{outcome.error.strip()}"
            await self.recorder.event(obj, type="Warning", reason=UNINSTALL_FAILED,
                                      message=message)
            raise ReconcileError(message, reason=UNINSTALL_FAILED)
        await self.recorder.event(obj, reason=UNINSTALL_SUCCEEDED,
                                  message=f"Helm uninstall succeeded for release {full} "
                                          f"with chart {versioned}")

    @contextlib.asynccontextmanager
    async def session(self, spec: HelmReleaseSpec, namespace: str, target: ReleaseTarget
                      ) -> AsyncIterator[tuple[HelmConnection, Path]]:
        """A private scratch directory and a proxy session for one helm run."""
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryDirectory(prefix="helm-", dir=self.work_dir) as scratch:
            directory = Path(scratch)
            async with self.proxy.session(namespace=target.namespace,
                                          storage_namespace=target.storage_namespace,
                                          impersonate=self.impersonated(spec, namespace),
                                          directory=directory) as kubeconfig:
                yield HelmConnection(kubeconfig=kubeconfig), directory

    async def run_helm(self, spec: HelmReleaseSpec, namespace: str, target: ReleaseTarget,
                       action: str, *, run: HelmReleaseRun | None = None,
                       version: int | None = None) -> ActionResult:
        """One helm action; cancelled (shutdown past the grace period), helm is stopped
        and a release it left pending is marked failed before the cancellation goes on."""
        latest = await self._storage.latest(target.storage_namespace, target.name)
        before = latest.version if latest is not None else None
        try:
            async with self.session(spec, namespace, target) as (conn, scratch):
                if action in ("install", "upgrade"):
                    assert run is not None and run.chart is not None
                    failed = await self.apply_crds(spec, namespace, run, action)
                    if failed is not None:
                        return failed
                    chart_path = await self.charts.prepare(run.chart, scratch)
                    argv = self.post_renderer(run, scratch)
                    call = self.helm.install if action == "install" else self.helm.upgrade
                    result = await call(conn, release=target.name,
                                        namespace=target.namespace, chart=chart_path,
                                        values=run.values, spec=spec, post_renderer=argv)
                    problem = None if result.ok else \
                        postrender.read_error(scratch / POST_RENDER_CONFIG)
                    if problem:
                        # helm drops the plugin's stderr: the plugin's own words instead
                        result = dataclasses.replace(
                            result, error="error while running post render on files: "
                                          f"{problem.strip()}")
                    return result
                if action == "test":
                    return await self.helm.test(conn, release=target.name,
                                                namespace=target.namespace, spec=spec)
                if action == "rollback":
                    return await self.helm.rollback(conn, release=target.name,
                                                    namespace=target.namespace, spec=spec,
                                                    version=version)
                return await self.helm.uninstall(conn, release=target.name,
                                                 namespace=target.namespace, spec=spec)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.unlock_interrupted(target, before))
            raise

    async def apply_crds(self, spec: HelmReleaseSpec, namespace: str, run: HelmReleaseRun,
                         action: str) -> ActionResult | None:
        """The chart's ``crds/`` by the action's CRD policy, before helm runs (Flux's
        ``applyCRDs``: helm is told to skip them); a failure is the action's."""
        assert run.chart is not None
        policy = install_crd_policy(spec) if action == "install" else upgrade_crd_policy(spec)
        account = spec.service_account_name or self.settings.access.default_service_account
        kube = self.client.impersonate(namespace, account) if account else self.client
        if policy == "Skip":
            return None
        try:
            await crds.apply_crds(kube, run.chart.archive, policy, name=run.name,
                                  namespace=run.namespace, clock=self.clock,
                                  crds=await self.charts.crds(run.chart))
        except (crds.CRDError, ChartError) as exc:
            return ActionResult(action=action, ok=False, returncode=1, duration=0.0,
                                output="",
                                error=f"failed to apply CustomResourceDefinitions: {exc}")
        return None

    def post_renderer(self, run: HelmReleaseRun, scratch: Path) -> list[str]:
        """The post-renderer arguments: the plugin (installed once) and this release's
        configuration file."""
        if not self._plugin:
            self._plugin = postrender.install_plugin(self.helm.plugins,
                                                     socket=self.post_render_socket)
        config = postrender.PostRenderConfig(
            name=run.name, namespace=run.namespace,
            post_renderers=[p.to_json() for p in run.spec.post_renderers or []],
            common_metadata=run.spec.common_metadata.to_json()
            if run.spec.common_metadata else None)
        path = scratch / POST_RENDER_CONFIG
        path.write_bytes(config.to_json())
        path.chmod(0o600)
        return postrender.post_renderer_argv(self._plugin, path)

    # --- the driver's hooks ----------------------------------------------------------------

    def summarize(self, run: HelmReleaseRun, failure: Failure | None) -> None:
        """The release step summarised Ready from the action conditions; a failure before
        it (or a failure the release step did not summarise) marks Ready the usual way."""
        patcher = run.patcher
        if failure is not None and not failure.waiting and not failure.unexpected and \
                cond.is_false(patcher.conditions, cond.READY) and \
                cond.reason_of(patcher.conditions, cond.READY) == failure.reason:
            if failure.stalled:
                patcher.delete_condition(cond.RECONCILING)
            elif cond.has(patcher.conditions, cond.RECONCILING):
                patcher.mark_reconciling(cond.PROGRESSING_WITH_RETRY_REASON,
                                         cond.message_of(patcher.conditions, cond.READY))
            return
        super().summarize(run, failure)

    async def report(self, run: HelmReleaseRun, failure: Failure | None) -> None:
        """Flux's helm-controller sends its events from the actions; the driver adds the
        failure event only for failures before the release step, and logs the line."""
        if failure is None:
            self.logger.info(self.finished_message(run))
            return
        if not failure.waiting and not run.acted and failure.reason != VALUES_ERROR:
            await self.failure_event(run, failure)
        self.log_failure(run, failure)

    async def event(self, run: HelmReleaseRun, *, type: EventType = "Normal", reason: str,
                    message: str, metadata: Mapping[str, str] | None = None,
                    trace: bool = False, notify_only: bool = False) -> None:
        meta: dict[str, str] = {}
        if run.chart is not None and not metadata:
            meta = {"revision": run.chart.version}
            if run.config_digest:
                meta["token"] = run.config_digest
        await self.recorder.event(run.obj, type=type, reason=reason, message=message,
                                  metadata={**meta, **(metadata or {})}, trace=trace,
                                  notify_only=notify_only)

    def log_failure(self, run: HelmReleaseRun, failure: Failure) -> None:
        if failure.unexpected:
            return
        if failure.waiting:
            self.logger.info(failure.message, extra=fluxlog.fields(reason=failure.reason))
            return
        self.logger.error("Reconciler error", extra=fluxlog.fields(error=failure.message))


class _Actions:
    """The atomic release's actions, run by ``HelmReleaseReconciler.run_helm``."""

    def __init__(self, reconciler: HelmReleaseReconciler, run: HelmReleaseRun) -> None:
        self._r = reconciler
        self._run = run

    async def _helm(self, req: ReleaseRequest, action: str, target: ReleaseTarget,
                    version: int | None = None) -> ActionResult:
        return await self._r.run_helm(req.spec, self._run.namespace, target, action,
                                      run=self._run, version=version)

    async def install(self, req: ReleaseRequest) -> ActionResult:
        return await self._helm(req, "install", req.target)

    async def upgrade(self, req: ReleaseRequest) -> ActionResult:
        return await self._helm(req, "upgrade", req.target)

    async def test(self, req: ReleaseRequest) -> ActionResult:
        return await self._helm(req, "test", req.target)

    async def rollback(self, req: ReleaseRequest, version: int) -> ActionResult:
        return await self._helm(req, "rollback", req.target, version)

    async def uninstall(self, req: ReleaseRequest, target: ReleaseTarget) -> ActionResult:
        return await self._helm(req, "uninstall", target)

    async def unlock(self, req: ReleaseRequest, release: Any) -> None:
        await self._r._storage.unlock(req.target.storage_namespace, release)


# --- rules ---------------------------------------------------------------------------------


def _not_ready(obj: Obj) -> str:
    """Flux's ``isReady`` of a chart source: "" when it can be used, else why not."""
    status = obj.get("status") or {}
    conditions = status.get("conditions")
    generation = (obj.get("metadata") or {}).get("generation")
    if status.get("observedGeneration") != generation:
        if cond.is_false(conditions, cond.READY):
            return cond.message_of(conditions, cond.READY)
        return "latest generation of object has not been reconciled"
    if cond.is_stalled(conditions):
        return cond.message_of(conditions, cond.STALLED)
    if not status.get("artifact"):
        return "does not have an artifact"
    return ""


def _current_target(status: Mapping[str, Any]) -> ReleaseTarget | None:
    """The release the status records (storage namespace, latest snapshot)."""
    storage_ns = status.get("storageNamespace")
    history = status.get("history") or []
    if not storage_ns or not history:
        return None
    latest = history[0]
    return ReleaseTarget(name=str(latest.get("name")), namespace=str(latest.get("namespace")),
                         storage_namespace=str(storage_ns))


def target_changed(status: Mapping[str, Any], target: ReleaseTarget,
                   spec: HelmReleaseSpec, chart_name: str) -> str:
    """Flux's ``ReleaseTargetChanged``: why the release must be uninstalled and made
    anew ("" when it need not)."""
    storage_ns = status.get("storageNamespace")
    if not storage_ns:
        return ""
    if storage_ns != target.storage_namespace:
        return "storage namespace changed"
    history = status.get("history") or []
    if not history:
        return ""
    cur = history[0]
    if cur.get("namespace") != target.namespace:
        return "release namespace changed"
    if cur.get("name") != target.name:
        return "release name changed"
    in_place = spec.upgrade is not None and \
        spec.upgrade.chart_name_change_strategy == "InPlaceUpdate"
    if cur.get("chartName") != chart_name and not in_place:
        return "chart name changed"
    return ""


def must_reset_failures(status: Mapping[str, Any], generation: int, chart_version: str,
                        config_digest: str) -> str:
    """Flux's ``MustResetFailures``: why the failure counters start again ("" if not)."""
    if status.get("lastAttemptedGeneration") != generation:
        return "generation changed"
    if status.get("lastAttemptedRevision") != chart_version:
        return "chart version changed"
    last = status.get("lastAttemptedConfigDigest")
    if last and last != config_digest:
        return "values changed"
    return ""


__all__ = ["CONTROLLER", "KIND", "HelmReleaseReconciler", "HelmReleaseRun",
           "must_reset_failures",
           "target_changed"]
