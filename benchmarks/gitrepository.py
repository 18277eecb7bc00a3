"""Benchmark of GitRepository: fetch + artifact, no-op re-check, 100 repositories at once.

A real git smart-HTTP server (``git http-backend``, tests/support/gitserver.py) serves the
repositories over loopback; the dev cluster runs in its own process; fluxd's manager runs
in this one with a loop-lag monitor (a 10 ms ticker recording how late it wakes).

(a) fetch + artifact of a 5,000-file repository with fluxd (ls-remote, shallow fetch,
    checkout, ignore rules, reproducible tar.gz) against ``git clone --depth 1`` +
    ``tar czf`` of the same repository, as a ratio measured in one run (target ≤ 1.5),
    with the git CLI both in the temporary directory and on a RAM disk;
(b) a no-op re-check of an unchanged repository: one reconcile that finds the remote ref
    unchanged and the artifact present (target ≤ 50 ms);
(c) 100 GitRepositories created at once and reconciled with the default concurrency
    (source 2) and with 8: wall time, peak RSS, and the largest event-loop stall while
    they run (target < 100 ms).

    .venv/bin/python -m benchmarks.gitrepository [--files 5000] [--repos 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.devcluster import Server
from fluxd import app
from fluxd.artifacts.storage import ArtifactStore
from fluxd.clock import SystemClock
from fluxd.config import Settings
from fluxd.controllers.source.git import Ref, Remote
from fluxd.kube import KubeClient
from fluxd.runtime.reconcile import ObjectKey
from tests.controllers.conftest import install_crds, running_flux
from tests.support.gitserver import GitServer, git

API = "source.toolkit.fluxcd.io/v1"
RAM_DISK = Path("/dev/shm")


def fetch_and_archive(url: str, work: Path) -> float:
    """What the reconciler does for a new revision: ls-remote, shallow fetch, and the
    tarball built from the Git objects."""
    store = ArtifactStore(work / "store", clock=SystemClock(), advertised="localhost")
    start = time.perf_counter()
    with Remote(url) as remote:
        head = remote.resolve(Ref(branch="main"))
        remote.archive(head, work / "git", store=store, kind="gitrepository",
                       namespace="bench", name="big", spec_ignore=None)
    return time.perf_counter() - start


def git_cli(url: str, work: Path) -> float:
    start = time.perf_counter()
    git("clone", "--quiet", "--depth", "1", "--branch", "main", url, str(work / "clone"),
        timeout=300)
    subprocess.run(["tar", "czf", str(work / "clone.tar.gz"), "-C", str(work / "clone"),
                    "--exclude=.git", "."], check=True, timeout=300)
    return time.perf_counter() - start


class LagMonitor:
    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, loop.time() - before - 0.01)

    def __enter__(self) -> LagMonitor:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def with_manager(kubeconfig: Path, storage: Path, concurrency: int,
                       body: Any) -> Any:
    settings = Settings.model_validate({
        "kube": {"kubeconfig": str(kubeconfig)},
        "leader_election": {"enabled": False},
        "server": {"metrics_address": "127.0.0.1:0"},
        "storage": {"path": str(storage), "address": "127.0.0.1:0"},
        "notification": {"events_address": "127.0.0.1:0", "receiver_address": "127.0.0.1:0"},
        "concurrency": {"source": concurrency},
        "log": {"level": "warning"},
    })
    clock = SystemClock()
    app.tune_gc()  # as `fluxd run` does
    async with await KubeClient.connect(clock=clock, kubeconfig=str(kubeconfig)) as client:
        await install_crds(client)
        async with running_flux(settings, client, clock, storage, stop_within=60) as flux:
            return await body(client, flux.manager)


def ready(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


async def many(server: GitServer, kubeconfig: Path, storage: Path, repos: int,
               concurrency: int, namespace: str) -> dict[str, float]:
    async def body(client: KubeClient, manager: Any) -> dict[str, float]:
        await client.create({"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": namespace}})
        with LagMonitor() as lag:
            start = time.perf_counter()
            for i in range(repos):
                await client.create({"apiVersion": API, "kind": "GitRepository",
                                     "metadata": {"name": f"r{i}", "namespace": namespace},
                                     "spec": {"interval": "1h", "url": server.repo_url(f"r{i}"),
                                              "ref": {"branch": "main"}}})
            # count from fluxd's own cache: listing through the API in this loop would
            # put the harness's JSON parsing into the lag being measured
            informer = manager.cache.informer(API, "GitRepository")
            async with asyncio.timeout(600):
                while sum(ready(o) for o in informer.objects(namespace)) < repos:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            elapsed = time.perf_counter() - start
        return {"seconds": elapsed, "max_loop_lag_ms": lag.worst * 1000}

    result: dict[str, float] = await with_manager(kubeconfig, storage, concurrency, body)
    return result


async def noop(server: GitServer, kubeconfig: Path, storage: Path) -> float:
    async def body(client: KubeClient, manager: Any) -> float:
        await client.create({"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": "noop"}})
        await client.create({"apiVersion": API, "kind": "GitRepository",
                             "metadata": {"name": "big", "namespace": "noop"},
                             "spec": {"interval": "1h", "url": server.repo_url("big"),
                                      "ref": {"branch": "main"}}})
        async with asyncio.timeout(300):
            while not ready(await client.get(API, "GitRepository", "big", "noop")):  # noqa: ASYNC110 - polls the API
                await asyncio.sleep(0.1)
        await asyncio.sleep(1)  # let the cache see the final status
        reconciler = manager.controllers[0]._reconciler  # the benchmark times the reconciler itself
        times = []
        for _ in range(20):
            start = time.perf_counter()
            await reconciler.reconcile(ObjectKey("GitRepository", "noop", "big"))
            times.append(time.perf_counter() - start)
        times.sort()
        return times[len(times) // 2]

    result: float = await with_manager(kubeconfig, storage, 2, body)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--repos", type=int, default=100)
    opts = parser.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fluxd-bench-") as tmp_text:
        tmp = Path(tmp_text)
        with GitServer(tmp / "repos") as server:
            server.make_large_repo("big", files=opts.files)
            for i in range(opts.repos):
                server.make_repo(f"r{i}", {"deploy/app.yaml": f"kind: ConfigMap\nindex: {i}\n",
                                           "README.md": "small repo\n"})
            url = server.repo_url("big")
            ours = min(fetch_and_archive(url, Path(tempfile.mkdtemp(dir=tmp)))
                       for _ in range(3))
            theirs = min(git_cli(url, Path(tempfile.mkdtemp(dir=tmp))) for _ in range(3))
            results.update(fetch_archive_s=ours, git_clone_tar_s=theirs,
                           ratio_to_git_cli=ours / theirs)
            # the git CLI writes every file and reads it back, so its time follows the
            # disk; on a RAM disk (when there is one) it is at its fastest
            if RAM_DISK.is_dir():
                with tempfile.TemporaryDirectory(dir=RAM_DISK, prefix="fluxd-bench-") as ram:
                    fast = min(git_cli(url, Path(tempfile.mkdtemp(dir=ram)))
                               for _ in range(3))
                results.update(git_clone_tar_ram_disk_s=fast,
                               ratio_to_git_cli_ram_disk=ours / fast)
            # a fresh dev cluster for each part: a new manager reconciles every
            # GitRepository it finds, including those an earlier part left behind
            cluster = Server(tmp / "cluster-noop")
            try:
                results["noop_recheck_ms"] = asyncio.run(
                    noop(server, cluster.kubeconfig, tmp / "storage-noop")) * 1000
            finally:
                cluster.stop()
            for concurrency in (2, 8):
                cluster = Server(tmp / f"cluster-{concurrency}")
                try:
                    out = asyncio.run(many(server, cluster.kubeconfig,
                                           tmp / f"storage-{concurrency}", opts.repos,
                                           concurrency, f"many-{concurrency}"))
                finally:
                    cluster.stop()
                results[f"repos_{opts.repos}_concurrency_{concurrency}_s"] = out["seconds"]
                results[f"max_loop_lag_ms_concurrency_{concurrency}"] = out["max_loop_lag_ms"]
        shutil.rmtree(tmp, ignore_errors=True)
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for key, value in results.items():
        print(f"{key:<36} {value:,.3f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
