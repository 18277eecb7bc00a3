"""fluxd.kube.KubeClient against the cluster fixture."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import base64
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from fluxd import config
from fluxd.clock import FakeClock, JumpClock, SystemClock
from fluxd.kube import (
    AlreadyExists,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeClient,
    NotFound,
    Throttle,
)
from fluxd.kube.client import (
    CONNECTION_LIMIT,
    MAX_RETRIES,
    MAX_RETRY_AFTER,
    TLS_READ_BUFFER,
    retry_after,
)
from fluxd.kube.errors import TooManyRequests
from tests.conftest import Cluster, start_dev_cluster
from tests.kube.inflight import dev_server, write_in_flight

pytestmark = pytest.mark.anyio


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    async with await KubeClient.connect(clock=SystemClock(), kubeconfig=str(cluster.kubeconfig),
                                        field_manager="fluxd-test") as client:
        yield client


def cm(name: str, namespace: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace}, "data": data}


def labelled(obj: dict[str, Any], test: str) -> dict[str, Any]:
    """``obj`` marked as a test's own: a cluster keeps ConfigMaps of its own
    (kube-root-ca.crt) in every namespace, so tests list theirs by label."""
    obj["metadata"]["labels"] = {"test": test}
    return obj


async def test_create_get_patch_delete_round_trip(kube: KubeClient, namespace: str) -> None:
    created = await kube.create(cm("a", namespace, k="1"))
    assert created["metadata"]["uid"]
    got = await kube.get("v1", "ConfigMap", "a", namespace)
    assert got["data"] == {"k": "1"}
    patched = await kube.merge_patch("v1", "ConfigMap", "a", {"data": {"k": "2"}}, namespace)
    assert patched["data"] == {"k": "2"}
    await kube.delete("v1", "ConfigMap", "a", namespace)
    with pytest.raises(NotFound, match='configmaps "a" not found'):
        await kube.get("v1", "ConfigMap", "a", namespace)


async def test_errors_are_typed_and_carry_the_server_message(kube: KubeClient,
                                                             namespace: str) -> None:
    await kube.create(cm("dup", namespace))
    with pytest.raises(AlreadyExists):
        await kube.create(cm("dup", namespace))
    bad = cm("Bad_Name", namespace)
    with pytest.raises(Invalid) as err:
        await kube.create(bad)
    assert err.value.causes[0]["field"] == "metadata.name"
    assert 'ConfigMap "Bad_Name" is invalid' in str(err.value)
    with pytest.raises(NotFound, match="no matches for kind"):
        await kube.get("example.com/v1", "Nothing", "x", namespace)


async def test_list_pages_through_everything(kube: KubeClient, namespace: str) -> None:
    for i in range(12):
        await kube.create(labelled(cm(f"p{i:02d}", namespace), "pages"))
    result = await kube.list_all("v1", "ConfigMap", namespace, label_selector="test=pages",
                                 page_size=5)
    assert [o["metadata"]["name"] for o in result.items] == [f"p{i:02d}" for i in range(12)]
    assert all(o["kind"] == "ConfigMap" and o["apiVersion"] == "v1" for o in result.items)
    assert int(result.resource_version) > 0
    by_name = await kube.list_all("v1", "ConfigMap", namespace, field_selector="metadata.name=p03")
    assert [o["metadata"]["name"] for o in by_name.items] == ["p03"]


async def test_watch_streams_changes_after_a_version(kube: KubeClient, namespace: str) -> None:
    rv = (await kube.list_all("v1", "ConfigMap", namespace,
                              label_selector="test=watch")).resource_version
    seen: list[tuple[str, str]] = []

    async def watch() -> None:
        async for event in kube.watch("v1", "ConfigMap", namespace, resource_version=rv,
                                      label_selector="test=watch",
                                      timeout_seconds=10, bookmarks=False):
            seen.append((event.type, event.object["metadata"]["name"]))
            if len(seen) == 2:
                return

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.1)
    await kube.create(labelled(cm("w", namespace), "watch"))
    await kube.delete("v1", "ConfigMap", "w", namespace)
    await asyncio.wait_for(task, 10)
    assert seen == [("ADDED", "w"), ("DELETED", "w")]


async def test_watch_from_a_compacted_version_raises_gone(tmp_path: Any) -> None:
    thread, kubeconfig = start_dev_cluster(tmp_path, history_size=3)
    try:
        async with await KubeClient.connect(clock=SystemClock(),
                                            kubeconfig=str(kubeconfig)) as kube:
            rv = (await kube.list_all("v1", "ConfigMap", "default")).resource_version
            for i in range(6):
                await kube.create(cm(f"c{i}", "default"))
            with pytest.raises(Gone):
                async for _ in kube.watch("v1", "ConfigMap", "default", resource_version=rv,
                                          timeout_seconds=5):
                    pass
    finally:
        thread.stop()


async def test_server_side_apply_dry_run_conflict_and_force(kube: KubeClient,
                                                            namespace: str) -> None:
    obj = cm("ssa", namespace, k="1")
    dry = await kube.apply(obj, dry_run=True)
    assert dry["data"] == {"k": "1"}
    with pytest.raises(NotFound):
        await kube.get("v1", "ConfigMap", "ssa", namespace)
    await kube.apply(obj)
    with pytest.raises(Conflict, match='conflict with "fluxd-test"'):
        await kube.apply(cm("ssa", namespace, k="2"), field_manager="other")
    forced = await kube.apply(cm("ssa", namespace, k="2"), field_manager="other", force=True)
    assert forced["data"] == {"k": "2"}


async def test_status_patch_touches_only_status(kube: KubeClient, namespace: str) -> None:
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "d", "namespace": namespace,
                        "annotations": {"devcluster.fluxd.io/ready-after": "1h"}},
           "spec": {"selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    await kube.create(dep)
    patched = await kube.patch_status("apps/v1", "Deployment", "d",
                                      {"status": {"replicas": 9}, "spec": {"replicas": 5}},
                                      namespace)
    assert patched["status"]["replicas"] == 9
    assert patched["spec"]["replicas"] == 1


async def test_new_crd_is_found_after_a_mapping_refresh(kube: KubeClient, namespace: str) -> None:
    group = f"k{uuid.uuid4().hex[:8]}.example.com"
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": f"things.{group}"},
           "spec": {"group": group, "scope": "Namespaced",
                    "names": {"kind": "Thing", "plural": "things"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {
                                      "type": "object",
                                      "x-kubernetes-preserve-unknown-fields": True}}}]}}
    await kube.get("v1", "Namespace", namespace)  # discovery is cached from here on
    await kube.create(crd)
    try:
        thing = {"apiVersion": f"{group}/v1", "kind": "Thing",
                 "metadata": {"name": "t", "namespace": namespace}, "spec": {"a": 1}}
        created = await kube.create(thing)
        assert created["spec"] == {"a": 1}
    finally:
        await kube.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                          f"things.{group}")


async def test_impersonated_client_is_reused_and_bound_by_rbac(kube: KubeClient,
                                                                namespace: str) -> None:
    robot = kube.impersonate(namespace, "robot")
    assert kube.impersonate(namespace, "robot") is robot
    with pytest.raises(Forbidden, match=f'User "system:serviceaccount:{namespace}:robot" '
                                        'cannot list resource "configmaps"'):
        await robot.list_all("v1", "ConfigMap", namespace)
    await kube.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                       "metadata": {"name": "robot-view", "namespace": namespace},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                   "kind": "ClusterRole", "name": "view"},
                       "subjects": [{"kind": "ServiceAccount", "name": "robot",
                                     "namespace": namespace}]})
    await kube.create(labelled(cm("shown", namespace), "robot"))
    listed = await robot.list_all("v1", "ConfigMap", namespace, label_selector="test=robot")
    assert [o["metadata"]["name"] for o in listed.items] == ["shown"]


async def test_throttle_spaces_requests_beyond_the_burst() -> None:
    clock = FakeClock()
    throttle = Throttle(qps=10, burst=2, clock=clock)
    done: list[float] = []

    async def take() -> None:
        await throttle.wait()
        done.append(clock.monotonic())

    tasks = [asyncio.create_task(take()) for _ in range(4)]
    for _ in range(10):
        await asyncio.sleep(0)
    assert done == [0.0, 0.0]
    for _ in range(30):
        clock.advance(0.01)
        for _ in range(5):
            await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert len(done) == 4 and done[2] == pytest.approx(0.1, abs=0.011)
    assert done[3] == pytest.approx(0.2, abs=0.011)


async def test_in_cluster_config_uses_the_service_account_files(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not cluster.is_dev:
        pytest.skip("needs the dev cluster's token and CA")
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    host, port = server.removeprefix("https://").rsplit(":", 1)
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(config["users"][0]["user"]["token"])
    (account / "ca.crt").write_bytes(
        base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    async with await KubeClient.connect(clock=SystemClock(),
                                        service_account_dir=str(account)) as kube:
        ns = await kube.get("v1", "Namespace", "default")
    assert ns["metadata"]["name"] == "default"


# --- the request budget: no client-side limit, the server's 429s obeyed ----------------

def test_retry_after_is_read_as_client_go_reads_it() -> None:
    assert retry_after(429, "3") == 3.0
    assert retry_after(503, "2") == 2.0
    assert retry_after(500, " 1 ") == 1.0
    assert retry_after(429, "0") == 0.0
    assert retry_after(429, "-4") == 0.0
    # a refusal without a wait, or a wait on an answer that is no refusal, is final
    assert retry_after(429, None) is None
    assert retry_after(500, "") is None
    assert retry_after(404, "1") is None
    assert retry_after(409, "1") is None
    # only whole seconds (an HTTP date is not read, as client-go does not)
    assert retry_after(429, "1.5") is None
    assert retry_after(429, "Wed, 21 Oct 2015 07:28:00 GMT") is None
    # a server may not park a worker for longer than priority and fairness ever asks
    assert retry_after(429, "3600") == MAX_RETRY_AFTER == 32.0
    assert retry_after(429, "9" * 40) is None


async def test_no_client_side_limit_by_default_and_a_cap_that_follows_reloads() -> None:
    clock = FakeClock()
    throttle = Throttle(qps=0, burst=300, clock=clock)
    assert not throttle.enabled
    for _ in range(1000):
        await throttle.wait()
    assert clock.monotonic() == 0.0
    throttle.set_rate(10, 1)
    assert throttle.enabled
    await throttle.wait()
    waiting = asyncio.create_task(throttle.wait())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    clock.advance(0.1)
    await asyncio.wait_for(waiting, 1)
    throttle.set_rate(0, 1)
    assert not throttle.enabled
    await asyncio.wait_for(throttle.wait(), 1)


async def test_the_connection_pool_is_bounded(kube: KubeClient) -> None:
    session = kube._shared.api.rest_client.pool_manager
    assert session.connector.limit == CONNECTION_LIMIT == 100


async def test_a_tls_connection_reads_into_a_buffer_of_64_kib_not_256(
        kube: KubeClient, namespace: str) -> None:
    assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER == 64 * 1024
    # answers bigger than the buffer still arrive whole
    await kube.create(cm("big-answer", namespace, blob="x" * (300 * 1024)))
    read = await kube.get("v1", "ConfigMap", "big-answer", namespace)
    assert len(read["data"]["blob"]) == 300 * 1024


async def drive(clock: JumpClock, tasks: list[asyncio.Task[Any]], *, step: float = 1.0,
                within: float = 60.0) -> None:
    """Jump the clock past each Retry-After wait until every task is done."""
    async with asyncio.timeout(within):
        while not all(t.done() for t in tasks):
            await asyncio.sleep(0.02)
            clock.advance(step)


def requests_total(registry: CollectorRegistry, code: str, method: str) -> float:
    for metric in registry.collect():
        if metric.name == "rest_client_requests":
            return sum(s.value for s in metric.samples if s.name.endswith("_total")
                       and s.labels["code"] == code and s.labels["method"] == method)
    return 0.0


async def test_writes_refused_by_the_servers_in_flight_limit_land_after_retry_after(
        tmp_path: Path, dev_only: None) -> None:
    thread, kubeconfig = start_dev_cluster(tmp_path)
    server = dev_server(thread)
    server.options.max_mutating_requests_inflight = 2
    server.options.inflight_exempt_groups = ()  # our admin token is limited too
    clock, registry = JumpClock(), CollectorRegistry()
    big = "x" * 400_000  # bodies long enough that the server reads them in many turns
    try:
        async with await KubeClient.connect(clock=clock, kubeconfig=str(kubeconfig),
                                            registry=registry) as kube:
            tasks = [asyncio.create_task(kube.create(cm(f"c{i}", "default", big=big)))
                     for i in range(12)]
            await drive(clock, tasks)
            for task in tasks:
                task.result()
            names = {o["metadata"]["name"] for o in
                     (await kube.list_all("v1", "ConfigMap", "default")).items}
    finally:
        thread.stop()
    assert {f"c{i}" for i in range(12)} <= names
    assert requests_total(registry, "201", "POST") == 12
    assert requests_total(registry, "429", "POST") > 0


async def test_the_caller_gets_the_429_once_the_retries_run_out(
        tmp_path: Path, dev_only: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fluxd.kube")
    thread, kubeconfig = start_dev_cluster(tmp_path)
    server = dev_server(thread)
    server.options.max_mutating_requests_inflight = 1
    server.options.inflight_exempt_groups = ()
    clock, registry = JumpClock(), CollectorRegistry()
    try:
        async with await KubeClient.connect(clock=clock, kubeconfig=str(kubeconfig),
                                            registry=registry) as kube, \
                write_in_flight(thread, kubeconfig, "/api/v1/namespaces/default/configmaps"):
            started = clock.monotonic()
            task = asyncio.create_task(kube.create(cm("refused", "default")))
            await drive(clock, [task], step=0.5)
            with pytest.raises(TooManyRequests, match="Too many requests, please try again"):
                task.result()
            waited = clock.monotonic() - started
            # reads have limits of their own: the full write slots do not hold them up
            await kube.get("v1", "Namespace", "default")
    finally:
        thread.stop()
    assert requests_total(registry, "429", "POST") == 1 + MAX_RETRIES == 11
    # ten waits of the server's Retry-After: 1 (the clock jumped in half seconds)
    assert 10.0 <= waited < 10.0 + 0.5 * (MAX_RETRIES + 2) + 5.0
    # told at debug level, once per burst of refusals rather than once per refusal
    told = [r for r in caplog.records if r.name == "fluxd.kube"
            and r.getMessage().startswith("the API server asked to retry later")]
    assert 1 <= len(told) <= 3 and all(r.levelno == logging.DEBUG for r in told)


async def test_the_default_configuration_sets_no_client_side_limit(
        kube: KubeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLUXD_KUBE__QPS", "FLUXD_KUBE__BURST"):
        monkeypatch.delenv(name, raising=False)
    example = Path(__file__).parents[2] / "config.example.toml"
    for settings in (config.load(None), config.load(example)):
        assert (settings.kube.qps, settings.kube.burst) == (0.0, 300)
    assert config.hot_reloadable("kube.qps") and config.hot_reloadable("kube.burst")
    assert not kube.throttle.enabled
    # what a SIGHUP with `qps = 20` does to the running client, and back
    kube.throttle.set_rate(20, 5)
    assert kube.throttle.enabled and kube.impersonate("default", "x").throttle.qps == 20
    kube.throttle.set_rate(0, 5)
    assert not kube.throttle.enabled
