"""Flux's kustomize-controller: Kustomizations built, substituted, applied, pruned and
health-checked.

What enqueues a Kustomization, besides its own spec changes and reconcile requests:

* a new artifact of its source on the artifact bus (cache index on ``sourceRef``), at
  once — unless it is Ready at that revision already;
* a Kustomization it depends on becoming Ready, or applying a new revision while Ready
  (cache index on ``dependsOn``), at once — Flux polls every 30 s here; the 30 s requeue
  stays only as a fallback;
* a change to a ConfigMap or Secret it takes substitution variables from, when that
  object matches ``[watch] configs_label_selector`` (``reconcile.fluxcd.io/watch=Enabled``;
  watched metadata-only: their data is never cached).
"""

from __future__ import annotations

import functools
from typing import Any

from fluxd.api import source as source_api
from fluxd.api.kustomize import API_VERSION, KustomizationSpec
from fluxd.artifacts.bus import ArtifactEvent
from fluxd.controllers.context import Contribution, ControllerContext
from fluxd.controllers.kustomize.kustomization import (
    KIND,
    KustomizationReconciler,
    dependency_index,
    source_index,
)
from fluxd.runtime import conditions as cond
from fluxd.runtime.handler import DependentsHandler, ReferrersHandler
from fluxd.runtime.manager import ControllerSpec
from fluxd.runtime.reconcile import ObjectKey

Obj = dict[str, Any]

#: the source kinds fluxd serves that a Kustomization can take artifacts from
SOURCE_KINDS = ("GitRepository", "OCIRepository")


def _config_key(kind: str, obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{kind}/{meta.get('namespace', '')}/{meta.get('name', '')}"


def substitute_from_index(obj: Obj) -> list[str]:
    """Kustomizations by ``<Kind>/<namespace>/<name>`` of their substituteFrom objects."""
    spec = KustomizationSpec.spec_of(obj)
    if spec is None or spec.post_build is None:
        return []
    ns = obj["metadata"].get("namespace", "")
    return [f"{r.kind}/{ns}/{r.name}" for r in spec.post_build.substitute_from or []]


def controllers(context: ControllerContext) -> list[Contribution]:
    informer = context.cache.informer(API_VERSION, KIND)
    sources = {kind: context.cache.informer(source_api.API_VERSION, kind)
               for kind in SOURCE_KINDS}
    reconciler = KustomizationReconciler(
        client=context.client, informer=informer, sources=sources, store=context.artifacts,
        bus=context.artifact_bus, recorder=context.recorder("kustomize-controller"),
        clock=context.clock, settings=context.settings, queue=context.queue,
        kubectl=context.settings.tools.kubectl)

    def new_artifact(event: ArtifactEvent) -> None:
        if event.source.kind not in SOURCE_KINDS:
            return
        key = f"{event.source.kind}/{event.source.namespace}/{event.source.name}"
        for obj in informer.by_index("source", key):
            status = obj.get("status") or {}
            # skip only those already Ready at this revision (a rebuilt artifact of the
            # same revision still unblocks one that failed to read the old file)
            if status.get("lastAppliedRevision") != event.revision or \
                    not cond.is_true(status.get("conditions"), cond.READY):
                meta = obj["metadata"]
                context.queue.add(ObjectKey(KIND, meta["namespace"], meta["name"]))

    context.artifact_bus.subscribe(new_artifact)
    informer.add_handler(DependentsHandler(context.queue, KIND, informer,
                                           revision_field="lastAppliedRevision"))
    for kind in ("ConfigMap", "Secret"):
        context.cache.metadata_informer(
            "v1", kind, label_selector=context.settings.watch.configs_label_selector,
        ).add_handler(ReferrersHandler(context.queue, KIND, informer, "substituteFrom",
                                       functools.partial(_config_key, kind)))
    return [ControllerSpec(API_VERSION, KIND, "kustomize", reconciler,
                           indexes={"source": source_index, "dependsOn": dependency_index,
                                    "substituteFrom": substitute_from_index})]
