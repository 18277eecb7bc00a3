"""Kustomization end to end: the real manager, the cluster fixture, a real git server and
the real kubectl (kustomize) binary."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fluxd.controllers.kustomize.kustomization import KustomizationReconciler
from fluxd.kube import NotFound
from tests.controllers.conftest import Flux, condition
from tests.support.gitserver import GitServer, commit, head

pytestmark = pytest.mark.anyio

SOURCE_API = "source.toolkit.fluxcd.io/v1"
API = "kustomize.toolkit.fluxcd.io/v1"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "repos") as srv:
        yield srv


def gitrepo(name: str, namespace: str, url: str) -> dict[str, Any]:
    return {"apiVersion": SOURCE_API, "kind": "GitRepository",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "10m", "url": url, "ref": {"branch": "main"}}}


def kustomization(name: str, namespace: str, source: str = "repo", **spec: Any
                  ) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Kustomization",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "10m", "prune": True,
                     "sourceRef": {"kind": "GitRepository", "name": source}, **spec}}


def configmap(name: str, namespace: str, **data: str) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": name, "namespace": namespace},
                           "data": data})


def deployment(name: str, namespace: str, *, pod_label: str = "", **annotations: str
               ) -> str:
    return yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": pod_label or name}},
                              "spec": {"containers": [{"name": "app",
                                                       "image": "nginx:1.27"}]}}}})


def ready(obj: dict[str, Any]) -> bool:
    return condition(obj, "Ready").get("status") == "True"


def failed_with(reason: str) -> Any:
    def check(obj: dict[str, Any]) -> bool:
        c = condition(obj, "Ready")
        return c.get("status") == "False" and c.get("reason") == reason
    return check


async def request(flux: Flux, kind: str, name: str, namespace: str) -> None:
    api = SOURCE_API if kind == "GitRepository" else API
    await flux.client.merge_patch(api, kind, name, {"metadata": {"annotations": {
        "reconcile.fluxcd.io/requestedAt": str(time.time())}}}, namespace)


async def live(flux: Flux, api: str, kind: str, name: str, namespace: str
               ) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = await flux.client.get(api, kind, name, namespace)
        return found
    except NotFound:
        return None


async def eventually(check: Any, *, within: float = 20) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - polling the API server
            await asyncio.sleep(0.1)


async def test_plain_yaml_is_applied_with_owner_labels_and_an_inventory(
        flux: Flux, server: GitServer, namespace: str) -> None:
    repo = server.make_repo("app", {"deploy/cm.yaml": configmap("settings", namespace, a="1"),
                                    "deploy/deploy.yaml": deployment("web", namespace)})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace, path="./deploy"))
    obj = await flux.wait(API, "Kustomization", "app", namespace, ready)
    revision = f"main@sha1:{head(repo)}"
    assert condition(obj, "Ready")["message"] == f"Applied revision: {revision}"
    assert condition(obj, "Ready")["reason"] == "ReconciliationSucceeded"
    status = obj["status"]
    assert status["lastAppliedRevision"] == status["lastAttemptedRevision"] == revision
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["inventory"]["entries"] == [
        {"id": f"{namespace}_settings__ConfigMap", "v": "v1"},
        {"id": f"{namespace}_web_apps_Deployment", "v": "v1"},
    ]
    assert status["history"][0]["lastReconciledStatus"] == "ReconciliationSucceeded"
    assert status["history"][0]["metadata"] == {"revision": revision}
    cm = await flux.client.get("v1", "ConfigMap", "settings", namespace)
    assert cm["data"] == {"a": "1"}
    assert cm["metadata"]["labels"] == {
        "kustomize.toolkit.fluxcd.io/name": "app",
        "kustomize.toolkit.fluxcd.io/namespace": namespace}
    managers = {m["manager"] for m in cm["metadata"]["managedFields"]}
    assert "kustomize-controller" in managers


async def test_a_new_commit_reaches_the_cluster_through_the_bus_without_an_interval(
        flux: Flux, server: GitServer, namespace: str) -> None:
    repo = server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace))
    await flux.wait(API, "Kustomization", "app", namespace, ready)
    commit(repo, {"cm.yaml": configmap("settings", namespace, a="2")})
    started = time.monotonic()
    # a webhook receiver does this: only the source is asked to reconcile
    await request(flux, "GitRepository", "repo", namespace)

    async def applied() -> bool:
        cm = await live(flux, "v1", "ConfigMap", "settings", namespace)
        return cm is not None and cm["data"] == {"a": "2"}

    await eventually(applied, within=10)
    assert time.monotonic() - started < 10
    obj = await flux.wait(API, "Kustomization", "app", namespace,
                          lambda o: o["status"].get("lastAppliedRevision")
                          == f"main@sha1:{head(repo)}")
    assert ready(obj)


async def test_an_unchanged_object_is_not_written_again(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace))
    await flux.wait(API, "Kustomization", "app", namespace, ready)
    before = await flux.client.get("v1", "ConfigMap", "settings", namespace)
    await request(flux, "Kustomization", "app", namespace)
    await flux.wait(API, "Kustomization", "app", namespace,
                    lambda o: bool(o["status"].get("lastHandledReconcileAt")))
    after = await flux.client.get("v1", "ConfigMap", "settings", namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_drift_is_corrected_at_the_next_reconcile(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace))
    await flux.wait(API, "Kustomization", "app", namespace, ready)
    await flux.client.merge_patch("v1", "ConfigMap", "settings", {"data": {"a": "manual"}},
                                  namespace)
    await request(flux, "Kustomization", "app", namespace)

    async def corrected() -> bool:
        cm = await live(flux, "v1", "ConfigMap", "settings", namespace)
        return cm is not None and cm["data"] == {"a": "1"}

    await eventually(corrected)


async def test_prune_removes_exactly_the_objects_gone_from_the_source(
        flux: Flux, server: GitServer, namespace: str) -> None:
    repo = server.make_repo("app", {"a.yaml": configmap("a", namespace, x="1"),
                                    "b.yaml": configmap("b", namespace, x="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace))
    await flux.wait(API, "Kustomization", "app", namespace, ready)
    # an object someone else made, with a name the source used to have: never pruned
    await flux.client.create({"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "c", "namespace": namespace}})
    commit(repo, {"b.yaml": None})
    await request(flux, "GitRepository", "repo", namespace)
    obj = await flux.wait(API, "Kustomization", "app", namespace,
                          lambda o: o["status"].get("lastAppliedRevision")
                          == f"main@sha1:{head(repo)}")
    assert obj["status"]["inventory"]["entries"] == [
        {"id": f"{namespace}_a__ConfigMap", "v": "v1"}]

    async def pruned() -> bool:
        return await live(flux, "v1", "ConfigMap", "b", namespace) is None

    await eventually(pruned)
    assert await live(flux, "v1", "ConfigMap", "a", namespace) is not None
    assert await live(flux, "v1", "ConfigMap", "c", namespace) is not None


async def test_an_invalid_manifest_applies_nothing_of_the_revision_and_is_named(
        flux: Flux, server: GitServer, namespace: str) -> None:
    repo = server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace))
    await flux.wait(API, "Kustomization", "app", namespace, ready)
    # the API server refuses it: the selector does not match the template's labels
    bad = deployment("web", namespace, pod_label="other")
    commit(repo, {"cm.yaml": configmap("settings", namespace, a="2"), "web.yaml": bad})
    await request(flux, "GitRepository", "repo", namespace)
    obj = await flux.wait(API, "Kustomization", "app", namespace,
                          failed_with("ReconciliationFailed"))
    message = condition(obj, "Ready")["message"]
    assert f"Deployment/{namespace}/web" in message
    assert obj["status"]["lastAttemptedRevision"] == f"main@sha1:{head(repo)}"
    assert obj["status"]["lastAppliedRevision"] != f"main@sha1:{head(repo)}"
    cm = await flux.client.get("v1", "ConfigMap", "settings", namespace)
    assert cm["data"] == {"a": "1"}
    assert await live(flux, "apps/v1", "Deployment", "web", namespace) is None


async def test_a_build_error_is_build_failed_with_kustomize_s_message(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"kustomization.yaml": yaml.safe_dump(
        {"resources": ["missing.yaml"]})})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace))
    obj = await flux.wait(API, "Kustomization", "app", namespace, failed_with("BuildFailed"))
    assert "missing.yaml" in condition(obj, "Ready")["message"]
    assert condition(obj, "Reconciling")["reason"] == "ProgressingWithRetry"


async def test_a_missing_path_is_artifact_failed(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    # with no artifact yet, the wait for it is ArtifactFailed too
    await flux.wait(SOURCE_API, "GitRepository", "repo", namespace, ready)
    await flux.client.create(kustomization("app", namespace, path="./nowhere"))
    obj = await flux.wait(API, "Kustomization", "app", namespace,
                          failed_with("ArtifactFailed"))
    assert "kustomization path not found" in condition(obj, "Ready")["message"]


async def test_a_missing_source_is_artifact_failed_until_it_appears(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create(kustomization("app", namespace))
    obj = await flux.wait(API, "Kustomization", "app", namespace,
                          failed_with("ArtifactFailed"))
    assert condition(obj, "Ready")["message"] == "Source 'GitRepository/repo' not found"
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.wait(API, "Kustomization", "app", namespace, ready, within=15)


async def test_substitution_from_a_configmap_and_inline_values(
        flux: Flux, server: GitServer, namespace: str) -> None:
    manifest = configmap("settings", namespace, region="${region}", tier="${tier:=gold}",
                         env="${env}")
    server.make_repo("app", {"cm.yaml": manifest})
    await flux.client.create({"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "vars", "namespace": namespace},
                              "data": {"region": "eu-1", "env": "from-configmap"}})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization(
        "app", namespace, postBuild={"substitute": {"env": "inline"},
                                     "substituteFrom": [{"kind": "ConfigMap",
                                                         "name": "vars"}]}))
    await flux.wait(API, "Kustomization", "app", namespace, ready)
    cm = await flux.client.get("v1", "ConfigMap", "settings", namespace)
    assert cm["data"] == {"region": "eu-1", "tier": "gold", "env": "inline"}


async def test_an_unset_variable_fails_the_build_in_strict_mode(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="${nope}")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace,
                                           postBuild={"substitute": {"other": "x"}}))
    obj = await flux.wait(API, "Kustomization", "app", namespace, failed_with("BuildFailed"))
    assert 'variable not set (strict mode): "nope"' in condition(obj, "Ready")["message"]
    assert await live(flux, "v1", "ConfigMap", "settings", namespace) is None


async def test_a_dependency_chain_becomes_ready_in_seconds_not_30s_steps(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"a/cm.yaml": configmap("a", namespace, x="1"),
                             "b/cm.yaml": configmap("b", namespace, x="1"),
                             "c/cm.yaml": configmap("c", namespace, x="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    started = time.monotonic()
    await flux.client.create(kustomization("c", namespace, path="./c",
                                           dependsOn=[{"name": "b"}]))
    await flux.client.create(kustomization("b", namespace, path="./b",
                                           dependsOn=[{"name": "a"}]))
    await flux.client.create(kustomization("a", namespace, path="./a"))
    obj = await flux.wait(API, "Kustomization", "c", namespace, ready, within=20)
    assert time.monotonic() - started < 15
    assert condition(obj, "Ready")["reason"] == "ReconciliationSucceeded"


async def test_a_dependency_that_is_missing_is_dependency_not_ready(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("a", namespace, x="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace, dependsOn=[{"name": "first"}]))
    obj = await flux.wait(API, "Kustomization", "app", namespace,
                          failed_with("DependencyNotReady"))
    assert f"dependency '{namespace}/first' not found" in condition(obj, "Ready")["message"]


async def test_wait_reports_healthy_once_the_deployment_is_available(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"web.yaml": deployment("web", namespace)})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace, wait=True, timeout="30s"))
    obj = await flux.wait(API, "Kustomization", "app", namespace, ready)
    healthy = condition(obj, "Healthy")
    assert healthy["status"] == "True"
    assert healthy["message"].startswith("Health check passed in ")


async def test_a_failing_job_fails_the_health_check_fast(
        dev_only: None, flux: Flux, server: GitServer, namespace: str) -> None:
    job = yaml.safe_dump({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "migrate", "namespace": namespace,
                     "annotations": {"devcluster.fluxd.io/simulate": "fail"}},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "m", "image": "busybox"}]}}}})
    server.make_repo("app", {"job.yaml": job})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    started = time.monotonic()
    await flux.client.create(kustomization("app", namespace, wait=True, timeout="5m"))
    obj = await flux.wait(API, "Kustomization", "app", namespace,
                          failed_with("HealthCheckFailed"))
    assert time.monotonic() - started < 20  # fail-fast, not the 5m timeout
    assert condition(obj, "Healthy")["status"] == "False"
    assert f"Job/{namespace}/migrate" in condition(obj, "Ready")["message"]


async def test_health_checks_time_out_with_the_objects_named(
        dev_only: None, flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"web.yaml": deployment(
        "web", namespace, **{"devcluster.fluxd.io/ready-after": "10m"})})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace, timeout="2s",
                                           healthChecks=[{"kind": "Deployment",
                                                          "name": "web"}]))
    await flux.wait(API, "Kustomization", "app", namespace,
                    lambda o: condition(o, "Healthy").get("status") == "Unknown")
    flux.advance(30)  # the checks' timeout: "2s" is raised to Flux's 30 s minimum
    obj = await flux.wait(API, "Kustomization", "app", namespace,
                          failed_with("HealthCheckFailed"))
    message = condition(obj, "Ready")["message"]
    assert message.startswith("health check failed after ")
    assert f"Deployment/{namespace}/web" in message


@pytest.mark.parametrize("flux_overrides", [{"kustomize": {"health_poll_interval": "1m"}}],
                         indirect=True)
async def test_health_is_looked_at_soon_after_the_apply_and_then_less_often(
        dev_only: None, flux: Flux, server: GitServer, namespace: str) -> None:
    # the Deployment becomes Available 1 s after it is applied; with a poll interval of a
    # minute, only the first rounds (100 ms, then doubling) can see it in time
    server.make_repo("app", {"web.yaml": deployment(
        "web", namespace, **{"devcluster.fluxd.io/ready-after": "1s"})})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace, wait=True, timeout="5m"))
    await flux.wait(API, "Kustomization", "app", namespace,
                    lambda o: condition(o, "Healthy").get("status") == "Unknown")
    started = time.monotonic()
    await flux.wait(API, "Kustomization", "app", namespace, ready, within=20)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("flux_overrides", [{"access": {"no_cross_namespace_refs": True}}],
                         indirect=True)
async def test_a_cross_namespace_source_is_refused_when_locked_down(
        flux: Flux, server: GitServer, namespace: str) -> None:
    await flux.client.create(kustomization("app", namespace, sourceRef={
        "kind": "GitRepository", "name": "repo", "namespace": "flux-system"}))
    obj = await flux.wait(API, "Kustomization", "app", namespace,
                          failed_with("AccessDenied"))
    assert condition(obj, "Stalled")["status"] == "True"
    assert "cross-namespace references have been blocked" in \
        condition(obj, "Ready")["message"]


async def test_an_impersonated_account_without_rights_is_denied_with_the_server_message(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create({"apiVersion": "v1", "kind": "ServiceAccount",
                              "metadata": {"name": "deployer", "namespace": namespace}})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace, serviceAccountName="deployer"))
    obj = await flux.wait(API, "Kustomization", "app", namespace,
                          failed_with("ReconciliationFailed"))
    message = condition(obj, "Ready")["message"]
    assert f"system:serviceaccount:{namespace}:deployer" in message
    assert "forbidden" in message
    # granted the rights, the same account applies
    await flux.client.create({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "deployer-admin", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "deployer",
                      "namespace": namespace}]})
    await request(flux, "Kustomization", "app", namespace)
    await flux.wait(API, "Kustomization", "app", namespace, ready)


async def test_deleting_a_pruning_kustomization_deletes_what_it_applied(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace))
    await flux.wait(API, "Kustomization", "app", namespace, ready)
    await flux.client.delete(API, "Kustomization", "app", namespace)

    async def gone() -> bool:
        return (await live(flux, API, "Kustomization", "app", namespace) is None
                and await live(flux, "v1", "ConfigMap", "settings", namespace) is None)

    await eventually(gone)


async def test_an_orphaning_kustomization_leaves_its_objects(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace, deletionPolicy="Orphan"))
    await flux.wait(API, "Kustomization", "app", namespace, ready)
    await flux.client.delete(API, "Kustomization", "app", namespace)

    async def gone() -> bool:
        return await live(flux, API, "Kustomization", "app", namespace) is None

    await eventually(gone)
    assert await live(flux, "v1", "ConfigMap", "settings", namespace) is not None


async def test_a_watched_configmap_change_reapplies_at_once(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, region="${region}")})
    await flux.client.create({"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "vars", "namespace": namespace,
                                           "labels": {"reconcile.fluxcd.io/watch": "Enabled"}},
                              "data": {"region": "eu-1"}})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization(
        "app", namespace, postBuild={"substituteFrom": [{"kind": "ConfigMap",
                                                         "name": "vars"}]}))
    await flux.wait(API, "Kustomization", "app", namespace, ready)
    await flux.client.merge_patch("v1", "ConfigMap", "vars", {"data": {"region": "us-2"}},
                                  namespace)

    async def reapplied() -> bool:
        cm = await live(flux, "v1", "ConfigMap", "settings", namespace)
        return cm is not None and cm["data"] == {"region": "us-2"}

    await eventually(reapplied, within=10)


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {"group": "example.com", "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                       "listKind": "WidgetList"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {
                               "type": "object",
                               "properties": {"spec": {
                                   "type": "object",
                                   "properties": {"size": {"type": "integer"}}}}}}}]}}


async def test_a_crd_and_its_custom_resource_apply_in_one_revision(
        flux: Flux, server: GitServer, namespace: str) -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget",
              "metadata": {"name": "w", "namespace": namespace}, "spec": {"size": 3}}
    server.make_repo("app", {"crd.yaml": yaml.safe_dump(CRD),
                             "widget.yaml": yaml.safe_dump(widget)})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace, prune=False))
    obj = await flux.wait(API, "Kustomization", "app", namespace, ready)
    ids = [e["id"] for e in obj["status"]["inventory"]["entries"]]
    assert f"{namespace}_w_example.com_Widget" in ids
    assert "_widgets.example.com_apiextensions.k8s.io_CustomResourceDefinition" in ids
    found = await flux.client.get("example.com/v1", "Widget", "w", namespace)
    assert found["spec"] == {"size": 3}


async def test_an_immutable_change_fails_without_force_and_recreates_with_it(
        flux: Flux, server: GitServer, namespace: str) -> None:
    def frozen(value: str, **annotations: str) -> str:
        return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "immutable": True,
                               "metadata": {"name": "frozen", "namespace": namespace,
                                            "annotations": annotations},
                               "data": {"v": value}})

    repo = server.make_repo("app", {"cm.yaml": frozen("1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace))
    await flux.wait(API, "Kustomization", "app", namespace, ready)
    first = await flux.client.get("v1", "ConfigMap", "frozen", namespace)
    commit(repo, {"cm.yaml": frozen("2")})
    await request(flux, "GitRepository", "repo", namespace)
    obj = await flux.wait(API, "Kustomization", "app", namespace,
                          failed_with("ReconciliationFailed"))
    assert f"ConfigMap/{namespace}/frozen" in condition(obj, "Ready")["message"]
    assert "immutable" in condition(obj, "Ready")["message"]
    commit(repo, {"cm.yaml": frozen("2", **{"kustomize.toolkit.fluxcd.io/force": "Enabled"})})
    await request(flux, "GitRepository", "repo", namespace)
    await flux.wait(API, "Kustomization", "app", namespace,
                    lambda o: ready(o) and o["status"]["lastAppliedRevision"]
                    == f"main@sha1:{head(repo)}")
    second = await flux.client.get("v1", "ConfigMap", "frozen", namespace)
    assert second["data"] == {"v": "2"}
    assert second["metadata"]["uid"] != first["metadata"]["uid"]


async def test_the_change_set_is_sent_as_an_event(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace))
    await flux.wait(API, "Kustomization", "app", namespace, ready)

    async def announced() -> bool:
        events = await flux.client.list_all("v1", "Event", namespace)
        return any(e.get("message") == f"ConfigMap/{namespace}/settings created"
                   and e["involvedObject"]["kind"] == "Kustomization"
                   for e in events.items)

    await eventually(announced)


async def test_a_suspended_kustomization_applies_nothing(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace, suspend=True))
    await flux.wait(SOURCE_API, "GitRepository", "repo", namespace, ready)
    await asyncio.sleep(1.0)
    assert await live(flux, "v1", "ConfigMap", "settings", namespace) is None
    await flux.client.merge_patch(API, "Kustomization", "app", {"spec": {"suspend": False}},
                                  namespace)
    await flux.wait(API, "Kustomization", "app", namespace, ready)


async def test_a_ready_expr_replaces_the_built_in_dependency_check(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"a/cm.yaml": configmap("a", namespace, x="1"),
                             "b/cm.yaml": configmap("b", namespace, x="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    # "a" is suspended, so never Ready; the expression only asks that it exists
    await flux.client.create(kustomization("a", namespace, path="./a", suspend=True))
    await flux.client.create(kustomization("b", namespace, path="./b", dependsOn=[
        {"name": "a", "readyExpr": "dep.spec.suspend == true && self.metadata.name == 'b'"}]))
    await flux.wait(API, "Kustomization", "b", namespace, ready)


async def test_an_invalid_cel_expression_stalls(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("a", namespace, x="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace, healthCheckExprs=[
        {"apiVersion": "example.com/v1", "kind": "Widget", "current": "status.(("}]))
    obj = await flux.wait(API, "Kustomization", "app", namespace,
                          failed_with("InvalidCELExpression"))
    assert condition(obj, "Stalled")["status"] == "True"


async def test_health_check_exprs_decide_the_health_of_a_custom_kind(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("a", namespace, x="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    # the health of the GitRepository (a custom kind) by an expression on its artifact
    await flux.client.create(kustomization(
        "app", namespace,
        healthChecks=[{"apiVersion": SOURCE_API, "kind": "GitRepository", "name": "repo"}],
        healthCheckExprs=[{"apiVersion": SOURCE_API, "kind": "GitRepository",
                           "current": "has(status.artifact) && "
                                      "status.artifact.revision.startsWith('main@')"}]))
    obj = await flux.wait(API, "Kustomization", "app", namespace, ready)
    assert condition(obj, "Healthy")["status"] == "True"


@pytest.mark.parametrize("policy", ["Delete", "WaitForTermination"])
async def test_a_deleting_deletion_policy_deletes_even_without_prune(
        flux: Flux, server: GitServer, namespace: str, policy: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace, prune=False,
                                           deletionPolicy=policy))
    await flux.wait(API, "Kustomization", "app", namespace, ready)
    await flux.client.delete(API, "Kustomization", "app", namespace)

    async def gone() -> bool:
        return (await live(flux, API, "Kustomization", "app", namespace) is None
                and await live(flux, "v1", "ConfigMap", "settings", namespace) is None)

    await eventually(gone)


async def test_mirror_prune_without_prune_keeps_the_objects(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace, prune=False))
    await flux.wait(API, "Kustomization", "app", namespace, ready)
    await flux.client.delete(API, "Kustomization", "app", namespace)

    async def gone() -> bool:
        return await live(flux, API, "Kustomization", "app", namespace) is None

    await eventually(gone)
    assert await live(flux, "v1", "ConfigMap", "settings", namespace) is not None


async def test_a_torn_artifact_is_rebuilt_by_the_source_and_then_applied(
        flux: Flux, server: GitServer, namespace: str) -> None:
    repo = server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace))
    await flux.wait(API, "Kustomization", "app", namespace, ready)
    source = await flux.client.get(SOURCE_API, "GitRepository", "repo", namespace)
    stored = flux.storage / source["status"]["artifact"]["path"]
    stored.write_bytes(b"torn by a crash")
    commit(repo, {"cm.yaml": configmap("settings", namespace, a="2")})
    # the Kustomization is asked first: it finds the file torn and asks the source
    await request(flux, "Kustomization", "app", namespace)

    async def applied() -> bool:
        cm = await live(flux, "v1", "ConfigMap", "settings", namespace)
        return cm is not None and cm["data"] == {"a": "2"}

    await eventually(applied, within=15)


async def test_a_failure_is_retried_at_the_retry_interval(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="${value}")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization(
        "app", namespace, retryInterval="1s",
        postBuild={"substituteFrom": [{"kind": "ConfigMap", "name": "vars"}]}))
    obj = await flux.wait(API, "Kustomization", "app", namespace, failed_with("BuildFailed"))
    assert "vars" in condition(obj, "Ready")["message"]
    # not labelled for watching: only the retry can notice it
    await flux.client.create({"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "vars", "namespace": namespace},
                              "data": {"value": "found"}})
    await flux.wait(API, "Kustomization", "app", namespace, ready, within=10,
                    jump=1)  # the retry interval passes at a jump


@pytest.mark.parametrize("flux_overrides",
                         [{"access": {"default_service_account": "tenant"}}], indirect=True)
async def test_the_default_service_account_is_impersonated_when_none_is_named(
        flux: Flux, server: GitServer, namespace: str) -> None:
    server.make_repo("app", {"cm.yaml": configmap("settings", namespace, a="1")})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    await flux.client.create(kustomization("app", namespace))
    obj = await flux.wait(API, "Kustomization", "app", namespace,
                          failed_with("ReconciliationFailed"))
    assert f"system:serviceaccount:{namespace}:tenant" in condition(obj, "Ready")["message"]


async def test_an_oci_source_s_origin_revision_is_recorded(
        flux: Flux, namespace: str, tmp_path: Path) -> None:
    from tests.controllers.source.test_ocirepository import ocirepo, push, start

    registry = start(tmp_path / "registry")
    try:
        digest = await push(registry.address, "manifests/app", "v1",
                            {"cm.yaml": configmap("settings", namespace, a="1")})
        await flux.client.create(ocirepo("repo", namespace,
                                         f"oci://{registry.address}/manifests/app",
                                         ref={"tag": "v1"}))
        await flux.client.create(kustomization("app", namespace, sourceRef={
            "kind": "OCIRepository", "name": "repo"}))
        obj = await flux.wait(API, "Kustomization", "app", namespace, ready)
    finally:
        registry.stop()
    assert obj["status"]["lastAppliedRevision"] == f"v1@{digest}"
    assert obj["status"]["lastAppliedOriginRevision"] == f"main@sha1:{'a' * 40}"
    assert obj["status"]["history"][0]["metadata"]["originRevision"] == f"main@sha1:{'a' * 40}"


# --------------------------------------------------------------------------- reuse


@dataclasses.dataclass
class Counted:
    flux: Flux
    reconciler: KustomizationReconciler

    def builds(self) -> int:
        """Builds run so far, native and with kubectl."""
        return self.reconciler.builds["native"] + self.reconciler.builds["kustomize"]

    def substitutions(self) -> int:
        return self.reconciler.builds["substitution"]


@pytest.fixture
def counted(flux: Flux) -> Counted:
    """The ``flux`` fixture's manager, with its Kustomization reconciler at hand."""
    reconciler = flux.reconciler("Kustomization")
    assert isinstance(reconciler, KustomizationReconciler)
    return Counted(flux, reconciler)


