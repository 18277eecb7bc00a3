"""The Receiver reconciler (Flux's ``receiver_controller.go``) on the runtime's driver,
and the wiring of the webhook receiver server it feeds.

Steps, after the driver's fetch / finalizer / parsed ``ReceiverSpec`` / suspend:

1. ``check_spec``: ``resourceFilter``, each resource's ``filter`` and the
   ``oidcProviders`` compile — a CEL error stalls the Receiver with
   ``InvalidCELExpression``, a bad provider list with ``ValidationFailed``;
2. ``reconcile_token``: Reconciling "Reconciliation in progress", the Secret's ``token``
   read (missing Secret, key or value: Ready=False ``TokenNotFound``, the path withdrawn,
   retried with backoff);
3. ``reconcile_webhook_path``: ``status.webhookPath`` = ``/hook/`` + sha256(token + name
   + namespace), Ready=True ``Succeeded`` "Receiver initialized for path: …".

The summary is the notification-controller's (the driver's ``finalize_status``). A
stall, from a step or from a spec the model refuses, reads as Flux words it: Ready and
Stalled "Reconciliation failed terminally due to configuration error: …", a Warning
event with the stall's reason, the error logged; it is raised as a ``StallingError``, so
it is not retried and counts as a terminal error. A success requeues at
``spec.interval`` with the ``Succeeded`` event and log line "Reconciliation finished,
next run in 10m0s"; any other failure is a Warning ``Failed`` event, retried with
backoff.

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
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from fluxd import logging as fluxlog
from fluxd.api.notification import API_VERSION_V1, ReceiverSpec
from fluxd.clock import format_duration
from fluxd.controllers.context import Contribution, ControllerContext
from fluxd.controllers.notification.receiver_server import (
    WEBHOOK_PATH_INDEX,
    ClaimsCheck,
    ReceiverMetrics,
    ReceiverServer,
    check_oidc_providers,
    compile_filters,
    webhook_path,
)
from fluxd.kube import KubeError
from fluxd.runtime import conditions as cond
from fluxd.runtime.cel import CELError
from fluxd.runtime.driver import (
    VALIDATION_FAILED,
    Driver,
    Failure,
    Obj,
    Run,
    Step,
    finalize_status,
    validation_text,
)
from fluxd.runtime.handler import ReferrersHandler
from fluxd.runtime.manager import ControllerSpec, Service
from fluxd.runtime.reconcile import ReconcileError, Result, StallingError
from fluxd.runtime.status import StatusPatcher

log = logging.getLogger("fluxd.notification.receiver")

KIND = "Receiver"
CONTROLLER = "notification-controller"
OWNED = (cond.READY, cond.RECONCILING, cond.STALLED)

TOKEN_NOT_FOUND = "TokenNotFound"
INVALID_CEL = "InvalidCELExpression"
#: what Flux's receiver says of a stall (its log line, and the prefix of the message)
TERMINAL = "Reconciliation failed terminally due to configuration error"
#: the index of Receivers by ``<namespace>/<secretRef.name>``
SECRET_REF_INDEX = "secretRef"


def webhook_path_index(obj: Obj) -> list[str]:
    """Receivers by ``status.webhookPath`` (none until one is set)."""
    path = (obj.get("status") or {}).get("webhookPath")
    return [path] if path else []


def secret_ref_index(obj: Obj) -> list[str]:
    """Receivers by the Secret holding their token (none for a spec the model refuses:
    such a Receiver stalls until its spec changes)."""
    spec = ReceiverSpec.spec_of(obj)
    ref = spec.secret_ref if spec else None
    return [f"{obj['metadata'].get('namespace', '')}/{ref.name}"] if ref and ref.name else []


@dataclass
class ReceiverRun(Run[ReceiverSpec]):
    """What the Receiver steps hand each other."""

    #: the Secret's token ("" for ``generic-oidc``, which has none)
    token: str = ""


@dataclass
class ReceiverReconciler(Driver[ReceiverSpec, ReceiverRun]):
    """The Receiver's steps and words on the driver (see the module docstring)."""

    API_VERSION = API_VERSION_V1
    KIND = KIND
    SPEC = ReceiverSpec
    RUN = ReceiverRun
    OWNED = OWNED

    logger: logging.Logger = field(default=log, kw_only=True)

    def steps(self) -> list[Step[ReceiverRun]]:
        return [self.check_spec, self.reconcile_token, self.reconcile_webhook_path]

    # --- steps ------------------------------------------------------------------------

    async def check_spec(self, run: ReceiverRun) -> None:
        """What cannot compile stalls the Receiver: retrying cannot help."""
        spec = run.spec
        try:
            compile_filters(spec)
        except CELError as exc:
            raise StallingError(str(exc), reason=INVALID_CEL) from None
        if spec.type != "generic-oidc":
            return
        providers = spec.oidc_providers or []
        try:
            check_oidc_providers(providers)
        except ValueError as exc:
            raise StallingError(str(exc), reason=VALIDATION_FAILED) from None
        for i, provider in enumerate(providers):
            try:
                ClaimsCheck.compile(provider)
            except CELError as exc:
                raise StallingError(f"oidcProviders[{i}] (issuerURL="
                                    f"{provider.issuer_url!r}): {exc}",
                                    reason=INVALID_CEL) from None

    async def reconcile_token(self, run: ReceiverRun) -> None:
        """The Secret's token; without one the path is withdrawn (nothing can be
        authenticated against it) and the read retried with backoff."""
        run.patcher.mark_reconciling(cond.PROGRESSING_REASON, "Reconciliation in progress")
        if run.spec.type == "generic-oidc":
            return
        try:
            run.token = await self.token(run.namespace, run.spec)
        except ReconcileError:
            run.patcher.set_field("webhookPath", None)
            raise

    async def reconcile_webhook_path(self, run: ReceiverRun) -> None:
        path = webhook_path(run.token, run.name, run.namespace)
        message = f"Receiver initialized for path: {path}"
        patcher = run.patcher
        patcher.mark_true(cond.READY, cond.SUCCEEDED_REASON, message)
        if patcher.get_field("webhookPath") != path:
            patcher.set_field("webhookPath", path)
            self.logger.info(message)

    async def token(self, namespace: str, spec: ReceiverSpec) -> str:
        """The Secret's ``token``; a missing Secret, key or value is ``TokenNotFound``."""
        name = spec.secret_ref.name if spec.secret_ref is not None else ""
        where = f"{namespace}/{name}"
        if not name:
            raise ReconcileError("spec.secretRef is required", reason=TOKEN_NOT_FOUND)
        try:
            secret = await self.client.get("v1", "Secret", name, namespace)
        except KubeError as exc:
            raise ReconcileError(f"unable to read token from secret '{where}' error: {exc}",
                                 reason=TOKEN_NOT_FOUND) from None
        encoded = (secret.get("data") or {}).get("token")
        if encoded is None:
            raise ReconcileError(f"invalid '{where}' secret data: required fields 'token'",
                                 reason=TOKEN_NOT_FOUND)
        try:
            token = base64.b64decode(encoded).decode("utf-8", "surrogateescape")
        except (binascii.Error, ValueError):
            raise ReconcileError(f"invalid '{where}' secret data: 'token' is not base64",
                                 reason=TOKEN_NOT_FOUND) from None
        if not token:
            # an empty token would authenticate anything and make the path guessable
            raise ReconcileError(f"invalid '{where}' secret data: 'token' is empty",
                                 reason=TOKEN_NOT_FOUND)
        return token

    # --- summary and report -----------------------------------------------------------

    def summarize(self, run: ReceiverRun, failure: Failure | None) -> None:
        finalize_status(run.patcher, terminal(failure))

    async def report(self, run: ReceiverRun, failure: Failure | None) -> None:
        """Flux's receiver: the ``Succeeded`` event and log line; a stall's own reason
        and words; any other failure a Warning ``Failed`` event (the controller logs
        it, "Reconciler error", and retries it with backoff)."""
        if failure is None:
            message = f"Reconciliation finished, next run in {format_duration(run.interval)}"
            self.logger.info(message)
            await self.event(run, reason=cond.SUCCEEDED_REASON, message=message)
        elif failure.stalled:
            await self.report_stall(run.obj, failure)
        else:
            await self.event(run, type="Warning", reason=cond.FAILED_REASON,
                             message=failure.message)

    async def report_stall(self, obj: Obj, failure: Failure) -> None:
        self.logger.error(TERMINAL, extra=fluxlog.fields(error=failure.message))
        await self.recorder.event(obj, type="Warning", reason=failure.reason,
                                  message=f"{TERMINAL}: {failure.message}")

    async def refuse_spec(self, obj: Obj, patcher: StatusPatcher,
                          exc: ValidationError) -> Result:
        """A spec the model refuses stalls the Receiver as its other configuration
        errors do (the driver's summary and words would differ from the steps')."""
        error = StallingError(f"invalid spec: {validation_text(exc)}",
                              reason=VALIDATION_FAILED)
        failure = Failure(error, error.reason, str(error))
        patcher.handle_request()
        finalize_status(patcher, terminal(failure))
        patcher.observe_generation()
        await patcher.patch_shielded()
        await self.report_stall(obj, failure)
        raise error


