"""Benchmark of the development API server: server-side apply throughput and watch fan-out.

Later benchmarks run against this server, so these figures say how much of their time is
the server's own. The server runs in its own process (``fluxd dev-cluster --port 0``) and
the load comes from this one over loopback, through aiohttp with a bounded concurrency.

    .venv/bin/python -m benchmarks.devcluster [--objects 1000] [--watchers 50]

Reports, for ConfigMaps and Deployments: SSA creates/s, SSA no-op re-applies/s, SSA
updates/s; for watches: events delivered per second to N watchers of one collection;
and the server's resident memory after the run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

APPLY = {"Content-Type": "application/apply-patch+yaml"}


def configmap(i: int, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}",
            "labels": {"bench": "yes"}}, "data": {"value": value, "index": str(i)}}


def deployment(i: int, image: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"dep-{i}", "labels": {"app": f"dep-{i}"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": f"dep-{i}"}},
                     "template": {"metadata": {"labels": {"app": f"dep-{i}"}},
                                  "spec": {"containers": [{
                                      "name": "app", "image": image,
                                      "ports": [{"containerPort": 8080}],
                                      "env": [{"name": "A", "value": "1"},
                                              {"name": "B", "value": "2"}],
                                      "resources": {"requests": {"cpu": "10m"}}}]}}}}


class Server:
    """``fluxd dev-cluster`` in a process of its own. Simulated workloads turn ready after
    ``ready_delay`` seconds (an hour by default: most benchmarks want no status writes)."""

    def __init__(self, tmp: Path, *, ready_delay: float = 3600) -> None:
        self.kubeconfig = tmp / "kubeconfig"
        # FLUXD_BENCH_SERVER_PROFILE=<file>: run the server under cProfile, its stats
        # written to <file>.<name of tmp> when it stops
        profile = os.environ.get("FLUXD_BENCH_SERVER_PROFILE")
        wrap = ["-m", "cProfile", "-o", f"{profile}.{tmp.name}"] if profile else []
        self.proc = subprocess.Popen(
            [sys.executable, *wrap, "-m", "fluxd", "--log-level", "warning", "dev-cluster",
             "--port",
             "0", "--kubeconfig", str(self.kubeconfig), "--ready-delay", str(ready_delay)],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if "https://" in line:
                break
        match = re.search(r"https://\S+", line)
        if not match:
            self.stop()
            raise RuntimeError(f"dev cluster did not start: {line!r}")
        config = yaml.safe_load(self.kubeconfig.read_text())
        self.url = match.group(0)
        self.token = config["users"][0]["user"]["token"]
        self.ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        return kib / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def run_all(session: aiohttp.ClientSession, url: str, token: str, *, count: int,
                  concurrency: int, make: Callable[[int], tuple[str, str, Any]]) -> float:
    """Send ``count`` requests made by ``make(i)``; return requests per second. An empty
    ``token`` sends no Authorization header (the session's TLS context authenticates)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            method, path, body = make(i)
            async with session.request(method, url + path, data=json.dumps(body),
                                       headers={**headers, **APPLY}) as resp:
                await resp.read()
                if resp.status >= 300:
                    raise RuntimeError(f"{method} {path}: {resp.status}")

    start = time.perf_counter()
    async with asyncio.timeout(600):
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - start)


async def watch_fanout(session: aiohttp.ClientSession, url: str, token: str, *,
                       watchers: int, writes: int) -> float:
    headers = {"Authorization": f"Bearer {token}"}
    path = "/api/v1/namespaces/fanout/configmaps"
    async with session.post(url + "/api/v1/namespaces", headers=headers, json={
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fanout"}}) as resp:
        await resp.read()
    async with session.get(url + path, headers=headers) as resp:
        rv = (await resp.json())["metadata"]["resourceVersion"]
    received = [0] * watchers
    ready = asyncio.Event()
    connected = 0

    async def watch(n: int) -> None:
        nonlocal connected
        async with session.get(url + path, headers=headers, params={
                "watch": "1", "resourceVersion": rv, "timeoutSeconds": "600"}) as resp:
            connected += 1
            if connected == watchers:
                ready.set()
            async for _line in resp.content:
                received[n] += 1
                if received[n] == writes:
                    return

    tasks = [asyncio.create_task(watch(n)) for n in range(watchers)]
    async with asyncio.timeout(60):
        await ready.wait()
    start = time.perf_counter()
    await run_all(session, url, token, count=writes, concurrency=8,
                  make=lambda i: ("PATCH", f"{path}/fan-{i}?fieldManager=bench",
                                  {"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": f"fan-{i}"}, "data": {"i": str(i)}}))
    async with asyncio.timeout(600):
        await asyncio.gather(*tasks)
    return watchers * writes / (time.perf_counter() - start)


async def main_async(objects: int, watchers: int, concurrency: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fluxd-bench-") as tmp:
        server = Server(Path(tmp))
        try:
            ctx = ssl.create_default_context(cadata=server.ca.decode())
            connector = aiohttp.TCPConnector(ssl=ctx, limit=concurrency + watchers + 8)
            async with aiohttp.ClientSession(connector=connector) as session:
                url, token = server.url, server.token
                ns = "/api/v1/namespaces/default/configmaps"
                deps = "/apis/apps/v1/namespaces/default/deployments"
                results: dict[str, float] = {}

                def cm_apply(value: str) -> Callable[[int], tuple[str, str, Any]]:
                    return lambda i: ("PATCH", f"{ns}/cm-{i}?fieldManager=bench",
                                      configmap(i, value))

                def dep_apply(image: str) -> Callable[[int], tuple[str, str, Any]]:
                    return lambda i: ("PATCH", f"{deps}/dep-{i}?fieldManager=bench",
                                      deployment(i, image))

                kw = {"count": objects, "concurrency": concurrency}
                results["ssa_create_configmap_per_s"] = await run_all(
                    session, url, token, make=cm_apply("a"), **kw)
                results["ssa_noop_configmap_per_s"] = await run_all(
                    session, url, token, make=cm_apply("a"), **kw)
                results["ssa_update_configmap_per_s"] = await run_all(
                    session, url, token, make=cm_apply("b"), **kw)
                results["ssa_create_deployment_per_s"] = await run_all(
                    session, url, token, make=dep_apply("app:1"), **kw)
                results["ssa_noop_deployment_per_s"] = await run_all(
                    session, url, token, make=dep_apply("app:1"), **kw)
                results["ssa_update_deployment_per_s"] = await run_all(
                    session, url, token, make=dep_apply("app:2"), **kw)
                results["watch_events_delivered_per_s"] = await watch_fanout(
                    session, url, token, watchers=watchers, writes=objects // 2)
                results["server_rss_mib"] = server.rss_mib()
                results["objects"] = objects
                results["watchers"] = watchers
            return results
        finally:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--watchers", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    opts = parser.parse_args()
    results = asyncio.run(main_async(opts.objects, opts.watchers, opts.concurrency))
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value:,.0f}" if value >= 10 else f"{key:<{width}}  {value:.1f}")
    print(json.dumps({"cpu_count": os.cpu_count(), **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
