"""The HelmRepository reconciler: a Helm repository's ``index.yaml`` in, the same bytes out
as an artifact.

It runs on the runtime's one driver (``SourceReconciler``: finalizer, suspend, steps,
shielded status summary and patch, bus, events). Flux's steps, in Flux's order:

- **storage** (shared): a recorded artifact whose file is missing or no longer has its
  digest is dropped from the status and built again (``building artifact: disappeared
  from storage``); old files are garbage-collected; ``status.url`` is the ``index.yaml``
  link.
- **source**: ``<url>/index.yaml`` is fetched with aiohttp (basic auth from ``secretRef``,
  TLS from ``certSecretRef`` or, deprecated, ``secretRef``), bounded by ``spec.timeout``
  and by ``[helm] index_max_size`` (Flux ``--helm-index-max-size``). The revision is
  ``sha256:<hex>`` of the fetched bytes; when it is the stored artifact's, nothing else is
  done. Otherwise the index is validated as Flux loads it (``helmindex.load_index``,
  streamed, in a worker thread: a 20 MB index never stalls the event loop).
- **artifact**: the fetched bytes, unchanged, stored as ``index-<hex>.yaml`` with an
  ``index.yaml`` symlink (``status.url``), recorded in ``status.artifact`` and published
  on the artifact bus after the status write.

``type: oci`` repositories are static data holders, as in Flux today: the driver hands
them to ``intercept`` before anything else, so they get no artifact, no finalizer and no
status; any left from an earlier ``default`` life are removed once.

Failures set Flux's conditions and reasons: ``FetchFailed`` with ``Failed`` (the fetch),
``AuthenticationFailed`` (the Secrets), ``IndexationFailed`` (an invalid index) or
``URLInvalid`` (stalls); ``StorageOperationFailed``. A new artifact emits ``NewArtifact``
(``stored fetched index of size 30.88kB from '<url>'``), recovery from a failure
``Succeeded`` with the same words. No credential ever reaches a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from fluxd import logging as fluxlog
from fluxd.api.meta import LocalObjectReference
from fluxd.api.source import API_VERSION, HelmRepositorySpec
from fluxd.clock import rfc3339
from fluxd.config import parse_duration
from fluxd.controllers.source import helmgetter, helmindex
from fluxd.controllers.source.reconciler import (
    ARTIFACT_IN_STORAGE,
    ARTIFACT_OUTDATED,
    CONTROLLER,
    FETCH_FAILED,
    FINALIZER,
    STORAGE_FAILED,
    NewArtifact,
    SourceReconciler,
    SourceRun,
    StepError,
)
from fluxd.kube import KubeError, NotFound
from fluxd.runtime import conditions as cond
from fluxd.runtime.driver import Step, remove_finalizer
from fluxd.runtime.reconcile import ObjectKey, Result, StallingError
from fluxd.runtime.status import StatusPatcher

log = logging.getLogger("fluxd.source.helmrepository")

__all__ = ["CONTROLLER", "KIND", "HelmRepositoryReconciler", "client_options",
           "human_size", "repository_spec", "timeout_of"]

KIND = "HelmRepository"
STORAGE_KIND = "helmrepository"
OCI_TYPE = "oci"
INDEX_LINK = "index.yaml"
#: ``spec.timeout`` when unset (Flux's ``GetTimeout``; the API has no default for it)
DEFAULT_TIMEOUT = 60.0

AUTHENTICATION_FAILED = "AuthenticationFailed"
INDEXATION_FAILED = "IndexationFailed"
URL_INVALID = "URLInvalid"
ARCHIVE_FAILED = "ArchiveOperationFailed"

#: Flux's summarize order for HelmRepository (helmRepositoryReadyCondition): a failure's
#: own condition gives Ready its reason and message before Stalled and Reconciling do
OWNED = (STORAGE_FAILED, FETCH_FAILED, ARTIFACT_OUTDATED, ARTIFACT_IN_STORAGE,
         cond.STALLED, cond.RECONCILING, cond.READY)
NEGATIVE = (STORAGE_FAILED, FETCH_FAILED, ARTIFACT_OUTDATED)

Obj = dict[str, Any]


def human_size(size: float) -> str:
    """Decimal units with four significant digits, as docker/go-units ``HumanSize``."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    unit = 0
    while size >= 1000 and unit < len(units) - 1:
        size /= 1000
        unit += 1
    return f"{size:.4g}{units[unit]}"


def repository_spec(obj: Obj) -> HelmRepositorySpec:
    """A HelmRepository's spec as its model (for the objects the driver does not parse:
    a HelmChart's source, a dependency's repository). Raises ``ValidationError``."""
    return HelmRepositorySpec.model_validate(obj.get("spec") or {})


