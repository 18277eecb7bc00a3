"""Start and stop a development cluster: TLS listener, lifecycle task, kubeconfig.

``DevCluster.run(...)`` is an async context manager used by ``fluxd dev-cluster``, by
``fluxd dev`` and by the test fixture. On entry the server listens (port 0 picks a free
one) and the kubeconfig — server URL, the throw-away CA, an admin bearer token — is
ready; on exit watches are closed and the listener stops.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from fluxd.clock import Clock, SystemClock
from fluxd.devcluster import tls
from fluxd.devcluster.cluster import Cluster, WriteOptions
from fluxd.devcluster.lifecycle import Lifecycle
from fluxd.devcluster.server import ADMIN_USER, DevServer, ServerOptions
from fluxd.jsonvalue import clone

CONTEXT = "fluxd-dev"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

_RBAC = "rbac.authorization.k8s.io/v1"
_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
_AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"
_BOOTSTRAP: tuple[dict[str, Any], ...] = (
    {"apiVersion": _RBAC, "kind": "ClusterRole", "metadata": {"name": "cluster-admin"},
     "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
               {"nonResourceURLs": ["*"], "verbs": ["*"]}]},
    {"apiVersion": _RBAC, "kind": "ClusterRoleBinding", "metadata": {"name": "cluster-admin"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "cluster-admin"},
     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                   "name": "system:masters"}]},
    # every authenticated user may read discovery and review its own access
    {"apiVersion": _RBAC, "kind": "ClusterRole", "metadata": {"name": "system:discovery"},
     "rules": [{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz",
                                    "/livez", "/readyz", "/openapi", "/openapi/*", "/version",
                                    "/version/"], "verbs": ["get"]}]},
    {"apiVersion": _RBAC, "kind": "ClusterRole", "metadata": {"name": "system:basic-user"},
     "rules": [{"apiGroups": ["authorization.k8s.io"],
                "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                "verbs": ["create"]},
               {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"],
                "verbs": ["create"]}]},
    *({"apiVersion": _RBAC, "kind": "ClusterRoleBinding", "metadata": {"name": role},
       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                   "name": role},
       "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                     "name": "system:authenticated"}]}
      for role in ("system:discovery", "system:basic-user")),
    # admin ⊃ edit ⊃ view, composed by aggregation as on a real cluster
    {"apiVersion": _RBAC, "kind": "ClusterRole", "metadata": {"name": "admin"},
     "aggregationRule": {"clusterRoleSelectors": [
         {"matchLabels": {_AGGREGATE_TO + "admin": "true"}}]}, "rules": []},
    {"apiVersion": _RBAC, "kind": "ClusterRole", "metadata": {"name": "edit", "labels": {
        _AGGREGATE_TO + "admin": "true"}},
     "aggregationRule": {"clusterRoleSelectors": [
         {"matchLabels": {_AGGREGATE_TO + "edit": "true"}}]}, "rules": []},
    {"apiVersion": _RBAC, "kind": "ClusterRole", "metadata": {"name": "view", "labels": {
        _AGGREGATE_TO + "edit": "true"}},
     "aggregationRule": {"clusterRoleSelectors": [
         {"matchLabels": {_AGGREGATE_TO + "view": "true"}}]}, "rules": []},
    {"apiVersion": _RBAC, "kind": "ClusterRole", "metadata": {
        "name": "system:aggregate-to-view", "labels": {_AGGREGATE_TO + "view": "true"}},
     "rules": [
         {"apiGroups": [""], "resources": [
             "configmaps", "endpoints", "persistentvolumeclaims", "pods", "services",
             "serviceaccounts", "events", "namespaces"], "verbs": _READ},
         {"apiGroups": ["apps", "batch", "networking.k8s.io", "policy", "autoscaling"],
          "resources": ["*"], "verbs": _READ}]},
    {"apiVersion": _RBAC, "kind": "ClusterRole", "metadata": {
        "name": "system:aggregate-to-edit", "labels": {_AGGREGATE_TO + "edit": "true"}},
     "rules": [
         {"apiGroups": [""], "resources": [
             "configmaps", "secrets", "persistentvolumeclaims", "pods", "services",
             "serviceaccounts"], "verbs": _READ + _WRITE},
         {"apiGroups": ["apps", "batch", "networking.k8s.io", "policy", "autoscaling"],
          "resources": ["*"], "verbs": _READ + _WRITE}]},
    {"apiVersion": _RBAC, "kind": "ClusterRole", "metadata": {
        "name": "system:aggregate-to-admin", "labels": {_AGGREGATE_TO + "admin": "true"}},
     "rules": [{"apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["roles", "rolebindings"], "verbs": _READ + _WRITE}]},
)


@dataclass
class DevCluster:
    cluster: Cluster
    lifecycle: Lifecycle
    server: DevServer
    url: str
    ca_pem: bytes
    token: str
    _pki: tls.ServingPKI
    _host: str
    _port: int
    _runner: web.AppRunner | None = None

    def kubeconfig(self, *, namespace: str = "default") -> dict[str, Any]:
        return {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": CONTEXT, "cluster": {
                "server": self.url,
                "certificate-authority-data": base64.b64encode(self.ca_pem).decode()}}],
            "users": [{"name": ADMIN_USER, "user": {"token": self.token}}],
            "contexts": [{"name": CONTEXT, "context": {
                "cluster": CONTEXT, "user": ADMIN_USER, "namespace": namespace}}],
            "current-context": CONTEXT,
        }

    def write_kubeconfig(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(self.kubeconfig(), sort_keys=False))
        tmp.chmod(0o600)
        tmp.replace(path)
        return path

    async def start_serving(self) -> None:
        """Listen (again) on the same address, with the same CA and token."""
        if self._runner is not None:
            return
        runner = web.AppRunner(self.server.app(), access_log=None, handle_signals=False,
                               shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port,
                           ssl_context=self._pki.server_context(), reuse_address=True)
        await site.start()
        self._port = _bound_port(runner, self._port)
        self._runner = runner

    async def stop_serving(self) -> None:
        """Drop every connection and stop listening; the objects stay. With
        ``start_serving`` this is an API server restart as clients see one."""
        if self._runner is None:
            return
        self.cluster.store.stop_all_watches()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    @classmethod
    @contextlib.asynccontextmanager
    async def run(cls, *, host: str = "127.0.0.1", port: int = 0,
                  clock: Clock | None = None, history_size: int = 10_000,
                  ready_delay: float = 1.0, bookmark_interval: float = 30.0,
                  max_object_bytes: int = 1_572_864, watch_list: bool = True,
                  crd_discovery_delay: float = 0.3, max_requests_inflight: int = 400,
                  max_mutating_requests_inflight: int = 200,
                  token: str | None = None) -> AsyncIterator[DevCluster]:
        cluster = Cluster(clock=clock or SystemClock(), history_size=history_size,
                          max_object_bytes=max_object_bytes)
        cluster.registry.discovery_delay = crd_discovery_delay
        pki = await asyncio.to_thread(tls.generate)
        # the serving CA is the cluster's CA, published to namespaces as kube-root-ca.crt
        lifecycle = Lifecycle(cluster, ready_delay=ready_delay, root_ca=pki.ca_pem)
        options = ServerOptions(bookmark_interval=bookmark_interval, watch_list=watch_list,
                                max_requests_inflight=max_requests_inflight,
                                max_mutating_requests_inflight=max_mutating_requests_inflight)
        if token:
            options.token = token
        server = DevServer(cluster, options)
        _bootstrap(cluster)
        url_host = f"[{host}]" if ":" in host else host
        dev = cls(cluster, lifecycle, server, "", pki.ca_pem, options.token, pki, host, port)
        await dev.start_serving()
        dev.url = f"https://{url_host}:{dev._port}"
        server.address = f"{host}:{dev._port}"
        task = asyncio.get_running_loop().create_task(lifecycle.run(), name="devcluster-lifecycle")
        try:
            yield dev
        finally:
            server.close_watches()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await dev.stop_serving()


def _bootstrap(cluster: Cluster) -> None:
    """The objects every cluster starts with: system namespaces, RBAC roles and the
    ``kubernetes`` Service."""
    opts = WriteOptions(field_manager="kube-apiserver")
    ns_rt = cluster.registry.lookup("", "v1", "namespaces")
    assert ns_rt is not None
    for name in SYSTEM_NAMESPACES:
        cluster.create(ns_rt, "", {"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": name}}, opts=opts)
    for obj in _BOOTSTRAP:
        plural = "clusterroles" if obj["kind"] == "ClusterRole" else "clusterrolebindings"
        rt = cluster.registry.lookup("rbac.authorization.k8s.io", "v1", plural)
        assert rt is not None
        cluster.create(rt, "", clone(obj), opts=opts)
    svc_rt = cluster.registry.lookup("", "v1", "services")
    assert svc_rt is not None
    cluster.create(svc_rt, "default", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": {
            "component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": "10.96.0.1", "ports": [
            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
    }, opts=opts)


def _bound_port(runner: web.AppRunner, requested: int) -> int:
    """The port actually bound (the OS picks one when ``requested`` is 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return requested
