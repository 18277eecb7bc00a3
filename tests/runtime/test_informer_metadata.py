"""Metadata-only informers: ConfigMaps and Secrets watched without caching their data."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest

from fluxd.clock import SystemClock
from fluxd.kube import KubeClient
from fluxd.runtime.informer import Informer, InformerCache
from tests.conftest import Cluster

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[KubeClient]:
    async with await KubeClient.connect(clock=SystemClock(),
                                        kubeconfig=str(cluster.kubeconfig)) as c:
        yield c


async def test_a_full_informer_of_secrets_is_refused(client: KubeClient) -> None:
    with pytest.raises(ValueError, match="never cached"):
        Informer(client, "v1", "Secret", clock=SystemClock())


async def test_a_metadata_informer_keeps_labels_but_never_data(
        client: KubeClient, namespace: str) -> None:
    cache = InformerCache(client, clock=SystemClock(), label_selector="shard=a")
    informer = cache.metadata_informer("v1", "Secret", label_selector="watch=yes")
    await client.create({"apiVersion": "v1", "kind": "Secret",
                         "metadata": {"name": "s", "namespace": namespace,
                                      "labels": {"watch": "yes"}},
                         "data": {"token": base64.b64encode(b"hunter2").decode()}})
    await client.create({"apiVersion": "v1", "kind": "Secret",
                         "metadata": {"name": "other", "namespace": namespace}})
    task = asyncio.ensure_future(informer.run())
    try:
        async with asyncio.timeout(10):
            await informer.wait_for_sync()
            while informer.get(namespace, "s") is None:  # noqa: ASYNC110 - the watch fills it
                await asyncio.sleep(0.05)
        kept = informer.get(namespace, "s")
        assert kept is not None
        assert kept["metadata"]["labels"] == {"watch": "yes"}
        assert "data" not in kept
        assert "hunter2" not in repr(kept)
        # the process's sharding selector is for fluxd's own kinds, not these
        assert informer.get(namespace, "other") is None
        assert informer in cache.informers()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
