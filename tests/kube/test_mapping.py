"""The REST mapper and a CRD that reaches discovery late: a dev cluster that lists a new
CRD's kinds only after ``crd_discovery_delay``, as a real API server does a moment after
the CRD is created. A kind of a CRD the client wrote is waited for; others are not."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from fluxd.clock import SystemClock
from fluxd.kube import KubeClient, NotFound
from fluxd.kube.mapping import RESTMapper
from tests.conftest import start_dev_cluster
from tests.support.crd import thing_crd as crd

pytestmark = pytest.mark.anyio


def thing(group: str, version: str = "v1") -> dict[str, Any]:
    return {"apiVersion": f"{group}/{version}", "kind": "Thing",
            "metadata": {"name": "t", "namespace": "default"}, "spec": {"a": 1}}


async def test_a_new_kind_is_waited_for_until_discovery_lists_it(tmp_path: Path) -> None:
    thread, kubeconfig = start_dev_cluster(tmp_path, crd_discovery_delay=1.0)
    clock = SystemClock()
    try:
        async with await KubeClient.connect(clock=clock, kubeconfig=str(kubeconfig)) as kube:
            group = f"k{uuid.uuid4().hex[:8]}.example.com"
            await kube.get("v1", "Namespace", "default")  # discovery is cached from here on
            await kube.create(crd(group, "v1"))
            started = clock.monotonic()
            created = await kube.create(thing(group))
            assert created["spec"] == {"a": 1}
            assert clock.monotonic() - started >= 0.9  # it waited for discovery
    finally:
        thread.stop()


async def test_an_unexpected_kind_fails_after_one_refresh_then_at_once(
        tmp_path: Path) -> None:
    thread, kubeconfig = start_dev_cluster(tmp_path)
    clock = SystemClock()
    try:
        async with await KubeClient.connect(clock=clock, kubeconfig=str(kubeconfig)) as kube:
            for _ in range(2):
                started = clock.monotonic()
                with pytest.raises(NotFound, match='no matches for kind "Thing"'):
                    await kube.mapping("nowhere.example.com/v1", "Thing")
                assert clock.monotonic() - started < 0.5  # no wait for a kind nobody wrote
    finally:
        thread.stop()


async def test_the_wait_for_a_written_crd_is_bounded(tmp_path: Path) -> None:
    thread, kubeconfig = start_dev_cluster(tmp_path, crd_discovery_delay=30)
    clock = SystemClock()
    try:
        async with await KubeClient.connect(clock=clock, kubeconfig=str(kubeconfig)) as kube:
            group = f"k{uuid.uuid4().hex[:8]}.example.com"
            mapper = RESTMapper(kube, clock, discovery_wait=0.5)
            mapper.expect_crd(await kube.create(crd(group, "v1")))
            started = clock.monotonic()
            with pytest.raises(NotFound, match='no matches for kind "Thing"'):
                await mapper.mapping(f"{group}/v1", "Thing")
            assert 0.5 <= clock.monotonic() - started < 3
            started = clock.monotonic()
            with pytest.raises(NotFound):  # waited once: now remembered as missing
                await mapper.mapping(f"{group}/v1", "Thing")
            assert clock.monotonic() - started < 0.2
    finally:
        thread.stop()


async def test_a_kind_missed_before_its_crd_is_written_is_waited_for_after(
        tmp_path: Path) -> None:
    """As kustomize's staged apply meets it: custom resources are looked up before their
    CRD is applied (and missed), then again once it is."""
    thread, kubeconfig = start_dev_cluster(tmp_path, crd_discovery_delay=0.5)
    clock = SystemClock()
    try:
        async with await KubeClient.connect(clock=clock, kubeconfig=str(kubeconfig)) as kube:
            group = f"k{uuid.uuid4().hex[:8]}.example.com"
            with pytest.raises(NotFound):
                await kube.mapping(f"{group}/v1", "Thing")
            await kube.apply(crd(group, "v1"))
            await kube.refresh_mapping()
            found = await kube.mapping(f"{group}/v1", "Thing")
            assert (found.resource, found.namespaced) == ("things", True)
            with pytest.raises(NotFound):  # only the versions it serves are expected
                await kube.mapping(f"{group}/v2", "Thing")
    finally:
        thread.stop()
