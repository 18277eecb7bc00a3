"""One run of ``fluxd demo``: set the stage, run fluxd, tell the story.

The stage: a development cluster with fluxd's CRDs, a fresh working copy of
``examples/gitops`` served over smart HTTP, and fluxd's controllers in this process (as
``fluxd dev`` runs them), and the repository's ``charts/`` packaged with helm and served as
a Helm chart repository. The story, told by ``Demo`` with its own Kubernetes client as a
user and a webhook receiver would act: bootstrap (a GitRepository, a root Kustomization and
the cluster's settings: the chart repository's URL), progress until every Kustomization
is applied and every HelmRelease Ready, ``kubectl get`` of what landed, then each new
commit on ``main`` is announced to fluxd (``reconcile.fluxcd.io/requestedAt``) and
followed until it is applied; a Helm release it upgrades is shown with ``helm history``.
``--once`` makes one commit itself (new values for a HelmRelease) and exits when it is
applied. SIGINT/SIGTERM end the story; fluxd, the chart and Git servers and the cluster
then stop in that order.
"""

from __future__ import annotations

import asyncio
import enum
import shutil
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from fluxd import app
from fluxd.api import helm, kustomize, source
from fluxd.clock import Clock, SystemClock, rfc3339_micro
from fluxd.config import Settings
from fluxd.controllers.source.chartbuild import HelmCLI
from fluxd.demo import charts, command, gitserver, progress, repository
from fluxd.demo.repository import DemoError, WorkingRepo
from fluxd.devcluster.runner import DevCluster
from fluxd.kube import KubeClient
from fluxd.metrics import Metrics
from fluxd.runtime.conditions import RECONCILE_REQUEST_ANNOTATION
from fluxd.runtime.manager import Manager

NAMESPACE = "flux-system"
#: the GitRepository and the root Kustomization, named as ``flux bootstrap`` names them
NAME = "flux-system"
ROOT = f"{NAMESPACE}/{NAME}"
#: the ConfigMap of the cluster's settings the apps Kustomization substitutes from
SETTINGS = "cluster-settings"
#: the variable holding the chart repository's URL (free port, known at start only)
CHART_REPOSITORY_VARIABLE = "chart_repository_url"
#: how often the demo looks at the branch for a new commit
BRANCH_POLL = 0.5
#: how often it looks at the cluster while a commit is being applied: often enough that
#: the time it reports is not rounded up to a coarse tick (two list calls per look)
CLUSTER_POLL = 0.1
#: how long the first commit may take to be applied everywhere
READY_TIMEOUT = 120.0
#: how long a later commit may take
COMMIT_TIMEOUT = 30.0
#: how long the demo follows the branch before it stops on its own
LIFETIME = 24 * 3600.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: what ``kubectl get`` shows once everything is applied
SHOW = (("get", "kustomizations,gitrepositories", "-A"),
        ("get", "helmreleases,helmrepositories", "-A"),
        ("get", "namespaces,deployments,services,configmaps", "-n",
         repository.APP_NAMESPACE))
#: how many revisions ``helm history`` shows
HISTORY_MAX = 5


class Outcome(enum.Enum):
    APPLIED = "applied"
    TIMED_OUT = "timed out"
    #: the branch moved on before the commit was applied
    SUPERSEDED = "superseded"


def bootstrap_objects(url: str, charts_url: str) -> list[dict[str, Any]]:
    """What ``flux bootstrap`` would leave (the namespace, the repository, the root), with
    the cluster's settings the repository's Kustomizations substitute from."""
    meta = {"name": NAME, "namespace": NAMESPACE}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": SETTINGS, "namespace": NAMESPACE},
         "data": {CHART_REPOSITORY_VARIABLE: charts_url}},
        {"apiVersion": source.API_VERSION, "kind": "GitRepository", "metadata": meta,
         "spec": {"url": url, "ref": {"branch": repository.BRANCH}, "interval": "1m"}},
        {"apiVersion": kustomize.API_VERSION, "kind": "Kustomization", "metadata": meta,
         "spec": {"path": repository.CLUSTER_PATH, "prune": True, "interval": "10m",
                  "sourceRef": {"kind": "GitRepository", "name": NAME}}},
    ]


