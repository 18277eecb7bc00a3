"""The shared resource manager against the cluster fixture: staged server-side apply,
drift, force-recreate, the ``ssa``/``reconcile``/``prune`` annotations, take-over from
kubectl, drift-ignore rules and prune; and its JSON diff (no cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from fluxd.clock import SystemClock
from fluxd.jsonpatch import json_patch
from fluxd.kube import KubeClient, NotFound
from fluxd.ssa import (
    Action,
    ApplyError,
    ChangeSet,
    ChangeSetEntry,
    IgnoreRule,
    ObjMeta,
    ResourceManager,
    WaitError,
    compare,
    has_drifted,
    mask_secret_patch,
    object_diff,
    parse_selector,
    patch_of,
)
from tests.conftest import Cluster

pytestmark = pytest.mark.anyio

Obj = dict[str, Any]

OWNER = "kustomize-controller"
OWNER_LABELS = {"kustomize.toolkit.fluxcd.io/name": "apps",
                "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    async with await KubeClient.connect(clock=SystemClock(),
                                        kubeconfig=str(cluster.kubeconfig)) as client:
        yield client


def manager_for(client: Any, **options: Any) -> ResourceManager:
    options.setdefault("poll_interval", 0.1)
    return ResourceManager(client=client, owner=OWNER, owner_labels=OWNER_LABELS,
                           clock=SystemClock(), **options)


@pytest.fixture
def manager(kube: KubeClient) -> ResourceManager:
    return manager_for(kube)


def config_map(namespace: str, name: str, data: dict[str, str], **meta: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, **meta}, "data": data}


def deployment(namespace: str, name: str, *, image: str = "nginx:1.27",
               replicas: int | None = 1, app: str | None = None) -> Obj:
    spec: Obj = {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": app or name}},
                              "spec": {"containers": [{"name": "app", "image": image,
                                                       "ports": [{"containerPort": 80}]}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def crd(group: str, *, size_type: str = "integer") -> Obj:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"widgets.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": "Widget", "plural": "widgets", "singular": "widget",
                               "listKind": "WidgetList"},
                     "versions": [{"name": "v1", "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": {
                                       "type": "object", "properties": {"spec": {
                                           "type": "object",
                                           "properties": {"size": {"type": size_type}}}}}}}]}}


def widget(group: str, namespace: str, name: str, size: Any) -> Obj:
    return {"apiVersion": f"{group}/v1", "kind": "Widget",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"size": size}}


def actions(change_set: ChangeSet) -> dict[str, str]:
    return change_set.to_map()


async def live(kube: KubeClient, obj: Obj) -> Obj | None:
    meta = obj["metadata"]
    try:
        return await kube.get(obj["apiVersion"], obj["kind"], meta["name"],
                              meta.get("namespace"))
    except NotFound:
        return None


def managers_of(obj: Obj) -> set[tuple[str, str]]:
    return {(e["manager"], e["operation"]) for e in obj["metadata"].get("managedFields") or []}


def owned_by_fluxd(obj: Obj | None) -> tuple[Any, ...]:
    """An object's spec or data and fluxd's managedFields entries (fields and time); not
    its annotations, to which the deployment controller adds its revision."""
    assert obj is not None
    entries = [e for e in obj["metadata"].get("managedFields") or [] if e["manager"] == OWNER]
    return obj.get("spec"), obj.get("data"), entries


@pytest.fixture
async def crd_group(kube: KubeClient) -> AsyncIterator[str]:
    group = f"w{uuid.uuid4().hex[:8]}.example.com"
    yield group
    with contextlib.suppress(NotFound):
        await kube.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                          f"widgets.{group}")


# --- identities and change sets (no cluster) -------------------------------------------

def test_inventory_ids_follow_cli_utils_and_round_trip() -> None:
    deploy = ObjMeta("apps", "Deployment", "default", "podinfo")
    assert deploy.id == "default_podinfo_apps_Deployment"
    assert ObjMeta("", "Service", "default", "podinfo").id == "default_podinfo__Service"
    assert ObjMeta("", "Namespace", "", "ns1").id == "_ns1__Namespace"
    role = ObjMeta("rbac.authorization.k8s.io", "ClusterRole", "", "system:viewer")
    assert role.id == "_system__viewer_rbac.authorization.k8s.io_ClusterRole"
    for meta in (deploy, role, ObjMeta("", "Namespace", "", "ns1")):
        assert ObjMeta.parse_id(meta.id) == meta
    with pytest.raises(ValueError):
        ObjMeta.parse_id("no-separators")


def test_subjects_name_cluster_scoped_objects_without_a_namespace() -> None:
    assert ObjMeta("apps", "Deployment", "ns", "app").subject == "Deployment/ns/app"
    assert ObjMeta("", "Namespace", "", "ns").subject == "Namespace/ns"


def test_a_change_set_renders_only_changes_and_lists_every_object_in_the_inventory() -> None:
    change_set = ChangeSet([
        ChangeSetEntry(ObjMeta("", "Namespace", "", "apps"), "v1", Action.UNCHANGED),
        ChangeSetEntry(ObjMeta("apps", "Deployment", "apps", "web"), "v1", Action.CREATED),
        ChangeSetEntry(ObjMeta("", "ConfigMap", "apps", "cfg"), "v1", Action.CONFIGURED),
        ChangeSetEntry(ObjMeta("", "Secret", "apps", "old"), "v1", Action.SKIPPED),
    ])
    assert change_set.has_changes()
    assert change_set.event_lines() == "Deployment/apps/web created\nConfigMap/apps/cfg configured"
    assert change_set.inventory() == [
        {"id": "_apps__Namespace", "v": "v1"}, {"id": "apps_web_apps_Deployment", "v": "v1"},
        {"id": "apps_cfg__ConfigMap", "v": "v1"}, {"id": "apps_old__Secret", "v": "v1"}]
    assert not ChangeSet(change_set.entries[:1]).has_changes()


def test_ignore_rule_targets_match_whole_regular_expressions_and_selectors() -> None:
    rule = IgnoreRule.from_spec({"paths": ["/spec/replicas"], "target": {
        "kind": "Deploy.*", "namespace": "apps", "labelSelector": "tier in (web,api),!legacy"}})
    web = deployment("apps", "web")
    web["metadata"]["labels"] = {"tier": "web"}
    assert rule.matches(web)
    assert not rule.matches({**web, "kind": "StatefulSet"})
    assert not rule.matches({**web, "metadata": {**web["metadata"], "namespace": "apps2"}})
    legacy = copy.deepcopy(web)
    legacy["metadata"]["labels"]["legacy"] = "true"
    assert not rule.matches(legacy)
    assert IgnoreRule.from_spec({"paths": ["/x"]}).matches(web)  # no target: every object
    assert [(r.key, r.op) for r in parse_selector("a=b,c!=d,e")] == [
        ("a", "="), ("c", "!="), ("e", "exists")]


def test_ignore_rule_targets_are_go_regular_expressions() -> None:
    web = deployment("apps", "web")
    # anchored as Flux anchors them, ^(?:...)$, with Go's syntax
    assert IgnoreRule.from_spec({"paths": ["/x"], "target": {"name": "db|web"}}).matches(web)
    assert IgnoreRule.from_spec({"paths": ["/x"], "target": {"name": r"\pL+"}}).matches(web)
    assert not IgnoreRule.from_spec({"paths": ["/x"], "target": {"name": "we"}}).matches(web)
    for pattern in ("(?!db).*", r"(w)\1", "[web"):
        with pytest.raises(ValueError, match="error parsing regexp"):
            IgnoreRule.from_spec({"paths": ["/x"], "target": {"name": pattern}}).check()


def test_ignore_rule_targets_match_in_linear_time() -> None:
    # a nested quantifier is exponential for Python's re: 2**26 steps over this name
    rule = IgnoreRule.from_spec({"paths": ["/x"], "target": {"name": "(a+)+b"}})
    rule.check()
    for length in (26, 253):
        started = time.perf_counter()
        assert not rule.matches(deployment("apps", "a" * length))
        assert time.perf_counter() - started < 0.5, length


def test_drift_leaves_out_metadata_noise_status_and_ignored_paths() -> None:
    live_obj = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1", "b": "2"},
                "metadata": {"name": "c", "resourceVersion": "7", "generation": 3,
                             "managedFields": [{"manager": "x"}], "labels": {}},
                "status": {"x": 1}}
    dry = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1", "b": "9"},
           "metadata": {"name": "c", "resourceVersion": "7", "generation": 4}}
    assert has_drifted(live_obj, dry)
    assert not has_drifted(live_obj, dry, [["data", "b"]])
    assert has_drifted(live_obj, {**dry, "metadata": {"name": "c"}}, [["data", "b"]])


# --- apply ---------------------------------------------------------------------------

async def test_objects_are_created_then_left_unchanged_then_configured(
        kube: KubeClient, manager: ResourceManager, namespace: str) -> None:
    objects = [deployment(namespace, "web"), config_map(namespace, "cfg", {"a": "1"})]
    created = await manager.apply_all_staged(objects)
    assert actions(created) == {f"ConfigMap/{namespace}/cfg": "created",
                                f"Deployment/{namespace}/web": "created"}
    assert [e.subject for e in created] == [f"ConfigMap/{namespace}/cfg",
                                            f"Deployment/{namespace}/web"]  # Flux's order
    cfg = await live(kube, objects[1])
    assert cfg is not None and cfg["metadata"]["labels"] == OWNER_LABELS
    assert managers_of(cfg) == {(OWNER, "Apply")}
    # what fluxd owns; the resourceVersion is no measure, as a cluster's own controllers
    # (the deployment controller's status) write the objects between two applies
    before = {o["kind"]: owned_by_fluxd(await live(kube, o)) for o in objects}

    again = await manager.apply_all_staged(objects)
    assert set(actions(again).values()) == {"unchanged"} and not again.has_changes()
    assert {o["kind"]: owned_by_fluxd(await live(kube, o))
            for o in objects} == before  # nothing of fluxd's was written

    objects[1]["data"]["a"] = "2"
    changed = await manager.apply_all_staged(objects)
    assert changed.event_lines() == f"ConfigMap/{namespace}/cfg configured"
    assert (await live(kube, objects[1]) or {})["data"] == {"a": "2"}
    assert objects[1]["metadata"].get("labels") is None  # the caller's objects stay as given


async def test_a_crd_and_its_custom_resource_apply_in_one_call(
        kube: KubeClient, manager: ResourceManager, namespace: str, crd_group: str) -> None:
    objects = [widget(crd_group, namespace, "w1", 3), crd(crd_group)]
    result = await manager.apply_all_staged(objects)
    assert [str(e) for e in result] == [
        f"CustomResourceDefinition/widgets.{crd_group} created",
        f"Widget/{namespace}/w1 created"]
    assert result.inventory()[1] == {"id": f"{namespace}_w1_{crd_group}_Widget", "v": "v1"}
    got = await live(kube, objects[0])
    assert got is not None and got["spec"] == {"size": 3}
    again = await manager.apply_all_staged(objects)
    assert set(actions(again).values()) == {"unchanged"}


async def test_a_namespace_and_an_object_in_it_apply_in_one_call(
        kube: KubeClient, manager: ResourceManager) -> None:
    name = f"t-{uuid.uuid4().hex[:10]}"
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    try:
        result = await manager.apply_all_staged([config_map(name, "cfg", {"a": "1"}), ns])
        assert [str(e) for e in result] == [f"Namespace/{name} created",
                                            f"ConfigMap/{name}/cfg created"]
        assert result.entries[0].meta == ObjMeta("", "Namespace", "", name)
    finally:
        await kube.delete("v1", "Namespace", name)


async def test_an_invalid_object_stops_the_whole_set_before_anything_is_written(
        kube: KubeClient, manager: ResourceManager, namespace: str) -> None:
    name = f"t-{uuid.uuid4().hex[:10]}"
    good = config_map(namespace, "good", {"a": "1"})
    new_ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    bad = deployment(namespace, "bad", app="other")  # selector does not match the labels
    with pytest.raises(ApplyError) as failed:
        await manager.apply_all_staged([new_ns, good, bad])
    assert str(failed.value).startswith(f"Deployment/{namespace}/bad dry-run failed (Invalid): ")
    assert "`selector` does not match template `labels`" in str(failed.value)
    assert failed.value.meta == ObjMeta("apps", "Deployment", namespace, "bad")
    assert await live(kube, good) is None
    assert await live(kube, new_ns) is None  # not even stage 1 was written


async def test_a_custom_resource_the_new_crd_rejects_stops_the_later_stages(
        kube: KubeClient, manager: ResourceManager, namespace: str, crd_group: str) -> None:
    good = config_map(namespace, "good", {"a": "1"})
    bad = widget(crd_group, namespace, "w1", "not-a-number")
    with pytest.raises(ApplyError) as failed:
        await manager.apply_all_staged([crd(crd_group), good, bad])
    # the server cannot type the applied object: 500 with no reason, so none is shown
    assert str(failed.value) == (
        f"Widget/{namespace}/w1 dry-run failed: failed to create typed patch object "
        f"({namespace}/w1; {crd_group}/v1, Kind=Widget): .spec.size: expected numeric "
        "(int or float), got string")
    # its CRD had to be served before the server could judge it; the rest was not written
    assert await live(kube, crd(crd_group)) is not None
    assert await live(kube, good) is None


async def test_a_kind_nobody_serves_fails_naming_the_object(
        kube: KubeClient, manager: ResourceManager, namespace: str) -> None:
    stray = widget(f"w{uuid.uuid4().hex[:8]}.example.com", namespace, "w1", 1)
    with pytest.raises(ApplyError) as failed:
        await manager.apply_all_staged([config_map(namespace, "cfg", {}), stray])
    assert str(failed.value) == (f"Widget/{namespace}/w1 dry-run failed: no matches for kind "
                                 f'"Widget" in version "{stray["apiVersion"]}"')
    assert await live(kube, config_map(namespace, "cfg", {})) is None


async def test_an_immutable_change_fails_without_force_and_recreates_with_force(
        kube: KubeClient, manager: ResourceManager, namespace: str) -> None:
    frozen = config_map(namespace, "frozen", {"a": "1"})
    frozen["immutable"] = True
    other = config_map(namespace, "other", {"x": "1"})
    await manager.apply_all_staged([frozen, other])
    first = await live(kube, frozen)
    assert first is not None

    frozen["data"]["a"] = "2"
    with pytest.raises(ApplyError) as failed:
        await manager.apply_all_staged([frozen, other])
    assert str(failed.value) == (
        f'ConfigMap/{namespace}/frozen dry-run failed (Invalid): ConfigMap "frozen" is '
        "invalid: data: Forbidden: field is immutable when `immutable` is set")

    result = await manager.apply_all_staged([frozen, other], force=True)
    assert actions(result) == {f"ConfigMap/{namespace}/frozen": "created",
                               f"ConfigMap/{namespace}/other": "unchanged"}
    second = await live(kube, frozen)
    assert second is not None and second["data"] == {"a": "2"}
    assert second["metadata"]["uid"] != first["metadata"]["uid"]

    # the force annotation on the object does the same for that object alone
    frozen["data"]["a"] = "3"
    frozen["metadata"]["annotations"] = {"kustomize.toolkit.fluxcd.io/force": "enabled"}
    result = await manager.apply_all_staged([frozen, other])
    assert actions(result)[f"ConfigMap/{namespace}/frozen"] == "created"


async def test_ssa_ignore_on_the_desired_object_skips_it(
        kube: KubeClient, manager: ResourceManager, namespace: str) -> None:
    ignored = config_map(namespace, "ignored", {"a": "1"},
                         annotations={"kustomize.toolkit.fluxcd.io/ssa": "ignore"})
    result = await manager.apply_all_staged([ignored])
    assert actions(result) == {f"ConfigMap/{namespace}/ignored": "skipped"}
    assert await live(kube, ignored) is None


@pytest.mark.parametrize("label", ["kustomize.toolkit.fluxcd.io/reconcile=disabled",
                                   "kustomize.toolkit.fluxcd.io/ssa=Ignore"])
async def test_a_live_object_that_opts_out_is_left_alone(
        cluster: Cluster, kube: KubeClient, manager: ResourceManager, namespace: str,
        label: str) -> None:
    cfg = config_map(namespace, "cfg", {"a": "1"})
    await manager.apply_all_staged([cfg])
    await asyncio.to_thread(cluster.kubectl, "label", "configmap", "cfg", "-n", namespace,
                            label)
    cfg["data"]["a"] = "2"
    result = await manager.apply_all_staged([cfg])
    assert actions(result) == {f"ConfigMap/{namespace}/cfg": "skipped"}
    assert (await live(kube, cfg) or {})["data"] == {"a": "1"}


async def test_if_not_present_creates_the_object_once_and_override_applies_it_again(
        kube: KubeClient, manager: ResourceManager, namespace: str) -> None:
    cfg = config_map(namespace, "seed", {"a": "1"},
                     labels={"kustomize.toolkit.fluxcd.io/ssa": "IfNotPresent"})
    assert actions(await manager.apply_all_staged([cfg])) == {
        f"ConfigMap/{namespace}/seed": "created"}
    cfg["data"]["a"] = "2"
    assert actions(await manager.apply_all_staged([cfg])) == {
        f"ConfigMap/{namespace}/seed": "skipped"}
    assert (await live(kube, cfg) or {})["data"] == {"a": "1"}
    # Override, the default, applies it again
    cfg["metadata"]["labels"] = {"kustomize.toolkit.fluxcd.io/ssa": "Override"}
    assert actions(await manager.apply_all_staged([cfg])) == {
        f"ConfigMap/{namespace}/seed": "configured"}
    assert (await live(kube, cfg) or {})["data"] == {"a": "2"}


async def test_fields_kubectl_client_side_apply_set_are_taken_over_and_removed(
        cluster: Cluster, kube: KubeClient, manager: ResourceManager, namespace: str) -> None:
    by_hand = config_map(namespace, "cfg", {"a": "1", "b": "2"})
    await asyncio.to_thread(cluster.kubectl, "apply", "-f", "-", input=json.dumps(by_hand))
    before = await live(kube, by_hand)
    assert before is not None and ("kubectl-client-side-apply", "Update") in managers_of(before)

    result = await manager.apply_all_staged([config_map(namespace, "cfg", {"a": "1"})])
    assert actions(result) == {f"ConfigMap/{namespace}/cfg": "configured"}
    after = await live(kube, by_hand)
    assert after is not None and after["data"] == {"a": "1"}
    assert "kubectl.kubernetes.io/last-applied-configuration" not in (
        after["metadata"].get("annotations") or {})
    assert [(m["manager"], m["operation"]) for m in after["metadata"]["managedFields"]] == [
        (OWNER, "Apply")]

    # a field kubectl adds later to our object goes again at the next apply
    added = config_map(namespace, "cfg", {"a": "1", "c": "3"})
    await asyncio.to_thread(cluster.kubectl, "apply", "-f", "-", input=json.dumps(added))
    result = await manager.apply_all_staged([config_map(namespace, "cfg", {"a": "1"})])
    assert actions(result) == {f"ConfigMap/{namespace}/cfg": "configured"}
    final = await live(kube, by_hand)
    assert final is not None and final["data"] == {"a": "1"}
    assert [(m["manager"], m["operation"]) for m in final["metadata"]["managedFields"]] == [
        (OWNER, "Apply")]


async def test_ssa_merge_keeps_the_fields_kubectl_added(
        cluster: Cluster, kube: KubeClient, manager: ResourceManager, namespace: str) -> None:
    merge = {"annotations": {"kustomize.toolkit.fluxcd.io/ssa": "Merge"}}
    await manager.apply_all_staged([config_map(namespace, "cfg", {"a": "1"}, **merge)])
    added = config_map(namespace, "cfg", {"a": "1", "c": "3"})
    await asyncio.to_thread(cluster.kubectl, "apply", "-f", "-", input=json.dumps(added))
    result = await manager.apply_all_staged([config_map(namespace, "cfg", {"a": "1"}, **merge)])
    assert actions(result) == {f"ConfigMap/{namespace}/cfg": "unchanged"}
    assert (await live(kube, added) or {})["data"] == {"a": "1", "c": "3"}


async def test_an_ignored_path_keeps_a_field_another_manager_changed(
        kube: KubeClient, manager: ResourceManager, namespace: str) -> None:
    web = deployment(namespace, "web", replicas=1)
    await manager.apply_all_staged([web])
    autoscaler = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "web", "namespace": namespace},
                  "spec": {"replicas": 3}}
    await kube.apply(autoscaler, force=True, field_manager="hpa-controller")
    scaled = await live(kube, web)
    assert scaled is not None and scaled["spec"]["replicas"] == 3

    rules = [IgnoreRule.from_spec({"paths": ["/spec/replicas"],
                                   "target": {"kind": "Deployment"}})]
    result = await manager.apply_all_staged([web], ignore=rules)
    assert actions(result) == {f"Deployment/{namespace}/web": "unchanged"}
    kept = await live(kube, web)
    assert kept is not None and kept["spec"]["replicas"] == 3
    assert kept["metadata"]["resourceVersion"] == scaled["metadata"]["resourceVersion"]

    # another change goes through; the autoscaler's replicas stay, and stay its own
    changed = deployment(namespace, "web", replicas=1, image="nginx:1.28")
    result = await manager.apply_all_staged([changed], ignore=rules)
    assert actions(result) == {f"Deployment/{namespace}/web": "configured"}
    after = await live(kube, web)
    assert after is not None and after["spec"]["replicas"] == 3
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"

    # without the rule, the desired value wins again
    result = await manager.apply_all_staged([changed])
    assert actions(result) == {f"Deployment/{namespace}/web": "configured"}
    assert (await live(kube, web) or {})["spec"]["replicas"] == 1


async def test_an_ignored_path_keeps_a_value_edited_in_place(
        cluster: Cluster, kube: KubeClient, manager: ResourceManager, namespace: str) -> None:
    cfg = config_map(namespace, "cfg", {"a": "1", "tuned": "low"})
    await manager.apply_all_staged([cfg])
    await asyncio.to_thread(cluster.kubectl, "patch", "configmap", "cfg", "-n", namespace,
                            "-p", '{"data":{"tuned":"high"}}')
    rules = [IgnoreRule.from_spec({"paths": ["/data/tuned"]})]
    cfg["data"]["a"] = "2"
    result = await manager.apply_all_staged([cfg], ignore=rules)
    assert actions(result) == {f"ConfigMap/{namespace}/cfg": "configured"}
    assert (await live(kube, cfg) or {})["data"] == {"a": "2", "tuned": "high"}


async def test_applies_run_at_most_concurrency_at_a_time(
        kube: KubeClient, namespace: str) -> None:
    counter = InFlight(kube)
    manager = manager_for(counter, concurrency=3)
    objects = [config_map(namespace, f"cfg-{i}", {"i": str(i)}) for i in range(9)]
    result = await manager.apply_all_staged(objects)
    assert set(actions(result).values()) == {"created"} and len(result) == 9
    assert 2 <= counter.peak["dry-run"] <= 3 and 2 <= counter.peak["apply"] <= 3


class InFlight:
    """A client that counts the applies in flight, each held a little while."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client
        self.now = {"dry-run": 0, "apply": 0}
        self.peak = {"dry-run": 0, "apply": 0}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def apply(self, obj: Obj, **options: Any) -> Obj:
        kind = "dry-run" if options.get("dry_run") else "apply"
        self.now[kind] += 1
        self.peak[kind] = max(self.peak[kind], self.now[kind])
        try:
            await asyncio.sleep(0.2)
            return await self._client.apply(obj, **options)
        finally:
            self.now[kind] -= 1


