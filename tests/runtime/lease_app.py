"""``fluxd run`` with one test controller, for the process-lifecycle tests.

The controller reconciles Leases (those the shard selector lets through): it waits the
seconds given in the annotation ``test.fluxd.io/sleep``, then records the reconcile in a
ConfigMap ``done-<lease>``. The process machinery around it is the real one.
"""

from __future__ import annotations

import asyncio
import sys

from fluxd import cli
from fluxd.controllers.context import ControllerContext
from fluxd.kube import KubeClient, NotFound
from fluxd.runtime.manager import ControllerSpec
from fluxd.runtime.reconcile import ObjectKey, Result


class SlowLeaseReconciler:
    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def reconcile(self, key: ObjectKey) -> Result:
        try:
            lease = await self.client.get("coordination.k8s.io/v1", "Lease", key.name,
                                          key.namespace)
        except NotFound:
            return Result()
        seconds = float((lease["metadata"].get("annotations") or {}).get(
            "test.fluxd.io/sleep", "0"))
        await asyncio.sleep(seconds)
        await self.client.apply({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"done-{key.name}", "namespace": key.namespace},
            "data": {"holder": str(lease["spec"].get("holderIdentity", ""))}})
        return Result()


def controllers(context: ControllerContext) -> list[ControllerSpec]:
    return [ControllerSpec("coordination.k8s.io/v1", "Lease", "kustomize",
                           SlowLeaseReconciler(context.client))]


if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], controllers=controllers))
