"""An OCI distribution (registry API v2) client over aiohttp.

Contract:

* :class:`Reference` parses ``[oci://]host[:port]/repo[:tag][@digest]`` the way
  go-containerregistry's ``name`` package does: a first component with a ``.`` or ``:``
  or ``localhost`` is the registry, anything else is Docker Hub (``library/`` added to a
  one-part name).
* A :class:`RegistryClient` talks to one registry. ``insecure`` means plain HTTP; without
  it the client speaks HTTPS (the system CAs, or the given ``ssl_context`` for a custom CA
  or a client certificate), except to loopback hosts (``localhost``, ``127.0.0.0/8``,
  ``[::1]``) without an ``ssl_context``, which go-containerregistry also reaches over HTTP.
  Environment proxies are not used; ``proxy`` sets one.
* Every request carries the scope it needs (``repository:<repo>:pull`` or ``pull,push``);
  a 401 is answered once by :class:`fluxd.oci.auth.Authenticator` and the request
  retried. Registry error JSON (``{"errors": [{"code", "message"}]}``) becomes a typed
  :class:`RegistryError` (``UNAUTHORIZED`` -> :class:`UnauthorizedError`,
  ``MANIFEST_UNKNOWN`` -> :class:`ManifestUnknownError`, …); messages hold the method,
  the URL path, the status and the registry's words, never credentials or queries.
* Reads verify what they get: a manifest against the digest asked for (and the
  ``Docker-Content-Digest`` header), a blob against its digest and ``max_size`` while it
  streams to a temporary file that is renamed into place only when it checks out.
* ``resolve`` asks with HEAD and falls back to GET, as source-controller does.
* ``push_artifact`` writes Flux's generic artifact (see :mod:`fluxd.oci.artifact`):
  blobs the registry already has are skipped (HEAD), others are uploaded with POST then
  one PUT, or POST, PATCHes of ``chunk_size`` bytes and a closing PUT.

Per-request deadlines come from ``timeout`` (connect and each read); callers bound whole
operations with their own cancel scopes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import ssl
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

import aiohttp
import anyio.to_thread
from yarl import URL

from fluxd.artifacts.ignore import Matcher
from fluxd.clock import Clock, rfc3339
from fluxd.oci.artifact import (
    ALL_MANIFEST_MEDIA_TYPES,
    DEFAULT_PLATFORM,
    FLUX_CONFIG_MEDIA_TYPE,
    FLUX_CONTENT_MEDIA_TYPE,
    INDEX_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    ArtifactError,
    Descriptor,
    LayerType,
    Metadata,
    Platform,
    build_layer,
    compute_digest,
    config_blob,
    image_manifest,
    parse_digest,
    select_platform,
    static_media_type,
)
from fluxd.oci.auth import (
    DOCKER_HUB,
    DOCKER_HUB_API,
    AuthenticationError,
    Authenticator,
    Keychain,
    TokenCache,
    read_at_most,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_MANIFEST_SIZE",
    "USER_AGENT",
    "BlobTooLargeError",
    "BlobUnknownError",
    "ConnectionFailedError",
    "DeniedError",
    "DigestMismatchError",
    "InvalidReferenceError",
    "Manifest",
    "ManifestUnknownError",
    "NameUnknownError",
    "NotFoundError",
    "OCIError",
    "Reference",
    "RegistryClient",
    "RegistryError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "tls_context",
]

USER_AGENT = "fluxd/oci"
DEFAULT_TIMEOUT = 60.0
#: distribution refuses bigger manifests; so do we
MAX_MANIFEST_SIZE = 4 << 20
MAX_TAG_PAGES = 10_000
_READ_CHUNK = 256 << 10
_WRITE_BATCH = 1 << 20
_MAX_ERROR_BODY = 64 << 10
_OCTET_STREAM = "application/octet-stream"


# -- errors --------------------------------------------------------------------------------

class OCIError(Exception):
    """Any failure of an OCI operation."""


class InvalidReferenceError(OCIError, ValueError):
    """A reference (URL, repository, tag or digest) that cannot be parsed."""


class ConnectionFailedError(OCIError):
    """The registry could not be reached or stopped answering."""


class DigestMismatchError(OCIError):
    """Content whose digest is not the one asked for."""


class BlobTooLargeError(OCIError):
    """A blob bigger than the caller's ``max_size``."""


