"""The Kustomization reconciler (Flux's kustomize-controller), on the runtime's driver.

The driver (``fluxd.runtime.driver``) fetches the object, runs the finalizer (garbage
collection by ``deletionPolicy``: ``cleanup``), parses the spec once into
``KustomizationSpec``, stops when suspended, then runs these steps in order over a
``KustomizationRun`` (what one step hands the next):

    check_health_exprs → resolve_source → check_dependencies → resume_health_checks →
    fetch → build → substitute → apply → prune → check_health

and always summarises the status the kustomize-controller's way (``finalize_status``).

``build`` and ``substitute`` reuse their output (``builder.ManifestCache``, sized by
``[kustomize] build_cache_*``) while its inputs are the same — the artifact digest, the
path and the build fields; then the substitution variables, strategy and strict setting —
so a periodic reconcile of an unchanged revision builds nothing. A build that names a
remote base, or whose files could not be followed, is not reused (a remote base may
change under the same artifact). Which way a build went is logged at debug: ``build:
reused``, ``build: native``, or ``build: kustomize`` with the reason the native engine
gave up and the files written.

Every failure is a Ready=False with the step's reason, a Warning event, an error log line
and a retry at ``retryInterval`` without backoff growth (``RetryError``), as Flux does.
A missing source or artifact and an unready dependency are waits (``WaitingError``: no
event, an info line); an invalid CEL expression and a refused cross-namespace reference
stall. Health checks do not hold a worker: while objects are still progressing the
reconcile ends with a short requeue and remembers the applied revision
(``_pending``), and the next run only looks at the objects again
(``resume_health_checks``). After the status write, a success logs Flux's
``Reconciliation finished in 1.2s, next run in 10m0s`` with the revision and sends it as
an event (the commit-status update); the server-side apply change set is logged as
``server-side apply completed`` (``output``: object → action).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fluxd import logging as fluxlog
from fluxd.api.kustomize import API_VERSION, GROUP, KustomizationSpec, PostBuild
from fluxd.artifacts.bus import ArtifactBus, SourceKey
from fluxd.artifacts.extract import ExtractError
from fluxd.artifacts.snapshot import Snapshot, SnapshotCache
from fluxd.artifacts.storage import ArtifactStore
from fluxd.clock import format_duration
from fluxd.config import Settings, parse_duration
from fluxd.controllers.kustomize import build as builder
from fluxd.controllers.kustomize import substitution
from fluxd.controllers.kustomize.native import base_directory, build_native
from fluxd.kube import KubeClient, KubeError, NotFound
from fluxd.kustomize.kyaml import Unsupported
from fluxd.runtime import cel, dependency, history, kstatus
from fluxd.runtime import conditions as cond
from fluxd.runtime.driver import Driver, EventType, Failure, Run, Step
from fluxd.runtime.handler import Adder
from fluxd.runtime.informer import Informer
from fluxd.runtime.reconcile import (
    ObjectKey,
    Result,
    RetryError,
    StallingError,
    WaitingError,
)
from fluxd.ssa import (
    Action,
    ApplyError,
    ChangeSet,
    IgnoreRule,
    ObjMeta,
    ResourceManager,
)

log = logging.getLogger("fluxd.kustomize")

Obj = dict[str, Any]
HealthChecks = dict[tuple[str, str], cel.HealthCheck]

KIND = "Kustomization"
CONTROLLER = "kustomize-controller"
NAME_LABEL = f"{GROUP}/name"
NAMESPACE_LABEL = f"{GROUP}/namespace"
#: the artifact metadata key of the revision an OCI artifact was built from
ORIGIN_REVISION = "org.opencontainers.image.revision"

HEALTHY = "Healthy"
OWNED = (cond.READY, HEALTHY, cond.RECONCILING, cond.STALLED)

# Flux's reasons
RECONCILIATION_SUCCEEDED = "ReconciliationSucceeded"
RECONCILIATION_FAILED = "ReconciliationFailed"
ARTIFACT_FAILED = "ArtifactFailed"
BUILD_FAILED = "BuildFailed"
PRUNE_FAILED = "PruneFailed"
HEALTH_CHECK_FAILED = "HealthCheckFailed"
DEPENDENCY_NOT_READY = "DependencyNotReady"
ACCESS_DENIED = "AccessDenied"
INVALID_CEL = "InvalidCELExpression"
PROGRESSING = "Progressing"

#: the delay before the second round of health checks; it doubles each round up to
#: ``[kustomize] health_poll_interval``
FIRST_HEALTH_POLL = 0.1

DeletionPolicy = Literal["MirrorPrune", "Delete", "WaitForTermination", "Orphan"]


@dataclass
class _PendingHealth:
    """A revision applied whose health is still being assessed."""

    generation: int
    revision: str
    digest: str
    deadline: float
    started: float
    targets: list[tuple[ObjMeta, str]]
    changed: bool
    applied_at: float
    #: objects as the apply left them, used once for the first round of checks
    known: dict[ObjMeta, Obj] = field(default_factory=dict)
    #: rounds of checks that found objects still progressing
    rounds: int = 0


@dataclass(frozen=True)
class SourceArtifact:
    """The source's artifact this reconcile applies."""

    revision: str
    digest: str
    path: Path
    origin_revision: str | None


