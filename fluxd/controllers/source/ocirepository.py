"""The OCIRepository reconciler: an OCI artifact's layer in, an artifact out.

Ref resolution follows Flux: ``digest`` → ``semver`` (tags filtered by ``semverFilter``,
highest match) → ``tag`` (default ``latest``); the revision is ``<tag>@sha256:<hex>``
(``sha256:<hex>`` for a digest ref). One manifest HEAD answers "has anything changed?": an
unchanged revision with the same ``ignore`` and ``layerSelector`` and the file in storage
fetches nothing. Otherwise the selected layer (``layerSelector.mediaType``, else the
first) is streamed with digest verification and either extracted (safely), filtered by
the ignore rules and re-archived (``extract``, the default) or stored as it is
(``copy``). The manifest's annotations become ``artifact.metadata``; the
``org.opencontainers.image.revision``/``source`` annotations also go into the
``NewArtifact`` event as Flux's ``originRevision``/``originSource``.

Credentials: a ``kubernetes.io/dockerconfigjson`` Secret (``secretRef``), a TLS Secret
(``certSecretRef``: ``ca.crt``, ``tls.crt``, ``tls.key``); ``insecure`` allows plain HTTP.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from fluxd import regex, semver
from fluxd.artifacts.extract import ExtractError, extract_tarball
from fluxd.artifacts.ignore import source_matcher
from fluxd.artifacts.storage import ArchiveError, ArtifactRecord
from fluxd.clock import rfc3339
from fluxd.config import parse_duration
from fluxd.controllers.source.driver import (
    ARTIFACT_IN_STORAGE,
    ARTIFACT_OUTDATED,
    FETCH_FAILED,
    STORAGE_FAILED,
    NewArtifact,
    SourceReconciler,
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
from fluxd.runtime.reconcile import StallingError
from fluxd.runtime.status import StatusPatcher

KIND = "OCIRepository"
STORAGE_KIND = "ocirepository"
SOURCE_VERIFIED = "SourceVerified"
OWNED = (cond.READY, cond.RECONCILING, cond.STALLED, FETCH_FAILED, STORAGE_FAILED,
         ARTIFACT_OUTDATED, ARTIFACT_IN_STORAGE, SOURCE_VERIFIED)
NEGATIVE = (FETCH_FAILED, STORAGE_FAILED, ARTIFACT_OUTDATED)
PULL_FAILED = "OCIArtifactPullFailed"
LAYER_FAILED = "OCIArtifactLayerOperationFailed"
#: the largest layer pulled (the artifact store's extraction limit is the same)
MAX_LAYER_BYTES = 100 * 1024 * 1024

Obj = dict[str, Any]


class OCIRepositoryReconciler(SourceReconciler):
    KIND = KIND
    STORAGE_KIND = STORAGE_KIND
    OWNED = OWNED
    NEGATIVE = NEGATIVE

    async def steps(self, obj: Obj, patcher: StatusPatcher) -> NewArtifact | None:
        meta, spec = obj["metadata"], obj.get("spec") or {}
        ns, name = meta.get("namespace", ""), meta["name"]
        url = spec.get("url", "")
        if spec.get("provider") not in (None, "generic"):
            raise StallingError(f"provider '{spec.get('provider')}' is not supported by fluxd",
                                reason="InvalidProviderConfiguration")
        if spec.get("verify"):
            raise StallingError("signature verification (spec.verify) is not supported by "
                                "fluxd yet", reason="VerificationError")
        try:
            ref = Reference.parse(url)
        except InvalidReferenceError as exc:
            raise StallingError(f"URL validation failed for '{strip_url_credentials(url)}': "
                                f"{exc}", reason="URLInvalid") from exc
        stored = patcher.get_field("artifact")
        have_file = bool(stored) and await self.artifact_intact(obj, stored)
        timeout = parse_duration(spec.get("timeout", "60s"))
        selector = dict(spec.get("layerSelector") or {})
        ignore = spec.get("ignore")
        async with await self._client(ns, spec, ref, timeout) as client:
            tag, digest = await self._resolve(client, ref, spec.get("ref") or {})
            revision = oci_artifact.revision(tag or None, digest)
            unchanged = (have_file and stored.get("revision") == revision
                         and patcher.get_field("observedIgnore") == ignore
                         and (patcher.get_field("observedLayerSelector") or {}) == selector)
            if unchanged:
                patcher.mark_true(ARTIFACT_IN_STORAGE, "Succeeded",
                                  f"stored artifact for revision '{revision}'")
                patcher.delete_condition(ARTIFACT_OUTDATED)
                patcher.delete_condition(FETCH_FAILED)
                return None
            if stored:
                patcher.mark_true(ARTIFACT_OUTDATED, "NewRevision",
                                  f"new revision '{revision}' for '{url}'")
            patcher.mark_reconciling("Progressing",
                                     f"building artifact: new revision '{revision}' for "
                                     f"'{url}'")
            with tempfile.TemporaryDirectory(prefix="fluxd-oci-") as tmp:
                work = Path(tmp)
                manifest = await self._pull(client, ref, digest, selector, work / "layer")
                patcher.delete_condition(FETCH_FAILED)
                record = await self._store(ns, name, digest, selector, ignore, work,
                                           revision)
        annotations = dict(manifest.content.get("annotations") or {})
        artifact: Obj = {"path": record.path, "url": record.url, "revision": revision,
                         "digest": record.digest,
                         "lastUpdateTime": rfc3339(record.last_update_time),
                         "size": record.size}
        if annotations:
            artifact["metadata"] = annotations
        changed = not stored or stored.get("digest") != record.digest
        patcher.set_field("artifact", artifact)
        patcher.set_field("url", record.url)
        patcher.set_field("observedIgnore", ignore)
        patcher.set_field("observedLayerSelector", selector or None)
        message = f"stored artifact for revision '{revision}'"
        patcher.mark_true(ARTIFACT_IN_STORAGE, "Succeeded", message)
        for stale in (ARTIFACT_OUTDATED, STORAGE_FAILED, cond.RECONCILING):
            patcher.delete_condition(stale)
        await self.gc(obj, record.path)
        if not changed:
            return None
        origin = {}
        if annotations.get(oci_artifact.REVISION_ANNOTATION):
            origin["originRevision"] = annotations[oci_artifact.REVISION_ANNOTATION]
        if annotations.get(oci_artifact.SOURCE_ANNOTATION):
            origin["originSource"] = annotations[oci_artifact.SOURCE_ANNOTATION]
        return NewArtifact(f"stored artifact with revision '{revision}' from "
                           f"'{strip_url_credentials(url)}'", revision, record.digest, origin)

    async def _client(self, namespace: str, spec: Obj, ref: Reference,
                      limit: float) -> RegistryClient:
        """A registry client with the object's credentials; ``limit`` bounds each call."""
        keychain = None
        if (spec.get("secretRef") or {}).get("name"):
            secret = await self.secret(namespace, spec["secretRef"]["name"])
            try:
                keychain = Keychain.from_secret(secret)
            except (OCIError, ValueError) as exc:
                raise StepError(f"invalid registry credentials secret: {exc}",
                                reason="AuthenticationFailed", condition=FETCH_FAILED) from exc
        context = None
        if (spec.get("certSecretRef") or {}).get("name"):
            data = self.secret_data(await self.secret(namespace, spec["certSecretRef"]["name"]))
            try:
                context = tls_context(ca_pem=data.get("ca.crt"), cert_pem=data.get("tls.crt"),
                                      key_pem=data.get("tls.key"))
            except (OSError, ValueError) as exc:
                raise StepError(f"invalid TLS secret: {exc}", reason="AuthenticationFailed",
                                condition=FETCH_FAILED) from exc
        return RegistryClient(registry=ref.registry, clock=self.clock, keychain=keychain,
                              insecure=bool(spec.get("insecure")), ssl_context=context,
                              timeout=limit)

    async def _resolve(self, client: RegistryClient, ref: Reference,
                       spec_ref: Obj) -> tuple[str, str]:
        """(tag or "", manifest digest) in Flux's precedence: digest → semver → tag."""
        repo = ref.repository
        try:
            if spec_ref.get("digest"):
                return "", str(spec_ref["digest"])
            if spec_ref.get("semver"):
                tags = await client.tags(repo)
                pattern = spec_ref.get("semverFilter")
                if pattern:
                    try:
                        tag_filter = regex.compile(str(pattern))
                    except regex.RegexError as exc:
                        raise StallingError(f"failed to compile regex '{pattern}': {exc}",
                                            reason="InvalidSemverFilter") from exc
                    tags = [t for t in tags if tag_filter.search(t)]
                try:
                    found = semver.latest(((t, t) for t in tags), spec_ref["semver"])
                except semver.SemverError as exc:
                    raise StallingError(f"semver parse error: {exc}",
                                        reason="InvalidSemver") from exc
                if found is None:
                    raise StepError(f"no match found for semver: {spec_ref['semver']}",
                                    reason="ReadOperationFailed", condition=FETCH_FAILED)
                tag = found[1]
            else:
                tag = str(spec_ref.get("tag") or ref.tag or "latest")
            return tag, await client.resolve(repo, tag)
        except UnauthorizedError as exc:
            raise StepError(f"failed to determine artifact digest: {exc}",
                            reason="AuthenticationFailed", condition=FETCH_FAILED) from exc
        except OCIError as exc:
            raise StepError(f"failed to determine artifact digest: {exc}",
                            reason=PULL_FAILED, condition=FETCH_FAILED) from exc

    async def _pull(self, client: RegistryClient, ref: Reference, digest: str,
                    selector: Obj, dest: Path) -> Any:
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
        return manifest

    async def _store(self, namespace: str, name: str, digest: str, selector: Obj,
                     ignore: str | None, work: Path, revision: str) -> ArtifactRecord:
        try:
            if selector.get("operation") == "copy":
                return await self.store.store_file_async(
                    STORAGE_KIND, namespace, name, f"{digest}.tgz", work / "layer",
                    revision=revision)
            try:
                await asyncio.to_thread(extract_tarball, work / "layer", work / "content")
            except (ExtractError, OSError) as exc:
                raise StepError(f"failed to extract layer contents from artifact: {exc}",
                                reason=LAYER_FAILED, condition=FETCH_FAILED) from exc
            matcher = source_matcher(work / "content", ignore)
            return await self.store.archive_async(
                STORAGE_KIND, namespace, name, work / "content", f"{digest}.tar.gz",
                ignore=matcher, revision=revision)
        except (ArchiveError, OSError) as exc:
            raise StepError(f"failed to archive artifact: {exc}",
                            reason="ArchiveOperationFailed", condition=STORAGE_FAILED) from exc

