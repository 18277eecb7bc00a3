"""source-controller: GitRepository, HelmRepository, HelmChart and OCIRepository producing
artifacts in the store and on the artifact bus.

A source's new artifact on the bus enqueues the GitRepositories that include it and the
HelmCharts built from it (found by cache indexes, as Flux's ``SourceIndexKey``), at once:
no poll interval sits between a new revision and the charts that use it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fluxd.api.source import API_VERSION, GitRepositorySpec
from fluxd.artifacts import server as artifact_server
from fluxd.artifacts.bus import ArtifactEvent
from fluxd.controllers.context import Contribution, ControllerContext
from fluxd.controllers.source import helmchart, helmrepository, ocirepository
from fluxd.controllers.source.gitrepository import (
    CONTROLLER,
    KIND,
    GitRepositoryReconciler,
)
from fluxd.runtime.manager import ControllerSpec, Service
from fluxd.runtime.reconcile import ObjectKey


def include_index(obj: dict[str, object]) -> list[str]:
    """GitRepositories by the names of the GitRepositories they include."""
    spec = GitRepositorySpec.spec_of(obj)
    return [include.repository.name for include in spec.include or []] if spec else []


def controllers(context: ControllerContext) -> list[Contribution]:
    """The source controllers, and the artifact server they need while leading."""
    informer = context.cache.informer(API_VERSION, KIND)
    reconciler = GitRepositoryReconciler(
        client=context.client, informer=informer, store=context.artifacts,
        bus=context.artifact_bus, recorder=context.recorder(CONTROLLER),
        clock=context.clock, settings=context.settings)

    @contextlib.asynccontextmanager
    async def serve_artifacts() -> AsyncIterator[object]:
        storage = context.settings.storage
        async with artifact_server.serve(storage.address, context.artifacts,
                                         limits=context.settings.http,
                                         clock=context.clock) as server:
            if not storage.advertised_address:
                # the bound port: differs from the configured one only for port 0
                context.artifacts.advertised = f"localhost:{server.port}"
            yield server

    def includers(event: ArtifactEvent) -> None:
        # a GitRepository's new artifact rebuilds the ones that include it
        if event.source.kind != KIND:
            return
        for obj in informer.by_index("include", event.source.name):
            meta = obj["metadata"]
            if meta.get("namespace", "") == event.source.namespace:
                context.queue.add(ObjectKey(KIND, event.source.namespace, meta["name"]))

    repository_informer = context.cache.informer(API_VERSION, helmrepository.KIND)
    helm_repositories = helmrepository.HelmRepositoryReconciler(
        client=context.client, informer=repository_informer,
        store=context.artifacts, bus=context.artifact_bus,
        recorder=context.recorder(helmrepository.CONTROLLER), clock=context.clock,
        settings=context.settings)

    oci_repositories = ocirepository.OCIRepositoryReconciler(
        client=context.client,
        informer=context.cache.informer(API_VERSION, ocirepository.KIND),
        store=context.artifacts, bus=context.artifact_bus,
        recorder=context.recorder(CONTROLLER), clock=context.clock,
        settings=context.settings)

    chart_informer = context.cache.informer(API_VERSION, helmchart.KIND)
    helm_charts = helmchart.HelmChartReconciler(
        client=context.client, informer=chart_informer, store=context.artifacts,
        bus=context.artifact_bus, recorder=context.recorder(CONTROLLER), clock=context.clock,
        settings=context.settings,
        sources={helmrepository.KIND: repository_informer, KIND: informer})

    def charts(event: ArtifactEvent) -> None:
        # a source's new artifact rebuilds the HelmCharts made from it (Flux enqueues
        # those whose observed source revision differs)
        if event.source.kind not in (helmrepository.KIND, KIND):
            return
        for obj in chart_informer.by_index("source", f"{event.source.kind}/"
                                                     f"{event.source.name}"):
            meta = obj["metadata"]
            observed = (obj.get("status") or {}).get("observedSourceArtifactRevision")
            if meta.get("namespace", "") == event.source.namespace and \
                    observed != event.revision:
                context.queue.add(ObjectKey(helmchart.KIND, event.source.namespace,
                                            meta["name"]))

    context.artifact_bus.subscribe(includers)
    context.artifact_bus.subscribe(charts)
    return [Service("artifact server", serve_artifacts),
            ControllerSpec(API_VERSION, KIND, "source", reconciler,
                           indexes={"include": include_index}),
            ControllerSpec(API_VERSION, helmrepository.KIND, "source", helm_repositories,
                           indexes={"url": helmchart.repository_url_index}),
            ControllerSpec(API_VERSION, helmchart.KIND, "source", helm_charts,
                           indexes={"source": helmchart.source_index}),
            ControllerSpec(API_VERSION, ocirepository.KIND, "source", oci_repositories)]
