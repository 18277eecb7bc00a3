"""Benchmark of the Kustomization controller against a raw server-side apply loop.

The dev cluster runs in its own process, ``fluxd run`` in another (so its memory and CPU
are its own), and a real git smart-HTTP server (``git http-backend``) serves one
repository on loopback. For each N (default 100, 500, 1000):

- **raw loop**: this process server-side applies the same 4·N objects (a ConfigMap, a
  Secret, a ServiceAccount and a Service per app, in a namespace of their own) straight
  to the API server with 16 requests in flight (fluxd's defaults: 4 Kustomizations at a
  time, 4 applies each), no controller involved; and again with every object dry-run
  first (the least a controller that checks a whole set before writing must send);
- **fluxd**: N Kustomizations (``wait: true``, ``prune: true``), one per app directory of
  one GitRepository, created at once; the time from creating them to the last one Ready
  at the source's revision, fluxd's CPU seconds and its peak resident memory (VmHWM).

Then, with one Kustomization on a small repository, 20 commits each followed by a
webhook-style reconcile request (the ``reconcile.fluxcd.io/requestedAt`` annotation on the
GitRepository, as a Receiver sets it): the time from the request to the changed object
in the cluster, p50 and p95.

fluxd runs with its defaults except the client throttle (``[kube] qps``/``burst``, Flux's
50/300), raised so that the API server, not a client-side limit, is what both sides wait
on. Readiness is followed with one watch, not by listing.

    .venv/bin/python -m benchmarks.kustomization [--sizes 100,500,1000] [--commits 20]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from benchmarks.devcluster import Server, run_all
from tests.support.gitserver import GitServer, commit

KS_API = "kustomize.toolkit.fluxcd.io/v1"
SOURCE_API = "source.toolkit.fluxcd.io/v1"
NAMESPACE = "bench"
CRDS = [doc for path in sorted(Path(__file__).parents[1].joinpath("deploy", "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text()) if doc]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_objects(i: int, namespace: str, value: str = "1") -> list[dict[str, Any]]:
    name = f"app-{i:04d}"
    meta = {"name": name, "namespace": namespace, "labels": {"app": name}}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
         "data": {"value": value, "greeting": "hello", "replicas": "2"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque",
         "stringData": {"token": f"not-a-secret-{i}"}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"selector": {"app": name},
                  "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
    ]


def app_files(count: int, namespace: str) -> dict[str, str]:
    files: dict[str, str] = {}
    for i in range(count):
        for obj in app_objects(i, namespace):
            files[f"apps/app-{i:04d}/{obj['kind'].lower()}.yaml"] = yaml.safe_dump(obj)
    return files


def kustomization(i: int, source: str, path: str) -> dict[str, Any]:
    return {"apiVersion": KS_API, "kind": "Kustomization",
            "metadata": {"name": f"app-{i:04d}", "namespace": NAMESPACE},
            "spec": {"interval": "1h", "prune": True, "wait": True, "timeout": "5m",
                     "path": path, "sourceRef": {"kind": "GitRepository", "name": source}}}


def gitrepo(name: str, url: str) -> dict[str, Any]:
    return {"apiVersion": SOURCE_API, "kind": "GitRepository",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"interval": "1h", "url": url, "ref": {"branch": "main"}}}


class Cluster:
    """An aiohttp session on the dev cluster."""

    def __init__(self, server: Server, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        self.headers = {"Authorization": f"Bearer {server.token}"}

    async def send(self, method: str, path: str, body: Any = None, *,
                   content_type: str = "application/json") -> Any:
        async with self.session.request(
                method, self.server.url + path, data=None if body is None else json.dumps(body),
                headers={**self.headers, "Content-Type": content_type}) as resp:
            data = await resp.read()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
            return json.loads(data) if data else None

    async def apply(self, path: str, obj: dict[str, Any]) -> Any:
        return await self.send("PATCH", f"{path}?fieldManager=bench&force=true", obj,
                               content_type="application/apply-patch+yaml")

    async def namespace(self, name: str) -> None:
        await self.apply(f"/api/v1/namespaces/{name}",
                         {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def object_path(obj: dict[str, Any]) -> str:
    plural = {"ConfigMap": "configmaps", "Secret": "secrets",
              "ServiceAccount": "serviceaccounts", "Service": "services"}[obj["kind"]]
    meta = obj["metadata"]
    return f"/api/v1/namespaces/{meta['namespace']}/{plural}/{meta['name']}"


async def raw_loop(cluster: Cluster, count: int, namespace: str, *,
                   dry_run_first: bool = False) -> float:
    """Server-side apply every object; with ``dry_run_first``, each app's objects are
    dry-run before they are applied (the least a controller that checks a whole set
    before writing any of it must send)."""
    await cluster.namespace(namespace)
    objects = [o for i in range(count) for o in app_objects(i, namespace)]
    started = time.perf_counter()
    if dry_run_first:
        await run_all(cluster.session, cluster.server.url, cluster.server.token,
                      count=len(objects), concurrency=16,
                      make=lambda i: ("PATCH", object_path(objects[i])
                                      + "?fieldManager=bench&dryRun=All", objects[i]))
    await run_all(cluster.session, cluster.server.url, cluster.server.token,
                  count=len(objects), concurrency=16,
                  make=lambda i: ("PATCH", object_path(objects[i]) + "?fieldManager=bench",
                                  objects[i]))
    return time.perf_counter() - started


FLOOR_GROUP = "bench.fluxd.io"


def floor_crd() -> dict[str, Any]:
    """The Kustomization CRD under another group: the same schema to validate and default,
    but no controller watches it."""
    crd = copy.deepcopy(next(d for d in CRDS if d["spec"]["names"]["kind"] == "Kustomization"))
    crd["metadata"] = {"name": f"kustomizations.{FLOOR_GROUP}"}
    crd["spec"]["group"] = FLOOR_GROUP
    return crd


async def floor_loop(cluster: Cluster, count: int, sample: dict[str, Any],
                     events: list[dict[str, Any]]) -> float:
    """Send, per app, the requests fluxd's reconcile of a new Kustomization sends, with no
    controller: create the Kustomization, add the finalizer, dry-run the 4 objects, apply
    them, write the status fluxd wrote, create the Events fluxd created. ``sample`` and
    ``events`` are fluxd's own for app-0000; 16 apps at a time, each app's objects in
    parallel. This is the least time any implementation of Flux's reconcile could take
    against this server, and what fluxd is compared with in ``ratio_to_floor``."""
    namespace = f"floor-{count}"
    await cluster.namespace(namespace)
    api = f"/apis/{FLOOR_GROUP}/v1/namespaces/{NAMESPACE}/kustomizations"
    status_text = json.dumps({"status": sample["status"]}).replace(
        f"apps-{count}", namespace)
    semaphore = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        name = f"app-{i:04d}"
        spec = kustomization(i, "floor", f"./apps/{name}")
        spec["apiVersion"] = f"{FLOOR_GROUP}/v1"
        async with semaphore:
            created = await cluster.apply(f"{api}/{name}", spec)
            await cluster.send("PATCH", f"{api}/{name}",
                               {"metadata": {"finalizers": sample["metadata"]["finalizers"]}},
                               content_type="application/merge-patch+json")
            # fluxd's owner labels, as it applies them
            owner = {"kustomize.toolkit.fluxcd.io/name": name,
                     "kustomize.toolkit.fluxcd.io/namespace": NAMESPACE}
            objects = app_objects(i, namespace)
            for obj in objects:
                obj["metadata"] = {**obj["metadata"],
                                   "labels": {**obj["metadata"]["labels"], **owner}}
            for query in ("&dryRun=All", ""):
                await asyncio.gather(*(cluster.send(
                    "PATCH", f"{object_path(o)}?fieldManager=kustomize-controller&force=true"
                    f"{query}", o, content_type="application/apply-patch+yaml")
                    for o in objects))
            await cluster.send("PATCH", f"{api}/{name}/status",
                               json.loads(status_text.replace("app-0000", name)),
                               content_type="application/merge-patch+json")
            uid = created["metadata"]["uid"]
            await asyncio.gather(*(cluster.send(
                "POST", f"/api/v1/namespaces/{NAMESPACE}/events",
                {**event, "metadata": {**event["metadata"], "name": f"{name}.{n}"},
                 "involvedObject": {**event["involvedObject"], "name": name, "uid": uid,
                                    "apiVersion": f"{FLOOR_GROUP}/v1"}})
                for n, event in enumerate(events)))

    started = time.perf_counter()
    async with asyncio.timeout(1800):
        await asyncio.gather(*(one(i) for i in range(count)))
    return time.perf_counter() - started


async def fluxd_sample(cluster: Cluster) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """fluxd's app-0000 Kustomization and the Events it created for it."""
    obj = await cluster.send("GET", f"/apis/{KS_API}/namespaces/{NAMESPACE}/kustomizations/"
                                    "app-0000")
    listed = await cluster.send("GET", f"/api/v1/namespaces/{NAMESPACE}/events")
    events = []
    for event in listed["items"]:
        if event["involvedObject"].get("name") != "app-0000":
            continue
        meta = {k: v for k, v in event["metadata"].items()
                if k in ("namespace", "annotations", "labels")}
        events.append({k: v for k, v in event.items()
                       if k not in ("metadata", "count", "lastTimestamp", "firstTimestamp")}
                      | {"apiVersion": "v1", "kind": "Event", "metadata": meta})
    return obj, events