# --- prune -----------------------------------------------------------------------------

async def test_prune_deletes_only_objects_with_our_labels_and_honours_prune_disabled(
        cluster: Cluster, kube: KubeClient, manager: ResourceManager, namespace: str) -> None:
    names = ["gone", "adopted", "kept", "ignored"]
    await manager.apply_all_staged([config_map(namespace, n, {}) for n in names])
    kubectl: Callable[..., Any] = cluster.kubectl
    await asyncio.to_thread(kubectl, "label", "configmap", "adopted", "-n", namespace,
                            "kustomize.toolkit.fluxcd.io/name=someone-else", "--overwrite")
    await asyncio.to_thread(kubectl, "annotate", "configmap", "kept", "-n", namespace,
                            "kustomize.toolkit.fluxcd.io/prune=Disabled")
    await asyncio.to_thread(kubectl, "label", "configmap", "ignored", "-n", namespace,
                            "kustomize.toolkit.fluxcd.io/ssa=ignore")
    stale = [(ObjMeta("", "ConfigMap", namespace, n), "v1") for n in [*names, "never-was"]]
    deleted, errors = await manager.delete_all(stale)
    assert errors == []
    assert actions(deleted) == {f"ConfigMap/{namespace}/gone": "deleted",
                                f"ConfigMap/{namespace}/adopted": "skipped",
                                f"ConfigMap/{namespace}/kept": "skipped",
                                f"ConfigMap/{namespace}/ignored": "skipped",
                                f"ConfigMap/{namespace}/never-was": "deleted"}
    assert deleted.event_lines().splitlines() == [f"ConfigMap/{namespace}/never-was deleted",
                                                  f"ConfigMap/{namespace}/gone deleted"]
    left = {n for n in names if await live(kube, config_map(namespace, n, {})) is not None}
    assert left == {"adopted", "kept", "ignored"}


