"""source-controller: GitRepository, HelmRepository and OCIRepository (HelmChart comes
next) producing artifacts in the store and on the artifact bus."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fluxd.api.source import API_VERSION
from fluxd.artifacts import server as artifact_server
from fluxd.artifacts.bus import ArtifactEvent
from fluxd.controllers.source import helmrepository, ocirepository
from fluxd.controllers.source.gitrepository import (
    CONTROLLER,
    KIND,
    GitRepositoryReconciler,
)
from fluxd.runtime.manager import ControllerContext, ControllerSpec
from fluxd.runtime.reconcile import ObjectKey


def include_index(obj: dict[str, object]) -> list[str]:
    """GitRepositories by the names of the GitRepositories they include."""
    spec = obj.get("spec")
    includes = spec.get("include") if isinstance(spec, dict) else None
    return [str((i.get("repository") or {}).get("name", "")) for i in includes or []
            if isinstance(i, dict)]


def controllers(context: ControllerContext) -> list[ControllerSpec]:
    """The source controllers, and the artifact server they need while leading."""
    informer = context.cache.informer(API_VERSION, KIND)
    reconciler = GitRepositoryReconciler(
        client=context.client, informer=informer, store=context.artifacts,
        bus=context.artifact_bus, recorder=context.recorder(CONTROLLER),
        clock=context.clock, settings=context.settings)

    @contextlib.asynccontextmanager
    async def serve_artifacts() -> AsyncIterator[object]:
        async with artifact_server.serve(context.settings.storage.address,
                                         context.artifacts) as server:
            yield server

    def includers(event: ArtifactEvent) -> None:
        # a GitRepository's new artifact rebuilds the ones that include it
        if event.source.kind != KIND:
            return
        for obj in informer.by_index("include", event.source.name):
            meta = obj["metadata"]
            if meta.get("namespace", "") == event.source.namespace:
                context.queue.add(ObjectKey(KIND, event.source.namespace, meta["name"]))

    helm_repositories = helmrepository.HelmRepositoryReconciler(
        client=context.client,
        informer=context.cache.informer(API_VERSION, helmrepository.KIND),
        store=context.artifacts, bus=context.artifact_bus,
        recorder=context.recorder(helmrepository.CONTROLLER), clock=context.clock,
        settings=context.settings)

    oci_repositories = ocirepository.OCIRepositoryReconciler(
        client=context.client,
        informer=context.cache.informer(API_VERSION, ocirepository.KIND),
        store=context.artifacts, bus=context.artifact_bus,
        recorder=context.recorder(CONTROLLER), clock=context.clock,
        settings=context.settings)

    context.artifact_bus.subscribe(includers)
    context.services.append(("artifact server", serve_artifacts))
    return [ControllerSpec(API_VERSION, KIND, "source", reconciler,
                           indexes={"include": include_index}),
            ControllerSpec(API_VERSION, helmrepository.KIND, "source", helm_repositories),
            ControllerSpec(API_VERSION, ocirepository.KIND, "source", oci_repositories)]