@dataclass
class KustomizationRun(Run[KustomizationSpec]):
    """What the Kustomization steps hand each other."""

    #: the client the objects are applied, pruned and checked with (impersonating
    #: ``serviceAccountName`` or the default service account, when there is one)
    kube: KubeClient = field(kw_only=True)
    manager: ResourceManager = field(kw_only=True)
    #: Flux's ``GetTimeout`` in seconds
    timeout: float = field(kw_only=True)
    #: when the reconcile that a success or failure reports began: this one, or the
    #: one that applied the revision whose health checks it resumes
    since: float = field(kw_only=True)
    checks: HealthChecks = field(default_factory=dict)
    source: Obj = field(default_factory=dict)
    artifact: SourceArtifact | None = None
    #: monotonic time by which build, apply and the waits between stages are done
    deadline: float = 0.0
    snapshot: Snapshot | None = None
    objects: list[Obj] = field(default_factory=list)
    #: what the built manifests depend on (``builder.build_key``)
    build_key: str = ""
    #: the digest of the manifests (the history key)
    digest: str = ""
    change_set: ChangeSet = field(default_factory=ChangeSet)
    #: the revision is applied and healthy: the report logs and announces the success
    succeeded: bool = False

    @property
    def revision(self) -> str:
        assert self.artifact is not None, "the source step has not run"
        return self.artifact.revision

    @functools.cached_property
    def spec_json(self) -> Obj:
        """The spec in its JSON form, for the kustomization generator: Flux's reads the
        object converted to unstructured, too."""
        return self.spec.to_json()


