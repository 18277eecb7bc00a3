"""The HTTP face of the development API server.

Maps Kubernetes REST paths onto ``Cluster``: discovery and OpenAPI, CRUD, patches and
server-side apply, the ``status``/``scale``/``finalize`` subresources, lists with
selectors and pagination, watches (chunked JSON events, bookmarks, 410 Gone), tables
for ``kubectl get``, bearer-token authentication, impersonation authorised by RBAC,
``Status`` errors shaped as real clients expect, and kube-apiserver's max-in-flight limit
(``--max-requests-inflight``/``--max-mutating-requests-inflight``: past it, 429 with
``Retry-After: 1``, before the request is looked at further; watches and
``system:masters`` are never refused).

This is a development server: everything is in memory and gone when it stops. It is not
an API server for production use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

from fluxd.clock import rfc3339
from fluxd.devcluster import conversion, discovery, protobuf, rbac, table
from fluxd.devcluster.cluster import Cluster, WriteOptions
from fluxd.devcluster.errors import ApiError, bad_request, not_found
from fluxd.devcluster.registry import ResourceType
from fluxd.devcluster.selector import labels_match, parse_fields, parse_labels
from fluxd.devcluster.store import Change, Gone, Obj
from fluxd.jsonvalue import clone
from fluxd.lru import LRU

log = logging.getLogger("fluxd.devcluster.server")

ADMIN_USER = "fluxd-dev-admin"
ADMIN_GROUPS = ("system:masters", "system:authenticated")
_AGGREGATED = "apidiscovery.k8s.io"
PROTOBUF = "application/vnd.kubernetes.protobuf"


@dataclass
class ServerOptions:
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    max_request_bytes: int = 3 * 1024 * 1024
    bookmark_interval: float = 30.0
    #: longest a watch stays open when the client gives no timeoutSeconds
    max_watch_seconds: float = 1800.0
    #: serve ``sendInitialEvents`` watches (watch-list). A real server whose storage lacks
    #: RequestWatchProgress (etcd 3.4) refuses them; False does the same, so clients that
    #: must work there can be tested against it.
    watch_list: bool = True
    #: requests served at once, as kube-apiserver's --max-requests-inflight (get, list and
    #: other reads) and --max-mutating-requests-inflight (writes); one more is answered
    #: 429 with Retry-After: 1. Watches are long-running and not counted; 0: no limit.
    #: Read on every request, so a test may change it on a running server.
    max_requests_inflight: int = 400
    max_mutating_requests_inflight: int = 200
    #: users in these groups are never refused (kube-apiserver lets system:masters by)
    inflight_exempt_groups: tuple[str, ...] = ("system:masters",)


#: kube-apiserver answers an in-flight refusal with Go's http.Error: this plain text
#: (not a Status), ``Retry-After: 1`` and ``X-Content-Type-Options: nosniff``
TOO_MANY_REQUESTS = "Too many requests, please try again later.\n"


@dataclass(frozen=True)
class Target:
    rt: ResourceType
    namespace: str
    name: str
    subresource: str


class _Source:
    """RBAC rules read from the store."""

    def __init__(self, cluster: Cluster) -> None:
        self.store = cluster.store

    def roles(self, namespace: str) -> list[Obj]:
        return self.store.select(("rbac.authorization.k8s.io", "roles"), namespace)

    def role_bindings(self, namespace: str) -> list[Obj]:
        return self.store.select(("rbac.authorization.k8s.io", "rolebindings"), namespace)

    def cluster_roles(self) -> list[Obj]:
        return self.store.select(("rbac.authorization.k8s.io", "clusterroles"))

    def cluster_role_bindings(self) -> list[Obj]:
        return self.store.select(("rbac.authorization.k8s.io", "clusterrolebindings"))


def _accepts(request: web.Request) -> list[dict[str, str]]:
    out = []
    for part in request.headers.get("Accept", "application/json").split(","):
        fields = [f.strip() for f in part.split(";")]
        params = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
        params["type"] = fields[0]
        out.append(params)
    return out


def _wants(request: web.Request, kind: str) -> dict[str, str] | None:
    for accept in _accepts(request):
        if accept.get("as") == kind and accept["type"] == "application/json":
            return accept
    return None


def _long_running(request: web.Request) -> bool:
    """A watch: kube-apiserver's in-flight limit leaves long-running requests alone."""
    if request.method != "GET":
        return False
    if request.query.get("watch") in ("1", "true", "True"):
        return True
    parts = [p for p in request.path.split("/") if p]
    at = 2 if parts[:1] == ["api"] else 3 if parts[:1] == ["apis"] else 0
    return bool(at) and len(parts) > at and parts[at] == "watch"


