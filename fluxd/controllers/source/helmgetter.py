"""HTTP(S) access to Helm chart repositories, as source-controller's Helm getter does it.

Contract (after ``internal/helm/getter``, ``internal/tls`` and Helm's ``HTTPGetter``):

- ``ClientOptions.from_secrets`` turns a HelmRepository's Secrets into options: basic auth
  from ``username``/``password`` (both or neither), TLS from ``tls.crt``/``tls.key``/
  ``ca.crt`` of ``certSecretRef``, else — deprecated — ``certFile``/``keyFile``/``caFile``
  of ``secretRef``. A CA is added to the system roots, not instead of them; TLS 1.2 or
  newer. Bad Secret data raises ``CredentialsError`` with Flux's wording.
- ``ssl_context`` reads the system roots and writes the client key pair to a private
  temporary directory for the ssl module: it blocks, so it runs in a worker thread.
- ``fetch`` GETs one URL with those options and a total timeout: basic auth goes only to
  the repository's own scheme and host unless ``passCredentials``, and never follows a
  redirect to another host; anything but 200 is an error (``failed to fetch <url> :
  <status>``); the body is streamed against ``max_size`` and refused as soon as it (or
  its ``Content-Length``) is over. Errors are ``FetchError``; no message carries URL
  credentials.
- ``index_url`` is where a repository's index lives (``<url>/index.yaml``, query kept);
  an unusable URL raises ``InvalidURL``. ``normalize_url`` is Flux's ``NormalizeURL``
  (one trailing slash for HTTP(S), none for ``oci://``), the key HelmRepositories are
  found by; ``resolve_reference`` is Helm's ``ResolveReferenceURL`` for a chart's
  ``urls[0]``.
"""

from __future__ import annotations

import base64
import os
import posixpath
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

import aiohttp

from fluxd.logging import strip_url_credentials

__all__ = ["ClientOptions", "CredentialsError", "FetchError", "InvalidURL", "TLSData",
           "fetch", "index_url", "normalize_url", "resolve_reference", "ssl_context"]

USER_AGENT = "fluxd/helm"
_CHUNK = 256 * 1024
#: characters Go's url.Parse refuses in a host name (space, control characters, …)
_BAD_HOST_CHARS = frozenset(' "<>\\^`{|}')
_TLS_SECRET_TYPES = ("Opaque", "kubernetes.io/tls", "")


class InvalidURL(ValueError):
    """The repository URL cannot work, whatever the server does."""


class CredentialsError(ValueError):
    """A Secret's data cannot make client options."""


class FetchError(Exception):
    """The repository could not be read; the message is safe to show."""


@dataclass(frozen=True)
class TLSData:
    """PEM bytes from a Secret; any may be empty."""

    cert: bytes = b""
    key: bytes = b""
    ca: bytes = b""


@dataclass(frozen=True)
class ClientOptions:
    """How to talk to one repository."""

    timeout: float
    username: str = ""
    password: str = ""
    pass_credentials: bool = False
    tls: TLSData | None = None
    #: TLS data came from ``secretRef`` (deprecated)
    legacy_tls: bool = False

    @classmethod
    def from_secrets(cls, *, timeout: float, pass_credentials: bool,
                     auth: tuple[str, str, dict[str, bytes]] | None,
                     cert: tuple[str, str, dict[str, bytes]] | None) -> ClientOptions:
        """Options from the ``secretRef`` Secret (``auth``) and the ``certSecretRef`` one
        (``cert``), each given as (name, type, data)."""
        tls: TLSData | None = None
        if cert is not None:
            try:
                tls = tls_data(*cert, kube_keys=True)
            except CredentialsError as exc:
                raise CredentialsError(
                    f"failed to construct Helm client's TLS config: {exc}") from None
        username = password = ""
        legacy = False
        if auth is not None:
            name, _, data = auth
            username = data.get("username", b"").decode()
            password = data.get("password", b"").decode()
            if bool(username) != bool(password):
                raise CredentialsError(f"failed to configure Helm client: invalid '{name}' "
                                       "secret data: required fields 'username' and "
                                       "'password'")
            if tls is None:
                try:
                    tls = tls_data(*auth, kube_keys=False)
                except CredentialsError as exc:
                    raise CredentialsError(
                        f"failed to construct Helm client's TLS config: {exc}") from None
                legacy = tls is not None
        return cls(timeout=timeout, username=username, password=password,
                   pass_credentials=pass_credentials, tls=tls, legacy_tls=legacy)


def tls_data(name: str, secret_type: str, data: dict[str, bytes], *,
             kube_keys: bool) -> TLSData | None:
    """The TLS material of a Secret, None when it has none (``tlsClientConfigFromSecret``)."""
    if secret_type not in _TLS_SECRET_TYPES:
        raise CredentialsError(f"cannot use secret '{name}' to construct TLS config: invalid "
                               f"secret type: '{secret_type}'")
    keys = ("tls.crt", "tls.key", "ca.crt") if kube_keys else ("certFile", "keyFile", "caFile")
    cert, key, ca = (data.get(k, b"") for k in keys)
    if not (cert or key or ca):
        return None
    if bool(cert) != bool(key):
        raise CredentialsError(f"invalid '{name}' secret data: both certificate and private "
                               "key need to be provided")
    return TLSData(cert=cert, key=key, ca=ca)


