"""What every source reconciler shares, on the runtime's one driver
(``fluxd.runtime.driver``), in Flux's source-controller shape.

A kind contributes its ordered steps — for the artifact-producing kinds Flux's
``reconcileStorage`` → ``reconcileSource`` → ``reconcileArtifact`` — over a ``SourceRun``
that carries what one step hands the next; the storage step (``reconcile_storage``) is
shared. A step that stores an artifact with a new digest sets ``run.new``.

The summary is the source-controller's: Ready computed from the kind's owned conditions,
negative-polarity ones first (``OWNED``/``NEGATIVE``). After the status write the report
publishes a new artifact on the bus (so consumers read what they were told), then sends
the events: a Warning for a failure (a trace event for a wait), ``NewArtifact`` for a new
artifact, ``Succeeded`` on recovery. Secrets are read on demand (never cached).
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from fluxd import logging as fluxlog
from fluxd.artifacts.bus import ArtifactBus, ArtifactEvent, SourceKey
from fluxd.artifacts.storage import ArtifactStore, artifact_path
from fluxd.config import Settings
from fluxd.kube import KubeError, NotFound
from fluxd.runtime import conditions as cond
from fluxd.runtime.driver import Driver, Failure, Run, SpecT, summarize_conditions
from fluxd.runtime.reconcile import (
    ObjectKey,
    ReconcileError,
    WaitingError,
)

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
    """A failed step with the condition it sets (besides Ready); retried with backoff."""

    def __init__(self, message: str, *, reason: str, condition: str) -> None:
        super().__init__(message, reason=reason, condition=condition)


class StepWaiting(WaitingError):
    """A step cannot go on until something else changes (e.g. its source has no artifact
    yet): it marks ``condition``, and the object is reconciled again after
    ``requeue_after`` seconds (or as soon as the awaited change is announced), without
    backoff growth. Its event is a Warning when ``warn``, else a trace event."""

    def __init__(self, message: str, *, reason: str, condition: str, requeue_after: float,
                 warn: bool = False) -> None:
        super().__init__(message, requeue_after=requeue_after, reason=reason,
                         condition=condition, warn=warn)


@dataclass(frozen=True)
class NewArtifact:
    """A step stored an artifact with a new digest: the event to send (``NewArtifact``
    unless a kind names it otherwise, as HelmChart does with its build's reason)."""

    message: str
    revision: str
    digest: str
    metadata: dict[str, str] = field(default_factory=dict)
    reason: str = "NewArtifact"


@dataclass
class SourceRun(Run[SpecT]):
    """One source reconcile: what its steps hand each other."""

    #: set by the step that stored an artifact with a new digest
    new: NewArtifact | None = None


RunT = TypeVar("RunT", bound=SourceRun[Any])


@dataclass
class SourceReconciler(Driver[SpecT, RunT]):
    """The source kinds' shared part (see the module docstring)."""

    STORAGE_KIND: ClassVar[str]
    NEGATIVE: ClassVar[tuple[str, ...]]
    #: the stable link (``status.url``) the storage step keeps current, if the kind has one
    LINK: ClassVar[str | None] = None
    DEFAULT_INTERVAL: ClassVar[str] = "1m"
    RUN: ClassVar[type[Run[Any]]] = SourceRun
    SUSPENDED: ClassVar[str] = "reconciliation is suspended for this object"

    store: ArtifactStore = field(kw_only=True)
    bus: ArtifactBus = field(kw_only=True)
    settings: Settings = field(kw_only=True)
    logger: logging.Logger = field(default=log, kw_only=True)

    # --- what a kind may word differently ---------------------------------------------

    def ready_message(self, run: RunT) -> str:
        artifact = run.patcher.get_field("artifact") or {}
        return f"stored artifact for revision '{artifact.get('revision', '')}'"

    def recovered_message(self, run: RunT) -> str:
        """The ``Succeeded`` event's message after a failure; Ready's unless a kind words
        it otherwise (HelmRepository repeats its ``NewArtifact`` message, as Flux)."""
        return self.ready_message(run)

    def recovered_reason(self, run: RunT) -> str:
        """The reason of the event sent on recovery from a failure."""
        return cond.SUCCEEDED_REASON

    # --- the driver's hooks -----------------------------------------------------------

    def summarize(self, run: RunT, failure: Failure | None) -> None:
        summarize_conditions(run.patcher, failure, owned=self.OWNED,
                             negative_polarity=self.NEGATIVE,
                             ready_message=self.ready_message(run))

    async def report(self, run: RunT, failure: Failure | None) -> None:
        """Publish a new artifact, then the events (see the module docstring)."""
        if failure is not None:
            await self.failure_event(run, failure)
            self.log_failure(run, failure)
            return
        patcher = run.patcher
        stored = patcher.get_field("artifact")
        if stored and stored != (run.obj.get("status") or {}).get("artifact"):
            self.publish(run.obj, stored)
        new = run.new
        if new is not None:
            self.logger.info(new.message)
            await self.recorder.event(run.obj, reason=new.reason, message=new.message,
                                      metadata={"revision": new.revision,
                                                "digest": new.digest, **new.metadata})
        elif not run.was_ready:
            message = self.recovered_message(run)
            self.logger.info(message)
            await self.recorder.event(run.obj, reason=self.recovered_reason(run),
                                      message=message)

    def log_failure(self, run: RunT, failure: Failure) -> None:
        """The source-controller's lines: a stall is ``reconciliation stalled``, a wait
        ``reconciliation waiting`` (info, with the reason and the requeue delay), any
        other failure its own text (the controller adds ``Reconciler error``)."""
        if failure.unexpected:
            return
        if failure.stalled:
            self.logger.error("reconciliation stalled",
                              extra=fluxlog.fields(error=failure.message))
        elif failure.waiting:
            error = failure.error
            assert isinstance(error, WaitingError)
            self.logger.info("reconciliation waiting", extra=fluxlog.fields(
                reason=failure.message,
                duration=error.requeue_after if error.requeue_after is not None
                else run.retry_interval))
        else:
            self.logger.error(failure.message, extra=fluxlog.fields(error=failure.message))

    async def cleanup(self, obj: Obj, spec: SpecT | None) -> None:
        """Artifacts are dropped by ``forget``; nothing else to undo."""

    # --- shared steps and pieces ------------------------------------------------------

    async def reconcile_storage(self, run: RunT) -> None:
        """Flux's ``reconcileStorage``: drop a recorded artifact that is gone from storage
        or no longer has its digest (``building artifact: disappeared from storage``),
        collect old files, and keep the artifact URL and the ``LINK`` URL
        (``status.url``) on the current advertised address."""
        obj, patcher = run.obj, run.patcher
        ns, name = run.namespace, run.name
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
                if patcher.get_field("url") and self.LINK:
                    patcher.set_field("url", self.store.url_for(
                        artifact_path(self.STORAGE_KIND, ns, name, self.LINK)))
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
            # Flux drops this error; it is worth a line (the next reconcile retries)
            self.logger.error("garbage collection failed", extra=fluxlog.fields(error=str(exc)))
            return
        if removed:
            await self.trace(obj, reason="GarbageCollectionSucceeded",
                             message=f"garbage collected {len(removed)} artifacts")

    async def link(self, run: RunT, file_name: str) -> None:
        """Point the kind's stable ``LINK`` (``index.yaml``, ``latest.tar.gz``) at
        ``file_name`` and record its URL as ``status.url``; a failure is a trace event
        and an info line, as Flux's, and the old URL stays."""
        assert self.LINK is not None
        try:
            run.patcher.set_field("url", await self.store.symlink_async(
                self.STORAGE_KIND, run.namespace, run.name, self.LINK, file_name))
        except OSError as exc:
            await self.trace(run.obj, reason="SymlinkUpdateFailed",
                             message=f"failed to update status URL symlink: {exc}")

    async def trace(self, obj: Obj, *, reason: str, message: str) -> None:
        """A trace event (on the object, not sent to notification providers) that is
        also an info line, as Flux's source-controller ``eventLogf`` writes it."""
        self.logger.info(message)
        await self.recorder.event(obj, reason=reason, message=message, trace=True)

    async def forget(self, key: ObjectKey) -> None:
        """Gone or being deleted: its artifacts leave storage and the bus."""
        await self.store.remove_all_async(self.STORAGE_KIND, key.namespace, key.name)
        self.bus.forget(SourceKey(self.KIND, key.namespace, key.name))