async def reconciled(flux: Flux, name: str, namespace: str, value: str) -> dict[str, Any]:
    """The Kustomization once a reconcile asked for as ``value`` has finished Ready."""
    await flux.client.merge_patch(API, "Kustomization", name, {"metadata": {"annotations": {
        "reconcile.fluxcd.io/requestedAt": value}}}, namespace)
    found: dict[str, Any] = await flux.wait(
        API, "Kustomization", name, namespace,
        lambda o: o["status"].get("lastHandledReconcileAt") == value and ready(o))
    return found


async def test_a_reconcile_of_an_unchanged_revision_builds_nothing_until_an_input_changes(
        counted: Counted, server: GitServer, namespace: str) -> None:
    flux = counted.flux
    other = f"{namespace}-b"
    server.make_repo("app", {
        "apps/web/kustomization.yaml": "resources: [cm.yaml]\ncommonLabels: {app: web}\n",
        "apps/web/cm.yaml": configmap("settings", namespace, region="${region}"),
        "apps/api/cm.yaml": configmap("api", namespace)})
    await flux.client.create({"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "vars", "namespace": namespace},
                              "data": {"region": "eu-1"}})
    await flux.client.create(gitrepo("repo", namespace, server.repo_url("app")))
    spec = {"path": "./apps/web", "targetNamespace": namespace,
            "postBuild": {"substituteFrom": [{"kind": "ConfigMap", "name": "vars"}]}}
    await flux.client.create(kustomization("web", namespace, **spec))
    await flux.wait(API, "Kustomization", "web", namespace, ready)
    assert (counted.builds(), counted.substitutions()) == (1, 1)

    # the periodic reconcile (or a request) of the same revision
    await reconciled(flux, "web", namespace, "again")
    await reconciled(flux, "web", namespace, "and again")
    assert (counted.builds(), counted.substitutions()) == (1, 1)

    # a second Kustomization with the same inputs takes the same manifests
    await flux.client.create(kustomization("twin", namespace, **spec))
    await flux.wait(API, "Kustomization", "twin", namespace, ready)
    assert (counted.builds(), counted.substitutions()) == (1, 1)

    # new variables: substituted again, from the same build
    await flux.client.merge_patch("v1", "ConfigMap", "vars", {"data": {"region": "us-2"}},
                                  namespace)
    await reconciled(flux, "web", namespace, "new variables")
    cm = await flux.client.get("v1", "ConfigMap", "settings", namespace)
    assert cm["data"] == {"region": "us-2"}
    assert (counted.builds(), counted.substitutions()) == (1, 2)

    # a build field changed: built again
    await flux.client.create({"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": other}})
    try:
        await flux.client.merge_patch(API, "Kustomization", "web",
                                      {"spec": {"targetNamespace": other}}, namespace)
        await flux.wait(API, "Kustomization", "web", namespace, lambda o: ready(o) and (
            o["status"].get("observedGeneration") == o["metadata"]["generation"]))
        moved = await flux.client.get("v1", "ConfigMap", "settings", other)
        assert moved["data"] == {"region": "us-2"}
        assert (counted.builds(), counted.substitutions()) == (2, 3)
    finally:
        await flux.client.delete("v1", "Namespace", other)
