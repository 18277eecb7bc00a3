"""The dev server lists a new CRD's kinds in discovery, and marks it Established,
``crd_discovery_delay`` seconds after serving them, as a real API server does (its
establishing and discovery controllers run after the write), so clients that race it are
caught."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from fluxd.clock import SystemClock
from fluxd.kube import KubeClient
from fluxd.kube.mapping import AGGREGATED
from tests.conftest import start_dev_cluster
from tests.support.crd import thing_crd as crd

pytestmark = pytest.mark.anyio


async def listed(kube: KubeClient, group: str) -> dict[str, list[str]]:
    """The versions of ``group`` each discovery document lists."""
    aggregated, _ = await kube.get_json("/apis", accept=AGGREGATED)
    legacy, _ = await kube.get_json("/apis", accept="application/json")
    return {
        "aggregated": [v["version"] for g in aggregated["items"]
                       if g["metadata"]["name"] == group for v in g["versions"]],
        "legacy": [v["version"] for g in legacy["groups"] if g["name"] == group
                   for v in g["versions"]],
    }


def conditions(crd: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in crd["status"]["conditions"]}


async def test_a_new_crd_is_served_at_once_and_discovered_after_the_delay(
        tmp_path: Path) -> None:
    thread, kubeconfig = start_dev_cluster(tmp_path, crd_discovery_delay=1.0)
    clock = SystemClock()
    try:
        async with await KubeClient.connect(clock=clock, kubeconfig=str(kubeconfig)) as kube:
            group = f"k{uuid.uuid4().hex[:8]}.example.com"
            created = await kube.create(crd(group, "v1"))
            started = clock.monotonic()
            assert conditions(created) == {"NamesAccepted": "True", "Established": "False"}
            assert await listed(kube, group) == {"aggregated": [], "legacy": []}
            # the endpoints answer already (a real server serves once the names are accepted)
            path = f"/apis/{group}/v1/namespaces/default/things"
            assert (await kube.request("GET", path))["items"] == []
            while not (seen := await listed(kube, group))["aggregated"]:
                assert clock.monotonic() - started < 5
                await clock.sleep(0.05)
            assert clock.monotonic() - started >= 0.8
            assert seen == {"aggregated": ["v1"], "legacy": ["v1"]}
            name = f"things.{group}"
            async with clock.timeout(5):
                while conditions(live := await kube.get(
                        "apiextensions.k8s.io/v1", "CustomResourceDefinition", name)) \
                        != {"NamesAccepted": "True", "Established": "True"}:
                    await clock.sleep(0.05)

            # an update keeps a listed version listed (and the CRD Established); a version
            # it adds waits its turn
            live["spec"]["versions"] = crd(group, "v1", "v2")["spec"]["versions"]
            assert conditions(await kube.update(live))["Established"] == "True"
            assert (await listed(kube, group))["aggregated"] == ["v1"]
            async with clock.timeout(5):
                while len((await listed(kube, group))["aggregated"]) < 2:
                    await clock.sleep(0.05)
    finally:
        thread.stop()


async def test_no_delay_lists_a_new_crd_at_once(tmp_path: Path) -> None:
    thread, kubeconfig = start_dev_cluster(tmp_path, crd_discovery_delay=0)
    try:
        async with await KubeClient.connect(clock=SystemClock(),
                                            kubeconfig=str(kubeconfig)) as kube:
            group = f"k{uuid.uuid4().hex[:8]}.example.com"
            created = await kube.create(crd(group, "v1"))
            assert conditions(created)["Established"] == "True"
            assert (await listed(kube, group))["aggregated"] == ["v1"]
    finally:
        thread.stop()