def is_ready_at(obj: dict[str, Any], revision: str) -> bool:
    status = obj.get("status") or {}
    return status.get("lastAppliedRevision") == revision and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or [])


async def watch_ready(cluster: Cluster, names: set[str], revision_of: Any,
                      within: float) -> float:
    """Seconds until every Kustomization in ``names`` is Ready at its source's revision
    (``revision_of()`` is read as events arrive), followed with one watch."""
    path = f"/apis/{KS_API}/namespaces/{NAMESPACE}/kustomizations"
    listed = await cluster.send("GET", path)
    pending = set(names)
    started = time.perf_counter()
    for obj in listed["items"]:
        if obj["metadata"]["name"] in pending and is_ready_at(obj, revision_of()):
            pending.discard(obj["metadata"]["name"])
    rv = listed["metadata"]["resourceVersion"]
    async with asyncio.timeout(within):
        while pending:
            async with cluster.session.get(
                    cluster.server.url + path, headers=cluster.headers,
                    params={"watch": "1", "resourceVersion": rv,
                            "timeoutSeconds": "60"}) as resp:
                async for line in resp.content:
                    event = json.loads(line)
                    obj = event["object"]
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if obj["metadata"].get("name") in pending and is_ready_at(
                            obj, revision_of()):
                        pending.discard(obj["metadata"]["name"])
                        if not pending:
                            break
    return time.perf_counter() - started


