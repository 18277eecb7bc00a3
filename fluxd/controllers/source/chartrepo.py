"""The repositories a HelmChart pulls charts from, as Flux's ``internal/helm/repository``
sees them: a Helm repository over HTTP(S) and an OCI registry.

Contract (one interface, ``Remote``):

- ``get_chart_version(name, version)`` resolves a chart version. ``HTTPChartRepository``
  reads the repository's index — the HelmRepository's stored artifact when there is one,
  else fetched from ``<url>/index.yaml`` with the repository's credentials — and selects
  with ``helmindex.select_version``. ``OCIChartRepository`` takes a version that parses
  as SemVer (Flux's ``ParseVersion``) as the tag without listing tags, and otherwise
  lists the tags of ``<url>/<name>`` (Helm stores ``+`` as ``_`` in tags) and picks the
  highest satisfying the constraint.
- ``download_chart(chart, dest)`` writes the chart archive to ``dest``: ``urls[0]``
  resolved against the repository URL and fetched with the repository's credentials
  (sent to other hosts only with ``passCredentials``), checked against the index's
  ``digest`` when it has one; or the chart layer
  (``application/vnd.cncf.helm.chart.content.v1.tar+gzip``) of the OCI manifest, verified
  against its digest. Both are bounded by the chart size limit.
- Errors: ``ChartReferenceError`` when the repository answered and has no such chart
  (Flux's ``ErrReference``), ``RepositoryError`` when the repository could not be read
  (Flux's ``ErrExternal``). Messages carry no credentials.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fluxd import semver
from fluxd.clock import Clock
from fluxd.controllers.source import helmgetter, helmindex
from fluxd.logging import strip_url_credentials
from fluxd.oci.artifact import HELM_CHART_CONTENT_MEDIA_TYPE, ArtifactError, layers_of
from fluxd.oci.auth import Keychain
from fluxd.oci.client import OCIError, Reference, RegistryClient

__all__ = ["ChartRef", "ChartReferenceError", "HTTPChartRepository", "OCIChartRepository",
           "Remote", "RepositoryError"]

#: the layer Helm wrote before OCI support left experimental; Helm still reads it
LEGACY_CHART_LAYER_MEDIA_TYPE = "application/tar+gzip"


class ChartReferenceError(LookupError):
    """The repository has no chart answering the reference."""


class RepositoryError(Exception):
    """The repository could not be read."""


@dataclass(frozen=True)
class ChartRef:
    """A resolved chart version (the parts of Helm's ``repo.ChartVersion`` Flux uses)."""

    name: str
    version: str
    urls: tuple[str, ...]
    digest: str = ""


class Remote(Protocol):
    async def get_chart_version(self, name: str, version: str) -> ChartRef: ...

    async def download_chart(self, chart: ChartRef, dest: Path) -> None: ...


@dataclass
class HTTPChartRepository:
    """A Helm repository at ``url`` (normalized: one trailing slash)."""

    url: str
    options: helmgetter.ClientOptions
    context: ssl.SSLContext | None = None
    #: the HelmRepository's stored index, if any; else the index is fetched
    index_path: Path | None = None
    index_max_size: int = 50 << 20
    chart_max_size: int = 10 << 20
    _data: bytes | None = field(default=None, init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    async def _index_bytes(self) -> bytes:
        async with self._lock:
            if self._data is None:
                self._data = await self._read_index()
            return self._data

    async def _read_index(self) -> bytes:
        if self.index_path is not None:
            def read(path: Path) -> bytes:
                size = path.stat().st_size
                if size > self.index_max_size:
                    raise RepositoryError(f"{path.name} exceeds the maximum index file size "
                                          f"of {self.index_max_size} bytes")
                return path.read_bytes()

            try:
                return await asyncio.to_thread(read, self.index_path)
            except OSError as exc:
                raise RepositoryError(f"failed to load index: {exc.strerror or exc}") from None
        try:
            href = helmgetter.index_url(self.url)
            return await helmgetter.fetch(href, self.options, base_url=self.url,
                                          context=self.context,
                                          max_size=self.index_max_size)
        except (helmgetter.InvalidURL, helmgetter.FetchError) as exc:
            raise RepositoryError(f"failed to cache index: failed to cache index to "
                                  f"temporary file: {exc}") from None

    async def get_chart_version(self, name: str, version: str) -> ChartRef:
        data = await self._index_bytes()
        try:
            index = await asyncio.to_thread(helmindex.load_index, data, keep=(name,))
        except helmindex.InvalidIndex as exc:
            raise RepositoryError(f"failed to load index: {exc}") from None
        try:
            found = helmindex.select_version(index, name, version)
        except helmindex.ChartNotFound as exc:
            raise ChartReferenceError(str(exc)) from None
        urls = found.get("urls") or []
        return ChartRef(name=str(found.get("name") or name), version=str(found["version"]),
                        urls=tuple(str(u) for u in urls if isinstance(u, str)),
                        digest=str(found.get("digest") or ""))

    async def download_chart(self, chart: ChartRef, dest: Path) -> None:
        if not chart.urls:
            raise RepositoryError(f"chart '{chart.name}' has no downloadable URLs")
        href = helmgetter.resolve_reference(self.url, chart.urls[0])
        try:
            data = await helmgetter.fetch(href, self.options, base_url=self.url,
                                          context=self.context, max_size=self.chart_max_size,
                                          what="chart")
        except helmgetter.FetchError as exc:
            raise RepositoryError(str(exc)) from None
        if chart.digest:
            got = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
            want = chart.digest.removeprefix("sha256:")
            if got != want:
                raise RepositoryError(f"chart '{chart.name}' version '{chart.version}' from "
                                      f"{strip_url_credentials(href)} has digest sha256:{got},"
                                      f" the index says sha256:{want}")
        await asyncio.to_thread(dest.write_bytes, data)


@dataclass
class OCIChartRepository:
    """Charts under ``url`` (``oci://host[:port]/path``, no trailing slash) in a registry."""

    url: str
    clock: Clock
    keychain: Keychain | None = None
    insecure: bool = False
    ssl_context: ssl.SSLContext | None = None
    timeout: float = 60.0
    chart_max_size: int = 10 << 20

    def _reference(self, name: str) -> Reference:
        try:
            return Reference.parse(f"{self.url.rstrip('/')}/{name}")
        except OCIError as exc:
            raise RepositoryError(str(exc)) from None

    def _client(self, ref: Reference) -> RegistryClient:
        return RegistryClient(registry=ref.registry, clock=self.clock, keychain=self.keychain,
                              insecure=self.insecure, ssl_context=self.ssl_context,
                              timeout=self.timeout)

    async def get_chart_version(self, name: str, version: str) -> ChartRef:
        ref = self._reference(name)
        chart_url = ref.url
        try:
            semver.parse_tag(version)
        except semver.SemverError:
            pass
        else:  # a concrete version: no need to list the tags
            return ChartRef(name=name, version=version, urls=(f"{chart_url}:{version}",))
        try:
            async with self._client(ref) as client:
                tags = [t.replace("_", "+") for t in await client.tags(ref.repository)]
        except OCIError as exc:
            raise RepositoryError(f"could not get tags for \"{name}\": could not fetch tags "
                                  f"for \"{chart_url}\": {exc}") from None
        if not tags:
            raise RepositoryError(f"could not get tags for \"{name}\": unable to locate any "
                                  f"tags in provided repository: {chart_url}")
        tag = _matching_tag(tags, version)
        return ChartRef(name=name, version=tag, urls=(f"{chart_url}:{tag}",))

    async def download_chart(self, chart: ChartRef, dest: Path) -> None:
        if not chart.urls:
            raise RepositoryError(f"chart '{chart.name}' has no downloadable URLs")
        url = chart.urls[0]
        where, _, tag = url.rpartition(":")
        try:
            ref = Reference.parse(f"{where}:{tag.replace('+', '_')}")
            async with self._client(ref) as client:
                manifest = await client.image_manifest(ref.repository, ref.identifier)
                layer = next((d for d in layers_of(manifest.content) if d.media_type in (
                    HELM_CHART_CONTENT_MEDIA_TYPE, LEGACY_CHART_LAYER_MEDIA_TYPE)), None)
                if layer is None:
                    raise RepositoryError(
                        f"failed to get '{url}': manifest does not contain a layer with "
                        f"mediatype {HELM_CHART_CONTENT_MEDIA_TYPE}")
                await client.blob(ref.repository, layer.digest, dest,
                                  max_size=self.chart_max_size)
        except (OCIError, ArtifactError) as exc:
            raise RepositoryError(f"failed to get '{url}': {exc}") from None


def _matching_tag(tags: list[str], version: str) -> str:
    """Flux's ``getLastMatchingVersionOrConstraint``: an exact tag, else the highest tag
    satisfying the constraint (``""``/``*``: the latest stable)."""
    if version and version in tags:
        return version
    wanted = "*" if version in ("", "*") else version
    try:
        constraints = semver.parse_constraints(wanted)
    except semver.SemverError as exc:
        raise RepositoryError(str(exc)) from None
    found = semver.latest(((t, t) for t in tags), constraints)
    if found is None:
        raise RepositoryError("could not locate a version matching provided version string "
                              f"{version}")
    return found[1]
