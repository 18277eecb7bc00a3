"""The Kustomization reconciler (Flux's kustomize-controller).

fetch from the cache → gone? forget → deleting? prune by ``deletionPolicy`` and drop the
finalizer → ensure the finalizer → suspended? stop → compile the CEL health checks →
resolve the source (``AccessDenied``, ``ArtifactFailed``) → ``dependsOn`` ready? →
read the artifact from the local store (digest checked), extract it into a temporary
directory → build (generated kustomization.yaml, kustomize) → substitute → apply
(staged, dry-run first) → prune → health → status, history, events.

Every failure is a Ready=False with the step's reason, a Warning event, and a retry at
``retryInterval`` without backoff growth, as Flux does. Health checks do not hold a
worker: when objects are still progressing the reconcile ends with a short requeue and
remembers the applied revision, and the next run only looks at the objects again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluxd.api.kustomize import API_VERSION, GROUP
from fluxd.artifacts.bus import ArtifactBus, SourceKey
from fluxd.artifacts.extract import ExtractError
from fluxd.artifacts.snapshot import Snapshot, SnapshotCache
from fluxd.artifacts.storage import ArtifactStore
from fluxd.clock import Clock, format_duration
from fluxd.config import Settings, parse_duration
from fluxd.controllers.kustomize import build as builder
from fluxd.controllers.kustomize import substitution
from fluxd.controllers.kustomize.native import build_native
from fluxd.controllers.kustomize.ssa import (
    Action,
    ApplyError,
    ChangeSet,
    IgnoreRule,
    ObjMeta,
    ResourceManager,
)
from fluxd.kube import Forbidden, KubeClient, KubeError, NotFound
from fluxd.runtime import cel, history, kstatus
from fluxd.runtime import conditions as cond
from fluxd.runtime.events import EventRecorder
from fluxd.runtime.handler import Adder
from fluxd.runtime.informer import Informer
from fluxd.runtime.reconcile import ObjectKey, Result, StallingError, WaitingError
from fluxd.runtime.status import StatusPatcher

log = logging.getLogger("fluxd.kustomize")

Obj = dict[str, Any]
HealthChecks = dict[tuple[str, str], cel.HealthCheck]

KIND = "Kustomization"
CONTROLLER = "kustomize-controller"
FINALIZER = "finalizers.fluxcd.io"
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


class StepFailed(Exception):
    """A step failed: Ready=False with ``reason``; retried at ``retryInterval`` (or
    ``requeue_after``), never with backoff growth. ``stall`` marks it Stalled instead."""

    def __init__(self, message: str, *, reason: str, requeue_after: float | None = None,
                 stall: bool = False, event: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        self.requeue_after = requeue_after
        self.stall = stall
        self.event = event


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
    origin_revision: str | None
    applied_at: float
    #: objects as the apply left them, used once for the first round of checks
    known: dict[ObjMeta, Obj] = field(default_factory=dict)


@dataclass(frozen=True)
class _Artifact:
    revision: str
    digest: str
    path: Path
    origin_revision: str | None


@dataclass
class KustomizationReconciler:
    client: KubeClient
    informer: Informer
    sources: Mapping[str, Informer]
    store: ArtifactStore
    bus: ArtifactBus
    recorder: EventRecorder
    clock: Clock
    settings: Settings
    queue: Adder
    kubectl: str | None
    snapshots: SnapshotCache = field(default_factory=SnapshotCache)
    _pending: dict[ObjectKey, _PendingHealth] = field(default_factory=dict)

    # --- the driver ------------------------------------------------------------------

    async def reconcile(self, key: ObjectKey) -> Result:
        obj = self.informer.get(key.namespace, key.name)
        if obj is None:
            self._pending.pop(key, None)
            return Result()
        if obj["metadata"].get("deletionTimestamp"):
            self._pending.pop(key, None)
            await self.finalize(obj)
            return Result()
        obj = await self.ensure_finalizer(obj)
        spec = obj.get("spec") or {}
        if spec.get("suspend"):
            log.info("Reconciliation is suspended for this object")
            return Result()
        interval = parse_duration(spec.get("interval") or "10m")
        retry = parse_duration(spec["retryInterval"]) if spec.get("retryInterval") \
            else interval
        patcher = StatusPatcher(self.client, obj, owned_conditions=OWNED, clock=self.clock)
        patcher.handle_request()
        started = self.clock.monotonic()
        was_ready = cond.is_true(patcher.conditions, cond.READY)
        failure: StepFailed | None = None
        result = Result(requeue_after=interval)
        try:
            result = await self.run(obj, patcher, key=key, interval=interval,
                                    started=started, was_ready=was_ready)
        except StepFailed as exc:
            failure = exc
            patcher.mark_false(cond.READY, exc.reason, str(exc))
            if exc.stall:
                patcher.mark_stalled(exc.reason, str(exc))
                patcher.delete_condition(cond.RECONCILING)
        finally:
            self.finalize_status(patcher)
            await patcher.patch_shielded()
        if failure is None:
            return result
        # waiting on a dependency or a source is not an error (Flux logs it at info)
        (log.error if failure.event else log.info)(
            "Reconciliation failed" if failure.event else "Reconciliation waiting",
            extra={"error": str(failure), "reason": failure.reason})
        if failure.event:
            await self.event(obj, patcher, type="Warning", reason=failure.reason,
                             message=str(failure))
        if failure.stall:
            raise StallingError(str(failure), reason=failure.reason)
        raise _Retry(str(failure), requeue_after=failure.requeue_after or retry,
                     reason=failure.reason)

    def finalize_status(self, patcher: StatusPatcher) -> None:
        """Flux's ``finalizeStatus``: a Ready object drops Reconciling and observes its
        generation; a failed one keeps Reconciling as ``ProgressingWithRetry``."""
        conditions = patcher.conditions
        if cond.is_true(conditions, cond.READY):
            patcher.delete_condition(cond.RECONCILING)
            patcher.set_field("observedGeneration", patcher.generation)
        elif cond.is_false(conditions, cond.READY) and cond.has(conditions, cond.RECONCILING):
            patcher.mark_reconciling(cond.PROGRESSING_WITH_RETRY_REASON,
                                     cond.message_of(conditions, cond.RECONCILING))
        elif cond.is_stalled(conditions):
            patcher.set_field("observedGeneration", patcher.generation)

    # --- the steps -------------------------------------------------------------------

    async def run(self, obj: Obj, patcher: StatusPatcher, *, key: ObjectKey,
                  interval: float, started: float, was_ready: bool) -> Result:
        spec = obj.get("spec") or {}
        meta = obj["metadata"]
        checks = self.compile_health_exprs(spec)
        source = self.resolve_source(obj)
        artifact = self.source_artifact(source, obj)
        await self.check_dependencies(obj, source)
        timeout = timeout_of(spec)

        pending = self._pending.get(key)
        if pending is not None and (pending.generation != patcher.generation
                                    or pending.revision != artifact.revision):
            pending = self._pending.pop(key)
            pending = None
        if pending is not None:
            return await self.assess(obj, patcher, key, pending, checks, interval=interval,
                                     was_ready=was_ready)

        progressing = (not was_ready or patcher.get_field("lastAppliedRevision")
                       != artifact.revision
                       or patcher.get_field("observedGeneration") != patcher.generation)
        if progressing:
            patcher.mark_unknown(cond.READY, PROGRESSING, "Reconciliation in progress")
            patcher.mark_reconciling(
                PROGRESSING, f"Fetching manifests for revision {artifact.revision} "
                             f"with a timeout of {format_duration(timeout)}")
        if patcher.get_field("lastAppliedRevision") != artifact.revision:
            # a new revision: commit-status providers show it as pending (Gitea) until
            # the final event says how it went
            await self.event(obj, patcher, type="Normal", reason=PROGRESSING,
                             message=f"Reconciliation in progress for revision "
                                     f"{artifact.revision}", revision=artifact.revision,
                             extra={"commit_status": "update"}, notify_only=True)

        deadline = self.clock.monotonic() + timeout
        client = self.client_for(obj)
        snapshot = await self.fetch(artifact, source)
        patcher.set_field("lastAttemptedRevision", artifact.revision)
        objects = await self.build(obj, patcher, snapshot, deadline)
        objects = await self.substitute(obj, client, objects)
        try:
            objects = builder.finish(objects, obj.get("spec") or {})
        except builder.BuildError as exc:
            raise StepFailed(str(exc), reason=RECONCILIATION_FAILED) from exc
        digest = manifests_digest(objects)

        manager = ResourceManager(
            client=client, owner=CONTROLLER,
            owner_labels={NAME_LABEL: meta["name"], NAMESPACE_LABEL: meta["namespace"]},
            concurrency=self.settings.kustomize.concurrent_ssa, clock=self.clock,
            override_managers=tuple(self.settings.kustomize.override_managers))
        try:
            change_set = await self.apply(obj, manager, objects, deadline)
        except StepFailed:
            self.record_history(patcher, digest, started, RECONCILIATION_FAILED, artifact)
            raise
        inventory = [e for e in inventory_entries(change_set)]
        old = list(((patcher.get_field("inventory") or {}).get("entries")) or [])
        if change_set.has_changes():
            await self.event(obj, patcher, type="Normal", reason=PROGRESSING,
                             message=change_set.event_lines(), revision=artifact.revision)
        await self.prune(obj, patcher, manager, old, inventory, artifact, digest, started)
        patcher.set_field("inventory", {"entries": inventory})

        targets = self.health_targets(obj, change_set)
        if not targets:
            patcher.delete_condition(HEALTHY)
            return await self.succeed(obj, patcher, artifact, digest, started,
                                      interval=interval)
        pending = _PendingHealth(
            generation=patcher.generation, revision=artifact.revision, digest=digest,
            deadline=self.clock.monotonic() + timeout, started=started, targets=targets,
            changed=change_set.has_changes(),
            origin_revision=artifact.origin_revision, applied_at=self.clock.monotonic(),
            known={e.meta: e.object for e in change_set.entries if e.object is not None})
        patcher.mark_reconciling(
            PROGRESSING, f"Running health checks for revision {artifact.revision} "
                         f"with a timeout of {format_duration(timeout)}")
        patcher.mark_unknown(HEALTHY, PROGRESSING, "Running health checks")
        self._pending[key] = pending
        return await self.assess(obj, patcher, key, pending, checks, interval=interval,
                                 was_ready=was_ready)

    # --- source and dependencies -------------------------------------------------------

    def compile_health_exprs(self, spec: Obj) -> HealthChecks:
        """``healthCheckExprs`` and every ``readyExpr`` compiled: a syntax error stalls
        the object (``InvalidCELExpression``), as Flux."""
        try:
            checks = cel.compile_health_checks(spec.get("healthCheckExprs") or [])
            for dep in spec.get("dependsOn") or []:
                if dep.get("readyExpr"):
                    cel.Expression.compile(str(dep["readyExpr"]),
                                           variables=cel.READY_EXPR_VARIABLES)
        except cel.CELError as exc:
            raise StepFailed(str(exc), reason=INVALID_CEL, stall=True) from exc
        return checks

    def resolve_source(self, obj: Obj) -> Obj:
        spec = obj.get("spec") or {}
        ref = spec.get("sourceRef") or {}
        ns = ref.get("namespace") or obj["metadata"]["namespace"]
        kind, name = str(ref.get("kind") or ""), str(ref.get("name") or "")
        shown = f"{kind}/{ns}/{name}" if ref.get("namespace") else f"{kind}/{name}"
        if self.settings.access.no_cross_namespace_refs and ns != obj["metadata"]["namespace"]:
            raise StepFailed(
                f"cannot access {shown}, cross-namespace references have been blocked",
                reason=ACCESS_DENIED, stall=True)
        informer = self.sources.get(kind)
        if informer is None:
            raise StepFailed(f"source kind {kind} is not served by fluxd "
                             f"(supported: {', '.join(sorted(self.sources))})",
                             reason=ARTIFACT_FAILED, stall=True)
        source = informer.get(ns, name)
        if source is None:
            raise StepFailed(f"Source '{shown}' not found", reason=ARTIFACT_FAILED,
                             event=False)
        return source

    def source_artifact(self, source: Obj, obj: Obj) -> _Artifact:
        meta = source["metadata"]
        stored = (source.get("status") or {}).get("artifact") or {}
        announced = self.bus.last(SourceKey(source["kind"], meta["namespace"], meta["name"]))
        if announced is not None and announced.digest != stored.get("digest"):
            # the bus is ahead of the cache: the status write is not in the informer yet
            return _Artifact(announced.revision, announced.digest, announced.path,
                             announced.metadata.get(ORIGIN_REVISION))
        if not stored.get("path"):
            raise StepFailed("Source artifact not found, retrying in "
                             f"{format_duration(self.requeue_dependency)}",
                             reason=ARTIFACT_FAILED,
                             requeue_after=self.requeue_dependency, event=False)
        origin = (stored.get("metadata") or {}).get(ORIGIN_REVISION)
        return _Artifact(str(stored["revision"]), str(stored.get("digest") or ""),
                         self.store.local_path(str(stored["path"])), origin)

    @property
    def requeue_dependency(self) -> float:
        return float(self.settings.reconcile.requeue_dependency)

    async def check_dependencies(self, obj: Obj, source: Obj) -> None:
        spec = obj.get("spec") or {}
        deps = spec.get("dependsOn") or []
        if not deps:
            return
        ns = obj["metadata"]["namespace"]
        for dep in deps:
            dep_ns = dep.get("namespace") or ns
            if self.settings.access.no_cross_namespace_refs and dep_ns != ns:
                raise StepFailed(
                    f"cannot access {KIND}/{dep_ns}/{dep.get('name')}, cross-namespace "
                    "references have been blocked", reason=ACCESS_DENIED, stall=True)
            try:
                found = await self.client.get(API_VERSION, KIND, str(dep.get("name")), dep_ns)
            except NotFound:
                self.not_ready(f"dependency '{dep_ns}/{dep.get('name')}' not found")
            except KubeError as exc:
                self.not_ready(f"unable to get dependency '{dep_ns}/{dep.get('name')}': "
                               f"{exc}")
            expr = dep.get("readyExpr")
            if expr:
                try:
                    ok = cel.Expression.compile(
                        str(expr), variables=cel.READY_EXPR_VARIABLES).evaluate_bool(
                        {"self": obj, "dep": found})
                except cel.CELError as exc:
                    # compiled once already; an evaluation error is retried (Flux)
                    self.not_ready(f"dependency '{dep_ns}/{dep.get('name')}' readyExpr "
                                   f"evaluation failed: {exc}")
                if not ok:
                    self.not_ready(f"dependency '{dep_ns}/{dep.get('name')}' is not ready "
                                   "according to readyExpr eval")
                continue
            status = found.get("status") or {}
            generation = (found.get("metadata") or {}).get("generation")
            if not status.get("conditions") or status.get("observedGeneration") != generation \
                    or not cond.is_true(status.get("conditions"), cond.READY):
                self.not_ready(f"dependency '{dep_ns}/{dep.get('name')}' is not ready")
            dep_ref = (found.get("spec") or {}).get("sourceRef") or {}
            own_ref = spec.get("sourceRef") or {}
            if (dep_ref.get("kind"), dep_ref.get("name"),
                    dep_ref.get("namespace") or dep_ns) == \
                    (own_ref.get("kind"), own_ref.get("name"),
                     own_ref.get("namespace") or ns):
                revision = ((source.get("status") or {}).get("artifact") or {}).get("revision")
                announced = self.bus.last(SourceKey(source["kind"],
                                                    source["metadata"]["namespace"],
                                                    source["metadata"]["name"]))
                if announced is not None:
                    revision = announced.revision
                if status.get("lastAppliedRevision") != revision:
                    self.not_ready(f"dependency '{dep_ns}/{dep.get('name')}' revision is "
                                   "not up to date")

    def not_ready(self, why: str) -> None:
        raise StepFailed(
            f"{why}; Dependencies do not meet ready condition, retrying in "
            f"{format_duration(self.requeue_dependency)}", reason=DEPENDENCY_NOT_READY,
            requeue_after=self.requeue_dependency, event=False)

    # --- artifact, build, substitution -------------------------------------------------

    async def fetch(self, artifact: _Artifact, source: Obj) -> Snapshot:
        """The artifact's files, read once per digest from the local store after its
        digest is checked; a file missing or torn is rebuilt by the source controller,
        which is asked to."""
        snapshot = await self.snapshots.cached(artifact.digest, artifact.path)
        if snapshot is not None:
            return snapshot
        relative = str(artifact.path.relative_to(self.store.root)) \
            if artifact.path.is_relative_to(self.store.root) else ""
        intact = bool(relative) and await self.store.verify_async(relative, artifact.digest)
        if not intact:
            meta = source["metadata"]
            self.queue.add(ObjectKey(source["kind"], meta["namespace"], meta["name"]))
            raise StepFailed(
                f"failed to verify artifact {artifact.revision}: the file is missing from "
                "storage or its digest does not match; the source is rebuilding it",
                reason=ARTIFACT_FAILED, requeue_after=self.requeue_dependency)
        try:
            return await self.snapshots.get(artifact.digest, artifact.path)
        except (ExtractError, OSError) as exc:
            raise StepFailed(f"failed to extract artifact {artifact.revision}: {exc}",
                             reason=ARTIFACT_FAILED) from exc

    async def build(self, obj: Obj, patcher: StatusPatcher, snapshot: Snapshot,
                    deadline: float) -> list[Obj]:
        """The manifests: natively for a directory of plain manifests, else with the
        real kustomize on the artifact written out to a temporary directory (always
        removed)."""
        spec = obj.get("spec") or {}
        path = str(spec.get("path") or "")
        native = build_native(snapshot, path, spec)
        if native is not None:
            return native
        # the real kustomize takes a while: show that the reconcile is under way
        with contextlib.suppress(KubeError):
            await patcher.patch()
        kubectl = builder.find_kubectl(self.kubectl)
        if kubectl is None:
            raise StepFailed("kubectl not found: set [tools] kubectl or put it on PATH",
                             reason=BUILD_FAILED)
        root = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="fluxd-ks-"))
        try:
            await asyncio.to_thread(snapshot.write_to, root)
            remaining = max(1.0, deadline - self.clock.monotonic())
            return await builder.build(root, path, spec, kubectl=kubectl, timeout=remaining)
        except builder.PathNotFound as exc:
            raise StepFailed(str(exc), reason=ARTIFACT_FAILED) from exc
        except builder.BuildError as exc:
            raise StepFailed(str(exc), reason=BUILD_FAILED) from exc
        except OSError as exc:
            raise StepFailed(f"failed to write out artifact {snapshot.size} bytes: {exc}",
                             reason=ARTIFACT_FAILED) from exc
        finally:
            await asyncio.to_thread(shutil.rmtree, root, True)

    async def substitute(self, obj: Obj, client: KubeClient, objects: list[Obj]) -> list[Obj]:
        post = (obj.get("spec") or {}).get("postBuild") or {}
        if not post:
            return objects
        ns = obj["metadata"]["namespace"]
        sources: list[substitution.SubstituteSource] = []
        for ref in post.get("substituteFrom") or []:
            kind, name = str(ref.get("kind")), str(ref.get("name"))
            found: Obj | None
            try:
                found = await client.get("v1", kind, name, ns)
            except NotFound:
                found = None
            except KubeError as exc:
                raise StepFailed(f"substitute from '{kind}/{name}' failed: {exc}",
                                 reason=BUILD_FAILED) from exc
            sources.append(substitution.SubstituteSource(
                kind=kind, name=name, optional=bool(ref.get("optional")), obj=found))
        try:
            variables = substitution.collect_variables(sources, post.get("substitute"),
                                                       namespace=ns)
            return await asyncio.to_thread(
                substitution.substitute, objects, variables,
                strategy=str(post.get("substituteStrategy") or "WithVariables"),
                strict=self.settings.kustomize.strict_substitution)
        except substitution.SubstitutionError as exc:
            raise StepFailed(str(exc), reason=BUILD_FAILED) from exc

    # --- apply, prune, health ----------------------------------------------------------

    def client_for(self, obj: Obj) -> KubeClient:
        account = (obj.get("spec") or {}).get("serviceAccountName") or \
            self.settings.access.default_service_account
        if not account:
            return self.client
        return self.client.impersonate(obj["metadata"]["namespace"], str(account))

    async def apply(self, obj: Obj, manager: ResourceManager, objects: list[Obj],
                    deadline: float) -> ChangeSet:
        spec = obj.get("spec") or {}
        rules = [IgnoreRule.from_spec(r) for r in spec.get("driftIgnoreRules") or []]
        try:
            return await manager.apply_all_staged(
                objects, force=bool(spec.get("force")), ignore=rules,
                wait_timeout=max(1.0, deadline - self.clock.monotonic()))
        except ApplyError as exc:
            raise StepFailed(str(exc), reason=RECONCILIATION_FAILED) from exc
        except Forbidden as exc:
            raise StepFailed(str(exc), reason=RECONCILIATION_FAILED) from exc

    async def prune(self, obj: Obj, patcher: StatusPatcher, manager: ResourceManager,
                    old: Sequence[Mapping[str, Any]], new: Sequence[Obj],
                    artifact: _Artifact, digest: str, started: float) -> None:
        if not (obj.get("spec") or {}).get("prune"):
            return
        keep = {e["id"] for e in new}
        stale = [(ObjMeta.parse_id(str(e["id"])), str(e.get("v") or ""))
                 for e in old if e.get("id") not in keep]
        if not stale:
            return
        deleted, errors = await manager.delete_all(stale)
        if deleted.has_changes():
            await self.event(obj, patcher, type="Normal", reason=PROGRESSING,
                             message=deleted.event_lines(), revision=artifact.revision)
        if errors:
            gone = {e.meta.id for e in deleted.entries if e.action is Action.DELETED}
            kept = [{"id": m.id, "v": v} for m, v in stale if m.id not in gone]
            patcher.set_field("inventory", {"entries": [*new, *kept]})
            self.record_history(patcher, digest, started, PRUNE_FAILED, artifact)
            raise StepFailed("prune failed: " + "; ".join(str(e) for e in errors),
                             reason=PRUNE_FAILED)

    def health_targets(self, obj: Obj, change_set: ChangeSet) -> list[tuple[ObjMeta, str]]:
        """What to check, with API versions: every applied object with ``wait``, else the
        ``healthChecks`` (apiVersion defaults to apps/v1); never the Kustomization
        itself."""
        spec = obj.get("spec") or {}
        me = obj["metadata"]
        own = ObjMeta(GROUP, KIND, me["namespace"], me["name"])
        found: list[tuple[ObjMeta, str]] = []
        if spec.get("wait"):
            found = [(e.meta, e.meta.api_version(e.version)) for e in change_set.entries
                     if e.action is not Action.SKIPPED]
        else:
            for ref in spec.get("healthChecks") or []:
                api_version = str(ref.get("apiVersion") or "apps/v1")
                group = api_version.rpartition("/")[0]
                found.append((ObjMeta(group, str(ref.get("kind")),
                                      str(ref.get("namespace") or me["namespace"]),
                                      str(ref.get("name"))), api_version))
        return [(m, v) for m, v in found if m != own]

    async def assess(self, obj: Obj, patcher: StatusPatcher, key: ObjectKey,
                     pending: _PendingHealth, checks: HealthChecks,
                     *, interval: float, was_ready: bool) -> Result:
        """One round of health checks; a short requeue while objects progress."""
        client = self.client_for(obj)
        known, pending.known = pending.known, {}
        results = await asyncio.gather(*(self.object_health(client, m, v, checks,
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
        artifact = _Artifact(pending.revision, "", Path(), pending.origin_revision)
        if failed or (waiting and now >= pending.deadline):
            self._pending.pop(key, None)
            elapsed = format_duration(now - pending.applied_at)
            message = f"health check failed after {elapsed}: " + \
                "; ".join(failed or ["timeout waiting for: [" + ", ".join(waiting) + "]"])
            patcher.mark_false(HEALTHY, HEALTH_CHECK_FAILED, message)
            self.record_history(patcher, pending.digest, pending.started,
                                HEALTH_CHECK_FAILED, artifact)
            raise StepFailed(message, reason=HEALTH_CHECK_FAILED)
        if waiting:
            return Result(requeue_after=min(
                float(self.settings.kustomize.health_poll_interval),
                max(0.1, pending.deadline - now)))
        self._pending.pop(key, None)
        passed = f"Health check passed in {format_duration(now - pending.applied_at)}"
        recovered = not cond.is_true(patcher.conditions, HEALTHY)
        patcher.mark_true(HEALTHY, cond.SUCCEEDED_REASON, passed)
        if recovered or pending.changed:
            await self.event(obj, patcher, type="Normal", reason=cond.SUCCEEDED_REASON,
                             message=passed, revision=pending.revision)
        return await self.succeed(obj, patcher, artifact, pending.digest, pending.started,
                                  interval=interval)

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

    async def succeed(self, obj: Obj, patcher: StatusPatcher, artifact: _Artifact,
                      digest: str, started: float, *, interval: float) -> Result:
        message = f"Applied revision: {artifact.revision}"
        patcher.mark_true(cond.READY, RECONCILIATION_SUCCEEDED, message)
        patcher.set_field("lastAppliedRevision", artifact.revision)
        patcher.set_field("lastAppliedOriginRevision", artifact.origin_revision)
        patcher.set_field("lastAttemptedRevision", artifact.revision)
        self.record_history(patcher, digest, started, RECONCILIATION_SUCCEEDED, artifact)
        elapsed = format_duration(self.clock.monotonic() - started)
        await self.event(obj, patcher, type="Normal", reason=RECONCILIATION_SUCCEEDED,
                         message=f"Reconciliation finished in {elapsed}, next run in "
                                 f"{format_duration(interval)}",
                         revision=artifact.revision,
                         extra={"commit_status": "update"})
        return Result(requeue_after=interval)

    def record_history(self, patcher: StatusPatcher, digest: str, started: float,
                       status: str, artifact: _Artifact) -> None:
        metadata = {"revision": artifact.revision}
        if artifact.origin_revision:
            metadata["originRevision"] = artifact.origin_revision
        patcher.set_field("history", history.upsert(
            patcher.get_field("history"), digest=digest, now=self.clock.now(),
            duration=self.clock.monotonic() - started, status=status, metadata=metadata))

    async def event(self, obj: Obj, patcher: StatusPatcher, *, type: str, reason: str,
                    message: str, revision: str | None = None,
                    extra: Mapping[str, str] | None = None, trace: bool = False,
                    notify_only: bool = False) -> None:
        metadata: dict[str, str] = {}
        revision = revision or patcher.get_field("lastAttemptedRevision")
        if revision:
            metadata["revision"] = str(revision)
        origin = patcher.get_field("lastAppliedOriginRevision")
        if origin:
            metadata["originRevision"] = str(origin)
        metadata.update(extra or {})
        await self.recorder.event(obj, type="Warning" if type == "Warning" else "Normal",
                                  reason=reason, message=message, metadata=metadata,
                                  trace=trace, notify_only=notify_only)

    # --- finalizer ---------------------------------------------------------------------

    async def ensure_finalizer(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER in finalizers:
            return obj
        patched: Obj = await self.client.merge_patch(
            API_VERSION, KIND, meta["name"],
            {"metadata": {"finalizers": [*finalizers, FINALIZER],
                          "resourceVersion": meta.get("resourceVersion")}},
            meta.get("namespace"))
        return patched

    async def finalize(self, obj: Obj) -> None:
        """Garbage-collect by ``deletionPolicy``, then drop the finalizer. A failed
        delete is logged and sent as an event; the finalizer goes anyway, as Flux."""
        meta = obj["metadata"]
        spec = obj.get("spec") or {}
        policy = spec.get("deletionPolicy") or "MirrorPrune"
        entries = list((((obj.get("status") or {}).get("inventory") or {})
                        .get("entries")) or [])
        delete = policy in ("Delete", "WaitForTermination") or (
            policy == "MirrorPrune" and bool(spec.get("prune")))
        if delete and entries and not spec.get("suspend"):
            client = self.client_for(obj)
            manager = ResourceManager(
                client=client, owner=CONTROLLER,
                owner_labels={NAME_LABEL: meta["name"], NAMESPACE_LABEL: meta["namespace"]},
                concurrency=self.settings.kustomize.concurrent_ssa, clock=self.clock)
            stale = [(ObjMeta.parse_id(str(e["id"])), str(e.get("v") or ""))
                     for e in entries]
            errors: list[Exception]
            try:
                deleted, failures = await manager.delete_all(stale)
                errors = list(failures)
            except KubeError as exc:
                deleted, errors = ChangeSet([]), [exc]
            if deleted.has_changes():
                await self.recorder.event(obj, reason="Progressing",
                                          message=deleted.event_lines())
            if errors:
                await self.recorder.event(obj, type="Warning", reason=PRUNE_FAILED,
                                          message="; ".join(str(e) for e in errors))
            elif policy == "WaitForTermination":
                timeout = timeout_of(spec)
                try:
                    await manager.wait_for_termination(
                        [m for m, _ in stale], timeout=timeout)
                except (TimeoutError, KubeError) as exc:
                    await self.recorder.event(
                        obj, type="Warning", reason="TerminationTimeout",
                        message=f"failed to wait for objects to be deleted: {exc}")
        finalizers = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        if len(finalizers) != len(meta.get("finalizers") or []):
            with contextlib.suppress(NotFound):
                await self.client.merge_patch(API_VERSION, KIND, meta["name"],
                                              {"metadata": {"finalizers": finalizers or None}},
                                              meta.get("namespace"))


class _Retry(WaitingError):
    """A failed Kustomization: retried at ``retryInterval`` with no backoff growth."""


def timeout_of(spec: Mapping[str, Any]) -> float:
    """Flux's ``GetTimeout``: ``timeout``, else ``interval`` less 30s; at least 30s."""
    if spec.get("timeout"):
        value = parse_duration(spec["timeout"])
    else:
        value = parse_duration(spec.get("interval") or "10m") - 30
    return max(value, 30.0)


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
    ref = (obj.get("spec") or {}).get("sourceRef") or {}
    if not ref.get("name"):
        return []
    ns = ref.get("namespace") or obj["metadata"].get("namespace", "")
    return [f"{ref.get('kind', '')}/{ns}/{ref['name']}"]


def dependency_index(obj: Obj) -> list[str]:
    """Kustomizations by ``<namespace>/<name>`` of each Kustomization they depend on."""
    ns = obj["metadata"].get("namespace", "")
    return [f"{d.get('namespace') or ns}/{d.get('name')}"
            for d in (obj.get("spec") or {}).get("dependsOn") or [] if d.get("name")]


__all__ = ["CONTROLLER", "KIND", "KustomizationReconciler",
           "dependency_index", "source_index"]