def proc_stat(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = re.search(r"VmHWM:\s+(\d+)", status)
    return cpu, (int(hwm.group(1)) / 1024 if hwm else 0.0)


def start_fluxd(tmp: Path, server: Server) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    storage = free_port()
    config = tmp / "fluxd.toml"
    config.write_text(f"""
[kube]
kubeconfig = "{server.kubeconfig}"
qps = 5000
burst = 10000
[leader_election]
enabled = false
[server]
metrics_address = "127.0.0.1:{port}"
[storage]
path = "{tmp / 'storage'}"
address = "127.0.0.1:{storage}"
[notification]
events_address = "127.0.0.1:0"
receiver_address = "127.0.0.1:0"
[log]
level = "error"
""")
    with Path(os.environ.get("FLUXD_BENCH_LOG") or tmp / "fluxd.log").open("wb") as log:
        profile = os.environ.get("FLUXD_BENCH_PROFILE")
        wrap = [os.environ["FLUXD_BENCH_PROFILER"]] if profile else ["-m", "fluxd"]
        proc = subprocess.Popen([sys.executable, *wrap, "--config", str(config),
                                 "run"], stdout=subprocess.DEVNULL, stderr=log)
    return proc, port


async def source_revision(cluster: Cluster, name: str) -> str:
    obj = await cluster.send("GET", f"/apis/{SOURCE_API}/namespaces/{NAMESPACE}/"
                                    f"gitrepositories/{name}")
    return str(((obj.get("status") or {}).get("artifact") or {}).get("revision") or "")


async def wait_source(cluster: Cluster, name: str, not_revision: str = "",
                      within: float = 120) -> str:
    async with asyncio.timeout(within):
        while True:
            revision = await source_revision(cluster, name)
            if revision and revision != not_revision:
                return revision
            await asyncio.sleep(0.05)


async def scale(cluster: Cluster, git: GitServer, fluxd: subprocess.Popen[bytes],
                count: int) -> dict[str, float]:
    source = f"apps-{count}"
    git.make_repo(source, app_files(count, f"apps-{count}"))
    await cluster.namespace(f"apps-{count}")
    server_cpu = proc_stat(cluster.server.proc.pid)[0]
    raw = await raw_loop(cluster, count, f"raw-{count}")
    raw_server_cpu = proc_stat(cluster.server.proc.pid)[0] - server_cpu
    raw_checked = await raw_loop(cluster, count, f"raw-checked-{count}", dry_run_first=True)
    await cluster.send("POST", f"/apis/{SOURCE_API}/namespaces/{NAMESPACE}/gitrepositories",
                       gitrepo(source, git.repo_url(source)))
    revision = await wait_source(cluster, source)
    cpu_before, _ = proc_stat(fluxd.pid)
    server_cpu = proc_stat(cluster.server.proc.pid)[0]
    names = {f"app-{i:04d}" for i in range(count)}
    watcher = asyncio.ensure_future(watch_ready(cluster, names, lambda: revision,
                                                within=1800))
    await asyncio.sleep(0.2)  # the watch is open before the first create
    started = time.perf_counter()
    path = f"/apis/{KS_API}/namespaces/{NAMESPACE}/kustomizations"
    await run_all(cluster.session, cluster.server.url, cluster.server.token, count=count,
                  concurrency=8, make=lambda i: ("PATCH", f"{path}/app-{i:04d}?fieldManager=bench",
                                                 kustomization(i, source, f"./apps/app-{i:04d}")))
    await watcher
    took = time.perf_counter() - started
    cpu_after, peak = proc_stat(fluxd.pid)
    fluxd_server_cpu = proc_stat(cluster.server.proc.pid)[0] - server_cpu
    sample, events = await fluxd_sample(cluster)
    server_cpu = proc_stat(cluster.server.proc.pid)[0]
    floor = await floor_loop(cluster, count, sample, events)
    floor_server_cpu = proc_stat(cluster.server.proc.pid)[0] - server_cpu
    return {"n": count, "raw_apply_s": round(raw, 2), "fluxd_s": round(took, 2),
            "ratio": round(took / raw, 2),
            "raw_dry_run_then_apply_s": round(raw_checked, 2),
            "ratio_to_dry_run_then_apply": round(took / raw_checked, 2),
            "floor_s": round(floor, 2), "ratio_to_floor": round(took / floor, 2),
            "requests_per_app_floor": 3 + 2 * len(app_objects(0, "x")) + len(events),
            "api_server_cpu_s_floor": round(floor_server_cpu, 1),
            "fluxd_cpu_s": round(cpu_after - cpu_before, 1),
            "fluxd_peak_rss_mib": round(peak, 1),
            "api_server_cpu_s_raw": round(raw_server_cpu, 1),
            "api_server_cpu_s_fluxd": round(fluxd_server_cpu, 1)}


async def commits(cluster: Cluster, git: GitServer, count: int) -> dict[str, float]:
    repo = git.make_repo("latency", {f"app/{o['kind'].lower()}.yaml": yaml.safe_dump(o)
                                     for o in app_objects(9999, "latency")})
    await cluster.namespace("latency")
    await cluster.send("POST", f"/apis/{SOURCE_API}/namespaces/{NAMESPACE}/gitrepositories",
                       gitrepo("latency", git.repo_url("latency")))
    revision = await wait_source(cluster, "latency")
    await cluster.send("POST", f"/apis/{KS_API}/namespaces/{NAMESPACE}/kustomizations",
                       {**kustomization(9999, "latency", "./app"),
                        "metadata": {"name": "latency", "namespace": NAMESPACE}})
    await watch_ready(cluster, {"latency"}, lambda: revision, within=120)
    times: list[float] = []
    cm = "/api/v1/namespaces/latency/configmaps/app-9999"
    for n in range(count):
        value = f"commit-{n}"
        cm_obj = app_objects(9999, "latency", value)[0]
        commit(repo, {"app/configmap.yaml": yaml.safe_dump(cm_obj)})
        started = time.perf_counter()
        await cluster.send(
            "PATCH", f"/apis/{SOURCE_API}/namespaces/{NAMESPACE}/gitrepositories/latency",
            {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": value}}},
            content_type="application/merge-patch+json")
        async with asyncio.timeout(60):
            while (await cluster.send("GET", cm))["data"]["value"] != value:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        times.append(time.perf_counter() - started)
    times.sort()
    return {"commits": count, "p50_s": round(statistics.median(times), 3),
            "p95_s": round(times[max(0, int(len(times) * 0.95) - 1)], 3),
            "max_s": round(times[-1], 3)}


async def with_cluster(tmp: Path, git: GitServer, body: Any) -> Any:
    """Run ``body(cluster, fluxd)`` against a fresh dev cluster and ``fluxd run``."""
    server = Server(tmp)
    fluxd: subprocess.Popen[bytes] | None = None
    try:
        ctx = ssl.create_default_context(cadata=server.ca.decode())
        connector = aiohttp.TCPConnector(ssl=ctx, limit=64)
        async with aiohttp.ClientSession(connector=connector) as session:
            cluster = Cluster(server, session)
            await cluster.namespace(NAMESPACE)
            for doc in [*CRDS, floor_crd()]:
                await cluster.apply("/apis/apiextensions.k8s.io/v1/"
                                    f"customresourcedefinitions/{doc['metadata']['name']}", doc)
            fluxd, _ = start_fluxd(tmp, server)
            return await body(cluster, fluxd)
    finally:
        if fluxd is not None:
            fluxd.terminate()
            fluxd.wait(30)
        server.stop()


async def main_async(sizes: list[int], commit_count: int) -> dict[str, Any]:
    results: dict[str, Any] = {"scale": []}
    with tempfile.TemporaryDirectory(prefix="fluxd-bench-ks-") as tmp_name:
        tmp = Path(tmp_name)
        with GitServer(tmp / "repos") as git:
            for count in sizes:
                work = tmp / f"n{count}"
                work.mkdir()
                row = await with_cluster(work, git, lambda c, f, n=count: scale(c, git, f, n))
                print(json.dumps(row), flush=True)
                results["scale"].append(row)
            work = tmp / "commits"
            work.mkdir()
            results["commit_to_applied"] = await with_cluster(
                work, git, lambda c, f: commits(c, git, commit_count))
            print(json.dumps(results["commit_to_applied"]), flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--commits", type=int, default=20)
    opts = parser.parse_args()
    sizes = [int(s) for s in opts.sizes.split(",") if s]
    results = asyncio.run(main_async(sizes, opts.commits))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
