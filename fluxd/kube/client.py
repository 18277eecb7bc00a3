"""A typed facade over kubernetes_asyncio: plain dicts in, plain dicts out.

``KubeClient`` speaks to the API with raw paths found through the ``RESTMapper`` (so any
kind, including CRDs added later, works without generated models), and returns the JSON
the server sent — the informer cache holds these dicts, never kubernetes_asyncio model
objects. It offers get, paginated list, watch, create, server-side apply (dry-run,
force), JSON merge patch, status patch and delete, maps failures to the typed exceptions
of ``fluxd.kube.errors``, and hands out impersonating clients — one per ServiceAccount,
reused — that share the connection pool, mapper, throttle and retries.

The request budget: **no client-side rate limit by default**; the API server's priority
and fairness (APF) decides, and the client honours it. A request the server refuses with
429, or a 5xx carrying ``Retry-After``, is sent again after the seconds the server asked
for (at most ``MAX_RETRY_AFTER`` each, up to ``MAX_RETRIES`` times — client-go's
``maxRetries``); then the caller gets the error. APF and the max-in-flight filter refuse
a request before it runs, so sending a refused write again is safe (a 5xx with
``Retry-After`` is sent again for every verb too, as client-go does). Why not a fixed QPS: one
fluxd process runs the work of Flux's four controllers, and Flux's controllers already
drop their own ``--kube-api-qps`` limit whenever the server has APF (on by default since
Kubernetes 1.20), as controller-runtime does by default since v0.21; a fixed budget would
only give the server less room than Flux does. What fluxd has in flight is bounded by its
workers and by the connection pool (``CONNECTION_LIMIT`` sockets). ``[kube] qps``/``burst``
remain as an optional cap (Flux's ``--kube-api-qps``/``--kube-api-burst``); ``qps = 0``
is off. Every answer is counted in ``rest_client_requests_total{code,method,host}``, the
name client-go and controller-runtime use, so throttling shows as ``code="429"``.

This package is the only one that imports kubernetes_asyncio.
"""

from __future__ import annotations

import asyncio.sslproto
import json
import logging
import os
import re
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import yarl
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader
from prometheus_client import CollectorRegistry, Counter

from fluxd import logging as fluxlog
from fluxd.clock import Clock
from fluxd.kube.errors import Gone, KubeError, TransportError, from_status
from fluxd.kube.mapping import Mapping, RESTMapper
from fluxd.tokenbucket import TokenBucket

log = logging.getLogger("fluxd.kube")

Obj = dict[str, Any]

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON = "application/json"

#: times a refused request is sent again before the caller gets the error: client-go's
#: ``maxRetries`` (rest/request.go)
MAX_RETRIES = 10
#: longest wait for one ``Retry-After``: the largest value kube-apiserver's priority and
#: fairness sends (``maxRetryAfter``, 32 s), so a real server is always obeyed and a broken
#: one cannot park a worker for longer
MAX_RETRY_AFTER = 32.0
#: sockets to the API server at most (aiohttp's connector limit; a request beyond it
#: waits for a free connection within its timeout). Each watch holds one for its whole
#: life, each other request one while it runs; fluxd's workers with their concurrent
#: applies and its informers' watches need a few dozen, so 100 leaves room and still
#: keeps the process far from file-descriptor limits and the server's in-flight limits.
CONNECTION_LIMIT = 100
#: the read buffer of one TLS connection. asyncio gives each a 256 KiB buffer, zero-filled
#: (so resident) when the connection opens; a TLS record is at most 16 KiB, so 64 KiB
#: still takes several per read, and some fifty connections (watches and a burst of
#: applies) hold about 10 MiB less
TLS_READ_BUFFER = 64 * 1024
#: the throttled-response debug line: one per this many seconds, the rest counted
THROTTLED_LOG_INTERVAL = 10.0


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED | MODIFIED | DELETED | BOOKMARK
    object: Obj


@dataclass(frozen=True)
class ListResult:
    items: list[Obj]
    resource_version: str


