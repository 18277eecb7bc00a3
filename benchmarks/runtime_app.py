"""``fluxd run`` with one no-op controller over the benchmark's custom kind.

Used by ``benchmarks/runtime.py`` to measure the runtime itself (cache, queue, manager)
before the Flux controllers exist: the reconciler reads the object from the shared cache
and asks to run again after its ``spec.interval``.
"""

from __future__ import annotations

import sys

from fluxd import cli
from fluxd.config import parse_duration
from fluxd.controllers.context import ControllerContext
from fluxd.runtime.informer import Informer
from fluxd.runtime.manager import ControllerSpec
from fluxd.runtime.reconcile import ObjectKey, Result

GROUP = "bench.fluxd.io"
API_VERSION = f"{GROUP}/v1"
KIND = "Widget"


class CachedReader:
    def __init__(self, informer: Informer) -> None:
        self.informer = informer

    async def reconcile(self, key: ObjectKey) -> Result:
        obj = self.informer.get(key.namespace, key.name)
        if obj is None:
            return Result()
        return Result(requeue_after=parse_duration(obj["spec"].get("interval", "10m")))


def controllers(context: ControllerContext) -> list[ControllerSpec]:
    reader = CachedReader(context.cache.informer(API_VERSION, KIND))
    return [ControllerSpec(API_VERSION, KIND, "kustomize", reader)]


if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], controllers=controllers))
