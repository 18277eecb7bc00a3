"""What a controller package is built from, and what it hands back.

``ControllerContext`` is the process's shared parts as the composition root (``app.py``)
gives them to each controller package: the Kubernetes client, informer cache and work
queue of the runtime, and the Flux domain's artifact store and bus. A package's
``controllers(context)`` returns what it contributes — ``ControllerSpec``s (reconcilers
with their informers' indexes) and ``Service``s (listeners and background work run while
leading) — and the composition root hands each to the manager. Nothing is registered by
mutating the context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from fluxd.artifacts.bus import ArtifactBus
from fluxd.artifacts.storage import ArtifactStore
from fluxd.clock import Clock
from fluxd.config import Settings
from fluxd.kube import KubeClient
from fluxd.runtime.events import EventBus, EventRecorder
from fluxd.runtime.informer import InformerCache
from fluxd.runtime.manager import ControllerSpec, Service
from fluxd.runtime.workqueue import WorkQueue

#: what a controller package contributes
Contribution = ControllerSpec | Service


@dataclass(frozen=True)
class ControllerContext:
    """The process's shared parts, for building controllers."""

    client: KubeClient
    cache: InformerCache
    queue: WorkQueue
    settings: Settings
    clock: Clock
    events: EventBus
    instance: str
    #: the artifact store and bus the source controllers produce into and the
    #: kustomize/helm controllers consume from
    artifacts: ArtifactStore
    artifact_bus: ArtifactBus
    #: the process's metrics registry, for controllers with metrics of their own
    registry: CollectorRegistry | None = None

    def recorder(self, controller: str) -> EventRecorder:
        """Kubernetes Events and bus events on behalf of ``controller``
        (e.g. "kustomize-controller")."""
        return EventRecorder(self.client, self.events, controller=controller,
                             instance=self.instance, clock=self.clock)


def specs(contributions: Sequence[Contribution]) -> list[ControllerSpec]:
    """The controller specs among ``contributions``."""
    return [c for c in contributions if isinstance(c, ControllerSpec)]


__all__ = ["Contribution", "ControllerContext", "specs"]
