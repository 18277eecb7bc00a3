"""One run of ``fluxd demo``: set the stage, run fluxd, tell the story.

The stage: a development cluster with fluxd's CRDs, a fresh working copy of
``examples/gitops`` served over smart HTTP, and fluxd's controllers in this process (as
``fluxd dev`` runs them). The story, told by ``Demo`` with its own Kubernetes client as a
user and a webhook receiver would act: bootstrap (a GitRepository and a root Kustomization),
progress until every Kustomization is applied, ``kubectl get`` of what landed, then each
new commit on ``main`` is announced to fluxd (``reconcile.fluxcd.io/requestedAt``) and
followed until it is applied. ``--once`` makes one commit itself and exits when it is
applied. SIGINT/SIGTERM end the story; fluxd, the Git server and the cluster then stop in
that order.
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
from fluxd.api import kustomize, source
from fluxd.clock import Clock, SystemClock, rfc3339_micro
from fluxd.config import Settings
from fluxd.demo import gitserver, kubectl, progress, repository
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
        ("get", "namespaces,deployments,services,configmaps", "-n",
         repository.APP_NAMESPACE))


class Outcome(enum.Enum):
    APPLIED = "applied"
    TIMED_OUT = "timed out"
    #: the branch moved on before the commit was applied
    SUPERSEDED = "superseded"


def bootstrap_objects(url: str) -> list[dict[str, Any]]:
    """What ``flux bootstrap`` would leave: the namespace, the repository, the root."""
    meta = {"name": NAME, "namespace": NAMESPACE}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
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
    kubectl: str
    kubeconfig: Path
    #: fluxd's manager, for the address of /metrics
    manager: Manager
    #: when fluxd started (monotonic): progress lines count from here
    started: float
    reporter: progress.Reporter = field(default_factory=progress.Reporter)

    async def head(self) -> str:
        return await asyncio.to_thread(self.repo.head)

    async def bootstrap(self) -> None:
        for obj in bootstrap_objects(self.url):
            await self.client.apply(obj, force=True)

    async def request_reconcile(self) -> None:
        """What a push webhook's Receiver does: annotate the GitRepository."""
        patch = {"metadata": {"annotations": {
            RECONCILE_REQUEST_ANNOTATION: rfc3339_micro(self.clock.now())}}}
        await self.client.merge_patch(source.API_VERSION, "GitRepository", NAME, patch,
                                      NAMESPACE)

    async def snapshot(self) -> list[dict[str, Any]]:
        """The GitRepositories, then the Kustomizations."""
        sources = await self.client.list_all(source.API_VERSION, "GitRepository")
        kustomizations = await self.client.list_all(kustomize.API_VERSION, "Kustomization")
        return [*sources.items, *kustomizations.items]

    async def wait_applied(self, revision: str, *, within: float,
                           sha: str | None = None) -> Outcome:
        """Report progress until ``revision`` is applied everywhere, for at most ``within``
        seconds; with ``sha``, stop early when the branch no longer points at it."""
        deadline = self.clock.monotonic() + within
        waiting: list[str] = []
        objects: list[dict[str, Any]] = []
        for _ in range(int(within / CLUSTER_POLL) + 2):
            objects = await self.snapshot()
            for line in self.reporter.lines(objects,
                                            elapsed=self.clock.monotonic() - self.started):
                say(line)
            waiting = progress.not_applied(
                [o for o in objects if o.get("kind") == progress.KUSTOMIZATION],
                root=ROOT, revision=revision)
            if not waiting:
                return Outcome.APPLIED
            if sha is not None and await self.head() != sha:
                return Outcome.SUPERSEDED
            if self.clock.monotonic() >= deadline:
                break
            await self.clock.sleep(CLUSTER_POLL)
        by_name = {progress.name_of(o): o for o in objects if o.get("kind") ==
                   progress.KUSTOMIZATION}
        say(f"{revision} not applied within {within:.0f}s:")
        for name in waiting:
            obj = by_name.get(name)
            say(f"  Kustomization {name}: "
                f"{progress.describe(obj) if obj is not None else 'not created'}")
        return Outcome.TIMED_OUT

    async def show(self) -> int:
        for args in SHOW:
            code = await kubectl.run(self.kubectl, self.kubeconfig, *args,
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
    {self.kubectl} get kustomizations -A
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
            f"Kustomization {ROOT} ({repository.CLUSTER_PATH}), as flux bootstrap would")
        first = repository.revision(sha)
        if await self.wait_applied(first, within=READY_TIMEOUT) is not Outcome.APPLIED:
            return 1
        say(f"every Kustomization is Ready at {first} "
            f"({self.clock.monotonic() - self.started:.1f}s)")
        code = await self.show()
        if code != 0:
            return code
        self.explain(once=once)
        if once:
            new = await asyncio.to_thread(self.repo.commit_scripted_change)
            say(f"--once: committed {new[:7]} ({repository.SCRIPTED_KEY}: "
                f"\"{repository.SCRIPTED_VALUE}\" in {repository.SCRIPTED_FILE})")
        return await self.follow(sha, once=once)


async def run_with_fluxd(settings: Settings, story: Callable[[Demo], Coroutine[Any, Any, int]],
                         *, repo: WorkingRepo, url: str, kubectl_binary: str) -> int:
    """Run fluxd's controllers and the story side by side until the story ends or a signal
    comes; then stop fluxd. The story's exit status, else fluxd's."""
    clock = SystemClock()
    registry = CollectorRegistry()
    kubeconfig = Path(str(settings.kube.kubeconfig))
    async with await KubeClient.connect(clock=clock, kubeconfig=str(kubeconfig)) as client, \
            await KubeClient.connect(clock=clock, kubeconfig=str(kubeconfig),
                                     field_manager="fluxd-demo") as user:
        assembly = app.assemble(settings, client=client, clock=clock, registry=registry,
                                metrics=Metrics(registry), controllers=app.flux_controllers)
        manager = assembly.manager
        demo = Demo(client=user, clock=clock, repo=repo, url=url, kubectl=kubectl_binary,
                    kubeconfig=kubeconfig, manager=manager, started=clock.monotonic())
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
    kubectl_binary = kubectl.find_tool("kubectl", settings.tools.kubectl)
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
        async with gitserver.serve(repo.path) as url:
            say(f"example repository {example} committed to {repo.path}, "
                f"served by dulwich at {url}")
            flux = fluxd_settings(settings, kubeconfig=kubeconfig, storage=state / "storage")
            return await run_with_fluxd(
                flux, lambda demo: demo.tell(once=once), repo=repo, url=url,
                kubectl_binary=kubectl_binary)
