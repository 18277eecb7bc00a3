"""The HelmRepository reconciler: a Helm repository's ``index.yaml`` in, the same bytes out
as an artifact.

It runs on the source driver (``driver.SourceReconciler``: finalizer, suspend, steps,
shielded status patch, bus, events), after one check of its own: a ``type: oci`` object is
made static before anything else. The steps, in Flux's order:

- **storage**: a recorded artifact whose file is missing or no longer has its digest is
  dropped from the status and built again (``building artifact: disappeared from
  storage``); old files are garbage-collected.
- **source**: ``<url>/index.yaml`` is fetched with aiohttp (basic auth from ``secretRef``,
  TLS from ``certSecretRef`` or, deprecated, ``secretRef``), bounded by ``spec.timeout``
  and by ``[helm] index_max_size`` (Flux ``--helm-index-max-size``). The revision is
  ``sha256:<hex>`` of the fetched bytes; when it is the stored artifact's, nothing else is
  done. Otherwise the index is validated as Flux loads it (``helmindex.load_index``,
  streamed, in a worker thread: a 20 MB index never stalls the event loop).
- **artifact**: the fetched bytes, unchanged, stored as ``index-<hex>.yaml`` with an
  ``index.yaml`` symlink (``status.url``), recorded in ``status.artifact`` and published
  on the artifact bus after the status write.

``type: oci`` repositories are static data holders, as in Flux today: no artifact, no
finalizer, no status; any left from an earlier ``default`` life are removed once.

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
from typing import Any, NoReturn

from fluxd import logging as fluxlog
from fluxd.api.source import API_VERSION
from fluxd.clock import rfc3339
from fluxd.config import parse_duration
from fluxd.controllers.source import helmgetter, helmindex
from fluxd.controllers.source.driver import (
    ARTIFACT_IN_STORAGE,
    ARTIFACT_OUTDATED,
    CONTROLLER,
    FETCH_FAILED,
    FINALIZER,
    STORAGE_FAILED,
    NewArtifact,
    SourceReconciler,
    StepError,
)
from fluxd.kube import KubeError, NotFound
from fluxd.runtime import conditions as cond
from fluxd.runtime.reconcile import ObjectKey, Result, StallingError
from fluxd.runtime.status import StatusPatcher

log = logging.getLogger("fluxd.source.helmrepository")

__all__ = ["CONTROLLER", "KIND", "HelmRepositoryReconciler", "client_options",
           "human_size"]

KIND = "HelmRepository"
STORAGE_KIND = "helmrepository"
OCI_TYPE = "oci"
INDEX_LINK = "index.yaml"
DEFAULT_TIMEOUT = 60.0

AUTHENTICATION_FAILED = "AuthenticationFailed"
INDEXATION_FAILED = "IndexationFailed"
URL_INVALID = "URLInvalid"
ARCHIVE_FAILED = "ArchiveOperationFailed"

#: the condition types this controller writes, in Flux's summarize order for
#: HelmRepository (a failure's reason wins over Reconciling's ProgressingWithRetry)
OWNED = (cond.READY, STORAGE_FAILED, FETCH_FAILED, ARTIFACT_OUTDATED, ARTIFACT_IN_STORAGE,
         cond.STALLED, cond.RECONCILING)
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


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _empty_status(status: Obj) -> bool:
    """Flux's ``hasEmptyHelmRepositoryStatus``."""
    return (not status.get("observedGeneration") and not status.get("conditions")
            and not status.get("url") and not status.get("artifact")
            and not status.get("lastHandledReconcileAt"))


def _stored_message(revision: str) -> str:
    return f"stored artifact: revision '{revision}'"


