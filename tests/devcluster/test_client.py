"""kubernetes_asyncio against the cluster fixture: the calls controllers make."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.conftest import Cluster, start_dev_cluster

pytestmark = pytest.mark.anyio

APPLY = "application/apply-patch+yaml"


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[client.ApiClient]:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(cluster.kubeconfig),
                                  client_configuration=cfg)
    async with client.ApiClient(cfg) as api_client:
        yield api_client


def cm(name: str, data: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, **meta}, "data": data or {}}


async def test_list_then_watch_from_the_list_version(api: client.ApiClient,
                                                     namespace: str) -> None:
    core = client.CoreV1Api(api)
    # a cluster puts ConfigMaps of its own (kube-root-ca.crt) in every namespace
    mine = {"labels": {"test": "list-watch"}}
    await core.create_namespaced_config_map(namespace, cm("one", {"a": "1"}, **mine))
    listed = await core.list_namespaced_config_map(namespace, label_selector="test=list-watch")
    assert [i.metadata.name for i in listed.items] == ["one"]
    rv = listed.metadata.resource_version

    async def changes() -> list[tuple[str, str]]:
        seen = []
        async with watch.Watch() as w:
            async for event in w.stream(core.list_namespaced_config_map, namespace,
                                        label_selector="test=list-watch",
                                        resource_version=rv, timeout_seconds=10):
                seen.append((event["type"], event["object"].metadata.name))
                if len(seen) == 3:
                    break
        return seen

    task = asyncio.create_task(changes())
    await asyncio.sleep(0.2)
    await core.create_namespaced_config_map(namespace, cm("two", **mine))
    await core.patch_namespaced_config_map("one", namespace, {"data": {"a": "2"}})
    await core.delete_namespaced_config_map("two", namespace)
    assert await asyncio.wait_for(task, 15) == [("ADDED", "two"), ("MODIFIED", "one"),
                                                ("DELETED", "two")]


async def test_watch_label_selector_turns_relabels_into_add_and_delete(
        api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_config_map(namespace, cm("x", labels={"team": "a"}))
    rv = (await core.list_namespaced_config_map(namespace)).metadata.resource_version
    seen: list[str] = []
    async with watch.Watch() as w:
        stream = w.stream(core.list_namespaced_config_map, namespace, label_selector="team=b",
                          resource_version=rv, timeout_seconds=10)
        await core.patch_namespaced_config_map("x", namespace,
                                               {"metadata": {"labels": {"team": "b"}}})
        await core.patch_namespaced_config_map("x", namespace,
                                               {"metadata": {"labels": {"team": "c"}}})
        async for event in stream:
            seen.append(event["type"])
            if len(seen) == 2:
                break
    assert seen == ["ADDED", "DELETED"]


async def test_watch_sends_bookmarks_when_asked(tmp_path: Path) -> None:
    thread, kubeconfig = start_dev_cluster(tmp_path, bookmark_interval=0.2)
    try:
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        async with client.ApiClient(cfg) as api_client:
            core = client.CoreV1Api(api_client)
            rv = (await core.list_namespace()).metadata.resource_version
            async with watch.Watch() as w:
                async for event in w.stream(core.list_namespace, resource_version=rv,
                                            allow_watch_bookmarks=True, timeout_seconds=5):
                    assert event["type"] == "BOOKMARK"
                    assert int(event["raw_object"]["metadata"]["resourceVersion"]) >= int(rv)
                    break
    finally:
        thread.stop()


async def test_watch_from_compacted_version_is_gone(tmp_path: Path) -> None:
    thread, kubeconfig = start_dev_cluster(tmp_path, history_size=5)
    try:
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        async with client.ApiClient(cfg) as api_client:
            core = client.CoreV1Api(api_client)
            rv = (await core.list_namespaced_config_map("default")).metadata.resource_version
            for i in range(10):
                await core.create_namespaced_config_map("default", cm(f"c{i}"))
            with pytest.raises(ApiException) as err:
                async with watch.Watch() as w:
                    async for _ in w.stream(core.list_namespaced_config_map, "default",
                                            resource_version=rv, timeout_seconds=5):
                        pass
            assert err.value.status == 410
            assert "too old resource version" in str(err.value.reason)
    finally:
        thread.stop()


async def test_pagination_with_limit_and_continue(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    for i in range(7):
        await core.create_namespaced_config_map(
            namespace, cm(f"page-{i}", labels={"test": "pages"}))
    names: list[str] = []
    token = None
    pages = 0
    while True:
        page = await core.list_namespaced_config_map(namespace, label_selector="test=pages",
                                                     limit=3, _continue=token)
        pages += 1
        names += [i.metadata.name for i in page.items]
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == 7 - len(names)
    assert pages == 3
    assert names == [f"page-{i}" for i in range(7)]


async def test_server_side_apply_conflict_then_force(api: client.ApiClient,
                                                    namespace: str) -> None:
    core = client.CoreV1Api(api)
    await core.patch_namespaced_config_map("owned", namespace, cm("owned", {"k": "1"}),
                                           field_manager="alpha", _content_type=APPLY)
    with pytest.raises(ApiException) as err:
        await core.patch_namespaced_config_map("owned", namespace, cm("owned", {"k": "2"}),
                                               field_manager="beta", _content_type=APPLY)
    assert err.value.status == 409
    status = json.loads(err.value.body)
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Apply failed with 1 conflict: conflict with "alpha": .data.k')
    assert status["details"]["causes"] == [{"reason": "FieldManagerConflict",
                                            "message": 'conflict with "alpha"',
                                            "field": ".data.k"}]
    forced = await core.patch_namespaced_config_map(
        "owned", namespace, cm("owned", {"k": "2"}), field_manager="beta", force=True,
        _content_type=APPLY)
    assert forced.data == {"k": "2"}
    assert [m.manager for m in forced.metadata.managed_fields] == ["beta"]
    # alpha stops applying a field it no longer owns: nothing is removed
    await core.patch_namespaced_config_map("owned", namespace, cm("owned", {}),
                                           field_manager="alpha", _content_type=APPLY)
    assert (await core.read_namespaced_config_map("owned", namespace)).data == {"k": "2"}
    # beta drops the field: it is removed
    dropped = await core.patch_namespaced_config_map("owned", namespace, cm("owned", {}),
                                                     field_manager="beta", _content_type=APPLY)
    assert not dropped.data


async def test_stale_resource_version_conflicts(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    created = await core.create_namespaced_config_map(namespace, cm("cas", {"a": "1"}))
    body = created.to_dict()
    await core.patch_namespaced_config_map("cas", namespace, {"data": {"a": "2"}})
    body["data"] = {"a": "3"}
    stale = client.V1ConfigMap(api_version="v1", kind="ConfigMap", data=body["data"],
                               metadata=created.metadata)
    with pytest.raises(ApiException) as err:
        await core.replace_namespaced_config_map("cas", namespace, stale)
    assert err.value.status == 409
    assert "the object has been modified" in err.value.body


async def test_status_subresource_is_separate_and_keeps_generation(
        api: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(api)
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "s",
            "annotations": {"devcluster.fluxd.io/ready-after": "1h"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    created = await apps.create_namespaced_deployment(namespace, body)
    assert created.metadata.generation == 1
    # status sent to the main resource is ignored
    await apps.patch_namespaced_deployment("s", namespace, {"status": {"replicas": 42}})
    assert (await apps.read_namespaced_deployment("s", namespace)).status.replicas != 42
    patched = await apps.patch_namespaced_deployment_status(
        "s", namespace, {"status": {"observedGeneration": 1, "replicas": 7}})
    assert patched.status.replicas == 7
    assert patched.metadata.generation == 1
    spec_change = await apps.patch_namespaced_deployment("s", namespace,
                                                         {"spec": {"replicas": 2}})
    assert spec_change.metadata.generation == 2
    assert spec_change.status.replicas == 7


async def test_finalizer_holds_deletion_until_removed(api: client.ApiClient,
                                                      namespace: str) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_config_map(
        namespace, cm("held", finalizers=["example.com/keep"]))
    await core.delete_namespaced_config_map("held", namespace)
    held = await core.read_namespaced_config_map("held", namespace)
    assert held.metadata.deletion_timestamp is not None
    assert held.metadata.finalizers == ["example.com/keep"]
    await core.patch_namespaced_config_map("held", namespace, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        await core.read_namespaced_config_map("held", namespace)
    assert err.value.status == 404


async def test_dry_run_returns_the_object_and_stores_nothing(api: client.ApiClient,
                                                           namespace: str) -> None:
    core = client.CoreV1Api(api)
    dry = await core.create_namespaced_config_map(namespace, cm("dry", {"a": "1"}),
                                                  dry_run="All")
    assert dry.metadata.uid and dry.data == {"a": "1"}
    with pytest.raises(ApiException) as err:
        await core.read_namespaced_config_map("dry", namespace)
    assert err.value.status == 404


async def test_watch_ends_at_its_timeout(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    rv = (await core.list_namespaced_config_map(namespace)).metadata.resource_version
    started = asyncio.get_running_loop().time()
    async with asyncio.timeout(10), watch.Watch() as w:
        events = [e async for e in w.stream(core.list_namespaced_config_map, namespace,
                                            resource_version=rv, timeout_seconds=1)]
    assert events == []
    assert asyncio.get_running_loop().time() - started < 5


async def test_watch_with_initial_events_ends_them_with_a_bookmark(
        api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_config_map(namespace, cm("first", labels={"test": "initial"}))
    seen: list[tuple[str, Any]] = []
    try:
        async with asyncio.timeout(10), watch.Watch() as w:
            async for event in w.stream(core.list_namespaced_config_map, namespace,
                                        label_selector="test=initial",
                                        send_initial_events=True, allow_watch_bookmarks=True,
                                        resource_version_match="NotOlderThan",
                                        timeout_seconds=5):
                seen.append((event["type"], event["raw_object"]["metadata"]))
                if event["type"] == "BOOKMARK":
                    break
    except ApiException as exc:
        # a server whose storage lacks RequestWatchProgress (etcd 3.4) cannot serve it
        if exc.status == 500 and "RequestWatchProgress" in str(exc.reason):
            pytest.skip(f"the server does not serve watch-list: {exc.reason}")
        raise
    assert [t for t, _ in seen] == ["ADDED", "BOOKMARK"]
    assert seen[0][1]["name"] == "first"
    assert seen[1][1]["annotations"] == {"k8s.io/initial-events-end": "true"}
