"""fluxd.kube.proxy: real helm through the API proxy, against the cluster fixture."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
import yarl

from fluxd.clock import SystemClock
from fluxd.devcluster import protobuf
from fluxd.kube import KubeClient
from fluxd.kube.proxy import ApiProxy, ProxyBusy, Route, route, route_body
from tests.conftest import Cluster, tool

pytestmark = pytest.mark.anyio

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: hello\nversion: 0.1.0\n",
    "values.yaml": "greeting: hello\n",
    "templates/configmap.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-greeting
data:
  greeting: {{ .Values.greeting | quote }}
""",
    "templates/deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
spec:
  replicas: 1
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
      - name: web
        image: busybox:1.36
        args: ["sleep", "3600"]
""",
}


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    root = tmp_path / "hello"
    for name, text in CHART.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def storage_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found",
                        check=False)


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    async with await KubeClient.connect(clock=SystemClock(), kubeconfig=str(cluster.kubeconfig),
                                        field_manager="fluxd-test") as client:
        yield client


@pytest.fixture
async def proxy(kube: KubeClient) -> AsyncIterator[ApiProxy]:
    async with ApiProxy(kube, clock=SystemClock()) as running:
        yield running


async def helm(kubeconfig: Path, home: Path, *args: str, check: bool = True,
               within: float = 120) -> tuple[int, str]:
    """Run helm with only the session's kubeconfig; (exit code, stdout + stderr)."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home),
           "KUBECONFIG": str(kubeconfig), "HELM_CACHE_HOME": str(home / "cache"),
           "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data"),
           "NO_PROXY": "*"}
    process = await asyncio.create_subprocess_exec(
        tool("helm"), *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(within):
            out, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = out.decode()
    assert process.returncode is not None
    if check and process.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({process.returncode}):\n{text}")
    return process.returncode, text


def release_secrets(cluster: Cluster, namespace: str) -> list[str]:
    found = cluster.kubectl_json("get", "secrets", "-n", namespace, "-l", "owner=helm")
    return sorted(item["metadata"]["name"] for item in found["items"])


def token_of(kubeconfig: Path) -> str:
    """The session's token: the path prefix of the server its kubeconfig names."""
    config = yaml.safe_load(kubeconfig.read_text())
    return str(config["clusters"][0]["cluster"]["server"]).rsplit("/", 1)[1]


def with_token(url: str, token: str) -> str:
    """``url`` (on the proxy) under the session prefix ``token``, as helm sends it."""
    parsed = yarl.URL(url)
    return str(parsed.with_path(f"/{token}{parsed.path}", encoded=True)
               .with_query(parsed.query))


async def get(kubeconfig: Path, url: str, token: str, headers: dict[str, str] | None = None
              ) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(
            with_token(url, token), headers=headers or {}) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text.startswith("{") else text)


# --- routing ------------------------------------------------------------------------------


def test_release_secrets_of_the_target_namespace_go_to_storage() -> None:
    path = "/api/v1/namespaces/app/secrets/sh.helm.release.v1.web.v3"
    assert route("GET", path, None, "app") is Route.STORAGE
    assert route("PUT", path, None, "app") is Route.STORAGE
    assert route("DELETE", path, None, "app") is Route.STORAGE


def test_other_secrets_and_other_namespaces_go_through() -> None:
    assert route("GET", "/api/v1/namespaces/app/secrets/db-password", None, "app") \
        is Route.THROUGH
    assert route("GET", "/api/v1/namespaces/other/secrets/sh.helm.release.v1.web.v1", None,
                 "app") is Route.THROUGH
    assert route("GET", "/api/v1/namespaces/app/configmaps/sh.helm.release.v1.web.v1", None,
                 "app") is Route.THROUGH
    assert route("GET", "/api/v1/secrets", "owner=helm", "app") is Route.THROUGH


def test_lists_and_watches_of_helm_owned_secrets_go_to_storage() -> None:
    collection = "/api/v1/namespaces/app/secrets"
    assert route("GET", collection, "owner=helm", "app") is Route.STORAGE
    assert route("GET", collection, "name=web,owner=helm,status=deployed", "app") \
        is Route.STORAGE
    assert route("GET", collection, "owner==helm", "app") is Route.STORAGE
    assert route("GET", collection, "owner=helmet", "app") is Route.THROUGH
    assert route("GET", collection, "owner!=helm", "app") is Route.THROUGH
    assert route("GET", collection, None, "app") is Route.THROUGH