class UnsupportedMediaTypeError(OCIError):
    """A manifest of a kind fluxd does not read (e.g. Docker schema 1)."""


class RegistryError(OCIError):
    """The registry answered with an error status (and, usually, error JSON)."""

    def __init__(self, message: str, *, status: int, code: str = "",
                 registry_message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.registry_message = registry_message


class UnauthorizedError(RegistryError):
    """401 / ``UNAUTHORIZED``: no or wrong credentials, or the token server refused."""


class DeniedError(RegistryError):
    """403 / ``DENIED``: authenticated, but not allowed."""


class NotFoundError(RegistryError):
    """404: the repository, manifest or blob does not exist."""


class NameUnknownError(NotFoundError):
    """``NAME_UNKNOWN``: no such repository."""


class ManifestUnknownError(NotFoundError):
    """``MANIFEST_UNKNOWN``: no such tag or manifest."""


class BlobUnknownError(NotFoundError):
    """``BLOB_UNKNOWN``: no such blob."""


class TooManyRequestsError(RegistryError):
    """429 / ``TOOMANYREQUESTS``."""


_ERRORS_BY_CODE: dict[str, type[RegistryError]] = {
    "UNAUTHORIZED": UnauthorizedError,
    "DENIED": DeniedError,
    "NAME_UNKNOWN": NameUnknownError,
    "MANIFEST_UNKNOWN": ManifestUnknownError,
    "BLOB_UNKNOWN": BlobUnknownError,
    "TOOMANYREQUESTS": TooManyRequestsError,
}
_ERRORS_BY_STATUS: dict[int, type[RegistryError]] = {
    401: UnauthorizedError, 403: DeniedError, 404: NotFoundError, 429: TooManyRequestsError,
}


# -- references ----------------------------------------------------------------------------

_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_LOOPBACK = re.compile(r"(?:localhost|127(?:\.[0-9]{1,3}){3}|\[::1\])(?::[0-9]+)?")
_OCI_PREFIX = "oci://"


@dataclass(frozen=True, kw_only=True)
class Reference:
    """Where an artifact is: registry, repository and a tag and/or a digest."""

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, url: str) -> Reference:
        text = url.strip()
        if text.startswith(_OCI_PREFIX):
            text = text[len(_OCI_PREFIX):]
        elif "://" in text:
            raise InvalidReferenceError(f"invalid OCI reference {url!r}: want oci://…")
        text, at, digest = text.partition("@")
        if at:
            try:
                parse_digest(digest)
            except ArtifactError as exc:
                raise InvalidReferenceError(f"invalid OCI reference {url!r}: {exc}") from None
        tag = ""
        slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > slash:
            text, tag = text[:colon], text[colon + 1:]
            if not _TAG.fullmatch(tag):
                raise InvalidReferenceError(f"invalid OCI reference {url!r}: bad tag {tag!r}")
        first, sep, rest = text.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"
                    or first.startswith("[")):
            registry, repository = first, rest
        else:
            registry, repository = DOCKER_HUB, text
        if not _HOST.fullmatch(registry):
            raise InvalidReferenceError(f"invalid OCI reference {url!r}: bad registry")
        registry = registry.lower()
        if registry in ("docker.io", DOCKER_HUB):
            registry = DOCKER_HUB
            if "/" not in repository:
                repository = f"library/{repository}"
        if not repository or len(repository) > 255 or not _REPOSITORY.fullmatch(repository):
            raise InvalidReferenceError(
                f"invalid OCI reference {url!r}: bad repository {repository!r}")
        return cls(registry=registry, repository=repository, tag=tag, digest=digest)

    @property
    def identifier(self) -> str:
        """What to ask the registry for: the digest if any, else the tag, else ``latest``."""
        return self.digest or self.tag or "latest"

    @property
    def is_loopback(self) -> bool:
        return _LOOPBACK.fullmatch(self.registry) is not None

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def url(self) -> str:
        return _OCI_PREFIX + str(self)