def metrics_url(host: str, port: int) -> str:
    """Where to scrape a listener bound to ``host``: loopback for an any-address bind."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/metrics"


def fluxd_settings(settings: Settings, *, kubeconfig: Path, storage: Path) -> Settings:
    """``settings`` for the controllers the demo runs: the dev cluster, no leader election,
    artifacts in the demo's directory, every listener on a free loopback port."""
    return settings.model_copy(update={
        "kube": settings.kube.model_copy(update={"kubeconfig": str(kubeconfig),
                                                 "context": None}),
        "leader_election": settings.leader_election.model_copy(update={"enabled": False}),
        "storage": settings.storage.model_copy(update={
            "path": storage, "address": "127.0.0.1:0", "advertised_address": ""}),
        "notification": settings.notification.model_copy(update={
            "events_address": "127.0.0.1:0", "receiver_address": "127.0.0.1:0"}),
    })


def say(line: str) -> None:
    print(line, flush=True)


@dataclass
class Demo:
    """The story, told against a running fluxd."""

    #: the demo's own client (field manager ``fluxd-demo``), not fluxd's
    client: KubeClient
    clock: Clock
    repo: WorkingRepo
    #: where the Git server serves ``repo``
    url: str
    #: where the chart repository is served
    charts_url: str
    kubectl: str
    helm: str
    kubeconfig: Path
    #: fluxd's manager, for the address of /metrics
    manager: Manager
    #: when fluxd started (monotonic): progress lines count from here
    started: float
    reporter: progress.Reporter = field(default_factory=progress.Reporter)
    #: the release revision last said of each HelmRelease
    releases: dict[str, int] = field(default_factory=dict)

    async def head(self) -> str:
        return await asyncio.to_thread(self.repo.head)

    async def bootstrap(self) -> None:
        for obj in bootstrap_objects(self.url, self.charts_url):
            await self.client.apply(obj, force=True)

    async def request_reconcile(self) -> None:
        """What a push webhook's Receiver does: annotate the GitRepository."""
        patch = {"metadata": {"annotations": {
            RECONCILE_REQUEST_ANNOTATION: rfc3339_micro(self.clock.now())}}}
        await self.client.merge_patch(source.API_VERSION, "GitRepository", NAME, patch,
                                      NAMESPACE)

    async def snapshot(self) -> list[dict[str, Any]]:
        """The sources (GitRepositories, HelmRepositories), then what applies them
        (Kustomizations, HelmReleases)."""
        found: list[dict[str, Any]] = []
        for api_version, kind in ((source.API_VERSION, "GitRepository"),
                                  (source.API_VERSION, "HelmRepository"),
                                  (kustomize.API_VERSION, progress.KUSTOMIZATION),
                                  (helm.API_VERSION, progress.HELMRELEASE)):
            found += (await self.client.list_all(api_version, kind)).items
        return found

    async def wait_applied(self, revision: str, *, within: float,
                           sha: str | None = None) -> Outcome:
        """Report progress until ``revision`` is applied everywhere, for at most ``within``
        seconds; with ``sha``, stop early when the branch no longer points at it."""
        deadline = self.clock.monotonic() + within
        waiting: list[tuple[str, str]] = []
        objects: list[dict[str, Any]] = []
        for _ in range(int(within / CLUSTER_POLL) + 2):
            objects = await self.snapshot()
            for line in self.reporter.lines(objects,
                                            elapsed=self.clock.monotonic() - self.started):
                say(line)
            waiting = [(progress.KUSTOMIZATION, name) for name in progress.not_applied(
                [o for o in objects if o.get("kind") == progress.KUSTOMIZATION],
                root=ROOT, revision=revision)]
            waiting += [(progress.HELMRELEASE, name)
                        for name in progress.releases_not_ready(objects)]
            if not waiting:
                return Outcome.APPLIED
            if sha is not None and await self.head() != sha:
                return Outcome.SUPERSEDED
            if self.clock.monotonic() >= deadline:
                break
            await self.clock.sleep(CLUSTER_POLL)
        by_name = {(str(o.get("kind")), progress.name_of(o)): o for o in objects}
        say(f"{revision} not applied within {within:.0f}s:")
        for kind, name in waiting:
            obj = by_name.get((kind, name))
            say(f"  {kind} {name}: "
                f"{progress.describe(obj) if obj is not None else 'not created'}")
        return Outcome.TIMED_OUT

    async def report_releases(self) -> int:
        """Say each Helm release revision made since the last report; show ``helm
        history`` of a release upgraded since then. The first failing command's status."""
        listed = await self.client.list_all(helm.API_VERSION, progress.HELMRELEASE)
        for obj in listed.items:
            name = progress.name_of(obj)
            latest = progress.latest_release(obj)
            if latest is None or self.releases.get(name) == latest.get("version"):
                continue
            earlier = name in self.releases
            self.releases[name] = int(latest.get("version") or 0)
            say(f"HelmRelease {name}: {progress.describe_release(latest)}")
            if earlier:
                storage = (obj.get("status") or {}).get("storageNamespace") or \
                    latest.get("namespace")
                code = await command.run(self.helm, self.kubeconfig, "history",
                                         str(latest.get("name")), "-n", str(storage),
                                         "--max", str(HISTORY_MAX), clock=self.clock)
                if code != 0:
                    return code
        return 0

    async def show(self) -> int:
        for args in SHOW:
            code = await command.run(self.kubectl, self.kubeconfig, *args,
                                     clock=self.clock)
            if code != 0:
                return code
        return 0

    def explain(self, *, once: bool) -> None:
        server = self.manager.server
        metrics = metrics_url(server.host, server.port) if server else "(not listening)"
        say(f"""
fluxd is reconciling the dev cluster from {self.url}
(a working copy of examples/gitops, recreated at every start). Look around:

    export KUBECONFIG={self.kubeconfig}
    {self.kubectl} get kustomizations,helmreleases -A
    {self.helm} history {repository.APP_RELEASE} -n {repository.APP_NAMESPACE}
    curl -s {metrics} | grep gotk_reconcile

Commit a change and it is applied within seconds:

    cd {self.repo.path}
    $EDITOR {repository.SCRIPTED_FILE}
    git commit -am "a change"
""")
        if not once:
            say("Watching the main branch. Press Ctrl-C to stop.")

    async def follow(self, sha: str, *, once: bool) -> int:
        """Apply each new commit on the branch: announce it as a webhook would, then report
        until it is applied. With ``once``, return after the first commit."""
        for _ in range(int(LIFETIME / BRANCH_POLL)):
            head = await self.head()
            if head == sha:
                await self.clock.sleep(BRANCH_POLL)
                continue
            sha = head
            seen = self.clock.monotonic()
            await self.request_reconcile()
            say(f"new commit {sha[:7]}: reconciling")
            revision = repository.revision(sha)
            outcome = await self.wait_applied(revision, within=COMMIT_TIMEOUT, sha=sha)
            if outcome is Outcome.APPLIED:
                say(f"applied {revision} in {self.clock.monotonic() - seen:.2f}s")
                if await self.report_releases() != 0 and once:
                    return 1
            elif outcome is Outcome.SUPERSEDED:
                say(f"commit {sha[:7]} superseded by a newer one")
            if once:
                return 0 if outcome is Outcome.APPLIED else 1
        say(f"the demo stops after {LIFETIME / 3600:.0f} hours")
        return 0

    async def tell(self, *, once: bool) -> int:
        sha = await self.head()
        await self.bootstrap()
        say(f"created GitRepository {ROOT} ({self.url}, branch {repository.BRANCH}) and "
            f"Kustomization {ROOT} ({repository.CLUSTER_PATH}), as flux bootstrap would, "
            f"and ConfigMap {NAMESPACE}/{SETTINGS} ({CHART_REPOSITORY_VARIABLE})")
        first = repository.revision(sha)
        if await self.wait_applied(first, within=READY_TIMEOUT) is not Outcome.APPLIED:
            return 1
        say(f"every Kustomization is Ready at {first} and every HelmRelease is Ready "
            f"({self.clock.monotonic() - self.started:.1f}s)")
        code = await self.report_releases() or await self.show()
        if code != 0:
            return code
        self.explain(once=once)
        if once:
            new = await asyncio.to_thread(self.repo.commit_scripted_change)
            say(f"--once: committed {new[:7]} ({repository.SCRIPTED_KEY}: "
                f"\"{repository.SCRIPTED_VALUE}\" in {repository.SCRIPTED_FILE}, the "
                f"HelmRelease's values)")
        return await self.follow(sha, once=once)