def ssl_context(tls: TLSData) -> ssl.SSLContext:
    """A verifying client context: system roots plus ``tls.ca``, and the client key pair.
    Blocks (reads the system roots): call it in a worker thread."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.ca:
        try:
            context.load_verify_locations(cadata=tls.ca.decode("ascii", errors="replace"))
        except (ssl.SSLError, ValueError):
            raise CredentialsError("failed to construct Helm client's TLS config: cannot "
                                   "append certificate into certificate pool: invalid CA "
                                   "certificate") from None
    if tls.cert:
        with tempfile.TemporaryDirectory(prefix="fluxd-helm-tls-") as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            for path, data in ((cert, tls.cert), (key, tls.key)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
            try:
                context.load_cert_chain(cert, key)
            except (ssl.SSLError, ValueError) as exc:
                raise CredentialsError("failed to construct Helm client's TLS config: "
                                       f"invalid client certificate or key: {exc}") from None
    return context


# --------------------------------------------------------------------------- URLs


def parse_url(url: str) -> SplitResult:
    """``url`` split, or ``InvalidURL`` where Go's ``url.Parse`` fails, or without a host."""
    def invalid(problem: str) -> InvalidURL:
        return InvalidURL(f'parse "{strip_url_credentials(url)}": {problem}')

    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise invalid(str(exc)) from None
    host = parts.netloc.rpartition("@")[2]
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise invalid(f'invalid port ":{host.rpartition(":")[2]}" after host') from None
    bad = next((c for c in host if c in _BAD_HOST_CHARS or ord(c) < 0x20 or ord(c) == 0x7F),
               None)
    if bad is not None:
        raise invalid(f'invalid character "{bad}" in host name')
    if not parts.hostname:
        raise invalid("missing host")
    return parts


def index_url(url: str) -> str:
    """``<url>/index.yaml`` with the path cleaned and the query kept (Flux's
    ``DownloadIndex``)."""
    parts = parse_url(url)
    path = posixpath.normpath(posixpath.join("/", parts.path, "index.yaml"))
    return urlunsplit(parts._replace(path=path, fragment=""))


def normalize_url(url: str) -> str:
    """Flux's ``repository.NormalizeURL``: the path without trailing slashes, plus one for
    HTTP(S) repositories; ``""`` stays ``""``."""
    if not url:
        return ""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if parts.scheme != "oci":
        path += "/"
    return urlunsplit(parts._replace(path=path))


def resolve_reference(base_url: str, ref: str) -> str:
    """Helm's ``repo.ResolveReferenceURL``: an absolute ``ref`` as it is, a relative one
    resolved against ``base_url`` taken as a directory, with ``base_url``'s query."""
    ref_parts = urlsplit(ref)
    if ref_parts.scheme:
        return ref
    base = urlsplit(base_url)
    directory = urlunsplit(base._replace(path=base.path.rstrip("/") + "/", query="",
                                         fragment=""))
    resolved = urlsplit(urljoin(directory, ref))
    return urlunsplit(resolved._replace(query=base.query))


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.netloc.rpartition("@")[2]) == (pb.scheme, pb.netloc.rpartition("@")[2])


# --------------------------------------------------------------------------- fetching


async def fetch(url: str, options: ClientOptions, *, base_url: str, max_size: int,
                context: ssl.SSLContext | None = None, what: str = "index") -> bytes:
    """The body of ``url`` (see the module docstring). ``base_url`` is the repository URL:
    credentials go to its scheme and host only, unless ``options.pass_credentials``;
    ``context`` is ``ssl_context(options.tls)`` when the options carry TLS data; ``what``
    (``index``, ``chart``) names the body in the size-limit error."""
    shown = strip_url_credentials(url)
    headers = {"User-Agent": USER_AGENT}
    if options.username and (options.pass_credentials or _same_origin(url, base_url)):
        # aiohttp drops this header when a redirect leaves the origin
        pair = f"{options.username}:{options.password}".encode()
        headers["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
    timeout = aiohttp.ClientTimeout(total=options.timeout)
    connector = aiohttp.TCPConnector(ssl=context if context is not None else True)
    try:
        async with (aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
                    session.get(url, headers=headers) as resp):
            if resp.status != 200:
                raise FetchError(f"failed to fetch {shown} : {resp.status} {resp.reason or ''}"
                                 .rstrip())
            too_big = FetchError(f"{what} exceeds the maximum {what} file size of "
                                 f"{max_size} bytes")
            if (resp.content_length is not None and resp.content_length > max_size
                    and "Content-Encoding" not in resp.headers):
                raise too_big
            body = bytearray()
            async for chunk in resp.content.iter_chunked(_CHUNK):
                body += chunk
                if len(body) > max_size:
                    raise too_big
            return bytes(body)
    except FetchError:
        raise
    except TimeoutError:
        raise FetchError(f'Get "{shown}": Client.Timeout exceeded ({options.timeout:g}s)') \
            from None
    except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
        raise FetchError(f'Get "{shown}": {_describe(exc)}') from None


def _describe(exc: BaseException) -> str:
    return strip_url_credentials(str(exc) or type(exc).__name__)
