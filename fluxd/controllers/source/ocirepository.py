"""The OCIRepository reconciler: an OCI artifact's layer in, an artifact out.

It runs on the runtime's one driver (``SourceReconciler``: finalizer, suspend, steps,
shielded status summary and patch, bus, events). Flux's steps, in Flux's order, after a
check of what fluxd does not serve yet (a cloud ``provider``, ``verify``: they stall):

- **storage** (shared): a recorded artifact whose file is missing or no longer has its
  digest (a torn write) is dropped from the status and pulled again; old files are
  garbage-collected; ``status.url`` follows the artifact's URL.
- **source**: ref resolution follows Flux: ``digest`` → ``semver`` (tags filtered by
  ``semverFilter``, highest match) → ``tag`` (default ``latest``); the revision is
  ``<tag>@sha256:<hex>`` (``sha256:<hex>`` for a digest ref). One manifest HEAD answers
  "has anything changed?": an unchanged revision with the same ``ignore`` and
  ``layerSelector`` fetches nothing. Otherwise the selected layer
  (``layerSelector.mediaType``, else the first) is streamed with digest verification into
  the reconcile's temporary directory and, for ``extract`` (the default), extracted
  (safely).
- **artifact**: the extracted content, filtered by the ignore rules, archived — or, for
  ``copy``, the layer as it is — stored, recorded in ``status.artifact`` and published on
  the artifact bus after the status write. The manifest's annotations become
  ``artifact.metadata``; the ``org.opencontainers.image.revision``/``source`` annotations
  also go into the ``NewArtifact`` event as Flux's ``originRevision``/``originSource``.

Credentials: a ``kubernetes.io/dockerconfigjson`` Secret (``secretRef``), a TLS Secret
(``certSecretRef``: ``ca.crt``, ``tls.crt``, ``tls.key``); ``insecure`` allows plain HTTP.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluxd import regex, semver
from fluxd.api.source import API_VERSION, OCIRepositoryRef, OCIRepositorySpec
from fluxd.artifacts.extract import ExtractError, extract_tarball
from fluxd.artifacts.ignore import source_matcher
from fluxd.artifacts.storage import ArchiveError, ArtifactRecord
from fluxd.clock import rfc3339
from fluxd.config import parse_duration
from fluxd.controllers.source.reconciler import (
    ARTIFACT_IN_STORAGE,
    ARTIFACT_OUTDATED,
    FETCH_FAILED,
    STORAGE_FAILED,
    NewArtifact,
    SourceReconciler,
    SourceRun,
    StepError,
)
from fluxd.logging import strip_url_credentials
from fluxd.oci import artifact as oci_artifact
from fluxd.oci.auth import Keychain
from fluxd.oci.client import (
    BlobTooLargeError,
    DigestMismatchError,
    InvalidReferenceError,
    OCIError,
    Reference,
    RegistryClient,
    UnauthorizedError,
    tls_context,
)
from fluxd.runtime import conditions as cond
from fluxd.runtime.driver import Step
from fluxd.runtime.reconcile import StallingError

KIND = "OCIRepository"
STORAGE_KIND = "ocirepository"
SOURCE_VERIFIED = "SourceVerified"
#: Flux's summarize order for OCIRepository (ociRepositoryReadyCondition): a failure's own
#: condition gives Ready its reason and message before Stalled and Reconciling do
OWNED = (STORAGE_FAILED, FETCH_FAILED, ARTIFACT_OUTDATED, ARTIFACT_IN_STORAGE,
         SOURCE_VERIFIED, cond.STALLED, cond.RECONCILING, cond.READY)
NEGATIVE = (STORAGE_FAILED, FETCH_FAILED, ARTIFACT_OUTDATED)
PULL_FAILED = "OCIArtifactPullFailed"
LAYER_FAILED = "OCIArtifactLayerOperationFailed"
COPY = "copy"
#: the largest layer pulled (the artifact store's extraction limit is the same)
MAX_LAYER_BYTES = 100 * 1024 * 1024

Obj = dict[str, Any]


@dataclass
class OCIRun(SourceRun[OCIRepositorySpec]):
    """What the OCIRepository steps hand each other."""

    #: ``spec.timeout`` in seconds: bounds each registry call
    timeout: float = 60.0
    #: ``spec.layerSelector`` as stored in ``status.observedLayerSelector``
    selector: Obj = field(default_factory=dict)
    #: the revision the ref resolves to, and the manifest digest in it
    revision: str = ""
    digest: str = ""
    #: the stored artifact is that revision, built with the same ignore and selector
    unchanged: bool = False
    #: the pulled manifest's annotations
    annotations: dict[str, str] = field(default_factory=dict)
    #: the reconcile's temporary directory: ``layer`` (the blob), ``content`` (extracted)
    work: Path = field(default_factory=Path)


@dataclass
class OCIRepositoryReconciler(SourceReconciler[OCIRepositorySpec, OCIRun]):
    API_VERSION = API_VERSION
    KIND = KIND
    SPEC = OCIRepositorySpec
    RUN = OCIRun
    STORAGE_KIND = STORAGE_KIND
    OWNED = OWNED
    NEGATIVE = NEGATIVE

    def steps(self) -> list[Step[OCIRun]]:
        return [self.check_spec, self.reconcile_storage, self.reconcile_source,
                self.reconcile_artifact]

    def run_fields(self, obj: Obj, spec: OCIRepositorySpec, started: float) -> dict[str, Any]:
        selector = spec.layer_selector.to_json() if spec.layer_selector is not None else {}
        return {"timeout": parse_duration(spec.timeout), "selector": selector}

    # --- steps ------------------------------------------------------------------------

    async def check_spec(self, run: OCIRun) -> None:
        """What fluxd cannot serve stalls the object (retrying cannot help)."""
        spec = run.spec
        if spec.provider != "generic":
            raise StallingError(f"provider '{spec.provider}' is not supported by fluxd",
                                reason="InvalidProviderConfiguration")
        if spec.verify is not None:
            raise StallingError("signature verification (spec.verify) is not supported by "
                                "fluxd yet", reason="VerificationError")

    async def reconcile_storage(self, run: OCIRun) -> None:
        """The shared storage step; ``status.url`` is the artifact's own URL here (no
        link), so it follows the artifact's."""
        await super().reconcile_storage(run)
        artifact = run.patcher.get_field("artifact")
        if artifact and run.patcher.get_field("url"):
            run.patcher.set_field("url", artifact["url"])

    async def reconcile_source(self, run: OCIRun) -> None:
        """Resolve the ref; when the revision or the content configuration changed, pull
        the selected layer (and extract it) into the temporary directory."""
        spec, patcher = run.spec, run.patcher
        url = spec.url
        try:
            ref = Reference.parse(url)
        except InvalidReferenceError as exc:
            raise StallingError(f"URL validation failed for '{strip_url_credentials(url)}': "
                                f"{exc}", reason="URLInvalid") from exc
        async with await self._client(run.namespace, spec, ref, run.timeout) as client:
            tag, run.digest = await self._resolve(client, ref, spec.ref)
            revision = run.revision = oci_artifact.revision(tag or None, run.digest)
            stored = patcher.get_field("artifact")
            run.unchanged = (bool(stored) and stored.get("revision") == revision
                             and patcher.get_field("observedIgnore") == spec.ignore
                             and (patcher.get_field("observedLayerSelector") or {})
                             == run.selector)
            if run.unchanged:
                patcher.mark_true(ARTIFACT_IN_STORAGE, "Succeeded",
                                  f"stored artifact for revision '{revision}'")
                patcher.delete_condition(ARTIFACT_OUTDATED)
                patcher.delete_condition(FETCH_FAILED)
                await self.trace(run.obj, reason="ArtifactUpToDate",
                                 message=f"artifact up-to-date with remote revision: "
                                         f"'{revision}'")
                return
            if stored:
                patcher.mark_true(ARTIFACT_OUTDATED, "NewRevision",
                                  f"new revision '{revision}' for '{url}'")
            patcher.mark_reconciling("Progressing",
                                     f"building artifact: new revision '{revision}' for "
                                     f"'{url}'")
            run.work = Path(run.resources.enter_context(
                tempfile.TemporaryDirectory(prefix="fluxd-oci-")))
            run.annotations = await self._pull(client, ref, run.digest, run.selector,
                                               run.work / "layer")
        if run.selector.get("operation") != COPY:
            try:
                await asyncio.to_thread(extract_tarball, run.work / "layer",
                                        run.work / "content")
            except (ExtractError, OSError) as exc:
                raise StepError(f"failed to extract layer contents from artifact: {exc}",
                                reason=LAYER_FAILED, condition=FETCH_FAILED) from exc
        patcher.delete_condition(FETCH_FAILED)

    async def reconcile_artifact(self, run: OCIRun) -> None:
        """Archive the extracted content (or store the copied layer) and record it."""
        if run.unchanged:
            return
        spec, patcher, revision, annotations = run.spec, run.patcher, run.revision, \
            run.annotations
        record = await self._store(run)
        artifact: Obj = {"path": record.path, "url": record.url, "revision": revision,
                         "digest": record.digest,
                         "lastUpdateTime": rfc3339(record.last_update_time),
                         "size": record.size}
        if annotations:
            artifact["metadata"] = annotations
        patcher.set_field("artifact", artifact)
        patcher.set_field("url", record.url)
        patcher.set_field("observedIgnore", spec.ignore)
        patcher.set_field("observedLayerSelector", run.selector or None)
        patcher.mark_true(ARTIFACT_IN_STORAGE, "Succeeded",
                          f"stored artifact for revision '{revision}'")
        for stale in (ARTIFACT_OUTDATED, STORAGE_FAILED, cond.RECONCILING):
            patcher.delete_condition(stale)
        await self.gc(run.obj, record.path)
        if ((run.obj.get("status") or {}).get("artifact") or {}).get("digest") \
                == record.digest:
            return  # the same file again (it had gone from storage)
        origin = {}
        if annotations.get(oci_artifact.REVISION_ANNOTATION):
            origin["originRevision"] = annotations[oci_artifact.REVISION_ANNOTATION]
        if annotations.get(oci_artifact.SOURCE_ANNOTATION):
            origin["originSource"] = annotations[oci_artifact.SOURCE_ANNOTATION]
        run.new = NewArtifact(f"stored artifact with revision '{revision}' from "
                              f"'{strip_url_credentials(spec.url)}'", revision,
                              record.digest, origin)

    # --- helpers ----------------------------------------------------------------------

    async def _client(self, namespace: str, spec: OCIRepositorySpec, ref: Reference,
                      limit: float) -> RegistryClient:
        """A registry client with the object's credentials; ``limit`` bounds each call."""
        keychain = None
        if spec.secret_ref is not None and spec.secret_ref.name:
            secret = await self.secret(namespace, spec.secret_ref.name)
            try:
                keychain = Keychain.from_secret(secret)
            except (OCIError, ValueError) as exc:
                raise StepError(f"invalid registry credentials secret: {exc}",
                                reason="AuthenticationFailed", condition=FETCH_FAILED) from exc
        context = None
        if spec.cert_secret_ref is not None and spec.cert_secret_ref.name:
            data = self.secret_data(await self.secret(namespace, spec.cert_secret_ref.name))
            try:
                context = tls_context(ca_pem=data.get("ca.crt"), cert_pem=data.get("tls.crt"),
                                      key_pem=data.get("tls.key"))
            except (OSError, ValueError) as exc:
                raise StepError(f"invalid TLS secret: {exc}", reason="AuthenticationFailed",
                                condition=FETCH_FAILED) from exc
        return RegistryClient(registry=ref.registry, clock=self.clock, keychain=keychain,
                              insecure=bool(spec.insecure), ssl_context=context,
                              timeout=limit)

    async def _resolve(self, client: RegistryClient, ref: Reference,
                       spec_ref: OCIRepositoryRef | None) -> tuple[str, str]:
        """(tag or "", manifest digest) in Flux's precedence: digest → semver → tag."""
        repo = ref.repository
        wanted = spec_ref if spec_ref is not None else OCIRepositoryRef()
        try:
            if wanted.digest:
                return "", wanted.digest
            if wanted.semver:
                tags = await client.tags(repo)
                pattern = wanted.semver_filter
                if pattern:
                    try:
                        tag_filter = regex.compile(pattern)
                    except regex.RegexError as exc:
                        raise StallingError(f"failed to compile regex '{pattern}': {exc}",
                                            reason="InvalidSemverFilter") from exc
                    tags = [t for t in tags if tag_filter.search(t)]
                try:
                    found = semver.latest(((t, t) for t in tags), wanted.semver)
                except semver.SemverError as exc:
                    raise StallingError(f"semver parse error: {exc}",
                                        reason="InvalidSemver") from exc
                if found is None:
                    raise StepError(f"no match found for semver: {wanted.semver}",
                                    reason="ReadOperationFailed", condition=FETCH_FAILED)
                tag = found[1]
            else:
                tag = wanted.tag or ref.tag or "latest"
            return tag, await client.resolve(repo, tag)
        except UnauthorizedError as exc:
            raise StepError(f"failed to determine artifact digest: {exc}",
                            reason="AuthenticationFailed", condition=FETCH_FAILED) from exc
        except OCIError as exc:
            raise StepError(f"failed to determine artifact digest: {exc}",
                            reason=PULL_FAILED, condition=FETCH_FAILED) from exc

    async def _pull(self, client: RegistryClient, ref: Reference, digest: str,
                    selector: Obj, dest: Path) -> dict[str, str]:
        """The selected layer of the manifest at ``digest`` into ``dest``; the manifest's
        annotations."""
        repo = ref.repository
        try:
            manifest = await client.image_manifest(repo, digest)
            layer = oci_artifact.select_layer(manifest.content,
                                              str(selector.get("mediaType") or ""))
            await client.blob(repo, layer.digest, dest, max_size=MAX_LAYER_BYTES)
        except oci_artifact.ArtifactError as exc:
            raise StepError(str(exc), reason=LAYER_FAILED, condition=FETCH_FAILED) from exc
        except UnauthorizedError as exc:
            raise StepError(f"failed to pull artifact: {exc}", reason="AuthenticationFailed",
                            condition=FETCH_FAILED) from exc
        except (DigestMismatchError, BlobTooLargeError, OCIError) as exc:
            raise StepError(f"failed to pull artifact: {exc}", reason=PULL_FAILED,
                            condition=FETCH_FAILED) from exc
        return dict(manifest.content.get("annotations") or {})

    async def _store(self, run: OCIRun) -> ArtifactRecord:
        ns, name, work, digest = run.namespace, run.name, run.work, run.digest
        try:
            if run.selector.get("operation") == COPY:
                return await self.store.store_file_async(
                    STORAGE_KIND, ns, name, f"{digest}.tgz", work / "layer",
                    revision=run.revision)
            matcher = source_matcher(work / "content", run.spec.ignore)
            return await self.store.archive_async(
                STORAGE_KIND, ns, name, work / "content", f"{digest}.tar.gz",
                ignore=matcher, revision=run.revision)
        except (ArchiveError, OSError) as exc:
            raise StepError(f"failed to archive artifact: {exc}",
                            reason="ArchiveOperationFailed", condition=STORAGE_FAILED) from exc