class Throttle:
    """The optional client-side cap: ``qps`` requests per second with bursts of
    ``burst``; a request over it waits its turn (a reserved token) on the clock.
    ``qps <= 0`` is no cap at all (the default): ``wait`` returns at once."""

    def __init__(self, qps: float, burst: int, clock: Clock) -> None:
        self._clock = clock
        self.qps, self.burst = 0.0, max(burst, 1)
        self._bucket: TokenBucket | None = None
        self.set_rate(qps, burst)

    @property
    def enabled(self) -> bool:
        return self._bucket is not None

    def set_rate(self, qps: float, burst: int) -> None:
        """Change the limits in place (hot configuration reload); ``qps <= 0`` lifts
        the cap, a positive one sets it (a new cap starts with a full burst)."""
        self.qps, self.burst = max(qps, 0.0), max(burst, 1)
        if self.qps == 0.0:
            self._bucket = None
        elif self._bucket is None:
            self._bucket = TokenBucket(burst=self.burst, every=1.0 / self.qps,
                                       monotonic=self._clock.monotonic)
        else:
            self._bucket.set_limits(burst=self.burst, every=1.0 / self.qps)

    async def wait(self) -> None:
        if self._bucket is None:
            return
        delay = self._bucket.reserve()
        if delay > 0:
            await self._clock.sleep(delay)


class RequestCounter:
    """``rest_client_requests_total{code,method,host}``: every answer of the API server
    (each attempt, so a throttled one shows as ``code="429"``), ``<error>`` for a
    request that got none — client-go's metric under controller-runtime's name."""

    def __init__(self, registry: CollectorRegistry, host: str) -> None:
        self._host = host
        self._counter = Counter(
            "rest_client_requests_total",
            "Number of HTTP requests, partitioned by status code, method, and host.",
            ["code", "method", "host"], registry=registry)
        # label look-ups cost more than the increment: keep the children
        self._children: dict[tuple[str, str], Any] = {}

    def count(self, code: str, method: str) -> None:
        child = self._children.get((code, method))
        if child is None:
            child = self._children[(code, method)] = self._counter.labels(
                code, method, self._host)
        child.inc()


@dataclass
class _Shared:
    """What the root client and its impersonating clients have in common."""

    api: k8s_client.ApiClient
    clock: Clock
    throttle: Throttle
    request_timeout: float
    requests: RequestCounter | None = None
    impersonated: dict[str, KubeClient] = field(default_factory=dict)
    mapper: RESTMapper = field(init=False)
    throttled_log: fluxlog.LogThrottle = field(init=False)

    def __post_init__(self) -> None:
        self.throttled_log = fluxlog.LogThrottle(interval=THROTTLED_LOG_INTERVAL, burst=1,
                                                 monotonic=self.clock.monotonic)

    def answered(self, code: str, method: str) -> None:
        if self.requests is not None:
            self.requests.count(code, method)

    def throttled(self, method: str, path: str, status: int, wait: float,
                  attempt: int) -> None:
        """One debug line per burst of refusals (the rest counted into the next)."""
        held = self.throttled_log.admit()
        if held is not None:
            log.debug("the API server asked to retry later; waiting as told",
                      extra=fluxlog.fields(method=method, path=path, code=status,
                                           retryAfter=wait, attempt=attempt,
                                           heldBack=held))


