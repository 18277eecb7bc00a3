"""The API server's rules, checked over raw HTTP: status codes and Status bodies,
selectors, garbage collection, namespaces, CRDs, versions, simulation, auth."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import Cluster, ServerThread, start_dev_cluster
from tests.kube.inflight import dev_server, write_in_flight

pytestmark = pytest.mark.anyio


class Http:
    def __init__(self, session: aiohttp.ClientSession, server: str, token: str) -> None:
        self.session = session
        self.server = server
        self.token = token

    async def call(self, method: str, path: str, body: Any = None, *,
                   content_type: str = "application/json", raw: bytes | None = None,
                   headers: dict[str, str] | None = None, token: str | None = None
                   ) -> tuple[int, Any, str]:
        hdrs = {"Authorization": f"Bearer {self.token if token is None else token}",
                "Content-Type": content_type, **(headers or {})}
        payload = raw if raw is not None else (
            None if body is None else json.dumps(body).encode())
        data = io.BytesIO(payload) if payload is not None else None
        async with self.session.request(method, self.server + path, data=data,
                                        headers=hdrs) as resp:
            text = await resp.text()
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = text
            return resp.status, parsed, resp.headers.get("Content-Type", "")

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, parsed, _ = await self.call(method, path, body, **kw)
        assert status in (200, 201), (status, parsed)
        return parsed

    async def wait_for(self, path: str, check: Any, within: float = 15) -> Any:
        async with asyncio.timeout(within):
            while True:
                status, parsed, _ = await self.call("GET", path)
                if check(status, parsed):
                    return parsed
                await asyncio.sleep(0.1)


@pytest.fixture
async def http(cluster: Cluster) -> AsyncIterator[Http]:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    ctx_name = config["current-context"]
    ctx = next(c["context"] for c in config["contexts"] if c["name"] == ctx_name)
    clus = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])
    if "token" not in user:
        pytest.skip("raw HTTP tests need a bearer-token kubeconfig")
    ssl_ctx = ssl.create_default_context(
        cadata=base64.b64decode(clus["certificate-authority-data"]).decode())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx)) as session:
        yield Http(session, clus["server"], user["token"])


def cm(name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta},
            "data": {"k": "v"}}


# --- validation and errors --------------------------------------------------------------

async def test_request_without_token_is_unauthorized(http: Http) -> None:
    status, body, _ = await http.call("GET", "/api/v1/namespaces", token="wrong")
    assert status == 401 and body["reason"] == "Unauthorized"


async def test_missing_kind_is_bad_request(http: Http, namespace: str) -> None:
    status, body, _ = await http.call("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                                      {"apiVersion": "v1", "metadata": {"name": "x"}})
    assert status == 400 and body["kind"] == "Status" and "Kind" in body["message"]


async def test_missing_name_is_invalid(http: Http, namespace: str) -> None:
    status, body, _ = await http.call("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                                      {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})
    assert status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"


async def test_invalid_name_is_invalid(http: Http, namespace: str) -> None:
    status, body, _ = await http.call("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                                      cm("Not_Valid"))
    assert status == 422
    assert 'ConfigMap "Not_Valid" is invalid: metadata.name: Invalid value' in body["message"]


async def test_unknown_kind_is_not_found(http: Http) -> None:
    status, body, _ = await http.call("GET", "/apis/example.com/v1/gizmos")
    assert status == 404 and body["reason"] == "NotFound"


async def test_invalid_json_is_bad_request(http: Http, namespace: str) -> None:
    status, body, _ = await http.call("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                                      raw=b"{not json")
    assert status == 400 and body["kind"] == "Status"


async def test_invalid_yaml_apply_is_bad_request(http: Http, namespace: str) -> None:
    status, _, _ = await http.call(
        "PATCH", f"/api/v1/namespaces/{namespace}/configmaps/x?fieldManager=t",
        raw=b"a: [b", content_type="application/apply-patch+yaml")
    assert status == 400


async def test_oversized_object_is_rejected(http: Http, namespace: str) -> None:
    big = cm("big")
    big["data"] = {"blob": "x" * (4 * 1024 * 1024)}
    status, body, _ = await http.call("POST", f"/api/v1/namespaces/{namespace}/configmaps", big)
    assert status == 413 and body["reason"] == "RequestEntityTooLarge"


async def test_object_over_storage_limit_is_rejected(http: Http, namespace: str) -> None:
    big = cm("big")
    big["data"] = {"blob": "x" * (2 * 1024 * 1024)}
    status, _, _ = await http.call("POST", f"/api/v1/namespaces/{namespace}/configmaps", big)
    assert status == 413


async def test_create_twice_is_already_exists(http: Http, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    await http.ok("POST", path, cm("twice"))
    status, body, _ = await http.call("POST", path, cm("twice"))
    assert status == 409 and body["reason"] == "AlreadyExists"


async def test_create_in_missing_namespace_is_not_found(http: Http) -> None:
    status, body, _ = await http.call("POST", "/api/v1/namespaces/nope-x/configmaps", cm("a"))
    assert status == 404 and body["message"] == 'namespaces "nope-x" not found'


async def test_generate_name_makes_a_unique_name(http: Http, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    first = await http.ok("POST", path, {"apiVersion": "v1", "kind": "ConfigMap",
                                          "metadata": {"generateName": "gen-"}})
    second = await http.ok("POST", path, {"apiVersion": "v1", "kind": "ConfigMap",
                                           "metadata": {"generateName": "gen-"}})
    assert first["metadata"]["name"].startswith("gen-")
    assert first["metadata"]["name"] != second["metadata"]["name"]


async def test_resource_versions_only_grow(http: Http, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    a = await http.ok("POST", path, cm("rv"))
    b = await http.ok("PATCH", f"{path}/rv", {"data": {"k": "w"}},
                      content_type="application/merge-patch+json")
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    listed = await http.ok("GET", path)
    assert int(listed["metadata"]["resourceVersion"]) >= int(b["metadata"]["resourceVersion"])


async def test_custom_resource_update_needs_a_resource_version(http: Http, namespace: str,
                                                               crd_group: str) -> None:
    path = f"/apis/{crd_group}/v1/namespaces/{namespace}/gadgets"
    await http.ok("POST", path, gadget(crd_group, "g"))
    status, body, _ = await http.call("PUT", f"{path}/g", gadget(crd_group, "g"))
    assert status == 422 and "resourceVersion" in body["message"]


async def test_strategic_merge_patch_on_custom_resource_is_unsupported(
        http: Http, namespace: str, crd_group: str) -> None:
    path = f"/apis/{crd_group}/v1/namespaces/{namespace}/gadgets"
    await http.ok("POST", path, gadget(crd_group, "g"))
    status, _, _ = await http.call("PATCH", f"{path}/g", {"spec": {"size": 2}},
                                   content_type="application/strategic-merge-patch+json")
    assert status == 415


async def test_dry_run_update_and_delete_change_nothing(http: Http, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    created = await http.ok("POST", path, cm("dry"))
    patched = await http.ok("PATCH", f"{path}/dry?dryRun=All", {"data": {"k": "new"}},
                            content_type="application/merge-patch+json")
    assert patched["data"] == {"k": "new"}
    await http.ok("DELETE", f"{path}/dry?dryRun=All")
    current = await http.ok("GET", f"{path}/dry")
    assert current["data"] == {"k": "v"}
    assert current["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


# --- selectors ---------------------------------------------------------------------------

async def test_label_and_field_selectors(http: Http, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    # every object carries set=t: the namespace also holds the cluster's kube-root-ca.crt
    await http.ok("POST", path, cm("a", labels={"set": "t", "tier": "web", "env": "prod"}))
    await http.ok("POST", path, cm("b", labels={"set": "t", "tier": "db"}))
    await http.ok("POST", path, cm("c", labels={"set": "t"}))

    async def names(query: str) -> list[str]:
        body = await http.ok("GET", f"{path}?{query}")
        return [i["metadata"]["name"] for i in body["items"]]

    assert await names("labelSelector=set%3Dt,tier%3Dweb") == ["a"]
    assert await names("labelSelector=set%3Dt,tier!%3Dweb") == ["b", "c"]
    assert await names("labelSelector=set%3Dt,tier+in+(web,db)") == ["a", "b"]
    assert await names("labelSelector=set%3Dt,tier+notin+(web)") == ["b", "c"]
    assert await names("labelSelector=set%3Dt,env") == ["a"]
    assert await names("labelSelector=set%3Dt,!env") == ["b", "c"]
    assert await names("fieldSelector=metadata.name%3Db") == ["b"]
    assert await names(f"labelSelector=set%3Dt&fieldSelector=metadata.namespace%3D{namespace},"
                       "metadata.name!%3Db") == ["a", "c"]
    status, body, _ = await http.call("GET", f"{path}?fieldSelector=data.k%3Dv")
    assert status == 400 and "field label not supported" in body["message"]


# --- lifecycle ------------------------------------------------------------------------------

def owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"]}


async def test_background_deletion_collects_dependents(http: Http, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    owner = await http.ok("POST", path, cm("owner"))
    await http.ok("POST", path, cm("child", ownerReferences=[owner_ref(owner)]))
    await http.ok("DELETE", f"{path}/owner")
    await http.wait_for(f"{path}/child", lambda status, _: status == 404)


async def test_dependent_with_another_live_owner_survives(http: Http, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    one = await http.ok("POST", path, cm("one"))
    two = await http.ok("POST", path, cm("two"))
    await http.ok("POST", path, cm("shared", ownerReferences=[owner_ref(one), owner_ref(two)]))
    await http.ok("DELETE", f"{path}/one")
    child = await http.wait_for(f"{path}/shared", lambda s, b: len(
        b["metadata"].get("ownerReferences", [])) == 1)
    assert child["metadata"]["ownerReferences"][0]["name"] == "two"


async def test_foreground_deletion_removes_dependents_first(http: Http, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    owner = await http.ok("POST", path, cm("fg-owner"))
    await http.ok("POST", path, cm("fg-child", ownerReferences=[owner_ref(owner)],
                                   finalizers=["example.com/hold"]))
    await http.ok("DELETE", f"{path}/fg-owner", {"propagationPolicy": "Foreground"})
    held = await http.ok("GET", f"{path}/fg-owner")
    assert "foregroundDeletion" in held["metadata"]["finalizers"]
    assert held["metadata"]["deletionTimestamp"]
    await http.ok("PATCH", f"{path}/fg-child", {"metadata": {"finalizers": None}},
                  content_type="application/merge-patch+json")
    await http.wait_for(f"{path}/fg-owner", lambda status, _: status == 404)


async def test_orphan_deletion_keeps_dependents(http: Http, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    owner = await http.ok("POST", path, cm("or-owner"))
    await http.ok("POST", path, cm("or-child", ownerReferences=[owner_ref(owner)]))
    await http.ok("DELETE", f"{path}/or-owner?propagationPolicy=Orphan")
    await http.wait_for(f"{path}/or-owner", lambda status, _: status == 404)
    child = await http.ok("GET", f"{path}/or-child")
    assert not child["metadata"].get("ownerReferences")


async def test_namespace_deletion_waits_for_finalizers(http: Http) -> None:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    await http.ok("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": ns}})
    path = f"/api/v1/namespaces/{ns}/configmaps"
    await http.ok("POST", path, cm("held", finalizers=["example.com/hold"]))
    await http.ok("POST", path, cm("free"))
    await http.ok("DELETE", f"/api/v1/namespaces/{ns}")
    await http.wait_for(f"{path}/free", lambda status, _: status == 404)
    terminating = await http.ok("GET", f"/api/v1/namespaces/{ns}")
    assert terminating["status"]["phase"] == "Terminating"
    status, body, _ = await http.call("POST", path, cm("late"))
    assert status == 403 and "is being terminated" in body["message"]
    await http.ok("PATCH", f"{path}/held", {"metadata": {"finalizers": None}},
                  content_type="application/merge-patch+json")
    await http.wait_for(f"/api/v1/namespaces/{ns}", lambda status, _: status == 404)


# --- CRDs and versions ----------------------------------------------------------------------

def gadget(group: str, name: str, version: str = "v1") -> dict[str, Any]:
    return {"apiVersion": f"{group}/{version}", "kind": "Gadget", "metadata": {"name": name},
            "spec": {"size": 1}}


@pytest.fixture
async def crd_group(http: Http) -> AsyncIterator[str]:
    group = f"g{uuid.uuid4().hex[:8]}.example.com"
    schema = {"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": f"gadgets.{group}"},
           "spec": {"group": group, "scope": "Namespaced",
                    "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget"},
                    "versions": [
                        {"name": "v1", "served": True, "storage": True, "schema": schema,
                         "subresources": {"status": {}},
                         "additionalPrinterColumns": [
                             {"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]},
                        {"name": "v1beta1", "served": True, "storage": False,
                         "schema": schema, "subresources": {"status": {}}}]}}
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    await http.ok("POST", path, crd)
    # as on any server: Established (and in discovery) a moment after it is created
    async with asyncio.timeout(10):
        while True:
            live = await http.ok("GET", f"{path}/gadgets.{group}")
            conditions = {c["type"]: c["status"] for c in live["status"]["conditions"]}
            if conditions.get("Established") == "True":
                break
            await asyncio.sleep(0.05)
    yield group
    await http.call("DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                              f"gadgets.{group}")


async def test_crd_is_served_at_once_in_discovery(http: Http, crd_group: str) -> None:
    doc = await http.ok("GET", f"/apis/{crd_group}/v1")
    assert [r["name"] for r in doc["resources"]] == ["gadgets", "gadgets/status"]
    groups = await http.ok("GET", "/apis")
    entry = next(g for g in groups["groups"] if g["name"] == crd_group)
    assert entry["preferredVersion"]["version"] == "v1"


async def test_custom_object_is_one_object_at_every_served_version(
        http: Http, namespace: str, crd_group: str) -> None:
    await http.ok("POST", f"/apis/{crd_group}/v1beta1/namespaces/{namespace}/gadgets",
                  gadget(crd_group, "multi", "v1beta1"))
    as_v1 = await http.ok("GET", f"/apis/{crd_group}/v1/namespaces/{namespace}/gadgets/multi")
    assert as_v1["apiVersion"] == f"{crd_group}/v1"
    as_beta = await http.ok("GET",
                            f"/apis/{crd_group}/v1beta1/namespaces/{namespace}/gadgets/multi")
    assert as_beta["apiVersion"] == f"{crd_group}/v1beta1"
    assert as_beta["metadata"]["uid"] == as_v1["metadata"]["uid"]


async def test_custom_table_uses_printer_columns(http: Http, namespace: str,
                                                 crd_group: str) -> None:
    path = f"/apis/{crd_group}/v1/namespaces/{namespace}/gadgets"
    await http.ok("POST", path, gadget(crd_group, "t"))
    status, body, ctype = await http.call(
        "GET", path, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert status == 200 and "as=Table" in ctype
    assert [c["name"] for c in body["columnDefinitions"]] == ["Name", "Size"]
    assert body["rows"][0]["cells"] == ["t", 1]


async def test_deleting_a_crd_deletes_its_objects(http: Http, namespace: str,
                                                  crd_group: str) -> None:
    path = f"/apis/{crd_group}/v1/namespaces/{namespace}/gadgets"
    await http.ok("POST", path, gadget(crd_group, "doomed"))
    await http.ok("DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                            f"gadgets.{crd_group}")
    await http.wait_for(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                        f"gadgets.{crd_group}", lambda status, _: status == 404)
    status, _, _ = await http.call("GET", f"{path}/doomed")
    assert status == 404


async def test_cluster_scoped_crd_serves_objects_without_namespace(http: Http) -> None:
    group = f"c{uuid.uuid4().hex[:8]}.example.com"
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": f"realms.{group}"},
           "spec": {"group": group, "scope": "Cluster",
                    "names": {"kind": "Realm", "plural": "realms"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                        "openAPIV3Schema": {"type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True}}}]}}
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    await http.ok("POST", crds, crd)
    try:
        realm = {"apiVersion": f"{group}/v1", "kind": "Realm", "metadata": {"name": "r1"},
                 "spec": {"x": 1}}
        created = await http.ok("POST", f"/apis/{group}/v1/realms", realm)
        assert "namespace" not in created["metadata"]
        listed = await http.ok("GET", f"/apis/{group}/v1/realms")
        assert [i["metadata"]["name"] for i in listed["items"]] == ["r1"]
        status, _, _ = await http.call("GET", f"/apis/{group}/v1/namespaces/default/realms")
        assert status == 404
    finally:
        await http.call("DELETE", f"{crds}/realms.{group}")


async def test_core_events_are_also_served_by_events_api(http: Http, namespace: str) -> None:
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
             "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": namespace},
             "reason": "Tested", "message": "hello", "type": "Normal",
             "source": {"component": "tests"}, "count": 1}
    await http.ok("POST", f"/api/v1/namespaces/{namespace}/events", event)
    seen = await http.ok("GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events/e1")
    assert seen["apiVersion"] == "events.k8s.io/v1"
    assert seen["note"] == "hello" and seen["regarding"]["name"] == "x"
    assert seen["deprecatedSource"] == {"component": "tests"}
    by_field = await http.ok("GET", f"/api/v1/namespaces/{namespace}/events"
                                    "?fieldSelector=involvedObject.name%3Dx")
    assert [e["metadata"]["name"] for e in by_field["items"]] == ["e1"]


# --- discovery and auth ---------------------------------------------------------------------

async def test_aggregated_discovery_when_asked(http: Http) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    status, body, ctype = await http.call("GET", "/apis", headers={"Accept": accept})
    assert status == 200 and "as=APIGroupDiscoveryList" in ctype
    apps = next(i for i in body["items"] if i["metadata"].get("name") == "apps")
    deploy = next(r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments")
    assert {s["subresource"] for s in deploy["subresources"]} == {"scale", "status"}


async def test_impersonated_user_without_rights_is_forbidden(http: Http, namespace: str) -> None:
    status, body, _ = await http.call(
        "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/web",
        headers={"Impersonate-User": "jane"})
    assert status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == (f'deployments.apps "web" is forbidden: User "jane" cannot get '
                               f'resource "deployments" in API group "apps" in the namespace '
                               f'"{namespace}"')
    status, _, _ = await http.call("GET", f"/api/v1/namespaces/{namespace}/pods",
                                   headers={"Impersonate-User": "root",
                                            "Impersonate-Group": "system:masters"})
    assert status == 200


# --- simulated workloads (dev server only) --------------------------------------------------

def deployment(name: str, **annotations: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}}


async def test_failing_deployment_reports_progress_deadline_exceeded(
        http: Http, namespace: str, dev_only: None) -> None:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    await http.ok("POST", path, deployment("bad", **{"devcluster.fluxd.io/simulate": "fail"}))

    def failed(status: int, body: Any) -> bool:
        conds = {c["type"]: c for c in body.get("status", {}).get("conditions", [])}
        return conds.get("Progressing", {}).get("reason") == "ProgressDeadlineExceeded"

    await http.wait_for(f"{path}/bad", failed)


async def test_failing_job_and_pod(http: Http, namespace: str, dev_only: None) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "j", "annotations": {"devcluster.fluxd.io/simulate": "fail"}},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "c", "image": "i"}]}}}}
    await http.ok("POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
    await http.wait_for(f"/apis/batch/v1/namespaces/{namespace}/jobs/j", lambda s, b: any(
        c["type"] == "Failed" and c["status"] == "True"
        for c in b.get("status", {}).get("conditions", [])))
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "annotations": {"devcluster.fluxd.io/simulate": "fail"}},
           "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}
    await http.ok("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    await http.wait_for(f"/api/v1/namespaces/{namespace}/pods/p",
                        lambda s, b: b.get("status", {}).get("phase") == "Failed")


async def test_deployment_becomes_available_after_the_delay(http: Http, namespace: str,
                                                             dev_only: None) -> None:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    await http.ok("POST", path, deployment("good"))
    done = await http.wait_for(f"{path}/good", lambda s, b: b.get("status", {}).get(
        "availableReplicas") == 2)
    assert done["status"]["observedGeneration"] == done["metadata"]["generation"]
    scaled = await http.ok("PATCH", f"{path}/good/scale", {"spec": {"replicas": 3}},
                           content_type="application/merge-patch+json")
    assert scaled["kind"] == "Scale" and scaled["spec"]["replicas"] == 3
    await http.wait_for(f"{path}/good", lambda s, b: b.get("status", {}).get(
        "availableReplicas") == 3)


async def test_apply_yaml_keeps_timestamps_as_strings(http: Http, namespace: str) -> None:
    body = (b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dated}\n"
            b"data: {when: 2024-01-01T00:00:00Z}\n")
    applied = await http.ok("PATCH", f"/api/v1/namespaces/{namespace}/configmaps/dated"
                                     "?fieldManager=t", raw=body,
                            content_type="application/apply-patch+yaml")
    assert applied["data"] == {"when": "2024-01-01T00:00:00Z"}


# --- the in-flight limit (kube-apiserver's --max-[mutating-]requests-inflight) ----------

@contextlib.asynccontextmanager
async def private_cluster(tmp_path: Path) -> AsyncIterator[tuple[ServerThread, Path, Http]]:
    """A dev cluster of the test's own, whose limits it may change while it runs."""
    thread, kubeconfig = start_dev_cluster(tmp_path)
    config = yaml.safe_load(kubeconfig.read_text())
    clus, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    ssl_ctx = ssl.create_default_context(
        cadata=base64.b64decode(clus["certificate-authority-data"]).decode())
    try:
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl_ctx)) as session:
            yield thread, kubeconfig, Http(session, clus["server"], user["token"])
    finally:
        thread.stop()