def test_a_secret_create_in_the_target_namespace_is_decided_by_its_name() -> None:
    assert route("POST", "/api/v1/namespaces/app/secrets", None, "app") is Route.BY_NAME


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def protobuf_secret(name: str, namespace: str) -> bytes:
    """A v1 Secret as Go's generated marshaller writes it for helm's storage driver:
    every string field of ObjectMeta present, empty or not; Unknown's contentEncoding
    and contentType present and empty."""
    meta = field(1, name.encode()) + field(2, b"") + field(3, namespace.encode()) \
        + field(11, field(1, b"owner") + field(2, b"helm"))
    secret = field(1, meta) + field(2, field(1, b"release") + field(2, b"H4sI" * 300)) \
        + field(3, b"helm.sh/release.v1")
    return b"k8s\x00" + field(1, field(1, b"v1") + field(2, b"Secret")) + field(2, secret) \
        + field(3, b"") + field(4, b"")


def test_a_protobuf_release_secret_create_goes_to_storage() -> None:
    body = protobuf_secret("sh.helm.release.v1.web.v1", "")
    assert route_body(Route.BY_NAME, "application/vnd.kubernetes.protobuf", body, "store") \
        == (Route.STORAGE, body)


def test_a_protobuf_release_secret_loses_its_namespace_for_the_storage_one() -> None:
    body = protobuf_secret("sh.helm.release.v1.web.v1", "app")
    chosen, moved = route_body(Route.BY_NAME, "application/vnd.kubernetes.protobuf", body,
                               "release-store")
    assert chosen is Route.STORAGE
    before, after = protobuf.decode(body), protobuf.decode(moved)
    assert after["metadata"]["namespace"] == "release-store"
    after["metadata"]["namespace"] = "app"
    assert after == before


def test_other_secret_creates_go_through() -> None:
    body = protobuf_secret("db-password", "app")
    assert route_body(Route.BY_NAME, "application/vnd.kubernetes.protobuf", body, "store") \
        == (Route.THROUGH, body)
    raw = json.dumps({"metadata": {"name": "db-password"}}).encode()
    assert route_body(Route.BY_NAME, "application/json", raw, "store") == (Route.THROUGH, raw)
    for unreadable in (b"k8s\x00\x0a\xff", b"{not json", b"[]"):
        assert route_body(Route.BY_NAME, "application/json", unreadable, "store") \
            == (Route.THROUGH, unreadable)
        assert route_body(Route.BY_NAME, "application/vnd.kubernetes.protobuf", unreadable,
                          "store") == (Route.THROUGH, unreadable)


def test_a_json_release_secret_is_written_to_the_storage_namespace() -> None:
    raw = json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "sh.helm.release.v1.web.v2", "namespace": "app"}}).encode()
    chosen, moved = route_body(Route.BY_NAME, "application/json", raw, "store")
    assert chosen is Route.STORAGE
    assert json.loads(moved)["metadata"] == {"name": "sh.helm.release.v1.web.v2",
                                             "namespace": "store"}
    # an update of a release revision keeps its route; a body without a namespace stays
    plain = json.dumps({"metadata": {"name": "sh.helm.release.v1.web.v2"}}).encode()
    assert route_body(Route.STORAGE, "application/json", plain, "store") \
        == (Route.STORAGE, plain)


# --- helm through a session ---------------------------------------------------------------


async def test_helm_installs_upgrades_and_uninstalls_through_a_session(
        proxy: ApiProxy, cluster: Cluster, namespace: str, chart: Path,
        tmp_path: Path) -> None:
    async with proxy.session(namespace=namespace, storage_namespace=namespace,
                             impersonate=None, directory=tmp_path) as kubeconfig:
        assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
        assert yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"] \
            == f"{proxy.url}/{token_of(kubeconfig)}"
        assert proxy.url.startswith("http://127.0.0.1:") and len(token_of(kubeconfig)) >= 40
        await helm(kubeconfig, tmp_path, "install", "hi", str(chart))
        assert cluster.kubectl_json("get", "cm", "hi-greeting", "-n", namespace)["data"] \
            == {"greeting": "hello"}
        _, listed = await helm(kubeconfig, tmp_path, "list", "-o", "json")
        assert [r["name"] for r in json.loads(listed)] == ["hi"]
        await helm(kubeconfig, tmp_path, "upgrade", "hi", str(chart), "--set",
                   "greeting=bonjour")
        assert cluster.kubectl_json("get", "cm", "hi-greeting", "-n", namespace)["data"] \
            == {"greeting": "bonjour"}
        assert release_secrets(cluster, namespace) == ["sh.helm.release.v1.hi.v1",
                                                       "sh.helm.release.v1.hi.v2"]
        await helm(kubeconfig, tmp_path, "uninstall", "hi")
        assert release_secrets(cluster, namespace) == []
    assert not kubeconfig.exists()


