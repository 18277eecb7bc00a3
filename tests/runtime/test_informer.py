"""Informers against the dev cluster: list+watch, indexes, relist on 410, re-watch after a
server restart, and a store that always ends equal to the server's objects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fluxd.clock import SystemClock
from fluxd.devcluster.cluster import WriteOptions
from fluxd.kube import KubeClient
from fluxd.runtime.informer import Informer, InformerCache
from tests.conftest import ServerThread, start_dev_cluster

pytestmark = pytest.mark.anyio

Obj = dict[str, Any]


class Recorder:
    """A handler that mirrors what it is told, and counts it."""

    def __init__(self) -> None:
        self.view: dict[str, Obj] = {}
        self.events: list[tuple[str, str]] = []

    def on_add(self, obj: Obj, *, initial: bool) -> None:
        self.view[obj["metadata"]["name"]] = obj
        self.events.append(("initial" if initial else "add", obj["metadata"]["name"]))

    def on_update(self, old: Obj, new: Obj) -> None:
        self.view[new["metadata"]["name"]] = new
        self.events.append(("update", new["metadata"]["name"]))

    def on_delete(self, obj: Obj) -> None:
        self.view.pop(obj["metadata"]["name"], None)
        self.events.append(("delete", obj["metadata"]["name"]))


def lease(name: str, holder: str = "a", **labels: str) -> Obj:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"holderIdentity": holder}}


@pytest.fixture
async def dev(tmp_path: Path) -> AsyncIterator[tuple[ServerThread, KubeClient]]:
    thread, kubeconfig = start_dev_cluster(tmp_path, history_size=8)
    try:
        async with await KubeClient.connect(clock=SystemClock(),
                                            kubeconfig=str(kubeconfig)) as kube:
            yield thread, kube
    finally:
        thread.stop()


async def until(check: Callable[[], bool], within: float = 10) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - the state changes in handler callbacks
            await asyncio.sleep(0.02)


async def server_names(kube: KubeClient) -> dict[str, str]:
    result = await kube.list_all("coordination.k8s.io/v1", "Lease", "default")
    return {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in result.items}


def view_names(rec: Recorder) -> dict[str, str]:
    return {n: o["metadata"]["resourceVersion"] for n, o in rec.view.items()}


async def test_list_then_watch_feeds_handlers(dev: tuple[ServerThread, KubeClient]) -> None:
    _, kube = dev
    await kube.create(lease("before"))
    informer = Informer(kube, "coordination.k8s.io/v1", "Lease", clock=SystemClock())
    rec = Recorder()
    informer.add_handler(rec)
    informer.add_index("holder", lambda o: [o["spec"].get("holderIdentity", "")])
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(informer.run())
        await asyncio.wait_for(informer.wait_for_sync(), 10)
        assert rec.events == [("initial", "before")]
        await kube.create(lease("after", holder="b"))
        await kube.merge_patch("coordination.k8s.io/v1", "Lease", "before",
                               {"spec": {"holderIdentity": "b"}}, "default")
        await kube.delete("coordination.k8s.io/v1", "Lease", "after", "default")
        await until(lambda: len(rec.events) == 4)
        assert rec.events[1:] == [("add", "after"), ("update", "before"), ("delete", "after")]
        assert [o["metadata"]["name"] for o in informer.by_index("holder", "b")] == ["before"]
        assert informer.by_index("holder", "a") == []
        assert "managedFields" not in informer.get("default", "before")["metadata"]
        task.cancel()


async def test_informers_do_not_need_watch_list(tmp_path: Path) -> None:
    """A server whose storage lacks RequestWatchProgress (etcd 3.4) refuses
    ``sendInitialEvents``; informers list then watch, so they work there."""
    thread, kubeconfig = start_dev_cluster(tmp_path, watch_list=False)
    try:
        async with await KubeClient.connect(clock=SystemClock(),
                                            kubeconfig=str(kubeconfig)) as kube:
            # the refusal, as the real server streams it: one ERROR event, then the end
            refused = await kube.request("GET", "/apis/coordination.k8s.io/v1/leases", query=[
                ("watch", "1"), ("sendInitialEvents", "true"),
                ("allowWatchBookmarks", "true"), ("resourceVersionMatch", "NotOlderThan")])
            assert refused["type"] == "ERROR"
            assert refused["object"]["code"] == 500
            assert "RequestWatchProgress is disabled" in refused["object"]["message"]
            await kube.create(lease("before", app="x"))
            informer = Informer(kube, "coordination.k8s.io/v1", "Lease", clock=SystemClock())
            cache = InformerCache(kube, clock=SystemClock())
            meta = cache.metadata_informer("coordination.k8s.io/v1", "Lease",
                                           label_selector="app=x")
            rec, meta_rec = Recorder(), Recorder()
            informer.add_handler(rec)
            meta.add_handler(meta_rec)
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(informer.run()), tg.create_task(meta.run())]
                await asyncio.wait_for(informer.wait_for_sync(), 10)
                await asyncio.wait_for(meta.wait_for_sync(), 10)
                await kube.create(lease("after", app="x"))
                await until(lambda: "after" in rec.view and "after" in meta_rec.view)
                assert rec.events == [("initial", "before"), ("add", "after")]
                assert meta_rec.events == [("initial", "before"), ("add", "after")]
                assert (informer.lists, meta.lists) == (1, 1)
                for task in tasks:
                    task.cancel()
    finally:
        thread.stop()


async def test_gone_forces_a_relist_with_no_missed_or_repeated_state(
        dev: tuple[ServerThread, KubeClient]) -> None:
    thread, kube = dev
    for i in range(3):
        await kube.create(lease(f"keep-{i}"))
    informer = Informer(kube, "coordination.k8s.io/v1", "Lease", clock=SystemClock(),
                        backoff_initial=0.05)
    rec = Recorder()
    informer.add_handler(rec)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(informer.run())
        await asyncio.wait_for(informer.wait_for_sync(), 10)
        rec.events.clear()

        async def churn() -> None:
            # in one loop turn: cut every watch, then write more than the history keeps
            dc = thread.dev
            assert dc is not None
            dc.cluster.store.stop_all_watches()
            rt = dc.cluster.registry.lookup("coordination.k8s.io", "v1", "leases")
            for i in range(12):
                dc.cluster.create(rt, "default", lease(f"new-{i}"), opts=WriteOptions())
            dc.cluster.delete(rt, "default", "keep-0")

        thread.call_async(churn)
        await until(lambda: informer.lists == 2)
        expected = await server_names(kube)
        await until(lambda: view_names(rec) == expected)
        assert {n for _, n in rec.events} == {f"new-{i}" for i in range(12)} | {"keep-0"}
        assert ("update", "keep-1") not in rec.events  # unchanged objects stay quiet
        task.cancel()


async def test_rewatch_after_server_restart_without_relist(
        dev: tuple[ServerThread, KubeClient]) -> None:
    thread, kube = dev
    await kube.create(lease("one"))
    informer = Informer(kube, "coordination.k8s.io/v1", "Lease", clock=SystemClock(),
                        backoff_initial=0.05, backoff_max=0.2)
    rec = Recorder()
    informer.add_handler(rec)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(informer.run())
        await asyncio.wait_for(informer.wait_for_sync(), 10)
        dc = thread.dev
        assert dc is not None
        thread.call_async(dc.stop_serving)

        async def write_while_down() -> None:
            rt = dc.cluster.registry.lookup("coordination.k8s.io", "v1", "leases")
            dc.cluster.create(rt, "default", lease("two"), opts=WriteOptions())

        thread.call_async(write_while_down)
        await asyncio.sleep(0.5)  # the informer retries against a closed port meanwhile
        thread.call_async(dc.start_serving)
        await until(lambda: "two" in rec.view)
        assert informer.lists == 1
        assert view_names(rec) == await server_names(kube)
        task.cancel()


async def test_label_selector_shards_the_cache(dev: tuple[ServerThread, KubeClient]) -> None:
    _, kube = dev
    await kube.create(lease("mine", **{"sharding.fluxcd.io/key": "shard1"}))
    await kube.create(lease("theirs", **{"sharding.fluxcd.io/key": "shard2"}))
    cache = InformerCache(kube, clock=SystemClock(), label_selector="sharding.fluxcd.io/key=shard1")
    informer = cache.informer("coordination.k8s.io/v1", "Lease")
    assert cache.informer("coordination.k8s.io/v1", "Lease") is informer
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(informer.run())
        await asyncio.wait_for(cache.wait_for_sync(), 10)
        assert [o["metadata"]["name"] for o in informer.objects()] == ["mine"]
        assert cache.has_synced and cache.object_count() == 1
        task.cancel()


async def test_resync_replays_the_store_as_updates(dev: tuple[ServerThread, KubeClient]) -> None:
    _, kube = dev
    await kube.create(lease("r"))
    informer = Informer(kube, "coordination.k8s.io/v1", "Lease", clock=SystemClock(),
                        resync_period=0.5)
    rec = Recorder()
    informer.add_handler(rec)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(informer.run())
        await until(lambda: ("update", "r") in rec.events, within=10)
        task.cancel()


def test_secrets_and_configmaps_are_never_cached() -> None:
    for kind in ("Secret", "ConfigMap"):
        with pytest.raises(ValueError, match="never cached"):
            Informer(None, "v1", kind, clock=SystemClock())  # type: ignore[arg-type]

