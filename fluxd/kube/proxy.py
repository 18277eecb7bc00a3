"""A loopback proxy to the Kubernetes API for the helm processes fluxd runs.

helm never sees fluxd's credentials: each helm process gets a kubeconfig (from
``ApiProxy.session``) whose server is ``http://127.0.0.1:<port>/<token>``, a random token
of its own as the path prefix (client-go keeps a server URL's path, as for clusters behind
Rancher). The proxy finds the session by that prefix (every open session compared in
constant time; unknown or revoked: 401) and strips it, drops whatever ``Authorization``
and ``Impersonate-*`` headers helm sent, and forwards the request to the API server on
fluxd's own connection (``KubeClient.forward``: TLS, client certificate, token, exec
credentials), as the session's ServiceAccount when it has one. Bodies stream both ways,
so watches (helm's ``--wait=watcher`` lists and watches) work. It is plain HTTP on
loopback — client-go sends a bearer token only over TLS, the path prefix needs none —
which spares every helm process TLS handshakes and fluxd a certificate library.

Flux keeps a release's Helm storage (``storageNamespace``) apart from its target
namespace; helm has one ``--namespace`` for both. A session whose storage namespace
differs therefore moves what helm's Secret storage driver sends for the target namespace
to the storage namespace, and nothing else:

* any request on ``/api/v1/namespaces/<target>/secrets/sh.helm.release.v1.*`` (get,
  update, delete of one release revision);
* a create in ``/api/v1/namespaces/<target>/secrets`` of a Secret named
  ``sh.helm.release.v1.*`` (a ``metadata.namespace`` in the body is rewritten too; helm's
  typed client sends these bodies as Kubernetes protobuf, others send JSON);
* a list or watch of ``/api/v1/namespaces/<target>/secrets`` whose label selector has
  the term ``owner=helm`` (the driver's list and query).

Bounds: a session serves at most ``max_requests`` requests at once (one more is answered
429 with ``Retry-After: 1``, as kube-apiserver's in-flight limit does, and helm's client
retries), a request body is at most ``max_body`` bytes (413), the API server's answer
must begin within ``answer_timeout`` seconds (504; a watch's begins at once), and at
most ``max_sessions`` sessions are open. Leaving a session revokes its token and ends its
open exchanges, watches included, before its block returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hmac
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from fluxd.clock import Clock
from fluxd.kube.client import KubeClient
from fluxd.kube.errors import TransportError
from fluxd.listen import parse_address

log = logging.getLogger("fluxd.kube.proxy")

#: the name prefix of the Secrets holding Helm releases (helm's storage key)
RELEASE_PREFIX = "sh.helm.release.v1."
#: requests one session has in flight at most (watches included)
MAX_REQUESTS = 64
#: bytes of one request body at most
MAX_BODY = 64 * 1024 * 1024
#: seconds the API server has to begin an answer
ANSWER_TIMEOUT = 60.0
#: seconds a closing session gives its exchanges to end
CLOSE_TIMEOUT = 5.0
#: seconds the listener gives open connections when it stops (after the sessions ended)
SHUTDOWN_TIMEOUT = 1.0
#: the service-account user name prefix the API server derives from a ServiceAccount
_SA_USER = "system:serviceaccount:"
#: request headers not passed on: per connection (RFC 9110 §7.6.1), sized by aiohttp
#: itself, or credentials (dropped again by ``KubeClient.forward``)
_NOT_FORWARDED = frozenset({
    "host", "connection", "keep-alive", "proxy-connection", "proxy-authorization",
    "transfer-encoding", "te", "trailer", "upgrade", "accept-encoding", "authorization",
    "content-length"})
#: answer headers not passed back: per connection, or no longer true once aiohttp has
#: decompressed the body and it is re-framed
_NOT_RETURNED = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
    "upgrade", "content-length", "content-encoding"})
_JSON_TYPES = ("application/json", "application/merge-patch+json")
_PROTOBUF = "application/vnd.kubernetes.protobuf"
#: what begins a Kubernetes protobuf body (then a runtime.Unknown message)
_PROTOBUF_MAGIC = b"k8s\x00"


class ProxyBusy(RuntimeError):
    """``max_sessions`` sessions are open already."""


class _BodyTooLarge(Exception):
    pass


class Route(enum.Enum):
    """Where a request of helm's goes."""

    #: as it came
    THROUGH = "through"
    #: to the storage namespace
    STORAGE = "storage"
    #: a Secret create in the target namespace: its body's name decides
    BY_NAME = "by-name"