async def test_a_release_stored_elsewhere_keeps_its_objects_in_the_target_namespace(
        proxy: ApiProxy, cluster: Cluster, namespace: str, storage_namespace: str,
        chart: Path, tmp_path: Path) -> None:
    async with proxy.session(namespace=namespace, storage_namespace=storage_namespace,
                             impersonate=None, directory=tmp_path) as kubeconfig:
        await helm(kubeconfig, tmp_path, "install", "hi", str(chart))
        assert cluster.kubectl_json("get", "cm", "hi-greeting", "-n", namespace)["data"] \
            == {"greeting": "hello"}
        assert release_secrets(cluster, storage_namespace) == ["sh.helm.release.v1.hi.v1"]
        assert release_secrets(cluster, namespace) == []

        _, listed = await helm(kubeconfig, tmp_path, "list", "-n", namespace, "-o", "json")
        assert [(r["name"], r["namespace"]) for r in json.loads(listed)] \
            == [("hi", namespace)]

        await helm(kubeconfig, tmp_path, "upgrade", "hi", str(chart), "--set",
                   "greeting=bonjour")
        _, history = await helm(kubeconfig, tmp_path, "history", "hi", "-o", "json")
        assert [(h["revision"], h["status"]) for h in json.loads(history)] \
            == [(1, "superseded"), (2, "deployed")]
        await helm(kubeconfig, tmp_path, "rollback", "hi", "1")
        assert cluster.kubectl_json("get", "cm", "hi-greeting", "-n", namespace)["data"] \
            == {"greeting": "hello"}
        assert release_secrets(cluster, storage_namespace) == [
            "sh.helm.release.v1.hi.v1", "sh.helm.release.v1.hi.v2",
            "sh.helm.release.v1.hi.v3"]
        assert release_secrets(cluster, namespace) == []

        await helm(kubeconfig, tmp_path, "uninstall", "hi")
        assert release_secrets(cluster, storage_namespace) == []
        assert cluster.kubectl("get", "cm", "hi-greeting", "-n", namespace,
                               check=False).returncode != 0


async def test_helm_waits_with_its_watcher_through_the_proxy(
        proxy: ApiProxy, cluster: Cluster, namespace: str, storage_namespace: str,
        chart: Path, tmp_path: Path) -> None:
    async with proxy.session(namespace=namespace, storage_namespace=storage_namespace,
                             impersonate=None, directory=tmp_path) as kubeconfig:
        _, out = await helm(kubeconfig, tmp_path, "install", "hi", str(chart), "--wait",
                            "--timeout", "60s")
        assert "STATUS: deployed" in out
    deployment = cluster.kubectl_json("get", "deployment", "hi-web", "-n", namespace)
    assert deployment["status"].get("availableReplicas") == 1


# --- identity -----------------------------------------------------------------------------


async def test_an_impersonating_session_has_only_the_service_accounts_rights(
        proxy: ApiProxy, namespace: str, chart: Path, tmp_path: Path) -> None:
    user = f"system:serviceaccount:{namespace}:nobody"
    async with proxy.session(namespace=namespace, storage_namespace=namespace,
                             impersonate=user, directory=tmp_path) as kubeconfig:
        code, out = await helm(kubeconfig, tmp_path, "install", "hi", str(chart),
                               check=False)
        assert code != 0
        assert "forbidden" in out and user in out
        # what helm sends to become someone else is dropped, not passed on
        status, body = await get(
            kubeconfig, f"{proxy.url}/api/v1/namespaces/{namespace}/configmaps",
            token_of(kubeconfig),
            {"Impersonate-User": "admin", "Impersonate-Group": "system:masters"})
        assert status == 403 and user in body["message"]


async def test_an_impersonating_session_installs_with_the_rights_granted_to_it(
        proxy: ApiProxy, cluster: Cluster, namespace: str, chart: Path,
        tmp_path: Path) -> None:
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "deployer"},
         "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "deployer"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "deployer"},
         "subjects": [{"kind": "ServiceAccount", "name": "deployer",
                       "namespace": namespace}]}]))
    user = f"system:serviceaccount:{namespace}:deployer"
    async with proxy.session(namespace=namespace, storage_namespace=namespace,
                             impersonate=user, directory=tmp_path) as kubeconfig:
        await helm(kubeconfig, tmp_path, "install", "hi", str(chart))
    assert release_secrets(cluster, namespace) == ["sh.helm.release.v1.hi.v1"]
    assert cluster.kubectl_json("get", "cm", "hi-greeting", "-n", namespace)["data"] \
        == {"greeting": "hello"}


async def test_impersonation_headers_from_helm_do_not_reach_the_api_server(
        proxy: ApiProxy, namespace: str, tmp_path: Path) -> None:
    async with proxy.session(namespace=namespace, storage_namespace=namespace,
                             impersonate=None, directory=tmp_path) as kubeconfig:
        status, body = await get(
            kubeconfig, f"{proxy.url}/api/v1/namespaces/{namespace}/configmaps",
            token_of(kubeconfig),
            {"Impersonate-User": f"system:serviceaccount:{namespace}:nobody"})
        assert status == 200, body
        assert body["kind"] == "ConfigMapList"