def timeout_of(spec: HelmRepositorySpec | None) -> float:
    """``spec.timeout`` in seconds, 60 when unset or zero (Flux's ``GetTimeout``)."""
    if spec is None or not spec.timeout:
        return DEFAULT_TIMEOUT
    return parse_duration(spec.timeout) or DEFAULT_TIMEOUT


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _empty_status(status: Obj) -> bool:
    """Flux's ``hasEmptyHelmRepositoryStatus``."""
    return (not status.get("observedGeneration") and not status.get("conditions")
            and not status.get("url") and not status.get("artifact")
            and not status.get("lastHandledReconcileAt"))


def _stored_message(revision: str) -> str:
    return f"stored artifact: revision '{revision}'"


def _fetched_message(url: str, artifact: Obj) -> str:
    """Flux's message for a stored index (the ``NewArtifact`` and recovery events)."""
    size = artifact.get("size")
    shown = "unknown size" if size is None else f"size {human_size(size)}"
    return f"stored fetched index of {shown} from '{fluxlog.strip_url_credentials(url)}'"


@dataclass
class IndexRun(SourceRun[HelmRepositorySpec]):
    """What the HelmRepository steps hand each other."""

    #: the fetched index when it is a new revision (None: the stored one is current)
    index: bytes | None = None
    #: the sha256 hex of ``index``
    digest: str = ""


@dataclass
class HelmRepositoryReconciler(SourceReconciler[HelmRepositorySpec, IndexRun]):
    API_VERSION = API_VERSION
    KIND = KIND
    SPEC = HelmRepositorySpec
    RUN = IndexRun
    STORAGE_KIND = STORAGE_KIND
    OWNED = OWNED
    NEGATIVE = NEGATIVE
    LINK = INDEX_LINK

    def steps(self) -> list[Step[IndexRun]]:
        return [self.reconcile_storage, self.reconcile_source, self.reconcile_artifact]

    async def intercept(self, obj: Obj, spec: HelmRepositorySpec | None) -> Result | None:
        """A ``type: oci`` repository is static data, not reconciled (Flux's
        ``migrationToStatic``): what a ``default`` life left — artifacts, status,
        finalizer — is removed once, and nothing else is done. (A spec the model
        refuses, None here, is the driver's to report.)"""
        if spec is None or spec.type != OCI_TYPE:
            return None
        await self._make_static(obj, spec)
        return Result()

    def ready_message(self, run: IndexRun) -> str:
        return _stored_message((run.patcher.get_field("artifact") or {}).get("revision", ""))

    def recovered_message(self, run: IndexRun) -> str:
        return _fetched_message(run.spec.url, run.patcher.get_field("artifact") or {})

    # --- steps ------------------------------------------------------------------------

    async def reconcile_source(self, run: IndexRun) -> None:
        """Fetch the index; keep it in ``run.index`` when it is a new revision, leave
        ``run.index`` None when the stored artifact already has it."""
        spec, patcher = run.spec, run.patcher
        url = spec.url
        if url.startswith("oci://"):
            raise StallingError("invalid Helm repository URL: 'oci' URL scheme cannot be "
                                "used with 'default' HelmRepository type",
                                reason=URL_INVALID, condition=FETCH_FAILED)
        try:
            href = helmgetter.index_url(url)
        except helmgetter.InvalidURL as exc:
            raise StallingError(f"invalid Helm repository URL: {exc}", reason=URL_INVALID,
                                condition=FETCH_FAILED) from exc
        options, context = await client_options(self, run.namespace, spec, timeout_of(spec))
        try:
            data = await helmgetter.fetch(href, options, base_url=url, context=context,
                                          max_size=self.settings.helm.index_max_size)
        except helmgetter.FetchError as exc:
            raise StepError("failed to fetch Helm repository index: failed to cache index "
                            f"to temporary file: {exc}", reason=cond.FAILED_REASON,
                            condition=FETCH_FAILED) from exc
        digest = await asyncio.to_thread(_sha256_hex, data)
        revision = f"sha256:{digest}"
        stored = patcher.get_field("artifact")
        if stored and stored.get("revision") == revision:
            patcher.delete_condition(FETCH_FAILED)
            self._mark_stored(patcher, revision)
            await self.trace(run.obj, reason="ArtifactUpToDate",
                             message=f"artifact up-to-date with remote revision: '{revision}'")
            return
        try:
            await asyncio.to_thread(helmindex.load_index, data)
        except helmindex.InvalidIndex as exc:
            raise StepError("failed to load Helm repository from index YAML: failed to load "
                            f"index: {exc}", reason=INDEXATION_FAILED,
                            condition=FETCH_FAILED) from exc
        patcher.delete_condition(FETCH_FAILED)
        message = f"new index revision '{revision}'"
        if stored:
            patcher.mark_true(ARTIFACT_OUTDATED, "NewRevision", message)
        patcher.progressive_status(cond.PROGRESSING_REASON, f"building artifact: {message}",
                                   drift=True)
        run.index, run.digest = data, digest

    async def reconcile_artifact(self, run: IndexRun) -> None:
        """Store the fetched bytes as they are, point ``index.yaml`` at them."""
        if run.index is None:
            return
        obj, patcher, digest = run.obj, run.patcher, run.digest
        ns, name = run.namespace, run.name
        revision = f"sha256:{digest}"
        file_name = f"index-{digest}.yaml"
        try:
            record = await self.store.store_file_async(STORAGE_KIND, ns, name, file_name,
                                                       run.index, revision=revision)
        except (OSError, ValueError) as exc:
            raise StepError(f"unable to save artifact to storage: {exc}",
                            reason=ARCHIVE_FAILED, condition=STORAGE_FAILED) from exc
        artifact = {
            "path": record.path, "url": record.url, "revision": revision,
            "digest": record.digest, "lastUpdateTime": rfc3339(record.last_update_time),
            "size": record.size}
        patcher.set_field("artifact", artifact)
        await self.link(run, file_name)
        patcher.delete_condition(STORAGE_FAILED)
        self._mark_stored(patcher, revision)
        await self.gc(obj, record.path)
        if ((obj.get("status") or {}).get("artifact") or {}).get("digest") != record.digest:
            # not merely the same file again (it had gone from storage)
            run.new = NewArtifact(_fetched_message(run.spec.url, artifact), revision,
                                  record.digest)

    # --- helpers ----------------------------------------------------------------------

    @staticmethod
    def _mark_stored(patcher: StatusPatcher, revision: str) -> None:
        patcher.delete_condition(ARTIFACT_OUTDATED)
        patcher.mark_true(ARTIFACT_IN_STORAGE, cond.SUCCEEDED_REASON,
                          _stored_message(revision))

    async def _make_static(self, obj: Obj, spec: HelmRepositorySpec) -> None:
        meta = obj["metadata"]
        ns, name = meta.get("namespace", ""), meta["name"]
        if spec.suspend and not meta.get("deletionTimestamp"):
            return
        status = obj.get("status") or {}
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER not in finalizers and _empty_status(status):
            return
        await self.forget(ObjectKey(KIND, ns, name))
        if status:
            with contextlib.suppress(NotFound):
                await self.client.patch_status(API_VERSION, KIND, name,
                                               {"status": dict.fromkeys(status)}, ns)
        await remove_finalizer(self.client, obj)