async def run_with_fluxd(settings: Settings, story: Callable[[Demo], Coroutine[Any, Any, int]],
                         *, clock: Clock, repo: WorkingRepo, url: str, charts_url: str,
                         kubectl_binary: str, helm_binary: str) -> int:
    """Run fluxd's controllers and the story side by side until the story ends or a signal
    comes; then stop fluxd. The story's exit status, else fluxd's."""
    registry = CollectorRegistry()
    kubeconfig = Path(str(settings.kube.kubeconfig))
    async with await KubeClient.connect(clock=clock, kubeconfig=str(kubeconfig)) as client, \
            await KubeClient.connect(clock=clock, kubeconfig=str(kubeconfig),
                                     field_manager="fluxd-demo") as user:
        assembly = app.assemble(settings, client=client, clock=clock, registry=registry,
                                metrics=Metrics(registry), controllers=app.flux_controllers)
        manager = assembly.manager
        demo = Demo(client=user, clock=clock, repo=repo, url=url, charts_url=charts_url,
                    kubectl=kubectl_binary, helm=helm_binary, kubeconfig=kubeconfig,
                    manager=manager, started=clock.monotonic())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def interrupt(telling: asyncio.Task[int]) -> None:
            say("\nstopping fluxd, the Git server and the cluster")
            telling.cancel()

        try:
            async with asyncio.TaskGroup() as tasks:
                fluxd = tasks.create_task(manager.run(stop), name="fluxd")
                telling = tasks.create_task(story(demo), name="demo story")
                telling.add_done_callback(lambda _: stop.set())
                fluxd.add_done_callback(lambda _: telling.cancel())
                for sig in SIGNALS:
                    loop.add_signal_handler(sig, interrupt, telling)
        finally:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)
            assembly.context.events.close()
        return fluxd.result() if telling.cancelled() else telling.result()