async def test_prune_deletes_in_reverse_apply_order(
        kube: KubeClient, manager: ResourceManager, namespace: str) -> None:
    objects = [deployment(namespace, "web"), config_map(namespace, "cfg", {})]
    applied = await manager.apply_all_staged(objects)
    deleted, errors = await manager.delete_all([(e.meta, e.version) for e in applied])
    assert errors == []
    assert [str(e) for e in deleted] == [f"Deployment/{namespace}/web deleted",
                                         f"ConfigMap/{namespace}/cfg deleted"]


async def test_prune_finds_an_object_recorded_in_a_version_no_longer_served(
        kube: KubeClient, manager: ResourceManager, namespace: str) -> None:
    await manager.apply_all_staged([config_map(namespace, "cfg", {})])
    meta = ObjMeta("", "ConfigMap", namespace, "cfg")
    deleted, errors = await manager.delete_all([(meta, "v1beta1")])
    assert errors == [] and actions(deleted) == {f"ConfigMap/{namespace}/cfg": "deleted"}
    assert await live(kube, config_map(namespace, "cfg", {})) is None


async def test_a_failed_delete_is_reported_and_not_raised(
        kube: KubeClient, manager: ResourceManager, namespace: str) -> None:
    await manager.apply_all_staged([config_map(namespace, "cfg", {})])
    await kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                       "metadata": {"name": "robot-view", "namespace": namespace},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                   "kind": "ClusterRole", "name": "view"},
                       "subjects": [{"kind": "ServiceAccount", "name": "robot",
                                     "namespace": namespace}]})
    robot = manager_for(kube.impersonate(namespace, "robot"))  # may read, not delete
    meta = ObjMeta("", "ConfigMap", namespace, "cfg")
    deleted, errors = await robot.delete_all([(meta, "v1")])
    assert actions(deleted) == {f"ConfigMap/{namespace}/cfg": "unknown"}
    assert len(errors) == 1 and errors[0].meta == meta
    assert str(errors[0]).startswith(f"ConfigMap/{namespace}/cfg delete failed: ")
    assert "forbidden" in str(errors[0])
    assert await live(kube, config_map(namespace, "cfg", {})) is not None


