"""The root-CA publisher: every namespace holds ``kube-root-ca.crt`` with the cluster's CA.

kube-controller-manager keeps it on a real cluster; the dev server's lifecycle does the
same, so these run against both (the CA is compared with the kubeconfig's where the
dev server issued both).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable

import pytest
import yaml

from fluxd.clock import SystemClock
from fluxd.kube import KubeClient
from fluxd.kube.client import Obj
from tests.conftest import Cluster

pytestmark = pytest.mark.anyio

NAME = "kube-root-ca.crt"
DESCRIPTION = "kubernetes.io/description"


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    async with await KubeClient.connect(clock=SystemClock(),
                                        kubeconfig=str(cluster.kubeconfig)) as client:
        yield client


async def published(kube: KubeClient, namespace: str,
                    ready: Callable[[Obj], bool] = lambda _: True) -> Obj:
    """The namespace's ``kube-root-ca.crt`` once ``ready`` holds for it; a list, then a
    watch from that list's version bounded by the server's timeout."""
    selector = f"metadata.name={NAME}"
    listed = await kube.list_all("v1", "ConfigMap", namespace, field_selector=selector)
    for obj in listed.items:
        if ready(obj):
            return obj
    async for event in kube.watch("v1", "ConfigMap", namespace, field_selector=selector,
                                  resource_version=listed.resource_version,
                                  timeout_seconds=15, bookmarks=False):
        if event.type in ("ADDED", "MODIFIED") and ready(event.object):
            return event.object
    raise AssertionError(f"{NAME} in {namespace} not as expected within 15 s")


def kubeconfig_ca(cluster: Cluster) -> str:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    data = config["clusters"][0]["cluster"]["certificate-authority-data"]
    return base64.b64decode(data).decode()


async def test_a_new_namespace_gets_the_cluster_ca(cluster: Cluster, kube: KubeClient,
                                                   namespace: str) -> None:
    cm = await published(kube, namespace)
    assert set(cm["data"]) == {"ca.crt"}
    assert "-----BEGIN CERTIFICATE-----" in cm["data"]["ca.crt"]
    assert "kube-apiserver" in cm["metadata"]["annotations"][DESCRIPTION]
    if cluster.is_dev:
        assert cm["data"]["ca.crt"] == kubeconfig_ca(cluster)


async def test_the_published_ca_comes_back_after_deletion_and_change(
        kube: KubeClient, namespace: str) -> None:
    first = await published(kube, namespace)
    ca = first["data"]["ca.crt"]
    await kube.delete("v1", "ConfigMap", NAME, namespace)
    again = await published(kube, namespace,
                            lambda o: o["metadata"]["uid"] != first["metadata"]["uid"])
    assert again["data"] == {"ca.crt": ca}

    await kube.merge_patch("v1", "ConfigMap", NAME,
                           {"data": {"ca.crt": "tampered"}, "metadata": {"annotations": None}},
                           namespace)
    restored = await published(kube, namespace, lambda o: o["data"] == {"ca.crt": ca})
    assert restored["metadata"]["annotations"][DESCRIPTION]
    assert restored["metadata"]["uid"] == again["metadata"]["uid"]  # updated, not recreated