async def run_demo(settings: Settings, *, once: bool) -> int:
    """``fluxd demo``; its exit status."""
    try:
        return await _run_demo(settings, once=once)
    except DemoError as exc:
        print(f"fluxd demo: {exc}", file=sys.stderr)
        return 1


async def _run_demo(settings: Settings, *, once: bool) -> int:
    example = repository.example_dir()
    kubectl_binary = command.find_tool("kubectl", settings.tools.kubectl)
    helm_binary = command.find_tool("helm", settings.tools.helm)
    git = shutil.which("git")
    if git is None:
        raise DemoError("git not found: the demo needs the git CLI (apt-get install git)")
    cfg = settings.devcluster
    state = cfg.kubeconfig.resolve().parent / "demo"
    await asyncio.to_thread(repository.prepare_state, state)
    async with DevCluster.run(host=cfg.host, port=cfg.port, ready_delay=cfg.ready_delay,
                              history_size=cfg.watch_history) as dev:
        kubeconfig = dev.write_kubeconfig(cfg.kubeconfig).resolve()
        app.install_crds(dev)
        say(f"fluxd development API server (in memory, not for production) at {dev.url}")
        repo = await asyncio.to_thread(repository.create, example, state / "repo",
                                       git_binary=git)
        clock = SystemClock()
        published = await publish_charts(repo, state / "charts", helm=HelmCLI(
            helm_binary, clock, timeout=settings.helm.package_timeout))
        async with gitserver.serve(repo.path) as url, \
                charts.serve(state / "charts", clock=clock) as charts_url:
            say(f"example repository {example} committed to {repo.path}, "
                f"served by dulwich at {url}")
            say(f"its {charts.CHARTS_DIR}/ ({', '.join(published) or 'no charts'}) packaged "
                f"with helm and served as a Helm repository at {charts_url}")
            flux = fluxd_settings(settings, kubeconfig=kubeconfig, storage=state / "storage")
            return await run_with_fluxd(
                flux, lambda demo: demo.tell(once=once), clock=clock, repo=repo, url=url,
                charts_url=charts_url, kubectl_binary=kubectl_binary,
                helm_binary=helm_binary)


async def publish_charts(repo: WorkingRepo, dest: Path, *, helm: HelmCLI) -> list[str]:
    """The working copy's charts published into ``dest``, as ``<name> <version>``."""
    try:
        published = await charts.publish(repo.path, dest, helm=helm)
    except OSError as exc:
        raise DemoError(f"publishing the charts of {repo.path} failed: {exc}") from None
    return [f"{p.name} {p.version}" for p in published]