class HelmRepositoryReconciler(SourceReconciler):
    KIND = KIND
    STORAGE_KIND = STORAGE_KIND
    OWNED = OWNED
    NEGATIVE = NEGATIVE

    async def reconcile(self, key: ObjectKey) -> Result:
        obj = self.informer.get(key.namespace, key.name)
        if obj is not None and (obj.get("spec") or {}).get("type") == OCI_TYPE:
            await self._make_static(obj)
            return Result()
        return await super().reconcile(key)

    def ready_message(self, patcher: StatusPatcher) -> str:
        return _stored_message((patcher.get_field("artifact") or {}).get("revision", ""))

    def recovered_message(self, patcher: StatusPatcher) -> str:
        return self._fetched_message(patcher.object, patcher.get_field("artifact") or {})

    @staticmethod
    def _fetched_message(obj: Obj, artifact: Obj) -> str:
        size = artifact.get("size")
        url = fluxlog.strip_url_credentials(str((obj.get("spec") or {}).get("url", "")))
        shown = "unknown size" if size is None else f"size {human_size(size)}"
        return f"stored fetched index of {shown} from '{url}'"

    async def steps(self, obj: Obj, patcher: StatusPatcher) -> NewArtifact | None:
        await self.reconcile_storage(obj, patcher, link=INDEX_LINK)
        fetched = await self._reconcile_source(obj, patcher)
        if fetched is None:
            return None
        return await self._reconcile_artifact(obj, patcher, *fetched)

    # --- steps ------------------------------------------------------------------------

    async def _reconcile_source(self, obj: Obj,
                                patcher: StatusPatcher) -> tuple[bytes, str] | None:
        """Fetch the index; (its bytes, their sha256 hex) when it is a new revision, None
        when the stored artifact already has it."""
        spec = obj.get("spec") or {}
        url = str(spec.get("url", ""))
        if url.startswith("oci://"):
            self._stall(patcher, "invalid Helm repository URL: 'oci' URL scheme cannot be "
                                 "used with 'default' HelmRepository type")
        try:
            href = helmgetter.index_url(url)
        except helmgetter.InvalidURL as exc:
            self._stall(patcher, f"invalid Helm repository URL: {exc}")
        timeout = parse_duration(spec.get("timeout") or DEFAULT_TIMEOUT) or DEFAULT_TIMEOUT
        options, context = await client_options(self, obj, timeout)
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
            await self.recorder.event(obj, reason="ArtifactUpToDate",
                                      message="artifact up-to-date with remote revision: "
                                              f"'{revision}'", trace=True)
            return None
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
        return data, digest

    async def _reconcile_artifact(self, obj: Obj, patcher: StatusPatcher, data: bytes,
                                  digest: str) -> NewArtifact | None:
        """Store the fetched bytes as they are, point ``index.yaml`` at them."""
        ns, name = obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
        revision = f"sha256:{digest}"
        file_name = f"index-{digest}.yaml"
        try:
            record = await self.store.store_file_async(STORAGE_KIND, ns, name, file_name,
                                                       data, revision=revision)
        except (OSError, ValueError) as exc:
            raise StepError(f"unable to save artifact to storage: {exc}",
                            reason=ARCHIVE_FAILED, condition=STORAGE_FAILED) from exc
        patcher.set_field("artifact", {
            "path": record.path, "url": record.url, "revision": revision,
            "digest": record.digest, "lastUpdateTime": rfc3339(record.last_update_time),
            "size": record.size})
        try:
            patcher.set_field("url", await self.store.symlink_async(
                STORAGE_KIND, ns, name, INDEX_LINK, file_name))
        except OSError as exc:
            await self.recorder.event(obj, reason="SymlinkUpdateFailed",
                                      message=f"failed to update status URL symlink: {exc}",
                                      trace=True)
        patcher.delete_condition(STORAGE_FAILED)
        self._mark_stored(patcher, revision)
        await self.gc(obj, record.path)
        artifact = patcher.get_field("artifact")
        if ((obj.get("status") or {}).get("artifact") or {}).get("digest") == record.digest:
            return None  # the same file again (it had gone from storage)
        return NewArtifact(self._fetched_message(obj, artifact), revision, record.digest)

    # --- helpers ----------------------------------------------------------------------

    @staticmethod
    def _mark_stored(patcher: StatusPatcher, revision: str) -> None:
        patcher.delete_condition(ARTIFACT_OUTDATED)
        patcher.mark_true(ARTIFACT_IN_STORAGE, cond.SUCCEEDED_REASON,
                          _stored_message(revision))

    @staticmethod
    def _stall(patcher: StatusPatcher, message: str) -> NoReturn:
        patcher.mark_true(FETCH_FAILED, URL_INVALID, message)
        raise StallingError(message, reason=URL_INVALID)

    async def _make_static(self, obj: Obj) -> None:
        """An ``oci`` repository holds data only (Flux's ``migrationToStatic``): remove
        what a ``default`` life left — artifacts, status, finalizer — once."""
        meta = obj["metadata"]
        ns, name = meta.get("namespace", ""), meta["name"]
        if (obj.get("spec") or {}).get("suspend") and not meta.get("deletionTimestamp"):
            return
        status = obj.get("status") or {}
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER not in finalizers and _empty_status(status):
            return
        await self.forget(ObjectKey(KIND, ns, name))
        with contextlib.suppress(NotFound):
            if status:
                await self.client.patch_status(API_VERSION, KIND, name,
                                               {"status": dict.fromkeys(status)}, ns)
            if FINALIZER in finalizers:
                kept = [f for f in finalizers if f != FINALIZER]
                await self.client.merge_patch(API_VERSION, KIND, name,
                                              {"metadata": {"finalizers": kept or None}}, ns)


# --------------------------------------------------------------------------- credentials


async def client_options(reconciler: SourceReconciler, repo: Obj, fetch_timeout: float
                         ) -> tuple[helmgetter.ClientOptions, ssl.SSLContext | None]:
    """Client options from a HelmRepository's Secrets (also what a HelmChart pulls its
    chart with); AuthenticationFailed when they are missing or unusable."""
    ns = repo["metadata"].get("namespace", "")
    spec = repo.get("spec") or {}
    cert = await _secret(reconciler, ns, spec.get("certSecretRef"),
                         "TLS authentication secret")
    auth = await _secret(reconciler, ns, spec.get("secretRef"), "authentication secret")
    try:
        options = helmgetter.ClientOptions.from_secrets(
            timeout=fetch_timeout, pass_credentials=bool(spec.get("passCredentials")),
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


async def _secret(reconciler: SourceReconciler, namespace: str, ref: Obj | None,
                  what: str) -> tuple[str, str, dict[str, bytes]] | None:
    """(name, type, data) of a referenced Secret, read on demand, in Flux's words when it
    cannot be read."""
    name = (ref or {}).get("name")
    if not name:
        return None
    try:
        secret = await reconciler.client.get("v1", "Secret", name, namespace)
    except NotFound as exc:
        raise StepError(f"failed to get {what} '{namespace}/{name}': secrets \"{name}\" "
                        "not found", reason=AUTHENTICATION_FAILED,
                        condition=FETCH_FAILED) from exc
    except KubeError as exc:
        raise StepError(f"failed to get {what} '{namespace}/{name}': {exc}",
                        reason=AUTHENTICATION_FAILED, condition=FETCH_FAILED) from exc
    return str(name), str(secret.get("type") or ""), reconciler.secret_data(secret)
