"""Benchmark of the runtime: start-up time, idle memory, memory per cached object.

A dev cluster runs in its own process with a Flux-like custom kind (spec and status the
size of a GitRepository's); ``fluxd run`` (``benchmarks/runtime_app.py``: the real
manager with one controller that reads the object from the cache and requeues) runs in
another. Measured:

- start-up to ready: from spawning ``fluxd run`` to ``/readyz`` answering 200 while
  leading, with ``--objects`` objects to list and sync (target ≤ 5 s for 1,000);
- idle resident memory of ``fluxd run`` with those objects cached (target ≤ 128 MiB for
  1,000);
- memory per cached object: the growth of resident memory from ``--objects`` to
  ``--many`` cached objects, divided by the difference.

    .venv/bin/python -m benchmarks.runtime [--objects 1000] [--many 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.devcluster import Server, run_all
from benchmarks.runtime_app import API_VERSION, GROUP, KIND

NAMESPACE = "bench"

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {"group": GROUP, "scope": "Namespaced",
             "names": {"kind": KIND, "plural": "widgets", "singular": "widget"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {
                               "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}


def widget(i: int) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": f"w-{i:05d}", "namespace": NAMESPACE,
                         "labels": {"app.kubernetes.io/part-of": "bench", "tier": str(i % 7)},
                         "annotations": {"reconcile.fluxcd.io/requestedAt": "2026-01-01"}},
            "spec": {"interval": "10m", "timeout": "60s",
                     "url": f"https://gitea.example.com/org/repo-{i}.git",
                     "ref": {"branch": "main"}, "secretRef": {"name": "gitea-token"},
                     "ignore": "/*\n!/deploy\n", "suspend": False}}


def status(i: int) -> dict[str, Any]:
    now = "2026-01-01T00:00:00Z"
    rev = f"main@sha1:{i:040x}"
    return {"status": {
        "observedGeneration": 1, "lastHandledReconcileAt": "2026-01-01",
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Succeeded",
             "message": f"stored artifact for revision '{rev}'", "observedGeneration": 1,
             "lastTransitionTime": now},
            {"type": "ArtifactInStorage", "status": "True", "reason": "Succeeded",
             "message": f"stored artifact for revision '{rev}'", "observedGeneration": 1,
             "lastTransitionTime": now}],
        "artifact": {"path": f"gitrepository/{NAMESPACE}/w-{i:05d}/{i:040x}.tar.gz",
                     "url": f"http://fluxd.flux-system.svc/gitrepository/{NAMESPACE}/w-{i:05d}/"
                            f"{i:040x}.tar.gz",
                     "revision": rev, "digest": f"sha256:{i:064x}", "size": 123456,
                     "lastUpdateTime": now}}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", text)
    assert match is not None
    return int(match.group(1)) / 1024


def metric_sum(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


async def populate(server: Server, start: int, stop: int) -> None:
    ctx = ssl.create_default_context(cadata=server.ca.decode())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        headers = {"Authorization": f"Bearer {server.token}"}
        if start == 0:
            for path, body in (("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD),
                               ("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                       "metadata": {"name": NAMESPACE}})):
                async with session.post(server.url + path, json=body, headers=headers) as r:
                    await r.read()
        base = f"/apis/{API_VERSION}/namespaces/{NAMESPACE}/widgets"
        count = stop - start
        await run_all(session, server.url, server.token, count=count, concurrency=8,
                      make=lambda i: ("PATCH", f"{base}/w-{start + i:05d}?fieldManager=bench",
                                      widget(start + i)))
        await run_all(session, server.url, server.token, count=count, concurrency=8,
                      make=lambda i: ("PATCH",
                                      f"{base}/w-{start + i:05d}/status?fieldManager=bench",
                                      {"apiVersion": API_VERSION, "kind": KIND,
                                       "metadata": {"name": f"w-{start + i:05d}"},
                                       **status(start + i)}))


def wait_for(check: Any, what: str, within: float = 120) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within:
        try:
            if check():
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
        return resp.status == 200 and resp.read().decode() in ("leading", "running")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--many", type=int, default=10_000)
    opts = parser.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="fluxd-bench-") as tmp:
        server = Server(Path(tmp))
        fluxd: subprocess.Popen[bytes] | None = None
        try:
            asyncio.run(populate(server, 0, opts.objects))
            port = free_port()
            config = Path(tmp, "fluxd.toml")
            config.write_text(f"""
[kube]
kubeconfig = "{server.kubeconfig}"
[server]
metrics_address = "127.0.0.1:{port}"
[watch]
runtime_namespace = "{NAMESPACE}"
[log]
level = "warning"
""")
            started = time.monotonic()
            fluxd = subprocess.Popen([sys.executable, "-m", "benchmarks.runtime_app",
                                      "--config", str(config), "run"])
            wait_for(lambda: ready(port), "/readyz")
            results["startup_to_ready_s"] = time.monotonic() - started
            wait_for(lambda: metric_sum(port, "controller_runtime_reconcile_total")
                     >= opts.objects, "first reconciles")
            results["startup_to_all_reconciled_s"] = time.monotonic() - started
            time.sleep(5)
            results["idle_rss_mib"] = rss_mib(fluxd.pid)
            results["objects"] = opts.objects
            asyncio.run(populate(server, opts.objects, opts.many))
            wait_for(lambda: metric_sum(port, "controller_runtime_reconcile_total")
                     >= opts.many, "all reconciles", within=300)
            time.sleep(5)
            many_rss = rss_mib(fluxd.pid)
            results["rss_mib_with_many"] = many_rss
            results["many"] = opts.many
            results["kib_per_cached_object"] = (
                (many_rss - results["idle_rss_mib"]) * 1024 / (opts.many - opts.objects))
        finally:
            if fluxd is not None:
                fluxd.terminate()
                fluxd.wait(30)
            server.stop()
    for key, value in results.items():
        print(f"{key:<30} {value:,.2f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