def _check_repository(repo: str) -> None:
    if not _REPOSITORY.fullmatch(repo) or len(repo) > 255:
        raise InvalidReferenceError(f"invalid repository name {repo!r}")


def _check_reference(ref: str) -> None:
    if ":" in ref:
        try:
            parse_digest(ref)
        except ArtifactError as exc:
            raise InvalidReferenceError(str(exc)) from None
    elif not _TAG.fullmatch(ref):
        raise InvalidReferenceError(f"invalid tag {ref!r}")


def tls_context(*, ca_pem: bytes | None = None, cert_pem: bytes | None = None,
                key_pem: bytes | None = None) -> ssl.SSLContext:
    """A client TLS context: the system CAs plus ``ca_pem`` (as Flux extends the system
    pool), and a client certificate when both ``cert_pem`` and ``key_pem`` are given."""
    context = ssl.create_default_context()
    if ca_pem:
        try:
            context.load_verify_locations(cadata=ca_pem.decode())
        except (ssl.SSLError, ValueError, UnicodeDecodeError) as exc:
            raise OCIError("invalid CA certificate") from exc
    if cert_pem and key_pem:
        # ssl loads key pairs from files only: a private directory, removed at once
        with tempfile.TemporaryDirectory(prefix="fluxd-tls-") as tmp:
            cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            cert.write_bytes(cert_pem)
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(key_pem)
            try:
                context.load_cert_chain(cert, key)
            except ssl.SSLError as exc:
                raise OCIError("invalid client certificate or key") from exc
    return context


# -- the client ----------------------------------------------------------------------------

class Manifest(NamedTuple):
    """A manifest or index as fetched: its media type, parsed content and digest."""

    media_type: str
    content: dict[str, Any]
    digest: str


_Body = bytes | Callable[[], Awaitable[Any]] | None


def _scope(repo: str, push: bool = False) -> str:
    return f"repository:{repo}:{'pull,push' if push else 'pull'}"


_LINK_NEXT = re.compile(r'<([^>]*)>\s*;(?:[^,]*;)?\s*rel="?next"?', re.IGNORECASE)