async def test_waiting_for_termination_waits_for_finalizers(
        kube: KubeClient, manager: ResourceManager, namespace: str) -> None:
    held = config_map(namespace, "held", {}, finalizers=["example.com/hold"])
    await kube.create(held)
    meta = ObjMeta("", "ConfigMap", namespace, "held")
    await kube.delete("v1", "ConfigMap", "held", namespace)
    with pytest.raises(WaitError, match=f"^ConfigMap/{namespace}/held termination timeout"):
        await manager.wait_for_termination([meta], timeout=0.3)
    await kube.merge_patch("v1", "ConfigMap", "held", {"metadata": {"finalizers": None}},
                           namespace)
    await manager.wait_for_termination([meta], timeout=5)
    await manager.wait_for_termination([(ObjMeta("", "ConfigMap", namespace, "none"), "")],
                                       timeout=1)


# --- JSON diff (no cluster) --------------------------------------------------------------

def test_compare_yields_a_patch_that_turns_one_document_into_the_other() -> None:
    a = {"spec": {"ports": [1, 2, 3, 4], "name": "x", "gone": True}, "keep": {"a": 1}}
    b = {"spec": {"ports": [1, 9], "name": "y", "new": {"z": 1}}, "keep": {"a": 1}}
    assert json_patch(a, patch_of(compare(a, b))) == b
    ops = compare(a, b, rationalize=False)
    assert json_patch(a, patch_of(ops)) == b
    assert {op["op"] for op in ops} == {"add", "remove", "replace"}
    assert all("oldValue" in op for op in ops if op["op"] != "add")