async def raw(http: Http, method: str, path: str, body: Any = None,
              headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    async with http.session.request(method, http.server + path, data=data, headers={
            "Authorization": f"Bearer {http.token}", "Content-Type": "application/json",
            **(headers or {})}) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


async def test_a_write_past_the_mutating_limit_is_refused_as_kube_apiserver_does(
        tmp_path: Path, dev_only: None) -> None:
    async with private_cluster(tmp_path) as (thread, kubeconfig, http):
        options = dev_server(thread).options
        assert (options.max_requests_inflight, options.max_mutating_requests_inflight) == \
            (400, 200)
        options.max_mutating_requests_inflight = 1
        options.inflight_exempt_groups = ()
        async with write_in_flight(thread, kubeconfig, CONFIGMAPS):
            status, text, headers = await raw(http, "POST", CONFIGMAPS, cm("late"))
            assert status == 429
            # Go's http.Error, as kube-apiserver writes it: plain text, not a Status
            assert text == "Too many requests, please try again later.\n"
            assert headers["Retry-After"] == "1"
            assert headers["Content-Type"] == "text/plain; charset=utf-8"
            assert headers["X-Content-Type-Options"] == "nosniff"
            # reads are counted apart
            status, _, _ = await raw(http, "GET", CONFIGMAPS)
            assert status == 200
        status, _, _ = await raw(http, "POST", CONFIGMAPS, cm("late"))
        assert status == 201


async def test_reads_have_a_limit_of_their_own_and_watches_are_never_counted(
        tmp_path: Path, dev_only: None) -> None:
    async with private_cluster(tmp_path) as (thread, _, http):
        server = dev_server(thread)
        server.options.max_requests_inflight = 1
        server.options.inflight_exempt_groups = ()
        # this server answers a read without waiting on the client, so no real read can
        # be caught holding its slot: take it by hand, on the server's loop
        thread.call(server.inflight.__setitem__, False, 1)
        try:
            status, text, _ = await raw(http, "GET", CONFIGMAPS)
            assert (status, text) == (429, "Too many requests, please try again later.\n")
            status, _, _ = await raw(http, "GET", "/version")
            assert status == 429
            for watch in (f"{CONFIGMAPS}?watch=1&timeoutSeconds=1",
                          "/api/v1/watch/namespaces/default/configmaps?timeoutSeconds=1"):
                status, _, _ = await raw(http, "GET", watch)
                assert status == 200, watch
            status, _, _ = await raw(http, "POST", CONFIGMAPS, cm("write"))
            assert status == 201
        finally:
            thread.call(server.inflight.__setitem__, False, 0)
        status, _, _ = await raw(http, "GET", CONFIGMAPS)
        assert status == 200


async def test_system_masters_are_never_refused(tmp_path: Path, dev_only: None) -> None:
    robot = "system:serviceaccount:default:robot"
    async with private_cluster(tmp_path) as (thread, kubeconfig, http):
        await http.ok("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/"
                              "rolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "robot-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "default"}]})
        dev_server(thread).options.max_mutating_requests_inflight = 1
        async with write_in_flight(thread, kubeconfig, CONFIGMAPS, user=robot):
            status, _, _ = await raw(http, "POST", CONFIGMAPS, cm("as-robot"),
                                     headers={"Impersonate-User": robot})
            assert status == 429
            # the admin token is in system:masters
            status, _, _ = await raw(http, "POST", CONFIGMAPS, cm("as-admin"))
            assert status == 201