class RegistryClient:
    """One registry, spoken to over one aiohttp session (see the module docstring).

    Use as ``async with RegistryClient(registry=…, clock=…) as client:``; a ``session``
    passed in is borrowed and left open.
    """

    def __init__(self, *, registry: str, clock: Clock, keychain: Keychain | None = None,
                 insecure: bool = False, ssl_context: ssl.SSLContext | None = None,
                 timeout: float = DEFAULT_TIMEOUT, token_cache: TokenCache | None = None,
                 session: aiohttp.ClientSession | None = None, proxy: str | None = None,
                 user_agent: str = USER_AGENT) -> None:
        probe = Reference.parse(f"{registry}/probe")
        self.registry = probe.registry
        api_host = DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry
        plain = insecure or (probe.is_loopback and ssl_context is None)
        self.base_url = URL(f"{'http' if plain else 'https'}://{api_host}")
        self._clock = clock
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout,
                                              sock_read=timeout)
        self._auth = Authenticator(keychain=keychain or Keychain(), clock=clock,
                                   cache=token_cache)
        self._proxy = proxy
        self._user_agent = user_agent
        self._session = session
        self._owns_session = session is None

    @classmethod
    def for_reference(cls, ref: Reference, **options: Any) -> RegistryClient:
        return cls(registry=ref.registry, **options)

    async def __aenter__(self) -> Self:
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False, timeout=self._timeout)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url})"

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("RegistryClient is not open: use 'async with'")
        return self._session

    def _url(self, path: str) -> URL:
        return self.base_url.with_path(path, encoded=False)

    @contextlib.asynccontextmanager
    async def _request(self, method: str, url: URL, *, repo: str, scope: str,
                       ok: tuple[int, ...] = (200,), headers: Mapping[str, str] | None = None,
                       body: _Body = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send with known credentials; answer one 401; raise unless the status is ``ok``."""
        where = f"{method} {url.path}"
        answer: str | None = None  # the answer to a challenge, for the one retry
        for attempt in (1, 2):
            sent = {"User-Agent": self._user_agent, **(headers or {})}
            auth = answer or self._auth.authorization(self.registry, repo, scope)
            if auth:
                sent["Authorization"] = auth
            data = await body() if callable(body) else body
            try:
                resp = await self.session.request(
                    method, url, headers=sent, data=data, ssl=self._ssl, proxy=self._proxy,
                    allow_redirects=method in ("GET", "HEAD"), timeout=self._timeout)
            except (aiohttp.ClientError, TimeoutError) as exc:
                _close(data)
                raise ConnectionFailedError(f"{where}: {_describe(exc)}") from None
            try:
                challenges = resp.headers.getall("WWW-Authenticate", [])
                if resp.status == 401 and challenges and attempt == 1:
                    resp.release()
                    try:
                        answer = await self._auth.respond(self.session, self.registry, repo,
                                                          challenges, scope, ssl=self._ssl)
                    except AuthenticationError as exc:
                        raise UnauthorizedError(f"{where}: {exc}", status=401,
                                                code="UNAUTHORIZED") from None
                    continue
                if resp.status not in ok:
                    raise await self._error(resp, where)
                try:
                    yield resp
                except (aiohttp.ClientError, TimeoutError) as exc:  # while reading the body
                    raise ConnectionFailedError(f"{where}: {_describe(exc)}") from None
                return
            finally:
                # a body file is closed only once aiohttp's writer is done with it
                resp.release()
                _close(data)

    async def _error(self, resp: aiohttp.ClientResponse, where: str) -> RegistryError:
        code = message = ""
        if resp.method != "HEAD":
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                code, message = _registry_error(await read_at_most(resp, _MAX_ERROR_BODY))
        cls = _ERRORS_BY_CODE.get(code) or _ERRORS_BY_STATUS.get(resp.status, RegistryError)
        text = f"{where}: {resp.status} {resp.reason or ''}".rstrip()
        if code or message:
            text += f": {code}: {message}" if code else f": {message}"
        return cls(text, status=resp.status, code=code, registry_message=message)

    async def _read_limited(self, resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
        if resp.content_length is not None and resp.content_length > limit:
            raise BlobTooLargeError(f"{what} is {resp.content_length} bytes, over {limit}")
        parts: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise BlobTooLargeError(f"{what} is over {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    # -- reading ----------------------------------------------------------------------------

    async def ping(self) -> None:
        """``GET /v2/``: reachable, and the credentials (if any) are accepted."""
        async with self._request("GET", self._url("/v2/"), repo="", scope=""):
            pass

    async def tags(self, repo: str, *, page_size: int | None = None) -> list[str]:
        """All tags of ``repo``, following ``Link: <…>; rel="next"`` pages."""
        _check_repository(repo)
        url = self._url(f"/v2/{repo}/tags/list")
        if page_size is not None:
            url = url.with_query(n=str(page_size))
        out: list[str] = []
        seen: set[str] = set()
        for _ in range(MAX_TAG_PAGES):
            async with self._request("GET", url, repo=repo, scope=_scope(repo)) as resp:
                body = await self._read_limited(resp, MAX_MANIFEST_SIZE, "tag list")
                link = resp.headers.get("Link", "")
                page_url = resp.url
            try:
                doc = json.loads(body)
                page = doc.get("tags") or []
            except (ValueError, AttributeError):
                raise OCIError(f"tag list of {repo} is not valid JSON") from None
            if not isinstance(page, list) or not all(isinstance(t, str) for t in page):
                raise OCIError(f"tag list of {repo} is malformed")
            out.extend(page)
            match = _LINK_NEXT.search(link)
            if not match:
                return out
            url = page_url.join(URL(match.group(1), encoded=True))
            if str(url) in seen:
                raise OCIError(f"tag list of {repo} loops at {url.path_qs}")
            seen.add(str(url))
        raise OCIError(f"tag list of {repo} has more than {MAX_TAG_PAGES} pages")

    async def resolve(self, repo: str, tag: str) -> str:
        """The digest ``tag`` points at: HEAD (``Docker-Content-Digest``), else GET."""
        _check_repository(repo)
        _check_reference(tag)
        url = self._url(f"/v2/{repo}/manifests/{tag}")
        accept = {"Accept": ", ".join(ALL_MANIFEST_MEDIA_TYPES)}
        try:
            async with self._request("HEAD", url, repo=repo, scope=_scope(repo),
                                     headers=accept) as resp:
                digest = resp.headers.get("Docker-Content-Digest", "")
            parse_digest(digest)
            return digest
        except (UnauthorizedError, DeniedError, ConnectionFailedError):
            raise
        except (RegistryError, ArtifactError):
            pass  # some registries answer HEAD badly; GET tells the truth
        return (await self.manifest(repo, tag)).digest

    async def manifest(self, repo: str, ref: str) -> Manifest:
        """The manifest or index at ``ref`` (tag or digest), verified against its digest."""
        _check_repository(repo)
        _check_reference(ref)
        url = self._url(f"/v2/{repo}/manifests/{ref}")
        accept = {"Accept": ", ".join(ALL_MANIFEST_MEDIA_TYPES)}
        async with self._request("GET", url, repo=repo, scope=_scope(repo),
                                 headers=accept) as resp:
            body = await self._read_limited(resp, MAX_MANIFEST_SIZE, f"manifest {ref}")
            content_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
            header_digest = resp.headers.get("Docker-Content-Digest", "")
        expected = ref if ":" in ref else header_digest
        algo = "sha256"
        if expected:
            try:
                algo, _ = parse_digest(expected)
            except ArtifactError:
                expected = ""  # an odd header is no reason to fail; the body decides
        digest = compute_digest(body, algo)
        if expected and digest != expected:
            raise DigestMismatchError(f"manifest {repo}:{ref} has digest {digest}, "
                                      f"want {expected}")
        try:
            doc = json.loads(body)
        except ValueError:
            raise OCIError(f"manifest {repo}:{ref} is not valid JSON") from None
        if not isinstance(doc, dict):
            raise OCIError(f"manifest {repo}:{ref} is not a JSON object")
        media_type = _manifest_media_type(doc, content_type)
        if media_type not in ALL_MANIFEST_MEDIA_TYPES or doc.get("schemaVersion") != 2:
            raise UnsupportedMediaTypeError(
                f"manifest {repo}:{ref} has unsupported media type {media_type!r}")
        return Manifest(media_type, doc, digest)

    async def image_manifest(self, repo: str, ref: str, *,
                             platform: Platform = DEFAULT_PLATFORM) -> Manifest:
        """The image manifest at ``ref``, through an index by ``platform`` if need be."""
        found = await self.manifest(repo, ref)
        if found.media_type not in INDEX_MEDIA_TYPES:
            return found
        try:
            chosen = select_platform(found.content, platform)
        except ArtifactError as exc:
            raise OCIError(f"{repo}:{ref}: {exc}") from None
        image = await self.manifest(repo, chosen.digest)
        if image.media_type in INDEX_MEDIA_TYPES:
            raise UnsupportedMediaTypeError(f"{repo}:{ref}: nested index {chosen.digest}")
        return image

    async def blob_exists(self, repo: str, digest: str) -> bool:
        _check_repository(repo)
        _check_reference(digest)
        url = self._url(f"/v2/{repo}/blobs/{digest}")
        try:
            async with self._request("HEAD", url, repo=repo, scope=_scope(repo)):
                return True
        except NotFoundError:
            return False

    async def blob(self, repo: str, digest: str, dest: Path, *,
                   max_size: int | None = None) -> int:
        """Stream blob ``digest`` to ``dest``; returns its size.

        Raises :class:`BlobTooLargeError` past ``max_size`` bytes and
        :class:`DigestMismatchError` when the content does not hash to ``digest``;
        ``dest`` is then left as it was.
        """
        _check_repository(repo)
        try:
            algo, _ = parse_digest(digest)
        except ArtifactError as exc:
            raise InvalidReferenceError(str(exc)) from None
        url = self._url(f"/v2/{repo}/blobs/{digest}")
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.part")
        try:
            async with self._request("GET", url, repo=repo, scope=_scope(repo)) as resp:
                if (max_size is not None and resp.content_length is not None
                        and resp.content_length > max_size):
                    raise BlobTooLargeError(f"blob {digest} is {resp.content_length} bytes, "
                                            f"over the limit of {max_size}")
                size = await self._stream_to(resp, tmp, algo, digest, max_size)
            await anyio.to_thread.run_sync(os.replace, tmp, dest)
            return size
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    async def _stream_to(self, resp: aiohttp.ClientResponse, path: Path, algo: str,
                         digest: str, max_size: int | None) -> int:
        hasher = hashlib.new(algo)
        size = 0
        pending: list[bytes] = []
        pending_size = 0
        out = await anyio.to_thread.run_sync(path.open, "wb")
        try:
            async for chunk in resp.content.iter_chunked(_READ_CHUNK):
                size += len(chunk)
                if max_size is not None and size > max_size:
                    raise BlobTooLargeError(f"blob {digest} is over the limit of "
                                            f"{max_size} bytes")
                hasher.update(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= _WRITE_BATCH:
                    await anyio.to_thread.run_sync(out.write, b"".join(pending))
                    pending, pending_size = [], 0
            if pending:
                await anyio.to_thread.run_sync(out.write, b"".join(pending))
        finally:
            out.close()
        got = f"{algo}:{hasher.hexdigest()}"
        if got != digest:
            raise DigestMismatchError(f"blob {digest} has digest {got}")
        if resp.content_length is not None and size != resp.content_length:
            raise OCIError(f"blob {digest} ended after {size} of {resp.content_length} bytes")
        return size

    # -- writing ----------------------------------------------------------------------------

    async def push_blob(self, repo: str, data: bytes | Path, *,
                        media_type: str = _OCTET_STREAM, digest: str | None = None,
                        chunk_size: int | None = None) -> Descriptor:
        """Upload a blob unless the registry has it; returns its descriptor.

        ``chunk_size`` selects the chunked upload (PATCH per chunk); without it the blob
        goes in one PUT.
        """
        _check_repository(repo)
        if chunk_size is not None and chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        if isinstance(data, Path):
            size = (await anyio.to_thread.run_sync(data.stat)).st_size
            if digest is None:
                digest = await anyio.to_thread.run_sync(_file_digest, data)
        else:
            size = len(data)
            digest = digest or compute_digest(data)
        descriptor = Descriptor(media_type=media_type, digest=digest, size=size)
        if await self.blob_exists(repo, digest):
            return descriptor
        scope = _scope(repo, push=True)
        async with self._request("POST", self._url(f"/v2/{repo}/blobs/uploads/"), repo=repo,
                                 scope=scope, ok=(202,)) as resp:
            location = self._location(resp)
        octets = {"Content-Type": _OCTET_STREAM}
        if chunk_size is None:
            body: _Body = data if isinstance(data, bytes) else _opener(data)
            final = location.update_query(digest=digest)
            async with self._request("PUT", final, repo=repo, scope=scope, ok=(201,),
                                     headers={**octets, "Content-Length": str(size)},
                                     body=body):
                pass
            return descriptor
        offset = 0
        while offset < size:
            chunk = await _read_chunk(data, offset, chunk_size)
            headers = {**octets, "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                       "Content-Length": str(len(chunk))}
            async with self._request("PATCH", location, repo=repo, scope=scope, ok=(202,),
                                     headers=headers, body=chunk) as resp:
                location = self._location(resp)
            offset += len(chunk)
        async with self._request("PUT", location.update_query(digest=digest), repo=repo,
                                 scope=scope, ok=(201,), headers={"Content-Length": "0"}):
            pass
        return descriptor

    def _location(self, resp: aiohttp.ClientResponse) -> URL:
        location = resp.headers.get("Location")
        if not location:
            raise OCIError(f"{resp.method} {resp.url.path}: upload answer has no Location")
        return resp.url.join(URL(location, encoded=True))

    async def push_manifest(self, repo: str, ref: str, content: bytes,
                            media_type: str = OCI_MANIFEST) -> str:
        """Store a manifest or index under ``ref`` (a tag or its digest); returns its digest."""
        _check_repository(repo)
        _check_reference(ref)
        digest = compute_digest(content)
        url = self._url(f"/v2/{repo}/manifests/{ref}")
        async with self._request("PUT", url, repo=repo, scope=_scope(repo, push=True),
                                 ok=(201,), headers={"Content-Type": media_type},
                                 body=content) as resp:
            stored = resp.headers.get("Docker-Content-Digest", "")
        if stored and stored != digest:
            raise DigestMismatchError(f"registry stored manifest as {stored}, want {digest}")
        return digest

    async def push_artifact(self, repo: str, tag: str,
                            source: Path | Mapping[str, bytes | str], *,
                            metadata: Metadata | None = None,
                            annotations: Mapping[str, str] | None = None,
                            config_media_type: str = FLUX_CONFIG_MEDIA_TYPE,
                            layer_media_type: str | None = None,
                            layer_type: LayerType = LayerType.TARBALL,
                            media_type_ext: str = "",
                            ignore: Matcher | None = None,
                            chunk_size: int | None = None) -> str:
        """Push ``source`` as a Flux artifact tagged ``tag``; returns the manifest digest.

        ``source`` is a directory or a file (tarball layer), a ``name -> content`` mapping
        (tarball layer), or a file with ``layer_type=LayerType.STATIC`` (pushed as is, media
        type ``…flux.content.v1[.<media_type_ext>]``). ``metadata`` gives the source and
        revision annotations; ``created`` defaults to now. ``ignore`` is a
        :class:`fluxd.artifacts.ignore.Matcher` for directories.
        """
        _check_repository(repo)
        _check_reference(tag)
        meta = metadata or Metadata()
        if not meta.created:
            meta = Metadata(created=rfc3339(self._clock.now()), source=meta.source,
                            revision=meta.revision, annotations=meta.annotations)
        if layer_media_type is None:
            layer_media_type = (static_media_type(media_type_ext)
                                if layer_type is LayerType.STATIC else FLUX_CONTENT_MEDIA_TYPE)
        with tempfile.TemporaryDirectory(prefix="fluxd-oci-push-") as tmp:
            layer_path = Path(tmp, "layer")
            try:
                built = await anyio.to_thread.run_sync(
                    lambda: build_layer(source, layer_path, layer_type=layer_type,
                                        ignore=ignore))
            except (ArtifactError, OSError) as exc:
                raise OCIError(f"building the artifact layer failed: {exc}") from exc
            layer = await self.push_blob(repo, built.path, media_type=layer_media_type,
                                         digest=built.digest, chunk_size=chunk_size)
        config = await self.push_blob(repo, config_blob([built.diff_id]),
                                      media_type=config_media_type)
        manifest = image_manifest(config, [layer],
                                  annotations={**meta.to_annotations(), **(annotations or {})})
        return await self.push_manifest(repo, tag, manifest)

    async def push_index(self, repo: str, ref: str, manifests: list[Descriptor], *,
                         media_type: str = OCI_INDEX,
                         annotations: Mapping[str, str] | None = None) -> str:
        """Store an index (or Docker manifest list) of ``manifests``; returns its digest."""
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type,
                               "manifests": [m.to_json() for m in manifests]}
        if annotations:
            doc["annotations"] = dict(annotations)
        return await self.push_manifest(repo, ref, json.dumps(doc, separators=(",", ":"))
                                        .encode(), media_type)


# -- helpers -------------------------------------------------------------------------------

def _manifest_media_type(doc: Mapping[str, Any], content_type: str) -> str:
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if content_type in ALL_MANIFEST_MEDIA_TYPES:
        return content_type
    # OCI allows leaving mediaType out; the shape tells an index from a manifest
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    return content_type or "unknown"


def _registry_error(body: bytes) -> tuple[str, str]:
    try:
        doc = json.loads(body)
    except ValueError:
        return "", ""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return "", ""
    first = errors[0]
    code, message = str(first.get("code", "")), " ".join(str(first.get("message", "")).split())
    return code, message[:300]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


def _close(data: Any) -> None:
    if hasattr(data, "close"):
        data.close()


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _opener(path: Path) -> Callable[[], Awaitable[Any]]:
    async def open_file() -> Any:
        return await anyio.to_thread.run_sync(path.open, "rb")
    return open_file


async def _read_chunk(data: bytes | Path, offset: int, size: int) -> bytes:
    if isinstance(data, bytes):
        return data[offset:offset + size]

    def read() -> bytes:
        with data.open("rb") as f:
            f.seek(offset)
            return f.read(size)
    return await anyio.to_thread.run_sync(read)
