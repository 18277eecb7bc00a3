"""The helm controller assembled from the shared parts (see the package docstring)."""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fluxd.api import source as source_api
from fluxd.api.helm import API_VERSION
from fluxd.artifacts.bus import ArtifactEvent
from fluxd.controllers.context import Contribution, ControllerContext
from fluxd.controllers.helm import postrender
from fluxd.controllers.helm.action import Helm
from fluxd.controllers.helm.helmrelease import CHART_KINDS, KIND, HelmReleaseReconciler
from fluxd.controllers.helm.target import dependency_index, source_index, values_index
from fluxd.kube.proxy import ApiProxy
from fluxd.runtime import conditions as cond
from fluxd.runtime.handler import DependentsHandler, ReferrersHandler
from fluxd.runtime.manager import ControllerSpec, Service
from fluxd.runtime.reconcile import ObjectKey
from fluxd.tools import find_tool

Obj = dict[str, Any]


def _config_key(kind: str, obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{kind}/{meta.get('namespace', '')}/{meta.get('name', '')}"


def controllers(context: ControllerContext) -> list[Contribution]:
    informer = context.cache.informer(API_VERSION, KIND)
    sources = {kind: context.cache.informer(source_api.API_VERSION, kind)
               for kind in CHART_KINDS}
    home = Path(tempfile.gettempdir()) / f"fluxd-helm-{uuid.uuid4().hex}"
    proxy = ApiProxy(context.client, clock=context.clock)
    binary = find_tool("helm", context.settings.tools.helm) or "helm"
    helm = Helm(binary=binary, clock=context.clock, home=home / "home", secrets=proxy.tokens)
    reconciler = HelmReleaseReconciler(
        client=context.client, informer=informer, sources=sources, store=context.artifacts,
        bus=context.artifact_bus, recorder=context.recorder("helm-controller"),
        clock=context.clock, settings=context.settings, helm=helm, proxy=proxy,
        work_dir=home / "work", post_render_socket=home / "post-render.sock")

    def new_artifact(event: ArtifactEvent) -> None:
        if event.source.kind not in CHART_KINDS:
            return
        key = f"{event.source.kind}/{event.source.namespace}/{event.source.name}"
        for obj in informer.by_index("source", key):
            status = obj.get("status") or {}
            if cond.is_true(status.get("conditions"), cond.READY) and \
                    _has_revision(event, status):
                continue
            meta = obj["metadata"]
            context.queue.add(ObjectKey(KIND, meta["namespace"], meta["name"]))

    @contextlib.asynccontextmanager
    async def run_proxy() -> AsyncIterator[object]:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        (home / "work").mkdir(mode=0o700, exist_ok=True)
        try:
            async with proxy, postrender.serve(home / "post-render.sock", root=home / "work",
                                               clock=context.clock):
                yield proxy
        finally:
            shutil.rmtree(home, ignore_errors=True)

    context.artifact_bus.subscribe(new_artifact)
    informer.add_handler(DependentsHandler(context.queue, KIND, informer,
                                           revision_field="lastAttemptedRevision"))
    for kind in ("ConfigMap", "Secret"):
        context.cache.metadata_informer(
            "v1", kind, label_selector=context.settings.watch.configs_label_selector,
        ).add_handler(ReferrersHandler(context.queue, KIND, informer, "valuesFrom",
                                       functools.partial(_config_key, kind)))
    return [Service("helm API proxy and post-renderer", run_proxy),
            ControllerSpec(API_VERSION, KIND, "helm", reconciler,
                           indexes={"source": source_index, "dependsOn": dependency_index,
                                    "valuesFrom": values_index})]


def _has_revision(event: ArtifactEvent, status: Obj) -> bool:
    """The HelmRelease attempted this artifact already (Flux's predicates: the chart
    version of a HelmChart, the digest of an OCIRepository)."""
    if event.source.kind == "OCIRepository":
        return bool(status.get("lastAttemptedRevisionDigest")) and \
            event.revision.endswith(str(status["lastAttemptedRevisionDigest"]))
    return event.revision == status.get("lastAttemptedRevision")


__all__ = ["controllers"]