@dataclass
class KustomizationReconciler(Driver[KustomizationSpec, KustomizationRun]):
    """The Kustomization's steps and hooks on the driver (see the module docstring)."""

    API_VERSION = API_VERSION
    KIND = KIND
    SPEC = KustomizationSpec
    RUN = KustomizationRun
    OWNED = OWNED

    client: KubeClient
    sources: Mapping[str, Informer] = field(kw_only=True)
    store: ArtifactStore = field(kw_only=True)
    bus: ArtifactBus = field(kw_only=True)
    settings: Settings = field(kw_only=True)
    queue: Adder = field(kw_only=True)
    kubectl: str | None = field(kw_only=True)
    snapshots: SnapshotCache = field(default_factory=SnapshotCache, kw_only=True)
    #: built and substituted manifests for reuse; by default sized by ``[kustomize]``
    manifests: builder.ManifestCache | None = field(default=None, kw_only=True)
    logger: logging.Logger = field(default=log, kw_only=True)
    #: builds run, by kind ("native", "kustomize", "substitution"): for tests and
    #: diagnostics
    builds: collections.Counter[str] = field(default_factory=collections.Counter,
                                             init=False)
    _pending: dict[ObjectKey, _PendingHealth] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.manifests is None:
            settings = self.settings.kustomize
            self.manifests = builder.ManifestCache(
                max_entries=settings.build_cache_max_entries,
                max_bytes=settings.build_cache_max_bytes)

    def steps(self) -> list[Step[KustomizationRun]]:
        return [self.check_health_exprs, self.resolve_source, self.check_dependencies,
                self.resume_health_checks, self.fetch, self.build, self.substitute,
                self.apply, self.prune, self.check_health]

    def run_fields(self, obj: Obj, spec: KustomizationSpec, started: float) -> dict[str, Any]:
        namespace, name = str(obj["metadata"]["namespace"]), str(obj["metadata"]["name"])
        kube = self.client_for(spec, namespace)
        return {"kube": kube, "manager": self.resource_manager(kube, namespace, name,
                                                                 apply=True),
                "timeout": timeout_of(spec), "since": started}

    @property
    def requeue_dependency(self) -> float:
        return float(self.settings.reconcile.requeue_dependency)

    # --- source and dependencies -------------------------------------------------------

    async def check_health_exprs(self, run: KustomizationRun) -> None:
        """``healthCheckExprs`` and every ``readyExpr`` compiled: a syntax error stalls
        the object (``InvalidCELExpression``), as Flux."""
        spec = run.spec
        try:
            run.checks = cel.compile_health_checks(
                [check.to_json() for check in spec.health_check_exprs or []])
            for dep in spec.depends_on or []:
                if dep.ready_expr:
                    cel.Expression.compile(dep.ready_expr, variables=cel.READY_EXPR_VARIABLES)
        except cel.CELError as exc:
            raise StallingError(str(exc), reason=INVALID_CEL) from exc

    async def resolve_source(self, run: KustomizationRun) -> None:
        """The source object and the artifact to apply: the bus's latest when the cache
        has not caught up with it yet, else ``status.artifact``."""
        ref = run.spec.source_ref
        ns = ref.namespace or run.namespace
        shown = f"{ref.kind}/{ns}/{ref.name}" if ref.namespace else f"{ref.kind}/{ref.name}"
        if self.settings.access.no_cross_namespace_refs and ns != run.namespace:
            raise StallingError(
                f"cannot access {shown}, cross-namespace references have been blocked",
                reason=ACCESS_DENIED)
        informer = self.sources.get(ref.kind)
        if informer is None:
            raise StallingError(f"source kind {ref.kind} is not served by fluxd "
                                f"(supported: {', '.join(sorted(self.sources))})",
                                reason=ARTIFACT_FAILED)
        source = informer.get(ns, ref.name)
        if source is None:
            # retried at the retry interval, as Flux; the source's creation is not
            # announced on the bus until it has an artifact
            raise WaitingError(f"Source '{shown}' not found", reason=ARTIFACT_FAILED)
        run.source = source
        meta = source["metadata"]
        stored = (source.get("status") or {}).get("artifact") or {}
        announced = self.bus.last(SourceKey(source["kind"], meta["namespace"], meta["name"]))
        if announced is not None and announced.digest != stored.get("digest"):
            # the bus is ahead of the cache: the status write is not in the informer yet
            run.artifact = SourceArtifact(announced.revision, announced.digest,
                                          announced.path,
                                          announced.metadata.get(ORIGIN_REVISION))
            return
        if not stored.get("path"):
            raise WaitingError("Source artifact not found, retrying in "
                               f"{format_duration(self.requeue_dependency)}",
                               reason=ARTIFACT_FAILED, requeue_after=self.requeue_dependency)
        origin = (stored.get("metadata") or {}).get(ORIGIN_REVISION)
        run.artifact = SourceArtifact(str(stored["revision"]), str(stored.get("digest") or ""),
                                      self.store.local_path(str(stored["path"])), origin)

    async def check_dependencies(self, run: KustomizationRun) -> None:
        """Every ``dependsOn`` Kustomization Ready at its generation (or its
        ``readyExpr`` true) and, when it shares the source, at this revision."""
        spec, ns = run.spec, run.namespace
        if not spec.depends_on:
            return

        def same_revision(shown: str, dep: dependency.Dependency, found: Obj) -> str | None:
            dep_spec = KustomizationSpec.spec_of(found)
            if dep_spec is not None and \
                    _same_source(dep_spec, dep.namespace or ns, spec, ns) and \
                    (found.get("status") or {}).get("lastAppliedRevision") != run.revision:
                return f"dependency '{shown}' revision is not up to date"
            return None

        try:
            await dependency.check(
                self.client, api_version=API_VERSION, kind=KIND, obj=run.obj,
                depends_on=spec.depends_on,
                no_cross_namespace_refs=self.settings.access.no_cross_namespace_refs,
                also=same_revision)
        except dependency.CrossNamespaceRefused as exc:
            raise StallingError(str(exc), reason=ACCESS_DENIED) from exc
        except dependency.NotReady as exc:
            raise self.not_ready(str(exc)) from exc
        self.logger.info("All dependencies are ready, proceeding with reconciliation")

    def not_ready(self, why: str) -> WaitingError:
        return WaitingError(
            f"{why}; Dependencies do not meet ready condition, retrying in "
            f"{format_duration(self.requeue_dependency)}", reason=DEPENDENCY_NOT_READY,
            requeue_after=self.requeue_dependency)

    async def resume_health_checks(self, run: KustomizationRun) -> Result | None:
        """The health checks of the revision applied by an earlier run, when it is still
        the one to apply (the list ends with their round); otherwise announce the
        reconcile of this revision and go on."""
        patcher = run.patcher
        pending = self._pending.get(run.key)
        if pending is not None and (pending.generation != patcher.generation
                                    or pending.revision != run.revision):
            self._pending.pop(run.key, None)
            pending = None
        if pending is not None:
            run.since = pending.started
            return await self.assess(run, pending)

        progressing = (not run.was_ready
                       or patcher.get_field("lastAppliedRevision") != run.revision
                       or patcher.get_field("observedGeneration") != patcher.generation)
        if progressing:
            patcher.mark_unknown(cond.READY, PROGRESSING, "Reconciliation in progress")
            patcher.mark_reconciling(
                PROGRESSING, f"Fetching manifests for revision {run.revision} "
                             f"with a timeout of {format_duration(run.timeout)}")
        if patcher.get_field("lastAppliedRevision") != run.revision:
            # a new revision: commit-status providers show it as pending (Gitea) until
            # the final event says how it went
            await self.event(run, reason=PROGRESSING,
                             message=f"Reconciliation in progress for revision "
                                     f"{run.revision}",
                             metadata={"commit_status": "update"}, notify_only=True)
        run.deadline = self.clock.monotonic() + run.timeout
        return None

    # --- artifact, build, substitution -------------------------------------------------

    async def fetch(self, run: KustomizationRun) -> None:
        """The artifact's files, read once per digest from the local store after its
        digest is checked; a file missing or torn is rebuilt by the source controller,
        which is asked to."""
        artifact = run.artifact
        assert artifact is not None
        snapshot = await self.snapshots.cached(artifact.digest, artifact.path)
        if snapshot is None:
            relative = str(artifact.path.relative_to(self.store.root)) \
                if artifact.path.is_relative_to(self.store.root) else ""
            intact = bool(relative) and await self.store.verify_async(relative,
                                                                       artifact.digest)
            if not intact:
                meta = run.source["metadata"]
                self.queue.add(ObjectKey(run.source["kind"], meta["namespace"],
                                         meta["name"]))
                raise RetryError(
                    f"failed to verify artifact {artifact.revision}: the file is missing "
                    "from storage or its digest does not match; the source is rebuilding "
                    "it", reason=ARTIFACT_FAILED, requeue_after=self.requeue_dependency)
            try:
                snapshot = await self.snapshots.get(artifact.digest, artifact.path)
            except (ExtractError, OSError) as exc:
                raise RetryError(f"failed to extract artifact {artifact.revision}: {exc}",
                                 reason=ARTIFACT_FAILED) from exc
        run.snapshot = snapshot
        run.patcher.set_field("lastAttemptedRevision", artifact.revision)

    async def build(self, run: KustomizationRun) -> None:
        """The manifests: reused while the artifact, the path and the build fields are
        the same; else built natively when the engine reproduces the build, else with
        the real kustomize on the files the build reads, written out to a temporary
        directory (always removed)."""
        snapshot, artifact, manifests = run.snapshot, run.artifact, self.manifests
        assert snapshot is not None and artifact is not None and manifests is not None
        spec = run.spec_json
        path = run.spec.path or ""
        directory = base_directory(path)
        # without a digest the artifact's content is not known: nothing is reused
        run.build_key = builder.build_key(artifact.digest, path if directory is None
                                          else directory, spec) if artifact.digest else ""
        cached = await manifests.get(run.build_key) if run.build_key else None
        if cached is not None:
            self.logger.debug("build: reused", extra=fluxlog.fields(path=path))
            run.objects = cached
            return
        try:
            native = await asyncio.to_thread(build_native, snapshot, path, spec)
            reason = "not reproduced natively"
        except Unsupported as exc:
            native, reason = None, str(exc)
        if native is not None:
            self.builds["native"] += 1
            self.logger.debug("build: native", extra=fluxlog.fields(path=path))
            run.objects = native
            if run.build_key:
                await manifests.put(run.build_key, native)
            return
        # the real kustomize takes a while: show that the reconcile is under way
        with contextlib.suppress(KubeError):
            await run.patcher.patch()
        kubectl = builder.find_kubectl(self.kubectl)
        if kubectl is None:
            raise RetryError("kubectl not found: set [tools] kubectl or put it on PATH",
                             reason=BUILD_FAILED)
        remaining = max(1.0, run.deadline - self.clock.monotonic())
        self.builds["kustomize"] += 1
        try:
            built = await builder.build_snapshot(
                snapshot, path if directory is None else directory, path, spec,
                kubectl=kubectl, timeout=remaining, clock=self.clock)
        except builder.PathNotFound as exc:
            raise RetryError(str(exc), reason=ARTIFACT_FAILED) from exc
        except builder.BuildError as exc:
            raise RetryError(str(exc), reason=BUILD_FAILED) from exc
        except OSError as exc:
            raise RetryError(f"failed to write out artifact {snapshot.size} bytes: {exc}",
                             reason=ARTIFACT_FAILED) from exc
        fields: dict[str, Any] = {"path": path, "reason": reason, "written": built.written}
        if built.whole is not None:
            fields["wholeArtifact"] = built.whole
        self.logger.debug("build: kustomize", extra=fluxlog.fields(**fields))
        run.objects = built.objects
        if built.remote or built.whole is not None:
            # a remote base may change under the same artifact (and one that is not
            # followed may name one): neither the build nor its substitution is reused
            run.build_key = ""
        if run.build_key:
            await manifests.put(run.build_key, built.objects)

    async def substitute(self, run: KustomizationRun) -> None:
        """``postBuild`` variables substituted, then what Flux does last before the apply
        (``commonMetadata``, the SOPS refusal); the manifests' digest."""
        post = run.spec.post_build
        if post is not None:
            run.objects = await self._substitute(run, post)
        try:
            run.objects = builder.finish(run.objects, run.spec_json)
        except builder.BuildError as exc:
            raise RetryError(str(exc), reason=RECONCILIATION_FAILED) from exc
        run.digest = manifests_digest(run.objects)

    async def _substitute(self, run: KustomizationRun, post: PostBuild) -> list[Obj]:
        sources: list[substitution.SubstituteSource] = []
        for ref in post.substitute_from or []:
            found: Obj | None
            try:
                found = await run.kube.get("v1", ref.kind, ref.name, run.namespace)
            except NotFound:
                found = None
            except KubeError as exc:
                raise RetryError(f"substitute from '{ref.kind}/{ref.name}' failed: {exc}",
                                 reason=BUILD_FAILED) from exc
            sources.append(substitution.SubstituteSource(
                kind=ref.kind, name=ref.name, optional=ref.optional, obj=found))
        strict = self.settings.kustomize.strict_substitution
        try:
            variables = substitution.collect_variables(sources, post.substitute,
                                                       namespace=run.namespace)
            key = builder.substitution_key(run.build_key, variables,
                                           post.substitute_strategy, strict)
            manifests = self.manifests
            assert manifests is not None
            cached = await manifests.get(key) if run.build_key else None
            if cached is not None:
                return cached
            self.builds["substitution"] += 1
            objects = await asyncio.to_thread(
                substitution.substitute, run.objects, variables,
                strategy=post.substitute_strategy, strict=strict)
        except substitution.SubstitutionError as exc:
            raise RetryError(str(exc), reason=BUILD_FAILED) from exc
        if run.build_key:
            await manifests.put(key, objects)
        return objects

    # --- apply, prune, health ----------------------------------------------------------

    def client_for(self, spec: KustomizationSpec, namespace: str) -> KubeClient:
        account = spec.service_account_name or self.settings.access.default_service_account
        if not account:
            return self.client
        return self.client.impersonate(namespace, str(account))

    def resource_manager(self, kube: KubeClient, namespace: str, name: str, *,
                         apply: bool) -> ResourceManager:
        settings = self.settings.kustomize
        return ResourceManager(
            client=kube, owner=CONTROLLER,
            owner_labels={NAME_LABEL: name, NAMESPACE_LABEL: namespace},
            concurrency=settings.concurrent_ssa, clock=self.clock,
            override_managers=tuple(settings.override_managers) if apply else ())

    async def apply(self, run: KustomizationRun) -> None:
        """Staged server-side apply (dry-run first); the change set is logged and, when
        it changed something, sent as an event."""
        spec = run.spec
        rules = [IgnoreRule(tuple(rule.paths),
                            rule.target.to_json() if rule.target is not None else None)
                 for rule in spec.ignore or []]
        try:
            change_set = await run.manager.apply_all_staged(
                run.objects, force=spec.force, ignore=rules,
                wait_timeout=max(1.0, run.deadline - self.clock.monotonic()))
        except (ApplyError, KubeError) as exc:
            # every failure of the apply is ReconciliationFailed, as Flux (a REST
            # mapping refresh that fails, a refused impersonation, ...)
            self.record_history(run, run.digest, run.started, RECONCILIATION_FAILED)
            raise RetryError(str(exc), reason=RECONCILIATION_FAILED) from exc
        run.change_set = change_set
        if change_set.entries:
            self.logger.info("server-side apply completed", extra=fluxlog.fields(
                output=change_set.to_map(), revision=run.revision))
        if change_set.has_changes():
            await self.event(run, reason=PROGRESSING, message=change_set.event_lines())

    async def prune(self, run: KustomizationRun) -> None:
        """The new inventory; with ``prune``, the objects of the old one that are gone
        from the source deleted (an inventory entry that does not parse fails the
        reconcile once, as Flux: the new inventory is recorded all the same)."""
        patcher = run.patcher
        old = list(((patcher.get_field("inventory") or {}).get("entries")) or [])
        new = inventory_entries(run.change_set)
        patcher.set_field("inventory", {"entries": new})
        if not run.spec.prune:
            return
        keep = {e["id"] for e in new}
        try:
            stale = [(ObjMeta.parse_id(str(e.get("id"))), str(e.get("v") or ""))
                     for e in old if e.get("id") not in keep]
        except ValueError as exc:
            self.record_history(run, run.digest, run.started, RECONCILIATION_FAILED)
            raise RetryError(str(exc), reason=RECONCILIATION_FAILED) from exc
        if not stale:
            return
        deleted, errors = await run.manager.delete_all(stale)
        if deleted.has_changes():
            self.logger.info(f"garbage collection completed: {deleted}")
            await self.event(run, reason=PROGRESSING, message=deleted.event_lines())
        if errors:
            gone = {e.meta.id for e in deleted.entries if e.action is Action.DELETED}
            kept = [{"id": m.id, "v": v} for m, v in stale if m.id not in gone]
            patcher.set_field("inventory", {"entries": [*new, *kept]})
            self.record_history(run, run.digest, run.started, PRUNE_FAILED)
            raise RetryError("prune failed: " + "; ".join(str(e) for e in errors),
                             reason=PRUNE_FAILED)

    async def check_health(self, run: KustomizationRun) -> Result:
        """Success when there is nothing to check; else the first round of checks (the
        rest come in later runs, see ``resume_health_checks``)."""
        targets = self.health_targets(run)
        if not targets:
            run.patcher.delete_condition(HEALTHY)
            return self.succeed(run, run.digest)
        now = self.clock.monotonic()
        pending = _PendingHealth(
            generation=run.patcher.generation, revision=run.revision, digest=run.digest,
            deadline=now + run.timeout, started=run.started, targets=targets,
            changed=run.change_set.has_changes(), applied_at=now,
            known={e.meta: e.object for e in run.change_set.entries if e.object is not None})
        run.patcher.mark_reconciling(
            PROGRESSING, f"Running health checks for revision {run.revision} "
                         f"with a timeout of {format_duration(run.timeout)}")
        run.patcher.mark_unknown(HEALTHY, PROGRESSING, "Running health checks")
        self._pending[run.key] = pending
        return await self.assess(run, pending)

    def health_targets(self, run: KustomizationRun) -> list[tuple[ObjMeta, str]]:
        """What to check, with API versions: every applied object with ``wait``, else the
        ``healthChecks`` (apiVersion defaults to apps/v1); never the Kustomization
        itself."""
        spec = run.spec
        own = ObjMeta(GROUP, KIND, run.namespace, run.name)
        found: list[tuple[ObjMeta, str]] = []
        if spec.wait:
            found = [(e.meta, e.meta.api_version(e.version)) for e in run.change_set.entries
                     if e.action is not Action.SKIPPED]
        else:
            for ref in spec.health_checks or []:
                api_version = ref.api_version or "apps/v1"
                group = api_version.rpartition("/")[0]
                found.append((ObjMeta(group, ref.kind, ref.namespace or run.namespace,
                                      ref.name), api_version))
        return [(m, v) for m, v in found if m != own]

    async def assess(self, run: KustomizationRun, pending: _PendingHealth) -> Result:
        """One round of health checks; a short requeue while objects progress."""
        known, pending.known = pending.known, {}
        results = await asyncio.gather(*(self.object_health(run.kube, m, v, run.checks,
                                                            known.get(m))
                                         for m, v in pending.targets))
        failed = [f"{m.subject} status: '{r.status}': {r.message}"
                  for (m, _), r in zip(pending.targets, results, strict=True)
                  if r.status is kstatus.Status.Failed]
        waiting = [f"{m.subject} status: '{r.status}'"
                   for (m, _), r in zip(pending.targets, results, strict=True)
                   if r.status is not kstatus.Status.Current
                   and r.status is not kstatus.Status.Failed]
        now = self.clock.monotonic()
        if failed or (waiting and now >= pending.deadline):
            self._pending.pop(run.key, None)
            elapsed = format_duration(now - pending.applied_at)
            message = f"health check failed after {elapsed}: " + \
                "; ".join(failed or ["timeout waiting for: [" + ", ".join(waiting) + "]"])
            run.patcher.mark_false(HEALTHY, HEALTH_CHECK_FAILED, message)
            self.record_history(run, pending.digest, pending.started, HEALTH_CHECK_FAILED)
            raise RetryError(message, reason=HEALTH_CHECK_FAILED)
        if waiting:
            # an object found Current is not read again in this wait: the next rounds
            # look only at what is still progressing
            pending.targets = [target for target, result
                               in zip(pending.targets, results, strict=True)
                               if result.status is not kstatus.Status.Current]
            # soon at first, then less often: a Kustomization turns Ready shortly after
            # its last object does, and a slow rollout is not polled at a high rate
            pending.rounds += 1
            poll = min(float(self.settings.kustomize.health_poll_interval),
                       FIRST_HEALTH_POLL * 2 ** (pending.rounds - 1))
            return Result(requeue_after=min(poll, max(0.1, pending.deadline - now)))
        self._pending.pop(run.key, None)
        passed = f"Health check passed in {format_duration(now - pending.applied_at)}"
        recovered = not cond.is_true(run.patcher.conditions, HEALTHY)
        run.patcher.mark_true(HEALTHY, cond.SUCCEEDED_REASON, passed)
        if recovered or pending.changed:
            await self.event(run, reason=cond.SUCCEEDED_REASON, message=passed)
        return self.succeed(run, pending.digest)

    async def object_health(self, client: KubeClient, meta: ObjMeta, api_version: str,
                            checks: HealthChecks, known: Obj | None = None
                            ) -> kstatus.Result:
        """An object's health: Flux's Job rule, else its ``healthCheckExprs`` entry,
        else kstatus; judged on ``known`` (the object as the apply just saw it) when
        given, else on a fresh read."""
        live = known
        if live is None:
            try:
                live = await client.get(api_version, meta.kind, meta.name,
                                        meta.namespace or None)
            except NotFound:
                return kstatus.Result(kstatus.Status.NotFound, "Resource not found")
            except KubeError as exc:
                return kstatus.Result(kstatus.Status.Unknown, str(exc))
        group = cel.group_of(str(live.get("apiVersion") or api_version))
        kind = str(live.get("kind") or meta.kind)
        if (group, kind) == ("batch", "Job"):
            return kstatus.job_health(live)
        check = checks.get((group, kind))
        if check is not None:
            return check.evaluate(live)
        return kstatus.compute(live, now=self.clock.now())

    # --- success and bookkeeping -------------------------------------------------------

    def succeed(self, run: KustomizationRun, digest: str) -> Result:
        """Ready at this revision; the report logs and announces it once the status is
        written."""
        artifact = run.artifact
        assert artifact is not None
        patcher = run.patcher
        patcher.mark_true(cond.READY, RECONCILIATION_SUCCEEDED,
                          f"Applied revision: {artifact.revision}")
        patcher.set_field("lastAppliedRevision", artifact.revision)
        patcher.set_field("lastAppliedOriginRevision", artifact.origin_revision)
        patcher.set_field("lastAttemptedRevision", artifact.revision)
        self.record_history(run, digest, run.since, RECONCILIATION_SUCCEEDED)
        run.succeeded = True
        return Result(requeue_after=run.interval)

    def record_history(self, run: KustomizationRun, digest: str, started: float,
                       status: str) -> None:
        artifact = run.artifact
        assert artifact is not None
        metadata = {"revision": artifact.revision}
        if artifact.origin_revision:
            metadata["originRevision"] = artifact.origin_revision
        patcher = run.patcher
        patcher.set_field("history", history.upsert(
            patcher.get_field("history"), digest=digest, now=self.clock.now(),
            duration=self.clock.monotonic() - started, status=status, metadata=metadata))

    # --- the driver's hooks --------------------------------------------------------------

    async def forget(self, key: ObjectKey) -> None:
        self._pending.pop(key, None)

    async def report(self, run: KustomizationRun, failure: Failure | None) -> None:
        """After the status write: a success is logged and sent as an event (Flux's
        commit-status update); a round of health checks still going says nothing; a
        failure is a Warning event and an error line, a wait an info line."""
        if failure is None:
            if run.succeeded:
                message = self.finished_message(run)
                self.logger.info(message, extra=fluxlog.fields(revision=run.revision))
                await self.event(run, reason=RECONCILIATION_SUCCEEDED, message=message,
                                 metadata={"commit_status": "update"})
            return
        if not failure.waiting:
            # Flux sends no event for a wait (a missing source, an unready dependency)
            await self.failure_event(run, failure)
        self.log_failure(run, failure)

    def finished_message(self, run: KustomizationRun) -> str:
        elapsed = format_duration(self.clock.monotonic() - run.since)
        return f"Reconciliation finished in {elapsed}, next run in " \
               f"{format_duration(run.interval)}"

    def failed_message(self, run: KustomizationRun, failure: Failure) -> str:
        """Flux's failure line: the time since the reconcile began and the retry."""
        elapsed = format_duration(self.clock.monotonic() - run.since)
        error = failure.error
        retry = error.requeue_after if isinstance(error, RetryError) else None
        return f"Reconciliation failed after {elapsed}, next try in " \
               f"{format_duration(retry or run.retry_interval)}"

    def log_failure(self, run: KustomizationRun, failure: Failure) -> None:
        """Flux's lines: a wait at info without keys (for dependencies, the per-dependency
        detail stays in Ready's message); a stall as controller-runtime logs a terminal
        error; any other failure with its retry, the revision and the error."""
        if failure.unexpected:
            return  # the controller logs it with its traceback
        if failure.waiting:
            if failure.reason == DEPENDENCY_NOT_READY:
                self.logger.info(f"Dependencies do not meet ready condition, retrying in "
                                 f"{format_duration(self.requeue_dependency)}")
            else:
                self.logger.info(failure.message)
            return
        if failure.stalled:
            self.logger.error("Reconciler error", extra=fluxlog.fields(error=failure.message))
            return
        fields: dict[str, Any] = {"error": failure.message}
        if run.artifact is not None:
            fields = {"revision": run.artifact.revision, **fields}
        self.logger.error(self.failed_message(run, failure),
                          extra=fluxlog.fields(**fields))

    async def event(self, run: KustomizationRun, *, type: EventType = "Normal",
                    reason: str, message: str, metadata: Mapping[str, str] | None = None,
                    trace: bool = False, notify_only: bool = False) -> None:
        """An event with Flux's ``revision`` and ``originRevision`` metadata: the
        artifact's being applied, else the last attempted one."""
        patcher = run.patcher
        revision: str | None
        if run.artifact is not None:
            revision, origin = run.artifact.revision, run.artifact.origin_revision
        else:
            revision = patcher.get_field("lastAttemptedRevision")
            origin = patcher.get_field("lastAppliedOriginRevision")
        await self.recorder.event(
            run.obj, type=type, reason=reason, message=message,
            metadata={**revision_metadata(revision, origin), **(metadata or {})},
            trace=trace, notify_only=notify_only)

    async def cleanup(self, obj: Obj, spec: KustomizationSpec | None) -> None:
        """Garbage-collect by ``deletionPolicy`` before the finalizer goes. A failed
        delete is logged and sent as an event; the finalizer goes anyway."""
        status = obj.get("status") or {}
        entries = list(((status.get("inventory") or {}).get("entries")) or [])
        if spec is None:
            if entries:
                self.logger.error("Garbage collection skipped: the spec does not parse, "
                                  "so the deletion policy is unknown")
            return
        policy = deletion_policy_of(spec)
        delete = policy in ("Delete", "WaitForTermination") or (
            policy == "MirrorPrune" and spec.prune)
        if not (delete and entries and not spec.suspend):
            return
        meta = obj["metadata"]
        metadata = revision_metadata(status.get("lastAppliedRevision"),
                                     status.get("lastAppliedOriginRevision"))
        manager = self.resource_manager(self.client_for(spec, meta["namespace"]),
                                        meta["namespace"], meta["name"], apply=False)
        errors: list[Exception] = []
        stale: list[tuple[ObjMeta, str]] = []
        for entry in entries:
            try:
                stale.append((ObjMeta.parse_id(str(entry.get("id"))),
                              str(entry.get("v") or "")))
            except ValueError as exc:
                errors.append(exc)
        deleted = ChangeSet()
        try:
            deleted, failures = await manager.delete_all(stale)
            errors.extend(failures)
        except KubeError as exc:
            errors.append(exc)
        if deleted.has_changes():
            await self.recorder.event(obj, reason=PROGRESSING,
                                      message=deleted.event_lines(), metadata=metadata)
        if errors:
            message = "; ".join(str(e) for e in errors)
            self.logger.error("pruning for deleted resource failed",
                              extra=fluxlog.fields(error=message))
            await self.recorder.event(obj, type="Warning", reason=PRUNE_FAILED,
                                      message=message, metadata=metadata)
        elif policy == "WaitForTermination":
            try:
                await manager.wait_for_termination([m for m, _ in stale],
                                                   timeout=timeout_of(spec))
            except (TimeoutError, KubeError) as exc:
                self.logger.error("failed to wait for resources termination",
                                  extra=fluxlog.fields(error=str(exc)))
                await self.recorder.event(
                    obj, type="Warning", reason="TerminationTimeout",
                    message=f"failed to wait for objects to be deleted: {exc}",
                    metadata=metadata)