def terminal(failure: Failure | None) -> Failure | None:
    """A stall as the conditions show it: Flux's receiver prefixes its message."""
    if failure is None or not failure.stalled:
        return failure
    return Failure(failure.error, failure.reason, f"{TERMINAL}: {failure.message}")


def _secret_key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


@dataclass(frozen=True)
class Receivers:
    """The Receiver controller of one process: its spec and the webhook server (with
    the service that runs it)."""

    spec: ControllerSpec
    service: Service
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
                                    clock=context.clock)
    server = ReceiverServer(client=context.client, receivers=informer, clock=context.clock,
                            settings=context.settings,
                            metrics=ReceiverMetrics(registry) if registry is not None
                            else None)

    @contextlib.asynccontextmanager
    async def serve_webhooks() -> AsyncIterator[object]:
        async with server.serve(context.settings.notification.receiver_address) as listener:
            yield listener

    context.cache.metadata_informer(
        "v1", "Secret", label_selector=context.settings.watch.configs_label_selector,
    ).add_handler(ReferrersHandler(context.queue, KIND, informer, SECRET_REF_INDEX,
                                   _secret_key))
    spec = ControllerSpec(API_VERSION_V1, KIND, "notification", reconciler,
                          indexes={WEBHOOK_PATH_INDEX: webhook_path_index,
                                   SECRET_REF_INDEX: secret_ref_index})
    return Receivers(spec, Service("webhook receiver", serve_webhooks), reconciler, server)


def controllers(context: ControllerContext, *,
                registry: CollectorRegistry | None = None) -> list[Contribution]:
    """The Receiver controller and its webhook server (see ``build``)."""
    built = build(context, registry=registry)
    return [built.spec, built.service]