def route(method: str, path: str, label_selector: str | None, namespace: str) -> Route:
    """The route of a request (``path`` raw, without query) in a session whose release
    namespace is ``namespace`` and whose storage lies elsewhere."""
    parts = path.split("/")
    if len(parts) not in (6, 7) or parts[:4] != ["", "api", "v1", "namespaces"] \
            or parts[4] != namespace or parts[5] != "secrets":
        return Route.THROUGH
    if len(parts) == 7:
        return Route.STORAGE if parts[6].startswith(RELEASE_PREFIX) else Route.THROUGH
    if method == "POST":
        return Route.BY_NAME
    if method == "GET" and label_selector is not None and _owned_by_helm(label_selector):
        return Route.STORAGE
    return Route.THROUGH


def _owned_by_helm(selector: str) -> bool:
    """Whether a label selector requires ``owner=helm`` (helm's drivers write the
    equality form; ``==`` is its synonym)."""
    return any(term.replace(" ", "") in ("owner=helm", "owner==helm")
               for term in selector.split(","))


def _in_namespace(path: str, namespace: str) -> str:
    """``/api/v1/namespaces/<x>/...`` with ``namespace`` for ``<x>``."""
    parts = path.split("/")
    parts[4] = namespace
    return "/".join(parts)


def _status(code: int, reason: str, message: str) -> web.Response:
    """A Kubernetes ``Status`` answer, as the API server writes one."""
    return web.json_response({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code}, status=code)


@dataclass(eq=False)
class _Session:
    token: str
    namespace: str
    storage_namespace: str
    client: KubeClient
    #: the handler tasks serving this session's requests now
    exchanges: set[asyncio.Task[Any]] = field(default_factory=set)
    closed: bool = False

    @property
    def moves_storage(self) -> bool:
        return self.storage_namespace != self.namespace