def test_compare_replaces_a_container_whole_when_that_is_shorter() -> None:
    ops = compare({"m": {"a": 1, "b": 2, "c": 3}}, {"m": {"x": 1}})
    assert [(op["op"], op["path"]) for op in ops] == [("replace", "/m")]


def test_object_diff_ignores_removed_labels_metadata_noise_and_status() -> None:
    live = {"metadata": {"labels": {"a": "1", "added-by-cluster": "x"}, "uid": "u",
                         "resourceVersion": "7"}, "status": {"ready": True},
            "data": {"k": "v"}}
    dry = {"metadata": {"labels": {"a": "2"}, "resourceVersion": "8"}, "data": {"k": "v"}}
    assert [(op["op"], op["path"]) for op in object_diff(live, dry)] == [
        ("replace", "/metadata/labels/a")]


def test_secret_values_are_masked_in_a_diff() -> None:
    ops = compare({"data": {"a": "b2xk", "gone": "eA=="}},
                  {"data": {"a": "bmV3", "new": "eQ=="}}, rationalize=False)
    masked = mask_secret_patch(ops)
    values = {op["path"]: (op.get("oldValue"), op.get("value")) for op in masked}
    assert values["/data/a"] == ("*** (before)", "*** (after)")
    assert values["/data/gone"] == ("***", None)
    assert values["/data/new"] == (None, "***")
    whole = mask_secret_patch([{"op": "replace", "path": "/data",
                                "oldValue": {"a": "x", "same": "s"},
                                "value": {"a": "y", "same": "s"}}])
    assert whole[0]["oldValue"] == {"a": "*** (before)", "same": "***"}
    assert whole[0]["value"] == {"a": "*** (after)", "same": "***"}