# --------------------------------------------------------------------------- credentials


async def client_options(reconciler: SourceReconciler[Any, Any], namespace: str,
                         spec: HelmRepositorySpec | None, fetch_timeout: float
                         ) -> tuple[helmgetter.ClientOptions, ssl.SSLContext | None]:
    """Client options from a HelmRepository's Secrets (also what a HelmChart pulls its
    chart with; None: no repository, anonymous); AuthenticationFailed when they are
    missing or unusable."""
    cert = auth = None
    if spec is not None:
        cert = await _secret(reconciler, namespace, spec.cert_secret_ref,
                             "TLS authentication secret")
        auth = await _secret(reconciler, namespace, spec.secret_ref, "authentication secret")
    try:
        options = helmgetter.ClientOptions.from_secrets(
            timeout=fetch_timeout,
            pass_credentials=bool(spec is not None and spec.pass_credentials),
            auth=auth, cert=cert)
        if options.legacy_tls:
            log.info("warning: specifying TLS authentication data via `.spec.secretRef` "
                     "is deprecated, please use `.spec.certSecretRef` instead")
        context = None
        if options.tls is not None:
            context = await asyncio.to_thread(helmgetter.ssl_context, options.tls)
    except helmgetter.CredentialsError as exc:
        raise StepError(str(exc), reason=AUTHENTICATION_FAILED,
                        condition=FETCH_FAILED) from exc
    return options, context


async def _secret(reconciler: SourceReconciler[Any, Any], namespace: str,
                  ref: LocalObjectReference | None,
                  what: str) -> tuple[str, str, dict[str, bytes]] | None:
    """(name, type, data) of a referenced Secret, read on demand, in Flux's words when it
    cannot be read."""
    if ref is None or not ref.name:
        return None
    name = ref.name
    try:
        secret = await reconciler.client.get("v1", "Secret", name, namespace)
    except NotFound as exc:
        raise StepError(f"failed to get {what} '{namespace}/{name}': secrets \"{name}\" "
                        "not found", reason=AUTHENTICATION_FAILED,
                        condition=FETCH_FAILED) from exc
    except KubeError as exc:
        raise StepError(f"failed to get {what} '{namespace}/{name}': {exc}",
                        reason=AUTHENTICATION_FAILED, condition=FETCH_FAILED) from exc
    return name, str(secret.get("type") or ""), reconciler.secret_data(secret)
