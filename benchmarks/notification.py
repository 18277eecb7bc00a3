"""Benchmark of the notification controller.

- **matching**: events per second through the dispatcher's intake (metadata clean-up,
  duplicate check) and Alert matching, with 100 Alerts cached from the dev cluster (a
  mix of wildcard and named sources, inclusion and exclusion lists, across kinds and
  namespaces); nothing is sent, as the send loop does not run (target ≥ 2,000
  events/s).
- **webhook → applied**: a real git smart-HTTP server, a Gitea-style signed push
  webhook to a ``github`` Receiver, and the time until the Kustomization has applied the
  pushed commit, p50/p95 over 20 pushes (targets: p50 ≤ 1 s, p95 ≤ 2 s).

    .venv/bin/python -m benchmarks.notification [--events 20000] [--pushes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from benchmarks.devcluster import Server
from fluxd import app
from fluxd.clock import SystemClock
from fluxd.config import Settings
from fluxd.controllers.notification.dispatch import Dispatcher
from fluxd.kube import KubeClient, NotFound
from fluxd.runtime.events import Event, ObjectReference
from fluxd.runtime.informer import InformerCache
from tests.controllers.conftest import install_crds, running_flux
from tests.controllers.notification.test_receiver import gitea_headers, gitea_push
from tests.support.gitserver import GitServer, commit, head

GROUP = "notification.toolkit.fluxcd.io"
API = f"{GROUP}/v1beta3"
SOURCE_API = "source.toolkit.fluxcd.io/v1"
KS_API = "kustomize.toolkit.fluxcd.io/v1"
HOOK_TOKEN = "benchmark-webhook-token"
KINDS = ("Kustomization", "GitRepository", "HelmRelease", "OCIRepository")


def alert(i: int) -> dict[str, Any]:
    namespace = f"team-{i % 10}"
    sources: list[dict[str, Any]] = [{"kind": KINDS[i % 4], "name": "*"}]
    if i % 3 == 0:
        sources.append({"kind": "Kustomization", "name": f"app-{i}"})
    spec: dict[str, Any] = {"providerRef": {"name": "quiet"}, "eventSources": sources}
    if i % 5 == 0:
        spec["inclusionList"] = [r"^Applied revision", r"Health check"]
    if i % 7 == 0:
        spec["exclusionList"] = [r"timed out", r"DependencyNotReady"]
    if i % 2 == 0:
        spec["eventSeverity"] = "error"
    return {"apiVersion": API, "kind": "Alert",
            "metadata": {"name": f"alert-{i:03d}", "namespace": namespace}, "spec": spec}


def event(i: int) -> Event:
    kind = KINDS[i % 4]
    group = "kustomize.toolkit.fluxcd.io" if kind == "Kustomization" else \
        "source.toolkit.fluxcd.io"
    return Event(
        involved_object=ObjectReference(kind=kind, name=f"app-{i % 300}",
                                        namespace=f"team-{i % 10}",
                                        api_version=f"{group}/v1"),
        severity="error" if i % 4 == 0 else "info",
        timestamp=datetime.datetime.now(datetime.UTC),
        message=f"Applied revision: main@sha1:{i:040x}", reason="ReconciliationSucceeded",
        reporting_controller="kustomize-controller",
        metadata={f"{group}/revision": f"main@sha1:{i:040x}"})


async def matching(kubeconfig: Path, count: int) -> dict[str, float]:
    clock = SystemClock()
    async with await KubeClient.connect(clock=clock, kubeconfig=str(kubeconfig)) as client:
        await install_crds(client)
        for ns in {f"team-{i % 10}" for i in range(100)}:
            await client.apply({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": ns}}, force=True)
            await client.apply({"apiVersion": API, "kind": "Provider",
                                "metadata": {"name": "quiet", "namespace": ns},
                                "spec": {"type": "generic",
                                         "address": "http://127.0.0.1:9/"}}, force=True)
        for i in range(100):
            await client.apply(alert(i), force=True)
        cache = InformerCache(client, clock=clock)
        dispatcher = Dispatcher(client=client, alerts=cache.informer(API, "Alert"),
                                provider_objects=cache.informer(API, "Provider"),
                                recorder=None, clock=clock, queue_size=count + 1)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(i.run()) for i in cache.informers()]
            await asyncio.wait_for(cache.wait_for_sync(), 30)
            events = [event(i) for i in range(count)]
            matched = 0
            started = time.perf_counter()
            for ev in events:
                # the intake (duplicate check, metadata clean-up, queue), then the matching
                # the dispatcher's loop does for each queued event (the sends are not run)
                if dispatcher.submit(ev):
                    matched += len(await dispatcher.matches(ev))
            took = time.perf_counter() - started
            for task in tasks:
                task.cancel()
    return {"events": count, "alerts": 100, "events_per_s": round(count / took),
            "matches": matched}


def secret(name: str, token: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name,
                                                               "namespace": "bench"},
            "data": {"token": base64.b64encode(token.encode()).decode()}}


def configmap(value: str) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "settings", "namespace": "bench"},
                           "data": {"value": value}})


async def webhooks(kubeconfig: Path, tmp: Path, pushes: int) -> dict[str, float]:
    """Pushes through a Gitea-style webhook to the applied ConfigMap, with the real
    manager (``fluxd run``'s assembly) in this process."""
    settings = Settings.model_validate({
        "kube": {"kubeconfig": str(kubeconfig)},
        "leader_election": {"enabled": False},
        "server": {"metrics_address": "127.0.0.1:0"},
        "storage": {"path": str(tmp / "storage"), "address": "127.0.0.1:0"},
        "notification": {"events_address": "127.0.0.1:0", "receiver_address": "127.0.0.1:0"},
        "log": {"level": "warning"}})
    clock = SystemClock()
    app.tune_gc()
    with GitServer(tmp / "repos") as git:
        repo = git.make_repo("app", {"cm.yaml": configmap("v0")})
        async with await KubeClient.connect(clock=clock, kubeconfig=str(kubeconfig)) as client:
            await install_crds(client)
            await client.apply({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": "bench"}}, force=True)
            await client.apply(secret("hook", HOOK_TOKEN), force=True)
            async with running_flux(settings, client, clock, tmp / "storage",
                                    stop_within=60) as flux:
                await client.create({
                    "apiVersion": f"{GROUP}/v1", "kind": "Receiver",
                    "metadata": {"name": "push", "namespace": "bench"},
                    "spec": {"type": "github", "events": ["push"],
                             "secretRef": {"name": "hook"},
                             "resources": [{"apiVersion": SOURCE_API,
                                            "kind": "GitRepository", "name": "repo"}]}})
                await client.create({
                    "apiVersion": SOURCE_API, "kind": "GitRepository",
                    "metadata": {"name": "repo", "namespace": "bench"},
                    "spec": {"interval": "1h", "url": git.repo_url("app"),
                             "ref": {"branch": "main"}}})
                await client.create({
                    "apiVersion": KS_API, "kind": "Kustomization",
                    "metadata": {"name": "app", "namespace": "bench"},
                    "spec": {"interval": "1h", "prune": True,
                             "sourceRef": {"kind": "GitRepository", "name": "repo"}}})
                path = ""
                async with asyncio.timeout(60):
                    while not path or "webhook receiver" not in flux.listeners:
                        found = await client.get(f"{GROUP}/v1", "Receiver", "push", "bench")
                        path = (found.get("status") or {}).get("webhookPath") or ""
                        await asyncio.sleep(0.1)
                    while (await value(client)) != "v0":  # noqa: ASYNC110 - polling
                        await asyncio.sleep(0.1)
                url = flux.listeners["webhook receiver"] + path
                times: list[float] = []
                async with aiohttp.ClientSession() as session:
                    before = head(repo)
                    for n in range(1, pushes + 1):
                        after = commit(repo, {"cm.yaml": configmap(f"v{n}")}, f"push {n}")
                        body = gitea_push(before, after)
                        started = time.perf_counter()
                        async with session.post(url, data=body,
                                                headers=gitea_headers(body, HOOK_TOKEN)) as r:
                            assert r.status == 200, r.status
                        async with asyncio.timeout(30):
                            while (await value(client)) != f"v{n}":  # noqa: ASYNC110
                                await asyncio.sleep(0.01)
                        times.append(time.perf_counter() - started)
                        before = after
    times.sort()
    return {"pushes": pushes, "p50_s": round(statistics.median(times), 3),
            "p95_s": round(times[max(0, int(len(times) * 0.95) - 1)], 3),
            "max_s": round(times[-1], 3)}


async def value(client: KubeClient) -> str | None:
    try:
        cm = await client.get("v1", "ConfigMap", "settings", "bench")
    except NotFound:
        return None
    return str((cm.get("data") or {}).get("value"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--pushes", type=int, default=20)
    opts = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fluxd-bench-notify-") as tmp:
        server = Server(Path(tmp))
        try:
            results["matching"] = asyncio.run(matching(server.kubeconfig, opts.events))
            print(json.dumps(results["matching"]), flush=True)
            results["webhook_to_applied"] = asyncio.run(
                webhooks(server.kubeconfig, Path(tmp), opts.pushes))
        finally:
            server.stop()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