def timeout_of(spec: KustomizationSpec) -> float:
    """Flux's ``GetTimeout``: ``timeout``, else ``interval`` less 30s; at least 30s."""
    value = parse_duration(spec.timeout) if spec.timeout else \
        parse_duration(spec.interval) - 30
    return max(value, 30.0)


def deletion_policy_of(spec: KustomizationSpec) -> DeletionPolicy:
    """Flux's ``GetDeletionPolicy``: ``MirrorPrune`` when not set."""
    return spec.deletion_policy or "MirrorPrune"


def revision_metadata(revision: str | None, origin: str | None) -> dict[str, str]:
    """Flux's event metadata keys for what was (being) applied."""
    metadata: dict[str, str] = {}
    if revision:
        metadata["revision"] = str(revision)
    if origin:
        metadata["originRevision"] = str(origin)
    return metadata


def _same_source(one: KustomizationSpec, one_ns: str, other: KustomizationSpec,
                 other_ns: str) -> bool:
    a, b = one.source_ref, other.source_ref
    return (a.kind, a.name, a.namespace or one_ns) == (b.kind, b.name, b.namespace or other_ns)


def manifests_digest(objects: Sequence[Mapping[str, Any]]) -> str:
    """``sha256:<hex>`` of the manifests (the history key), over canonical JSON: the
    same objects give the same digest whatever their key order (Flux hashes its YAML
    rendering, which fluxd does not reproduce byte for byte)."""
    text = json.dumps(objects, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def inventory_entries(change_set: ChangeSet) -> list[Obj]:
    """The inventory of an apply: every object of the set, sorted by id."""
    seen: dict[str, Obj] = {}
    for entry in change_set.entries:
        seen[entry.meta.id] = {"id": entry.meta.id, "v": entry.version}
    return [seen[k] for k in sorted(seen)]


def source_index(obj: Obj) -> list[str]:
    """Kustomizations by ``<kind>/<namespace>/<name>`` of their source."""
    spec = KustomizationSpec.spec_of(obj)
    if spec is None:
        return []
    ref = spec.source_ref
    ns = ref.namespace or obj["metadata"].get("namespace", "")
    return [f"{ref.kind}/{ns}/{ref.name}"]


def dependency_index(obj: Obj) -> list[str]:
    """Kustomizations by ``<namespace>/<name>`` of each Kustomization they depend on."""
    spec = KustomizationSpec.spec_of(obj)
    if spec is None:
        return []
    ns = obj["metadata"].get("namespace", "")
    return [f"{d.namespace or ns}/{d.name}" for d in spec.depends_on or []]


__all__ = ["CONTROLLER", "KIND", "KustomizationReconciler", "KustomizationRun",
           "dependency_index", "source_index", "timeout_of"]