class ApiProxy:
    """The proxy, serving while its ``async with`` block runs; ``url`` is where."""

    def __init__(self, client: KubeClient, *, clock: Clock, address: str = "127.0.0.1:0",
                 max_sessions: int = 64, max_requests: int = MAX_REQUESTS,
                 max_body: int = MAX_BODY, answer_timeout: float = ANSWER_TIMEOUT) -> None:
        self._client = client
        self._clock = clock
        self._address = address
        self._max_sessions = max_sessions
        self._max_requests = max_requests
        self._max_body = max_body
        self._answer_timeout = answer_timeout
        self._sessions: list[_Session] = []
        self._runner: web.AppRunner | None = None
        self._url = ""

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` while serving."""
        if self._runner is None:
            raise RuntimeError("the API proxy is not serving")
        return self._url

    async def __aenter__(self) -> ApiProxy:
        host, port = parse_address(self._address)
        host = host or "127.0.0.1"
        app = web.Application(client_max_size=self._max_body)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None,
                               shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        bound = next(a for a in runner.addresses if isinstance(a, tuple))
        shown = f"[{host}]" if ":" in host else host
        self._url = f"http://{shown}:{int(bound[1])}"
        self._runner = runner
        log.info("helm API proxy listening", extra={"address": self._url})
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        runner, self._runner = self._runner, None
        try:
            for session in list(self._sessions):
                await self._close(session)
        finally:
            if runner is not None:
                await runner.cleanup()

    @contextlib.asynccontextmanager
    async def session(self, *, namespace: str, storage_namespace: str,
                      impersonate: str | None, directory: Path) -> AsyncIterator[Path]:
        """A kubeconfig for one helm process, at ``<directory>/kubeconfig`` (mode 0600):
        this proxy, a token of its own and ``namespace`` as its namespace. Requests go to
        the API server as ``impersonate`` (a ServiceAccount's user name,
        ``system:serviceaccount:<namespace>:<name>``), else as fluxd; release storage
        goes to ``storage_namespace``. Leaving the block revokes the token, ends the
        session's open requests and removes the file."""
        url = self.url
        if len(self._sessions) >= self._max_sessions:
            raise ProxyBusy(f"the helm API proxy has {len(self._sessions)} sessions open "
                            f"(at most {self._max_sessions})")
        session = _Session(token=secrets.token_urlsafe(32), namespace=namespace,
                           storage_namespace=storage_namespace,
                           client=self._acting_as(impersonate))
        path = directory / "kubeconfig"
        _write_private(path, yaml.safe_dump(_kubeconfig(f"{url}/{session.token}",
                                                        namespace)))
        self._sessions.append(session)
        try:
            yield path
        finally:
            await self._close(session)
            path.unlink(missing_ok=True)

    def tokens(self) -> list[str]:
        """The tokens of the sessions open now: what a helm run's output must never show
        (masked by ``Helm``'s ``secrets``)."""
        return [session.token for session in self._sessions]

    def _acting_as(self, user: str | None) -> KubeClient:
        if user is None:
            return self._client
        namespace, _, name = user.removeprefix(_SA_USER).partition(":")
        if not user.startswith(_SA_USER) or not namespace or not name or ":" in name:
            raise ValueError(f"{user!r} is not a ServiceAccount user name "
                             f"({_SA_USER}<namespace>:<name>)")
        return self._client.impersonate(namespace, name)

    async def _close(self, session: _Session) -> None:
        """Revoke the session's token, then end its exchanges and wait for them."""
        if session in self._sessions:
            self._sessions.remove(session)
        session.closed = True
        pending = {task for task in session.exchanges if not task.done()}
        for task in pending:
            task.cancel()
        if not pending:
            return
        try:
            async with self._clock.timeout(CLOSE_TIMEOUT):
                await asyncio.wait(pending)
        except TimeoutError:
            log.warning("helm API proxy: %d requests did not end with their session",
                        sum(not task.done() for task in pending))

    def _authenticate(self, request: web.Request) -> tuple[_Session | None, str]:
        """The session whose token prefixes the request's path, and the path without
        it."""
        raw = request.rel_url.raw_path
        token, _, rest = raw.removeprefix("/").partition("/")
        given = token.encode()
        found = None
        # every open session is compared, so the time taken tells nothing of which one
        for session in self._sessions:
            if hmac.compare_digest(given, session.token.encode()):
                found = session
        return found, "/" + rest

    # --- one exchange -------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        session, path = self._authenticate(request)
        if session is None:
            return _status(401, "Unauthorized", "Unauthorized")
        if len(session.exchanges) >= self._max_requests:
            return web.Response(status=429, text="Too many requests, please try again later.\n",
                                headers={"Retry-After": "1"})
        task = asyncio.current_task()
        assert task is not None
        session.exchanges.add(task)
        begun: list[web.StreamResponse] = []
        try:
            return await self._exchange(request, session, path, begun)
        except asyncio.CancelledError:
            # the session ended, and nothing else cancelled meanwhile
            if not session.closed or task.uncancel() > 0:
                raise
            if not begun:
                return _status(401, "Unauthorized", "the session ended")
            # an answer under way is cut short: helm must not take it for complete
            if request.transport is not None:
                request.transport.close()
            return begun[0]
        finally:
            session.exchanges.discard(task)

    async def _exchange(self, request: web.Request, session: _Session, path: str,
                        begun: list[web.StreamResponse]) -> web.StreamResponse:
        """Forward one request (``path``: without the session's prefix); an answer whose
        streaming began is put in ``begun``."""
        chosen = route(request.method, path, request.query.get("labelSelector"),
                       session.namespace) if session.moves_storage else Route.THROUGH
        headers = {name: value for name, value in request.headers.items()
                   if name.lower() not in _NOT_FORWARDED
                   and not name.lower().startswith("impersonate-")}
        body: bytes | AsyncIterator[bytes] | None = None
        if request.body_exists:
            declared = request.content_length
            if declared is not None and declared > self._max_body:
                return self._too_large()
            if chosen is Route.THROUGH:
                body = _bounded(request.content, self._max_body)
                if declared is not None:
                    headers["Content-Length"] = str(declared)
            else:
                try:
                    raw = await _read_bounded(request.content, self._max_body)
                except _BodyTooLarge:
                    return self._too_large()
                chosen, body = route_body(chosen, request.content_type, raw,
                                          session.storage_namespace)
        if chosen is Route.BY_NAME:
            chosen = Route.THROUGH
        if chosen is Route.STORAGE:
            path = _in_namespace(path, session.storage_namespace)
        query = request.rel_url.raw_query_string
        target = f"{path}?{query}" if query else path
        try:
            async with self._clock.timeout(self._answer_timeout):
                upstream = await session.client.forward(request.method, target,
                                                        headers=headers, body=body)
        except TimeoutError:
            return _status(504, "Timeout", "the API server did not answer in "
                                           f"{self._answer_timeout:g}s")
        except TransportError as exc:
            if isinstance(exc.__cause__, _BodyTooLarge) or _body_overflowed(exc):
                return self._too_large()
            return _status(502, "InternalError", f"the API server is unreachable: {exc}")
        try:
            return await _stream_back(request, upstream, begun)
        finally:
            upstream.release()

    def _too_large(self) -> web.Response:
        return _status(413, "RequestEntityTooLarge",
                       f"the request body is larger than {self._max_body} bytes")


def route_body(chosen: Route, content_type: str, raw: bytes,
               storage_namespace: str) -> tuple[Route, bytes]:
    """The final route and body of a request that ``route`` sent to storage or left to
    the body (``BY_NAME``): a release Secret goes to the storage namespace, a namespace
    in its body rewritten; any other Secret goes through as it came. A body that cannot
    be read keeps its route and bytes, and the API server judges it."""
    if content_type in _JSON_TYPES:
        found = _json_secret(raw, storage_namespace)
    elif content_type == _PROTOBUF:
        found = _protobuf_secret(raw, storage_namespace)
    else:
        found = None
    if found is None:
        return (Route.THROUGH if chosen is Route.BY_NAME else chosen), raw
    name, moved = found
    if chosen is Route.BY_NAME and not name.startswith(RELEASE_PREFIX):
        return Route.THROUGH, raw
    return Route.STORAGE, moved


def _json_secret(raw: bytes, storage_namespace: str) -> tuple[str, bytes] | None:
    """A JSON object's name, and the body with its namespace (when it has one) set to
    ``storage_namespace``; None when it is no object with metadata."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return None
    name = meta.get("name")
    if meta.get("namespace") in (None, ""):
        return str(name or ""), raw
    meta["namespace"] = storage_namespace
    return str(name or ""), json.dumps(obj, separators=(",", ":")).encode()


# --- the little of protobuf helm's Secret bodies need: Unknown{raw: Secret{metadata}} ----


class _Corrupt(ValueError):
    pass


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end and shift < 64:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise _Corrupt("bad varint")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _spans(buf: bytes, pos: int, end: int) -> list[tuple[int, int, int, int]]:
    """The length-delimited fields of the message ``buf[pos:end]``: (number, field
    start, value start, value end); other fields are stepped over."""
    found = []
    while pos < end:
        at = pos
        tag, pos = _varint(buf, pos, end)
        wire = tag & 7
        if wire == 0:
            pos = _varint(buf, pos, end)[1]
        elif wire == 1 or wire == 5:
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
            found.append((tag >> 3, at, pos, pos + size))
            pos += size
        else:
            raise _Corrupt(f"wire type {wire}")
        if pos > end:
            raise _Corrupt("truncated")
    return found


def _field(buf: bytes, pos: int, end: int, number: int) -> tuple[int, int, int] | None:
    """The last occurrence of a length-delimited field (protobuf's rule for a repeated
    singular field): (field start, value start, value end)."""
    last = None
    for found, at, start, stop in _spans(buf, pos, end):
        if found == number:
            last = (at, start, stop)
    return last


def _with_field(buf: bytes, field: tuple[int, int, int], number: int, value: bytes) -> bytes:
    """``buf`` with one length-delimited field replaced by ``value``."""
    at, _, stop = field
    return buf[:at] + _encode_varint(number << 3 | 2) + _encode_varint(len(value)) + value \
        + buf[stop:]


def _protobuf_secret(body: bytes, storage_namespace: str) -> tuple[str, bytes] | None:
    """A protobuf v1 Secret's name, and the body with its namespace (when it has one)
    set to ``storage_namespace``; None when it is no such body."""
    if not body.startswith(_PROTOBUF_MAGIC):
        return None
    try:
        begin = len(_PROTOBUF_MAGIC)
        type_meta = _field(body, begin, len(body), 1)
        raw = _field(body, begin, len(body), 2)
        encoding = _field(body, begin, len(body), 3)
        if type_meta is None or raw is None or (encoding and encoding[1] != encoding[2]):
            return None  # no type, no object, or compressed (client-go never does)
        api_version = _field(body, type_meta[1], type_meta[2], 1)
        kind = _field(body, type_meta[1], type_meta[2], 2)
        if api_version is None or kind is None \
                or body[api_version[1]:api_version[2]] != b"v1" \
                or body[kind[1]:kind[2]] != b"Secret":
            return None
        secret = body[raw[1]:raw[2]]
        meta = _field(secret, 0, len(secret), 1)
        if meta is None:
            return None
        name_at = _field(secret, meta[1], meta[2], 1)
        name = "" if name_at is None else secret[name_at[1]:name_at[2]].decode()
        namespace = _field(secret, meta[1], meta[2], 3)
    except (_Corrupt, UnicodeDecodeError):
        return None
    if namespace is None or namespace[1] == namespace[2]:
        return name, body
    metadata = _with_field(secret[meta[1]:meta[2]], (namespace[0] - meta[1],
                           namespace[1] - meta[1], namespace[2] - meta[1]), 3,
                           storage_namespace.encode())
    return name, _with_field(body, raw, 2, _with_field(secret, meta, 1, metadata))


def _body_overflowed(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _BodyTooLarge):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _bounded(content: aiohttp.StreamReader, limit: int) -> AsyncIterator[bytes]:
    """The request body as it arrives; more than ``limit`` bytes end it with
    ``_BodyTooLarge``."""
    total = 0
    async for chunk in content.iter_any():
        total += len(chunk)
        if total > limit:
            raise _BodyTooLarge
        yield chunk


async def _read_bounded(content: aiohttp.StreamReader, limit: int) -> bytes:
    parts = [chunk async for chunk in _bounded(content, limit)]
    return b"".join(parts)


async def _stream_back(request: web.Request, upstream: aiohttp.ClientResponse,
                       begun: list[web.StreamResponse]) -> web.StreamResponse:
    """The API server's answer, passed to helm chunk by chunk as it comes."""
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    for name, value in upstream.headers.items():
        if name.lower() not in _NOT_RETURNED:
            response.headers.add(name, value)
    begun.append(response)
    await response.prepare(request)
    try:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
    except (aiohttp.ClientError, ConnectionError, TimeoutError):
        # either side went away mid-answer: cut helm's connection, so a truncated
        # answer never looks complete
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


def _kubeconfig(server: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "fluxd", "cluster": {"server": server}}],
        "users": [{"name": "fluxd", "user": {}}],
        "contexts": [{"name": "fluxd", "context": {
            "cluster": "fluxd", "user": "fluxd", "namespace": namespace}}],
        "current-context": "fluxd",
    }


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by this user only from the start."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)
