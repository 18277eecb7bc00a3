"""The Receiver reconciler (Flux's ``receiver_controller.go``), and the wiring of the
webhook receiver server it feeds.

Reconcile: fetch from the cache → gone? nothing to do → deleting? drop the finalizer →
ensure the finalizer → suspended? stop → check the spec (``resourceFilter``, each
resource's ``filter``, ``oidcProviders``: a CEL error stalls the Receiver with
``InvalidCELExpression``, a bad provider list with ``ValidationFailed``) → read the
Secret's ``token`` (missing Secret or key: Ready=False ``TokenNotFound``, the path is
withdrawn, retried with backoff) → ``status.webhookPath`` = ``/hook/`` + sha256(token +
name + namespace), Ready=True ``Succeeded`` "Receiver initialized for path: …" → always,
in a shielded final step, Reconciling/observedGeneration settled and the status patched →
requeue at ``spec.interval``.

The server finds Receivers by the informer index ``webhookPath``, so a path is served as
soon as the status carrying it is in the cache, and no longer once it is gone. A change
to a Secret labelled ``reconcile.fluxcd.io/watch: Enabled`` (the watch-configs selector)
reconciles the Receivers using it at once (an index on ``secretRef``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from fluxd.api.notification import API_VERSION_V1, ReceiverSpec
from fluxd.clock import Clock, format_duration
from fluxd.config import Settings, parse_duration
from fluxd.controllers.notification.receiver_server import (
    WEBHOOK_PATH_INDEX,
    ClaimsCheck,
    ReceiverMetrics,
    ReceiverServer,
    check_oidc_providers,
    compile_filters,
    webhook_path,
)
from fluxd.kube import KubeClient, KubeError, NotFound
from fluxd.runtime import conditions as cond
from fluxd.runtime.cel import CELError
from fluxd.runtime.events import EventRecorder
from fluxd.runtime.handler import ReferrersHandler
from fluxd.runtime.informer import Informer
from fluxd.runtime.manager import ControllerContext, ControllerSpec
from fluxd.runtime.reconcile import ObjectKey, ReconcileError, Result
from fluxd.runtime.status import StatusPatcher

log = logging.getLogger("fluxd.notification.receiver")

Obj = dict[str, Any]

KIND = "Receiver"
CONTROLLER = "notification-controller"
FINALIZER = "finalizers.fluxcd.io"
OWNED = (cond.READY, cond.RECONCILING, cond.STALLED)

TOKEN_NOT_FOUND = "TokenNotFound"
INVALID_CEL = "InvalidCELExpression"
VALIDATION_FAILED = "ValidationFailed"
#: the index of Receivers by ``<namespace>/<secretRef.name>``
SECRET_REF_INDEX = "secretRef"


def webhook_path_index(obj: Obj) -> list[str]:
    """Receivers by ``status.webhookPath`` (none until one is set)."""
    path = (obj.get("status") or {}).get("webhookPath")
    return [path] if path else []


def secret_ref_index(obj: Obj) -> list[str]:
    """Receivers by the Secret holding their token."""
    ref = (obj.get("spec") or {}).get("secretRef") or {}
    name = ref.get("name") if isinstance(ref, dict) else None
    return [f"{obj['metadata'].get('namespace', '')}/{name}"] if name else []


class StepFailed(ReconcileError):
    """A failed step: Ready=False with ``reason``; ``stall`` when retrying cannot help."""

    def __init__(self, message: str, *, reason: str, stall: bool = False) -> None:
        super().__init__(message, reason=reason)
        self.stall = stall


class ReceiverReconciler:
    def __init__(self, *, client: KubeClient, informer: Informer, recorder: EventRecorder,
                 clock: Clock, settings: Settings) -> None:
        self.client = client
        self.informer = informer
        self.recorder = recorder
        self.clock = clock
        self.settings = settings

    async def reconcile(self, key: ObjectKey) -> Result:
        obj = self.informer.get(key.namespace, key.name)
        if obj is None:
            return Result()
        if obj["metadata"].get("deletionTimestamp"):
            await self.finalize(obj)
            return Result()
        obj = await self.ensure_finalizer(obj)
        raw = obj.get("spec") or {}
        if raw.get("suspend"):
            log.info("Reconciliation is suspended for this object")
            return Result()
        interval = parse_duration(raw.get("interval") or "10m")
        patcher = StatusPatcher(self.client, obj, owned_conditions=OWNED, clock=self.clock)
        patcher.handle_request()
        failure: StepFailed | None = None
        try:
            await self.steps(obj, patcher)
        except StepFailed as exc:
            failure = exc
            if exc.stall:
                message = f"Reconciliation failed terminally due to configuration error: {exc}"
                patcher.mark_false(cond.READY, exc.reason, message)
                patcher.mark_stalled(exc.reason, message)
                patcher.delete_condition(cond.RECONCILING)
                failure = StepFailed(message, reason=exc.reason, stall=True)
            else:
                patcher.mark_false(cond.READY, exc.reason, str(exc))
                patcher.set_field("webhookPath", None)
        finally:
            finalize_status(patcher)
            await patcher.patch_shielded()
        if failure is None:
            message = f"Reconciliation finished, next run in {format_duration(interval)}"
            log.info(message)
            await self.recorder.event(obj, reason=cond.SUCCEEDED_REASON, message=message)
            return Result(requeue_after=interval)
        if failure.stall:
            log.error("Reconciliation failed terminally due to configuration error",
                      extra={"error": str(failure)})
            await self.recorder.event(obj, type="Warning", reason=failure.reason,
                                      message=str(failure))
            return Result()
        await self.recorder.event(obj, type="Warning", reason=cond.FAILED_REASON,
                                  message=str(failure))
        raise failure

    async def steps(self, obj: Obj, patcher: StatusPatcher) -> None:
        meta = obj["metadata"]
        try:
            spec = ReceiverSpec.model_validate(obj.get("spec") or {})
        except ValidationError as exc:
            raise StepFailed(f"invalid spec: {exc}", reason=VALIDATION_FAILED,
                             stall=True) from None
        try:
            compile_filters(spec)
        except CELError as exc:
            raise StepFailed(str(exc), reason=INVALID_CEL, stall=True) from None
        token = ""
        if spec.type == "generic-oidc":
            providers = spec.oidc_providers or []
            try:
                check_oidc_providers(providers)
            except ValueError as exc:
                raise StepFailed(str(exc), reason=VALIDATION_FAILED, stall=True) from None
            for i, provider in enumerate(providers):
                try:
                    ClaimsCheck.compile(provider)
                except CELError as exc:
                    raise StepFailed(f"oidcProviders[{i}] (issuerURL="
                                     f"{provider.issuer_url!r}): {exc}", reason=INVALID_CEL,
                                     stall=True) from None
        patcher.mark_reconciling(cond.PROGRESSING_REASON, "Reconciliation in progress")
        if spec.type != "generic-oidc":
            token = await self.token(meta.get("namespace", ""), spec)
        path = webhook_path(token, meta["name"], meta.get("namespace", ""))
        message = f"Receiver initialized for path: {path}"
        patcher.mark_true(cond.READY, cond.SUCCEEDED_REASON, message)
        if patcher.get_field("webhookPath") != path:
            patcher.set_field("webhookPath", path)
            log.info(message)

    async def token(self, namespace: str, spec: ReceiverSpec) -> str:
        """The Secret's ``token``; a missing Secret, key or value is ``TokenNotFound``."""
        name = spec.secret_ref.name if spec.secret_ref is not None else ""
        where = f"{namespace}/{name}"
        if not name:
            raise StepFailed("spec.secretRef is required", reason=TOKEN_NOT_FOUND)
        try:
            secret = await self.client.get("v1", "Secret", name, namespace)
        except KubeError as exc:
            raise StepFailed(f"unable to read token from secret '{where}' error: {exc}",
                             reason=TOKEN_NOT_FOUND) from None
        encoded = (secret.get("data") or {}).get("token")
        if encoded is None:
            raise StepFailed(f"invalid '{where}' secret data: required fields 'token'",
                             reason=TOKEN_NOT_FOUND)
        try:
            token = base64.b64decode(encoded).decode("utf-8", "surrogateescape")
        except (binascii.Error, ValueError):
            raise StepFailed(f"invalid '{where}' secret data: 'token' is not base64",
                             reason=TOKEN_NOT_FOUND) from None
        if not token:
            # an empty token would authenticate anything and make the path guessable
            raise StepFailed(f"invalid '{where}' secret data: 'token' is empty",
                             reason=TOKEN_NOT_FOUND)
        return token

    async def ensure_finalizer(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER in finalizers:
            return obj
        patched: Obj = await self.client.merge_patch(
            API_VERSION_V1, KIND, meta["name"],
            {"metadata": {"finalizers": [*finalizers, FINALIZER],
                          "resourceVersion": meta.get("resourceVersion")}},
            meta.get("namespace"))
        return patched

    async def finalize(self, obj: Obj) -> None:
        meta = obj["metadata"]
        finalizers = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        if len(finalizers) != len(meta.get("finalizers") or []):
            with contextlib.suppress(NotFound):
                await self.client.merge_patch(
                    API_VERSION_V1, KIND, meta["name"],
                    {"metadata": {"finalizers": finalizers or None}}, meta.get("namespace"))


def finalize_status(patcher: StatusPatcher) -> None:
    """Flux's receiver ``patch``: Ready drops Reconciling and observes the generation; a
    failure keeps Reconciling as ``ProgressingWithRetry``; Stalled observes it too."""
    conditions = patcher.conditions
    if cond.is_true(conditions, cond.READY) or cond.is_stalled(conditions):
        patcher.delete_condition(cond.RECONCILING)
        patcher.set_field("observedGeneration", patcher.generation)
    elif cond.is_false(conditions, cond.READY) and cond.has(conditions, cond.RECONCILING):
        patcher.mark_reconciling(cond.PROGRESSING_WITH_RETRY_REASON,
                                 cond.message_of(conditions, cond.RECONCILING))


def _secret_key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


@dataclass(frozen=True)
class Receivers:
    """The Receiver controller of one process: its spec and the webhook server."""

    spec: ControllerSpec
    reconciler: ReceiverReconciler
    server: ReceiverServer


def build(context: ControllerContext, *,
          registry: CollectorRegistry | None = None) -> Receivers:
    """The Receiver reconciler, the ``webhookPath`` index the server looks paths up in,
    and the server as a service run while leading (on
    ``[notification] receiver_address``); ``registry`` gets the ``gotk_receiver_*``
    HTTP metrics."""
    informer = context.cache.informer(API_VERSION_V1, KIND)
    reconciler = ReceiverReconciler(client=context.client, informer=informer,
                                    recorder=context.recorder(CONTROLLER),
                                    clock=context.clock, settings=context.settings)
    server = ReceiverServer(client=context.client, receivers=informer, clock=context.clock,
                            settings=context.settings,
                            metrics=ReceiverMetrics(registry) if registry is not None
                            else None)

    @contextlib.asynccontextmanager
    async def serve_webhooks() -> AsyncIterator[object]:
        async with server.serve(context.settings.notification.receiver_address) as listener:
            context.listeners["webhook receiver"] = listener.url
            try:
                yield listener
            finally:
                context.listeners.pop("webhook receiver", None)

    context.services.append(("webhook receiver", serve_webhooks))
    context.cache.metadata_informer(
        "v1", "Secret", label_selector=context.settings.watch.configs_label_selector,
    ).add_handler(ReferrersHandler(context.queue, KIND, informer, SECRET_REF_INDEX,
                                   _secret_key))
    spec = ControllerSpec(API_VERSION_V1, KIND, "notification", reconciler,
                          indexes={WEBHOOK_PATH_INDEX: webhook_path_index,
                                   SECRET_REF_INDEX: secret_ref_index})
    return Receivers(spec, reconciler, server)


def controllers(context: ControllerContext, *,
                registry: CollectorRegistry | None = None) -> list[ControllerSpec]:
    """The Receiver controller and its webhook server (see ``build``)."""
    return [build(context, registry=registry).spec]