async def test_a_wrong_token_is_refused(proxy: ApiProxy, namespace: str,
                                        tmp_path: Path) -> None:
    async with proxy.session(namespace=namespace, storage_namespace=namespace,
                             impersonate=None, directory=tmp_path) as kubeconfig:
        status, body = await get(kubeconfig, f"{proxy.url}/api/v1/namespaces",
                                 token_of(kubeconfig) + "x")
        assert (status, body["reason"]) == (401, "Unauthorized")
        status, body = await get(kubeconfig, f"{proxy.url}/api/v1/namespaces", "")
        assert status == 401


async def test_the_token_of_an_ended_session_is_refused(proxy: ApiProxy, namespace: str,
                                                        tmp_path: Path) -> None:
    async with proxy.session(namespace=namespace, storage_namespace=namespace,
                             impersonate=None, directory=tmp_path) as kubeconfig:
        token = token_of(kubeconfig)
        saved = tmp_path / "saved-kubeconfig"
        saved.write_text(kubeconfig.read_text())
        status, _ = await get(kubeconfig, f"{proxy.url}/api/v1/namespaces/{namespace}", token)
        assert status == 200
    status, body = await get(saved, f"{proxy.url}/api/v1/namespaces/{namespace}", token)
    assert (status, body["reason"]) == (401, "Unauthorized")


async def test_only_service_accounts_are_impersonated(proxy: ApiProxy, namespace: str,
                                                      tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a ServiceAccount"):
        async with proxy.session(namespace=namespace, storage_namespace=namespace,
                                 impersonate="admin", directory=tmp_path):
            pass


# --- bounds -------------------------------------------------------------------------------


async def test_ending_a_session_ends_its_open_watches(proxy: ApiProxy, namespace: str,
                                                      tmp_path: Path) -> None:
    url = f"{proxy.url}/api/v1/namespaces/{namespace}/configmaps?watch=1"
    async with proxy.session(namespace=namespace, storage_namespace=namespace,
                             impersonate=None, directory=tmp_path) as kubeconfig:
        http = aiohttp.ClientSession()
        resp = await http.get(with_token(url, token_of(kubeconfig)))
        assert resp.status == 200
    try:
        # the session is over: the stream is cut, not left running
        with pytest.raises(aiohttp.ClientPayloadError):
            async with asyncio.timeout(10):
                await resp.read()
    finally:
        resp.release()
        await http.close()


async def test_a_session_has_a_bounded_number_of_requests_in_flight(
        kube: KubeClient, namespace: str, tmp_path: Path) -> None:
    async with ApiProxy(kube, clock=SystemClock(), max_requests=1) as proxy, \
            proxy.session(namespace=namespace, storage_namespace=namespace,
                          impersonate=None, directory=tmp_path) as kubeconfig, \
            aiohttp.ClientSession() as http:
        token = token_of(kubeconfig)
        watch = await http.get(with_token(
            f"{proxy.url}/api/v1/namespaces/{namespace}/configmaps?watch=1", token))
        try:
            async with http.get(with_token(f"{proxy.url}/api/v1/namespaces/{namespace}",
                                           token)) as refused:
                assert refused.status == 429
                assert refused.headers["Retry-After"] == "1"
        finally:
            watch.close()


async def test_a_request_body_over_the_limit_is_refused(kube: KubeClient, namespace: str,
                                                        tmp_path: Path) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
          "data": {"x": "y" * 4096}}
    async with ApiProxy(kube, clock=SystemClock(), max_body=1024) as proxy, \
            proxy.session(namespace=namespace, storage_namespace=namespace,
                          impersonate=None, directory=tmp_path) as kubeconfig, \
            aiohttp.ClientSession() as http:
        url = with_token(f"{proxy.url}/api/v1/namespaces/{namespace}/configmaps",
                         token_of(kubeconfig))
        async with http.post(url, json=cm) as sized:
            assert sized.status == 413

        async def chunks() -> AsyncIterator[bytes]:
            data = json.dumps(cm).encode()
            for at in range(0, len(data), 512):
                yield data[at:at + 512]

        async with http.post(url, data=chunks(), headers={
                "Content-Type": "application/json"}) as streamed:
            assert streamed.status == 413


async def test_sessions_are_bounded(kube: KubeClient, namespace: str, tmp_path: Path) -> None:
    async with ApiProxy(kube, clock=SystemClock(), max_sessions=1) as proxy, \
            proxy.session(namespace=namespace, storage_namespace=namespace,
                          impersonate=None, directory=tmp_path):
        with pytest.raises(ProxyBusy):
            async with proxy.session(namespace=namespace, storage_namespace=namespace,
                                     impersonate=None, directory=tmp_path / "x"):
                pass