def _json(data: Any, status: int = 200, content_type: str = "application/json") -> web.Response:
    body = json.dumps(data, separators=(",", ":"))
    return web.Response(body=body.encode(), status=status,
                        headers={"Content-Type": content_type})


def _error(exc: ApiError) -> web.Response:
    return _json(exc.status(), exc.code)


class DevServer:
    def __init__(self, cluster: Cluster, options: ServerOptions) -> None:
        self.cluster = cluster
        self.options = options
        self.rbac_source = _Source(cluster)
        self.started = rfc3339(cluster.clock.now())
        self.address = "127.0.0.1:0"
        self._closing = asyncio.Event()
        #: encoded watch events by (object identity, event type, version); holds the object
        #: so its id cannot be reused while cached
        self._encoded: LRU[tuple[int, str, str], tuple[Obj, bytes]] = LRU(4096)
        #: requests being served, by whether they are mutating (the in-flight limit)
        self.inflight = {False: 0, True: 0}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.options.max_request_bytes + 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def close_watches(self) -> None:
        self._closing.set()
        self.cluster.store.stop_all_watches()

    # --- entry ------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            user = self._authenticate(request)
            if _long_running(request) or not set(user.groups).isdisjoint(
                    self.options.inflight_exempt_groups):
                return await self._route(request, user)
            mutating = request.method not in ("GET", "HEAD")
            limit = self.options.max_mutating_requests_inflight if mutating \
                else self.options.max_requests_inflight
            if 0 < limit <= self.inflight[mutating]:
                return web.Response(status=429, text=TOO_MANY_REQUESTS,
                                    content_type="text/plain", charset="utf-8",
                                    headers={"Retry-After": "1",
                                             "X-Content-Type-Options": "nosniff"})
            self.inflight[mutating] += 1
            try:
                return await self._route(request, user)
            finally:
                self.inflight[mutating] -= 1
        except ApiError as exc:
            return _error(exc)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("internal error serving %s %s", request.method, request.path)
            return _error(ApiError(500, f"Internal error occurred: {exc}"))

    def _authenticate(self, request: web.Request) -> rbac.UserInfo:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not token or not secrets.compare_digest(token, self.options.token):
            raise ApiError(401, "Unauthorized")
        admin = rbac.UserInfo(ADMIN_USER, ADMIN_GROUPS)
        as_user = request.headers.get("Impersonate-User")
        as_groups = tuple(request.headers.getall("Impersonate-Group", []))
        if not as_user:
            if as_groups:
                raise ApiError(500, "Internal error occurred: requested "
                                    f"{list(as_groups)} without impersonating a user")
            return admin
        return rbac.UserInfo.for_request(as_user, as_groups)

    def _authorize(self, user: rbac.UserInfo, attrs: rbac.Attributes) -> None:
        if user.name == ADMIN_USER:
            return
        decision = rbac.authorize(user, attrs, self.rbac_source)
        if not decision.allowed:
            message = rbac.forbidden_message(user, attrs)
            details: dict[str, Any] = {"kind": attrs.resource}
            if attrs.name:
                details["name"] = attrs.name
            if attrs.api_group:
                details["group"] = attrs.api_group
            raise ApiError(403, message, details=details if attrs.resource_request else None)

    # --- routing ----------------------------------------------------------------------

    async def _route(self, request: web.Request, user: rbac.UserInfo) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis"):
            self._authorize(user, rbac.Attributes(
                verb=request.method.lower(), namespace="", api_group="", resource="",
                path=path, resource_request=False))
            return self._non_resource(request, path)
        if parts[0] == "api":
            if len(parts) == 1:
                return self._discovery_root(request, legacy=True)
            group, version, rest = "", parts[1], parts[2:]
        else:
            if len(parts) == 1:
                return self._discovery_root(request, legacy=False)
            if len(parts) == 2:
                doc = discovery.api_group(self.cluster.registry.discoverable(), parts[1])
                if doc is None:
                    raise _page_not_found()
                return _json(doc)
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            doc = discovery.resource_list(self.cluster.registry.discoverable(), group, version)
            if doc is None:
                raise _page_not_found()
            return _json(doc)
        watch_prefix = rest[0] == "watch"
        if watch_prefix:
            rest = rest[1:]
        target, collection = self._target(group, version, rest)
        verb = self._verb(request, target, collection, watch_prefix)
        self._authorize(user, rbac.Attributes(
            verb=verb, namespace=target.namespace, api_group=target.rt.group,
            resource=target.rt.plural, subresource=target.subresource, name=target.name))
        return await self._dispatch(request, user, target, verb)

    def _target(self, group: str, version: str, rest: list[str]) -> tuple[Target, bool]:
        reg = self.cluster.registry
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            # /api/v1/namespaces/x/status is the Namespace's own subresource;
            # /api/v1/namespaces/x/configmaps is a namespaced collection.
            inner = reg.lookup(group, version, rest[2])
            if group or (inner is not None and inner.namespaced):
                namespace, rest = rest[1], rest[2:]
        rt = reg.lookup(group, version, rest[0])
        if rt is None or len(rest) > 3:
            raise _page_not_found()
        if namespace and not rt.namespaced:
            raise _page_not_found()
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if sub and sub not in rt.subresources:
            raise _page_not_found()
        return Target(rt, namespace, name, sub), not name

    @staticmethod
    def _verb(request: web.Request, target: Target, collection: bool, watch_prefix: bool) -> str:
        method = request.method
        if method == "GET":
            if collection:
                watch = watch_prefix or request.query.get("watch") in ("1", "true", "True")
                return "watch" if watch else "list"
            return "watch" if watch_prefix else "get"
        if method == "POST":
            return "create"
        if method == "PUT":
            return "update"
        if method == "PATCH":
            return "patch"
        if method == "DELETE":
            return "deletecollection" if collection else "delete"
        raise ApiError(405, f"the server does not allow this method on the requested "
                            f"resource ({method})")

    # --- non-resource and discovery ---------------------------------------------------

    def _non_resource(self, request: web.Request, path: str) -> web.StreamResponse:
        if path == "/version":
            return _json(discovery.version_info(self.started))
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/openapi/v3":
            return _json(discovery.openapi_index(self.cluster.registry.discoverable()))
        if path.startswith("/openapi/v3/"):
            gv = path[len("/openapi/v3/"):].split("/")
            if gv[0] == "api" and len(gv) == 2:
                doc = discovery.openapi_document(self.cluster.registry.discoverable(), "", gv[1])
            elif gv[0] == "apis" and len(gv) == 3:
                doc = discovery.openapi_document(self.cluster.registry.discoverable(), gv[1], gv[2])
            else:
                doc = None
            if doc is not None:
                return _json(doc)
        raise _page_not_found()

    def _discovery_root(self, request: web.Request, *, legacy: bool) -> web.Response:
        for accept in _accepts(request):
            if accept.get("g") == _AGGREGATED and accept.get("as") == "APIGroupDiscoveryList" \
                    and accept["type"] == "application/json":
                version = accept.get("v", "v2")
                if version not in ("v2", "v2beta1"):
                    continue
                doc = discovery.aggregated(self.cluster.registry.discoverable(), legacy=legacy,
                                           api_version=f"{_AGGREGATED}/{version}")
                ctype = (f"application/json;g={_AGGREGATED};v={version};"
                         "as=APIGroupDiscoveryList")
                return _json(doc, content_type=ctype)
        if legacy:
            return _json(discovery.api_versions(self.address))
        return _json(discovery.api_group_list(self.cluster.registry.discoverable()))

    # --- resources --------------------------------------------------------------------

    async def _body(self, request: web.Request) -> tuple[str, Any]:
        if request.content_length and request.content_length > self.options.max_request_bytes:
            raise ApiError(413, "Request entity too large: limit is "
                                f"{self.options.max_request_bytes}")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise ApiError(413, "Request entity too large: limit is "
                                f"{self.options.max_request_bytes}") from exc
        if len(raw) > self.options.max_request_bytes:
            raise ApiError(413, "Request entity too large: limit is "
                                f"{self.options.max_request_bytes}")
        ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if ctype == PROTOBUF:
            try:
                return ctype, protobuf.decode(raw) if raw else None
            except protobuf.ProtobufError as exc:
                raise ApiError(415, f"the body of the request was in an unknown format - "
                                    f"accepted media types include: application/json, "
                                    f"application/yaml, {PROTOBUF} ({exc})") from exc
        if "cbor" in ctype:
            raise ApiError(415, f"the body of the request was in an unknown format - "
                                f"accepted media types include: application/json, "
                                f"application/yaml, {PROTOBUF} ({ctype})")
        try:
            if ctype in ("application/yaml", "application/apply-patch+yaml"):
                data = _json_or_yaml(raw)
            else:
                data = json.loads(raw) if raw.strip() else None
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"error decoding {'YAML' if 'yaml' in ctype else 'JSON'}: "
                              f"{exc}".replace("\n", " ")) from exc
        return ctype, data

    def _options(self, request: web.Request, body: Any = None) -> WriteOptions:
        q = request.query
        dry = q.getall("dryRun", [])
        for value in dry:
            if value != "All":
                raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: '
                                  '"All"')
        body_dry = (body or {}).get("dryRun") if isinstance(body, dict) else None
        validation = q.get("fieldValidation", "Strict")
        if validation not in ("Strict", "Warn", "Ignore"):
            raise bad_request(f'fieldValidation: Unsupported value: "{validation}"')
        return WriteOptions(
            dry_run=bool(dry) or body_dry == ["All"],
            field_manager=q.get("fieldManager", ""),
            force=q.get("force") in ("true", "1", "True"),
            field_validation=validation,
        )

    async def _dispatch(self, request: web.Request, user: rbac.UserInfo, target: Target,
                        verb: str) -> web.StreamResponse:
        cluster = self.cluster
        rt, ns, name, sub = target.rt, target.namespace, target.name, target.subresource
        agent = request.headers.get("User-Agent", "")
        if rt.virtual:
            if verb != "create":
                raise ApiError(405, "the server does not allow this method on the requested "
                                    "resource")
            _, body = await self._body(request)
            return _json(self._review(rt, ns, body, user), 201)
        if verb in ("list", "watch"):
            if verb == "watch":
                return await self._watch(request, rt, ns or None, name)
            return self._list(request, rt, ns or None)
        if verb == "get":
            if sub == "scale":
                return _json(cluster.get_scale(rt, ns, name))
            return self._object_response(request, rt, cluster.get(rt, ns, name))
        if verb == "create":
            if name:
                raise ApiError(405, "the server does not allow this method on the requested "
                                    "resource")
            _, body = await self._body(request)
            obj = cluster.create(rt, ns, body, opts=self._options(request), user_agent=agent)
            return _json(obj, 201)
        if verb == "update":
            _, body = await self._body(request)
            opts = self._options(request)
            if sub == "scale":
                return _json(cluster.update_scale(rt, ns, name, body, opts=opts, user_agent=agent))
            if sub == "finalize":
                return _json(self._finalize(rt, name, body, opts))
            return _json(cluster.update(rt, ns, name, body, subresource=sub, opts=opts,
                                        user_agent=agent))
        if verb == "patch":
            ctype, body = await self._body(request)
            opts = self._options(request)
            if sub == "scale":
                return _json(cluster.update_scale(rt, ns, name, body, opts=opts, user_agent=agent,
                                                  patch_type=ctype))
            obj, created = cluster.patch(rt, ns, name, ctype, body, subresource=sub, opts=opts,
                                         user_agent=agent)
            return _json(obj, 201 if created else 200)
        if verb == "delete":
            _, body = await self._body(request)
            options = body if isinstance(body, dict) else {}
            opts = self._options(request, options)
            propagation = request.query.get("propagationPolicy") or options.get(
                "propagationPolicy") or ""
            if options.get("orphanDependents") is True and not propagation:
                propagation = "Orphan"
            obj = cluster.delete(rt, ns, name, propagation=propagation,
                                 preconditions=options.get("preconditions"),
                                 dry_run=opts.dry_run)
            return _json(obj)
        if verb == "deletecollection":
            _, body = await self._body(request)
            options = body if isinstance(body, dict) else {}
            opts = self._options(request, options)
            result = cluster.list_objects(rt, ns or None, labels=parse_labels(
                request.query.get("labelSelector", "")), fields=parse_fields(
                request.query.get("fieldSelector", ""), rt.storage))
            for obj in result.items:
                try:
                    cluster.delete(rt, obj["metadata"].get("namespace") or "",
                                   obj["metadata"]["name"],
                                   propagation=options.get("propagationPolicy", ""),
                                   dry_run=opts.dry_run)
                except ApiError as exc:
                    if exc.code != 404:
                        raise
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {},
                          "status": "Success"})
        raise ApiError(405, "method not allowed")

    def _finalize(self, rt: ResourceType, name: str, body: Any, opts: WriteOptions) -> Obj:
        current = self.cluster.get(rt, "", name)
        if not isinstance(body, dict):
            raise bad_request("the body of the request was not an object")
        new: Obj = clone(current)
        new.setdefault("spec", {})["finalizers"] = (body.get("spec") or {}).get("finalizers") or []
        if opts.dry_run:
            return new
        return self.cluster.system_update(rt, new, manager="kubectl")

    # --- reads ------------------------------------------------------------------------

    def _object_response(self, request: web.Request, rt: ResourceType, obj: Obj) -> web.Response:
        if (accept := _wants(request, "Table")) is not None:
            columns = self._columns(rt)
            rows = [(table.row_cells(rt.group, rt.kind, obj, self.cluster.clock.now(), columns),
                     obj)]
            include = request.query.get("includeObject", "Metadata")
            return _json(table.to_table(columns, rows, obj["metadata"].get("resourceVersion", ""),
                                        include_object=include),
                         content_type=_ctype("Table", accept))
        if (accept := _wants(request, "PartialObjectMetadata")) is not None:
            return _json(_partial(obj), content_type=_ctype("PartialObjectMetadata", accept))
        return _json(obj)

    def _columns(self, rt: ResourceType) -> list[table.Column]:
        if rt.crd:
            return table.crd_columns(list(rt.printer_columns))
        return table.builtin_columns(rt.group, rt.kind)

    def _list(self, request: web.Request, rt: ResourceType, namespace: str | None) -> web.Response:
        q = request.query
        try:
            limit = int(q.get("limit", "0") or 0)
        except ValueError as exc:
            raise bad_request(f"limit: Invalid value: {q.get('limit')!r}") from exc
        result = self.cluster.list_objects(
            rt, namespace, labels=parse_labels(q.get("labelSelector", "")),
            fields=parse_fields(q.get("fieldSelector", ""), rt.storage),
            limit=max(limit, 0), continue_token=q.get("continue", ""))
        list_meta: dict[str, Any] = {"resourceVersion": result.resource_version}
        if result.continue_token:
            list_meta["continue"] = result.continue_token
            list_meta["remainingItemCount"] = result.remaining
        if (accept := _wants(request, "Table")) is not None:
            columns = self._columns(rt)
            now = self.cluster.clock.now()
            rows = [(table.row_cells(rt.group, rt.kind, o, now, columns), o)
                    for o in result.items]
            return _json(table.to_table(columns, rows, result.resource_version,
                                        result.continue_token,
                                        include_object=q.get("includeObject", "Metadata")),
                         content_type=_ctype("Table", accept))
        if (accept := _wants(request, "PartialObjectMetadataList")) is not None:
            return _json({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                          "metadata": list_meta, "items": [_partial(o) for o in result.items]},
                         content_type=_ctype("PartialObjectMetadataList", accept))
        items = result.items if rt.crd else [_strip_type(o) for o in result.items]
        return _json({"kind": f"{rt.kind}List", "apiVersion": rt.api_version,
                      "metadata": list_meta, "items": items})

    # --- watch ------------------------------------------------------------------------

    async def _watch(self, request: web.Request, rt: ResourceType, namespace: str | None,
                     name: str) -> web.StreamResponse:
        q = request.query
        labels = parse_labels(q.get("labelSelector", ""))
        fields = parse_fields(q.get("fieldSelector", ""), rt.storage)
        by_name = parse_fields(f"metadata.name={name}", rt.storage) if name else None
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1", "True")
        initial_events = q.get("sendInitialEvents") in ("true", "1", "True")
        try:
            timeout = float(q.get("timeoutSeconds") or self.options.max_watch_seconds)
        except ValueError as exc:
            raise bad_request("timeoutSeconds must be a number") from exc
        rv_text = q.get("resourceVersion", "")
        since: int | None
        if rv_text in ("", "0"):
            since = None
        else:
            try:
                since = int(rv_text)
            except ValueError as exc:
                raise bad_request(f"invalid resource version: {rv_text}") from exc

        def visible(o: Obj | None) -> bool:
            return (o is not None and labels_match(labels, o) and fields(o)
                    and (by_name is None or by_name(o)))

        table_accept = _wants(request, "Table")
        columns = self._columns(rt) if table_accept else []
        include = q.get("includeObject", "Metadata")
        ctype = _ctype("Table", table_accept) if table_accept else "application/json"

        response = web.StreamResponse(status=200, headers={"Content-Type": ctype,
                                                           "Cache-Control": "no-cache"})
        response.enable_chunked_encoding()
        store = self.cluster.store
        if initial_events and not self.options.watch_list:
            # as kube-apiserver's watch cache answers it: a stream with one ERROR event
            await response.prepare(request)
            status = ApiError(500, "a watch stream was requested by the client but the "
                              "required storage feature RequestWatchProgress is disabled",
                              reason="InternalError").status()
            await response.write(_event_line("ERROR", status))
            await response.write_eof()
            return response
        try:
            watcher, backlog = store.watch(rt.storage, namespace, since)
        except Gone as exc:
            await response.prepare(request)
            status = ApiError(410, f"too old resource version: {exc.requested} ({exc.oldest})",
                              reason="Expired").status()
            await response.write(_event_line("ERROR", status))
            await response.write_eof()
            return response
        await response.prepare(request)

        def render(obj: Obj) -> Obj:
            obj = conversion.to_version(obj, rt)
            if table_accept is None:
                return obj
            cells = table.row_cells(rt.group, rt.kind, obj, self.cluster.clock.now(), columns)
            return table.to_table(columns, [(cells, obj)], obj["metadata"]["resourceVersion"],
                                  include_object=include)

        async def send(kind: str, obj: Obj) -> None:
            if table_accept is not None:
                await response.write(_event_line(kind, render(obj)))
                return
            # Every watcher of a collection sends the same bytes for a change: encode once.
            key = (id(obj), kind, rt.api_version)
            cached = self._encoded.peek(key)
            if cached is None or cached[0] is not obj:
                cached = (obj, _event_line(kind, render(obj)))
                self._encoded.put(key, cached)
            await response.write(cached[1])

        async def bookmark(extra: dict[str, str] | None = None) -> None:
            meta: dict[str, Any] = {"resourceVersion": str(store.resource_version)}
            if extra:
                meta["annotations"] = extra
            await response.write(_event_line("BOOKMARK", {
                "kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}))

        async def deliver(change: Change) -> None:
            was, now_ = visible(change.old), visible(change.obj)
            if change.type == "DELETED":
                if was or visible(change.obj):
                    await send("DELETED", change.obj)
            elif change.type == "ADDED":
                if now_:
                    await send("ADDED", change.obj)
            elif now_ and was:
                await send("MODIFIED", change.obj)
            elif now_:
                await send("ADDED", change.obj)
            elif was:
                await send("DELETED", change.obj)

        # the server's time is the cluster's, as for its timestamps and simulated delays
        clock = self.cluster.clock
        deadline = clock.monotonic() + max(timeout, 0)
        try:
            if since is None:
                for obj in store.select(rt.storage, namespace):
                    if visible(obj):
                        await send("ADDED", obj)
                if initial_events and bookmarks:
                    await bookmark({"k8s.io/initial-events-end": "true"})
            for change in backlog:
                await deliver(change)
            next_bookmark = clock.monotonic() + self.options.bookmark_interval
            while not self._closing.is_set():
                now = clock.monotonic()
                if now >= deadline:
                    break
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                wait = min(deadline, next_bookmark if bookmarks else deadline, now + 1.0) - now
                try:
                    async with clock.timeout(max(wait, 0.001)):
                        item = await watcher.queue.get()
                except TimeoutError:
                    if bookmarks and clock.monotonic() >= next_bookmark:
                        await bookmark()
                        next_bookmark = clock.monotonic() + self.options.bookmark_interval
                    continue
                if item is None:
                    break
                await deliver(item)
            if watcher.overflowed:
                status = ApiError(410, "watch fell too far behind; relist",
                                  reason="Expired").status()
                await response.write(_event_line("ERROR", status))
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            store.stop_watch(watcher)
        return response

    # --- reviews ----------------------------------------------------------------------

    def _review(self, rt: ResourceType, namespace: str, body: Any,
                user: rbac.UserInfo) -> Obj:
        if not isinstance(body, dict):
            raise bad_request("the body of the request was not an object")
        spec = body.get("spec") or {}
        out = {"kind": rt.kind, "apiVersion": rt.api_version,
               "metadata": {"creationTimestamp": None}, "spec": spec}
        effective = user
        if rt.kind in ("SubjectAccessReview", "LocalSubjectAccessReview"):
            effective = rbac.UserInfo.for_request(spec.get("user", ""),
                                                  tuple(spec.get("groups") or ()))
        if rt.kind == "SelfSubjectReview":
            out["status"] = {"userInfo": {"username": user.name, "groups": list(user.groups)}}
            return out
        if rt.kind == "SelfSubjectRulesReview":
            ns = spec.get("namespace", "")
            rules = rbac.rules_for(user, ns, self.rbac_source)
            out["status"] = {
                "resourceRules": [r for r in rules if "nonResourceURLs" not in r],
                "nonResourceRules": [r for r in rules if "nonResourceURLs" in r],
                "incomplete": False,
            }
            return out
        res = spec.get("resourceAttributes")
        if res is not None:
            attrs = rbac.Attributes(
                verb=res.get("verb", ""), namespace=res.get("namespace", namespace or ""),
                api_group=res.get("group", ""), resource=res.get("resource", ""),
                subresource=res.get("subresource", ""), name=res.get("name", ""))
        else:
            non = spec.get("nonResourceAttributes") or {}
            attrs = rbac.Attributes(verb=non.get("verb", ""), namespace="", api_group="",
                                    resource="", path=non.get("path", ""),
                                    resource_request=False)
        if effective.name == ADMIN_USER:
            decision = rbac.Decision(True, "")
        else:
            decision = rbac.authorize(effective, attrs, self.rbac_source)
        status: dict[str, Any] = {"allowed": decision.allowed}
        if decision.reason:
            status["reason"] = decision.reason
        out["status"] = status
        return out


class _JSONishLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML read as JSON is: timestamps stay strings, as with Kubernetes' own decoder."""


_JSONishLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _json_or_yaml(raw: bytes) -> Any:
    """A YAML body; most clients send JSON (which is YAML), read with the JSON decoder
    first as the real server's YAML-to-JSON decoder would read it, and much faster."""
    text = raw.strip()
    if not text:
        return None
    if text.startswith(b"{"):
        with contextlib.suppress(ValueError):
            return json.loads(text)
    return yaml.load(raw, Loader=_JSONishLoader)


def _event_line(kind: str, obj: Obj) -> bytes:
    return (json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n").encode()


def _ctype(kind: str, accept: dict[str, str] | None) -> str:
    accept = accept or {}
    return (f"application/json;as={kind};v={accept.get('v', 'v1')};"
            f"g={accept.get('g', 'meta.k8s.io')}")


def _partial(obj: Obj) -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata") or {}}


def _strip_type(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


def _page_not_found() -> ApiError:
    return ApiError(404, "the server could not find the requested resource",
                    details={"causes": [{"reason": "UnexpectedServerResponse",
                                         "message": "404 page not found"}]})


__all__ = ["ADMIN_USER", "DevServer", "ServerOptions", "not_found"]
