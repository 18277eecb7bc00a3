"""The driver every source reconciler shares (Flux's source-controller pattern).

fetch from the cache → gone? forget the artifacts → deleting? finalize → ensure the
finalizer → suspended? stop → the kind's steps → always, in a shielded final step,
summarise the conditions, set observedGeneration and patch the status → publish a new
artifact on the bus (after the status write, so consumers read what they were told) →
events (Warning on failure, ``NewArtifact`` on a new artifact, ``Succeeded`` on
recovery) → requeue at the interval.

A kind implements ``steps`` (returning a ``NewArtifact`` when the artifact changed) and
its ``OWNED``/``NEGATIVE`` condition lists; a failing step raises ``StepError`` naming the
negative-polarity condition it marks, ``StepWaiting`` when it cannot go on until
something else changes (a source without an artifact yet: retried later, without backoff
growth), or ``StallingError`` when retrying cannot help. ``reconcile_storage`` is the
storage step the artifact-producing kinds share.

Whatever a step raises, the reconcile never reads as a success: any failure ends with
Ready=False — its reason and message, or ``ReconciliationFailed`` and the exception's
text for an exception no step foresaw (a bug), which is also a Warning event and is
re-raised for the controller to log with its traceback and retry with backoff. A
reconcile cancelled half-way (shutdown, the per-reconcile deadline) is written as a
failure too, not summarised as if its steps had finished.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fluxd.api.source import API_VERSION
from fluxd.artifacts.bus import ArtifactBus, ArtifactEvent, SourceKey
from fluxd.artifacts.storage import ArtifactStore, artifact_path
from fluxd.clock import Clock
from fluxd.config import Settings, parse_duration
from fluxd.kube import KubeClient, KubeError, NotFound
from fluxd.runtime import conditions as cond
from fluxd.runtime.events import EventRecorder
from fluxd.runtime.informer import Informer
from fluxd.runtime.reconcile import (
    ObjectKey,
    ReconcileError,
    Result,
    StallingError,
    WaitingError,
)
from fluxd.runtime.status import StatusPatcher

log = logging.getLogger("fluxd.source")

Obj = dict[str, Any]

FINALIZER = "finalizers.fluxcd.io"
CONTROLLER = "source-controller"

ARTIFACT_IN_STORAGE = "ArtifactInStorage"
ARTIFACT_OUTDATED = "ArtifactOutdated"
FETCH_FAILED = "FetchFailed"
STORAGE_FAILED = "StorageOperationFailed"
#: Flux's reason for a failure no step named (meta.ReconciliationFailedReason)
RECONCILIATION_FAILED = "ReconciliationFailed"


class StepError(ReconcileError):
    """A failed step with the condition it sets (besides Ready)."""

    def __init__(self, message: str, *, reason: str, condition: str) -> None:
        super().__init__(message, reason=reason)
        self.condition = condition


class StepWaiting(WaitingError):
    """A step cannot go on until something else changes (e.g. its source has no artifact
    yet): it marks ``condition``, and the object is reconciled again after
    ``requeue_after`` seconds (or as soon as the awaited change is announced), without
    backoff growth. Its event is a Warning when ``warn``, else a trace event."""

    def __init__(self, message: str, *, reason: str, condition: str, requeue_after: float,
                 warn: bool = False) -> None:
        super().__init__(message, requeue_after=requeue_after, reason=reason)
        self.condition = condition
        self.warn = warn


@dataclass(frozen=True)
class NewArtifact:
    """A step stored an artifact with a new digest: the event to send (``NewArtifact``
    unless a kind names it otherwise, as HelmChart does with its build's reason)."""

    message: str
    revision: str
    digest: str
    metadata: dict[str, str] = field(default_factory=dict)
    reason: str = "NewArtifact"


class SourceReconciler:
    KIND: ClassVar[str]
    STORAGE_KIND: ClassVar[str]
    OWNED: ClassVar[tuple[str, ...]]
    NEGATIVE: ClassVar[tuple[str, ...]]

    def __init__(self, *, client: KubeClient, informer: Informer, store: ArtifactStore,
                 bus: ArtifactBus, recorder: EventRecorder, clock: Clock,
                 settings: Settings) -> None:
        self.client = client
        self.informer = informer
        self.store = store
        self.bus = bus
        self.recorder = recorder
        self.clock = clock
        self.settings = settings

    # --- what a kind provides -------------------------------------------------------

    async def steps(self, obj: Obj, patcher: StatusPatcher) -> NewArtifact | None:
        raise NotImplementedError

    def ready_message(self, patcher: StatusPatcher) -> str:
        artifact = patcher.get_field("artifact") or {}
        return f"stored artifact for revision '{artifact.get('revision', '')}'"

    def recovered_message(self, patcher: StatusPatcher) -> str:
        """The ``Succeeded`` event's message after a failure; Ready's unless a kind words
        it otherwise (HelmRepository repeats its ``NewArtifact`` message, as Flux)."""
        return self.ready_message(patcher)

    def recovered_reason(self, patcher: StatusPatcher) -> str:
        """The reason of the event sent on recovery from a failure."""
        return cond.SUCCEEDED_REASON

    # --- the driver -----------------------------------------------------------------

    async def reconcile(self, key: ObjectKey) -> Result:
        obj = self.informer.get(key.namespace, key.name)
        if obj is None:
            await self.forget(key)
            return Result()
        if obj["metadata"].get("deletionTimestamp"):
            await self.finalize(obj)
            return Result()
        obj = await self.ensure_finalizer(obj)
        spec = obj.get("spec") or {}
        if spec.get("suspend"):
            log.info("reconciliation is suspended for this object")
            return Result()
        interval = parse_duration(spec.get("interval", "1m"))
        patcher = StatusPatcher(self.client, obj, owned_conditions=self.OWNED,
                                clock=self.clock)
        patcher.handle_request()
        previous_ready = cond.is_true(patcher.conditions, cond.READY)
        outcome, reason, message = cond.Outcome.SUCCEEDED, "", ""
        error: ReconcileError | None = None
        crash: Exception | None = None
        new: NewArtifact | None = None
        try:
            new = await self.steps(obj, patcher)
        except StallingError as exc:
            outcome, reason, message, error = cond.Outcome.STALLED, exc.reason, str(exc), exc
        except WaitingError as exc:
            outcome, reason, message, error = cond.Outcome.WAITING, exc.reason, str(exc), exc
            if isinstance(exc, StepWaiting):
                patcher.mark_true(exc.condition, exc.reason, str(exc))
        except ReconcileError as exc:
            outcome, reason, message, error = cond.Outcome.FAILED, exc.reason, str(exc), exc
            if isinstance(exc, StepError):
                # the step that failed marks its own condition; Ready follows in summarize
                patcher.mark_true(exc.condition, exc.reason, str(exc))
        except Exception as exc:
            # no step foresaw it (a bug): a failure on the status all the same; the
            # controller logs it with its traceback and retries with backoff
            outcome, reason, crash = cond.Outcome.FAILED, RECONCILIATION_FAILED, exc
            message = str(exc) or type(exc).__name__
        except BaseException:
            # cancelled half-way: whatever the steps did so far is not a success
            outcome, reason = cond.Outcome.FAILED, RECONCILIATION_FAILED
            message = "reconciliation was interrupted before it finished"
            raise
        finally:
            patcher.summarize(owned=self.OWNED, negative_polarity=self.NEGATIVE,
                              outcome=outcome, reason=reason, message=message,
                              ready_message=self.ready_message(patcher))
            if outcome is not cond.Outcome.SUCCEEDED and cond.is_true(patcher.conditions,
                                                                      cond.READY):
                # a failure that marked no condition of its own: the summary of the
                # others (an artifact still in storage) must not read as Ready
                patcher.mark_false(cond.READY, reason or RECONCILIATION_FAILED, message)
            patcher.observe_generation()
            await patcher.patch_shielded()
        if crash is not None:
            await self.recorder.event(obj, type="Warning", reason=RECONCILIATION_FAILED,
                                      message=message)
            raise crash
        if error is not None:
            if isinstance(error, StepWaiting) and not error.warn:
                await self.recorder.event(obj, reason=error.reason, message=str(error),
                                          trace=True)
            else:
                await self.recorder.event(obj, type="Warning", reason=error.reason,
                                          message=str(error))
            raise error
        stored = patcher.get_field("artifact")
        if stored and stored != (obj.get("status") or {}).get("artifact"):
            self.publish(obj, stored)
        if new is not None:
            await self.recorder.event(obj, reason=new.reason, message=new.message,
                                      metadata={"revision": new.revision,
                                                "digest": new.digest, **new.metadata})
        elif not previous_ready:
            await self.recorder.event(obj, reason=self.recovered_reason(patcher),
                                      message=self.recovered_message(patcher))
        return Result(requeue_after=interval)

    # --- shared pieces --------------------------------------------------------------

    async def reconcile_storage(self, obj: Obj, patcher: StatusPatcher, *,
                                link: str) -> None:
        """Flux's ``reconcileStorage``: drop a recorded artifact that is gone from storage
        or no longer has its digest (``building artifact: disappeared from storage``),
        collect old files, and keep the artifact URL and the ``link`` URL
        (``status.url``) on the current advertised address."""
        ns, name = obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
        stored = patcher.get_field("artifact")
        missing = False
        if stored:
            path = str(stored.get("path", ""))
            missing = not await self.artifact_intact(obj, stored)
            if missing:
                patcher.set_field("artifact", None)
                patcher.set_field("url", None)
            else:
                await self.gc(obj, path)
                url = self.store.url_for(path)
                if stored.get("url") != url:
                    patcher.set_field("artifact", {**stored, "url": url})
                if patcher.get_field("url"):
                    patcher.set_field("url", self.store.url_for(
                        artifact_path(self.STORAGE_KIND, ns, name, link)))
        if not patcher.get_field("artifact"):
            text = "building artifact" + (": disappeared from storage" if missing else "")
            patcher.progressive_status(cond.PROGRESSING_REASON, text, drift=True)
            patcher.delete_condition(ARTIFACT_IN_STORAGE)

    async def artifact_intact(self, obj: Obj, stored: Obj) -> bool:
        """Whether the recorded artifact's file is in storage with its recorded digest.
        Files are written without fsync, so this check is what finds one torn by a crash;
        a mismatch is a ``ArtifactVerificationFailed`` warning event."""
        path = str(stored.get("path", ""))
        if not await self.store.exists_async(path):
            return False
        if await self.store.verify_async(path, str(stored.get("digest", ""))):
            return True
        await self.recorder.event(
            obj, type="Warning", reason="ArtifactVerificationFailed",
            message="failed to verify integrity of artifact: computed digest "
                    f"doesn't match '{stored.get('digest', '')}'")
        return False

    def publish(self, obj: Obj, artifact: Obj) -> None:
        meta = obj["metadata"]
        self.bus.publish(ArtifactEvent(
            SourceKey(self.KIND, meta.get("namespace", ""), meta["name"]),
            artifact["revision"], artifact["digest"], self.store.local_path(artifact["path"]),
            artifact["url"], dict(artifact.get("metadata") or {})))

    async def secret(self, namespace: str, name: str, *, reason: str = "AuthenticationFailed",
                     condition: str = FETCH_FAILED) -> Obj:
        """A Secret, read on demand (Secrets are never cached); a failure is a StepError."""
        try:
            found: Obj = await self.client.get("v1", "Secret", name, namespace)
            return found
        except NotFound as exc:
            raise StepError(f"failed to get secret '{namespace}/{name}': secrets \"{name}\" "
                            "not found", reason=reason, condition=condition) from exc
        except KubeError as exc:
            raise StepError(f"failed to get secret '{namespace}/{name}': {exc}",
                            reason=reason, condition=condition) from exc

    @staticmethod
    def secret_data(secret: Obj) -> dict[str, bytes]:
        return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    async def gc(self, obj: Obj, keep: str) -> None:
        meta = obj["metadata"]
        try:
            removed = await self.store.garbage_collect_async(
                self.STORAGE_KIND, meta.get("namespace", ""), meta["name"], keep)
        except OSError as exc:
            log.warning("garbage collection failed: %s", exc)
            return
        if removed:
            await self.recorder.event(obj, reason="GarbageCollectionSucceeded",
                                      message=f"garbage collected {len(removed)} artifacts",
                                      trace=True)

    async def ensure_finalizer(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER in finalizers:
            return obj
        patched: Obj = await self.client.merge_patch(
            API_VERSION, self.KIND, meta["name"],
            {"metadata": {"finalizers": [*finalizers, FINALIZER],
                          "resourceVersion": meta.get("resourceVersion")}},
            meta.get("namespace"))
        return patched

    async def finalize(self, obj: Obj) -> None:
        meta = obj["metadata"]
        ns, name = meta.get("namespace", ""), meta["name"]
        await self.forget(ObjectKey(self.KIND, ns, name))
        finalizers = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        if len(finalizers) != len(meta.get("finalizers") or []):
            with contextlib.suppress(NotFound):
                await self.client.merge_patch(API_VERSION, self.KIND, name,
                                              {"metadata": {"finalizers": finalizers or None}},
                                              ns)

    async def forget(self, key: ObjectKey) -> None:
        await self.store.remove_all_async(self.STORAGE_KIND, key.namespace, key.name)
        self.bus.forget(SourceKey(self.KIND, key.namespace, key.name))