class KubeClient:
    def __init__(self, shared: _Shared, *, field_manager: str,
                 impersonate: str | None = None) -> None:
        self._shared = shared
        self.field_manager = field_manager
        self.identity = impersonate
        self._headers = {"Impersonate-User": impersonate} if impersonate else {}

    # --- construction -----------------------------------------------------------------

    @classmethod
    async def connect(cls, *, clock: Clock, kubeconfig: str | None = None,
                      context: str | None = None, qps: float = 0.0, burst: int = 300,
                      field_manager: str = "fluxd", request_timeout: float = 30.0,
                      service_account_dir: str = SERVICE_ACCOUNT_DIR,
                      registry: CollectorRegistry | None = None,
                      connection_limit: int = CONNECTION_LIMIT) -> KubeClient:
        """Connect with a kubeconfig (explicit path, else $KUBECONFIG/~/.kube/config) or,
        inside a Pod without one, the in-cluster service account (its token is re-read
        as the kubelet rotates it). ``qps > 0`` caps the request rate on the client
        (else the server's priority and fairness alone decides); ``registry`` gets
        ``rest_client_requests_total``."""
        # asyncio has no per-connection setting for it: the class attribute it reads is
        # the one way, and a smaller buffer only means more reads of a large answer
        asyncio.sslproto.SSLProtocol.max_size = min(asyncio.sslproto.SSLProtocol.max_size,
                                                    TLS_READ_BUFFER)
        cfg = k8s_client.Configuration()
        cfg.connection_pool_maxsize = max(1, connection_limit)
        in_cluster = kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ \
            and "KUBECONFIG" not in os.environ
        if in_cluster:
            InClusterConfigLoader(
                token_filename=os.path.join(service_account_dir, "token"),
                cert_filename=os.path.join(service_account_dir, "ca.crt"),
            ).load_and_set(cfg)
        else:
            await k8s_config.load_kube_config(config_file=kubeconfig, context=context,
                                              client_configuration=cfg)
        api = k8s_client.ApiClient(cfg)
        api.user_agent = "fluxd"
        _settle_proxy(api, cfg)
        requests = None if registry is None else RequestCounter(
            registry, urllib.parse.urlsplit(str(cfg.host)).netloc)
        shared = _Shared(api=api, clock=clock, throttle=Throttle(qps, burst, clock),
                         request_timeout=request_timeout, requests=requests)
        root = cls(shared, field_manager=field_manager)
        shared.mapper = RESTMapper(root, clock)
        return root

    async def close(self) -> None:
        if self.identity is None:
            await self._shared.api.close()
            # let the TLS transports finish closing before the caller's loop may end
            # (aiohttp's documented graceful shutdown)
            await self._shared.clock.sleep(0.1)

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def throttle(self) -> Throttle:
        return self._shared.throttle

    def impersonate(self, namespace: str, service_account: str) -> KubeClient:
        """A client acting as ``system:serviceaccount:<namespace>:<service_account>``."""
        user = f"system:serviceaccount:{namespace}:{service_account}"
        found = self._shared.impersonated.get(user)
        if found is None:
            found = KubeClient(self._shared, field_manager=self.field_manager,
                               impersonate=user)
            self._shared.impersonated[user] = found
        return found

    # --- the wire ---------------------------------------------------------------------

    async def _send(self, method: str, path: str, *, query: list[tuple[str, str]] | None,
                    body: Any, content_type: str, accept: str,
                    limit: float | aiohttp.ClientTimeout | None) -> aiohttp.ClientResponse:
        """One request on the shared session, with kubernetes_asyncio's configuration
        (host, TLS, bearer token and its refresh) but without its generic ``call_api``
        layer, whose per-request walk over the body costs more than the request.

        A 429, or a 5xx with ``Retry-After``, is sent again after the wait the server
        asked for, as client-go does for every verb (see the module docstring)."""
        shared = self._shared
        api = shared.api
        cfg = api.configuration
        rest = api.rest_client
        url = f"{cfg.host}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        timeout = limit or shared.request_timeout
        options: dict[str, Any] = {
            "timeout": timeout if isinstance(timeout, aiohttp.ClientTimeout)
            else aiohttp.ClientTimeout(total=timeout)}
        if body is not None:
            options["data"] = body if isinstance(body, bytes) else _encode(body).encode()
        if rest.proxy:
            options["proxy"] = rest.proxy
        if rest.server_hostname:
            options["server_hostname"] = rest.server_hostname
        for attempt in range(MAX_RETRIES + 1):
            # a retry waits its turn under the cap too, as client-go's does
            await shared.throttle.wait()
            headers: dict[str, Any] = {"Content-Type": content_type, "Accept": accept,
                                       "User-Agent": api.user_agent, **self._headers}
            if "BearerToken" in cfg.api_key:
                token = await cfg.get_api_key_with_prefix("BearerToken")
                if token:
                    headers["authorization"] = token
            try:
                resp: aiohttp.ClientResponse = await rest.pool_manager.request(
                    method, url, headers=headers, **options)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                shared.answered("<error>", method)
                raise TransportError(f"{method} {path}: {exc or type(exc).__name__}") from exc
            shared.answered(str(resp.status), method)
            if resp.status < 400:
                return resp
            data = await _body(resp, method, path)
            wait = retry_after(resp.status, resp.headers.get("Retry-After"))
            if wait is None or attempt == MAX_RETRIES:
                raise from_status(resp.status, data)
            shared.throttled(method, path, resp.status, wait, attempt + 1)
            await shared.clock.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def forward(self, method: str, path_qs: str, *, headers: dict[str, str],
                      body: bytes | AsyncIterator[bytes] | None) -> aiohttp.ClientResponse:
        """One request passed through as it came: ``path_qs`` is the raw (already
        encoded) path and query, ``body`` bytes or a stream of chunks (sized by a
        ``Content-Length`` in ``headers``, else chunked). It goes out on this client's
        connection with its credentials (TLS and client certificate, bearer token and
        its refresh, impersonation); ``headers`` bring no credentials or identity of
        their own (``Authorization`` and ``Impersonate-*`` are dropped). Nothing is
        retried or read: every status comes back as it is, and the caller releases the
        response. No time limit either (a watch lasts): the caller bounds the wait on
        its clock. For the helm API proxy (``fluxd.kube.proxy``)."""
        api = self._shared.api
        cfg = api.configuration
        rest = api.rest_client
        sent = {k: v for k, v in headers.items()
                if k.lower() != "authorization" and not k.lower().startswith("impersonate-")}
        sent.update(self._headers)
        sent.setdefault("User-Agent", str(api.user_agent))
        if "BearerToken" in cfg.api_key:
            token = await cfg.get_api_key_with_prefix("BearerToken")
            if token:
                sent["Authorization"] = token
        options: dict[str, Any] = {}
        if rest.proxy:
            options["proxy"] = rest.proxy
        if rest.server_hostname:
            options["server_hostname"] = rest.server_hostname
        try:
            resp: aiohttp.ClientResponse = await rest.pool_manager.request(
                method, yarl.URL(f"{cfg.host}{path_qs}", encoded=True), headers=sent,
                data=body, timeout=aiohttp.ClientTimeout(total=None), allow_redirects=False,
                **options)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._shared.answered("<error>", method)
            raise TransportError(f"{method} {path_qs}: {exc or type(exc).__name__}") from exc
        self._shared.answered(str(resp.status), method)
        return resp

    async def _exchange(self, method: str, path: str, *, query: list[tuple[str, str]] | None,
                        body: Any, content_type: str, accept: str) -> tuple[Any, str]:
        """One request with a JSON answer: (decoded body or None, content type)."""
        resp = await self._send(method, path, query=query, body=body,
                                content_type=content_type, accept=accept, limit=None)
        data = await _body(resp, method, path)
        return (json.loads(data) if data else None), resp.headers.get("Content-Type", "")

    async def request(self, method: str, path: str, *,
                      query: list[tuple[str, str]] | None = None, body: Any = None,
                      content_type: str = JSON, accept: str = JSON) -> Any:
        decoded, _ = await self._exchange(method, path, query=query, body=body,
                                          content_type=content_type, accept=accept)
        return decoded

    async def get_json(self, path: str, *, accept: str) -> tuple[Any, str]:
        """For the REST mapper: JSON and the content type it came in."""
        return await self._exchange("GET", path, query=None, body=None, content_type=JSON,
                                    accept=accept)

    async def refresh_mapping(self) -> None:
        """Re-read discovery now (e.g. after installing CRDs)."""
        await self._shared.mapper.refresh()

    async def mapping(self, api_version: str, kind: str) -> Mapping:
        return await self._shared.mapper.mapping(api_version, kind)

    async def _path(self, api_version: str, kind: str, namespace: str | None,
                    name: str | None = None, subresource: str | None = None) -> str:
        m = await self.mapping(api_version, kind)
        return m.path(namespace if m.namespaced else None, name, subresource)

    # --- verbs ------------------------------------------------------------------------

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> Obj:
        obj: Obj = await self.request("GET", await self._path(api_version, kind, namespace, name))
        return obj

    async def list_all(self, api_version: str, kind: str, namespace: str | None = None, *,
                   label_selector: str | None = None, field_selector: str | None = None,
                   page_size: int = 500, max_pages: int = 10_000) -> ListResult:
        """All objects, fetched in pages; items carry apiVersion and kind."""
        path = await self._path(api_version, kind, namespace)
        items: list[Obj] = []
        token = ""
        resource_version = ""
        for _ in range(max_pages):
            query = [("limit", str(page_size))]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if field_selector:
                query.append(("fieldSelector", field_selector))
            if token:
                query.append(("continue", token))
            try:
                page = await self.request("GET", path, query=query)
            except Gone:
                if not token:
                    raise
                # the continue token expired: start over, as client-go's pager does
                items, token = [], ""
                continue
            meta = page.get("metadata") or {}
            if not token:
                resource_version = meta.get("resourceVersion", "")
            for item in page.get("items") or []:
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                items.append(item)
            token = meta.get("continue") or ""
            if not token:
                return ListResult(items, resource_version)
        raise KubeError(0, f"listing {kind} did not finish within {max_pages} pages")

    async def watch(self, api_version: str, kind: str, namespace: str | None = None, *,
                    resource_version: str = "", label_selector: str | None = None,
                    field_selector: str | None = None, timeout_seconds: int = 300,
                    bookmarks: bool = True) -> AsyncIterator[WatchEvent]:
        """Events after ``resource_version`` until the server ends the watch; an ERROR
        event is raised as its KubeError (``Gone`` for a compacted version)."""
        path = await self._path(api_version, kind, namespace)
        query = [("watch", "1"), ("timeoutSeconds", str(timeout_seconds))]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        if bookmarks:
            query.append(("allowWatchBookmarks", "true"))
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        timeout = aiohttp.ClientTimeout(total=None, connect=self._shared.request_timeout,
                                        sock_read=timeout_seconds + 30)
        resp = await self._send("GET", path, query=query, body=None, content_type=JSON,
                                accept=JSON, limit=timeout)
        try:
            while True:
                try:
                    line = await resp.content.readline()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise TransportError(f"watch {kind}: {exc or type(exc).__name__}") from exc
                if not line:
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    raise from_status(int(obj.get("code") or 500), json.dumps(obj))
                yield WatchEvent(event.get("type", ""), obj)
        finally:
            resp.release()

    def _write_query(self, *, dry_run: bool, field_manager: str | None = None,
                     force: bool = False) -> list[tuple[str, str]]:
        query = [("fieldManager", field_manager or self.field_manager)]
        if dry_run:
            query.append(("dryRun", "All"))
        if force:
            query.append(("force", "true"))
        return query

    async def create(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        meta = obj.get("metadata") or {}
        path = await self._path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        created: Obj = await self.request("POST", path, body=obj,
                                          query=self._write_query(dry_run=dry_run))
        self._wrote(created, dry_run)
        return created

    async def update(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        """PUT ``obj``; its metadata.resourceVersion makes the write conditional."""
        meta = obj.get("metadata") or {}
        path = await self._path(obj["apiVersion"], obj["kind"], meta.get("namespace"),
                                meta["name"])
        updated: Obj = await self.request("PUT", path, body=obj,
                                          query=self._write_query(dry_run=dry_run))
        self._wrote(updated, dry_run)
        return updated

    async def apply(self, obj: Obj, *, force: bool = False, dry_run: bool = False,
                    field_manager: str | None = None, subresource: str | None = None) -> Obj:
        """Server-side apply ``obj`` (its apiVersion, kind, name and namespace locate it)."""
        meta = obj.get("metadata") or {}
        path = await self._path(obj["apiVersion"], obj["kind"], meta.get("namespace"),
                                meta["name"], subresource)
        applied: Obj = await self.request(
            "PATCH", path, body=obj, content_type=APPLY_PATCH,
            query=self._write_query(dry_run=dry_run, field_manager=field_manager,
                                    force=force))
        self._wrote(applied, dry_run)
        return applied

    def _wrote(self, obj: Obj, dry_run: bool) -> None:
        """After a write: a CRD's kinds are about to be served, so the mapper waits for
        them to reach discovery rather than failing the first lookup."""
        if not dry_run and isinstance(obj, dict) and obj.get("kind") == "CustomResourceDefinition" \
                and str(obj.get("apiVersion", "")).startswith("apiextensions.k8s.io/"):
            self._shared.mapper.expect_crd(obj)

    async def merge_patch(self, api_version: str, kind: str, name: str, patch: Obj,
                          namespace: str | None = None, *, subresource: str | None = None,
                          dry_run: bool = False) -> Obj:
        path = await self._path(api_version, kind, namespace, name, subresource)
        patched: Obj = await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH,
                                          query=self._write_query(dry_run=dry_run))
        return patched

    async def patch_status(self, api_version: str, kind: str, name: str, patch: Obj,
                           namespace: str | None = None) -> Obj:
        return await self.merge_patch(api_version, kind, name, patch, namespace,
                                      subresource="status")

    async def delete(self, api_version: str, kind: str, name: str,
                     namespace: str | None = None, *, propagation: str = "Background",
                     dry_run: bool = False, preconditions: dict[str, str] | None = None
                     ) -> Obj:
        path = await self._path(api_version, kind, namespace, name)
        options: Obj = {"apiVersion": "v1", "kind": "DeleteOptions",
                        "propagationPolicy": propagation}
        if dry_run:
            options["dryRun"] = ["All"]
        if preconditions:
            options["preconditions"] = preconditions
        result: Obj = await self.request("DELETE", path, body=options)
        return result


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_SECONDS = re.compile(r"[+-]?[0-9]+")


def retry_after(status: int, header: str | None) -> float | None:
    """Seconds to wait before sending a refused request again, or None when the answer
    is final: the server must have refused it (429, or any 5xx) *and* said when to
    come back (``Retry-After`` in whole seconds, client-go's reading); the wait is
    bounded by ``MAX_RETRY_AFTER``."""
    if status != 429 and status < 500:
        return None
    text = (header or "").strip()
    if len(text) > 12 or not _SECONDS.fullmatch(text):
        return None
    return min(max(float(int(text)), 0.0), MAX_RETRY_AFTER)


def _settle_proxy(api: k8s_client.ApiClient, cfg: k8s_client.Configuration) -> None:
    """Decide the proxy once, as client-go does from HTTPS_PROXY/NO_PROXY (unless the
    kubeconfig names one), instead of the session's per-request look-up of the
    environment and ~/.netrc (``trust_env``), which costs more than the request itself
    on a busy controller."""
    rest = api.rest_client
    if not cfg.proxy:
        url = urllib.parse.urlsplit(str(cfg.host))
        if url.hostname and not urllib.request.proxy_bypass(url.hostname):
            found = urllib.request.getproxies().get(str(url.scheme))
            if found:
                rest.proxy = found
    session: aiohttp.ClientSession = rest.pool_manager
    connector = session.connector
    session.detach()
    rest.pool_manager = aiohttp.ClientSession(connector=connector, trust_env=False,
                                              read_bufsize=2**21)


async def _body(resp: aiohttp.ClientResponse, method: str, path: str) -> bytes:
    """The whole response body; the connection goes back to the pool either way."""
    try:
        return await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TransportError(f"{method} {path}: {exc or type(exc).__name__}") from exc
    finally:
        resp.release()
