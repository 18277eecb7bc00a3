"""Benchmark of the Kustomization controller in the shape of Flux's own benchmark.

The shape is fluxcd/flux-benchmark's Kustomization benchmark, with its N OCIRepositories of
one artifact replaced by one monorepo GitRepository (a real ``git http-backend`` on
loopback) holding N app directories. Each ``apps/app-NNNN/`` holds one file, as upstream's
``podinfo.yaml`` and with no ``kustomization.yaml``: a ServiceAccount, a Service, a
Deployment scaled to 0 (``replicas: ${PODS:=0}``, ``cpu: ${MCPU}``) and an
``networking.k8s.io/v1`` Ingress. One Kustomization per app, with upstream's fields:
``interval: 60m``, ``retryInterval: 2m``, ``timeout: 1m``, ``prune: true``, ``wait: true``,
``postBuild.substitute`` (PODS, MCPU), and the apps in the Kustomizations' own namespace:

- variant **A**: ``targetNamespace`` set to it (as upstream and the platform's standard
  Kustomization do), the manifests without a namespace;
- variant **B**: no ``targetNamespace``, the namespace written in the manifests.

Upstream's ``serviceAccountName`` (impersonation) is left out. fluxd runs with its
**default configuration** (leader election on; only kubeconfig, storage path and listen
addresses are set); ``--tuned`` adds rows with twice Flux's workers (``[concurrency]
kustomize = 8``) beside them.

Each row (N, variant) gets a fresh dev cluster in its own process (or, with
``FLUXD_TEST_KUBECONFIG``, namespaces of its own on that cluster, removed afterwards) and
runs, in order:

1. **bare floor**: this process server-side applies the same 4·N objects into a namespace
   of the same layout (16 in flight) and follows the Deployments with one watch until every
   one is Available; the time from the first apply to the last Available.
2. **all Ready** (fresh ``fluxd run`` process P1): the GitRepository is created and waited
   Ready first; then the clock starts and the N Kustomizations are created (8 in flight);
   the time to the last one Ready at the source's revision, P1's CPU seconds over that
   window, and its peak RSS (VmHWM, start-up included). P1 is then stopped (SIGTERM).
3. **floor loop**: per app, the requests fluxd's reconcile of a new Kustomization sends,
   with no controller (bodies copied from what P1 wrote for app-0000); what any
   Flux-compatible controller needs at least.
4. **first Ready at start-up** (fresh process P2): a commit that changes every app lands
   while no fluxd runs, so all N Kustomizations are pending (Ready at the old revision,
   their source behind); P2 is started and the time from spawning it to the first
   Kustomization Ready at the new revision is taken (process start, cache sync, leader
   election, source fetch and the first reconciles all included). P2 is then stopped.

Then, with one Kustomization of the same shape on a fresh cluster and fluxd, 20 commits
each followed by a webhook-style reconcile request on the GitRepository: commit → applied,
p50 and p95. Every wait is bounded in time and in watch reconnects.

    .venv/bin/python -m benchmarks.kustomization [--sizes 100,500,1000] [--variants a,b]
        [--commits 20] [--tuned] [--ready-delay 0.1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import functools
import json
import math
import os
import re
import secrets
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from benchmarks.devcluster import Server, run_all
from tests.support.gitserver import GitServer, commit

KS_API = "kustomize.toolkit.fluxcd.io/v1"
SOURCE_API = "source.toolkit.fluxcd.io/v1"
CRDS = [doc for path in sorted(Path(__file__).parents[1].joinpath("deploy", "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text()) if doc]
#: the namespace of fluxd's leader-election Lease with the default configuration
RUNTIME_NAMESPACE = "flux-system"
#: postBuild.substitute of every Kustomization, as upstream's (less its per-copy INDEX)
SUBSTITUTE = {"PODS": "0", "MCPU": "1m"}
MAX_RECONNECTS = 1000

Obj = dict[str, Any]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- the apps

def app_name(i: int) -> str:
    return f"app-{i:04d}"


def app_objects(i: int, namespace: str | None, version: str = "6.5.3") -> list[Obj]:
    """App ``i`` as it lands in the cluster (variables substituted): ServiceAccount,
    Service, Deployment scaled to 0, Ingress; ``namespace`` None leaves it unset."""
    name = app_name(i)
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/version": version,
              "app.kubernetes.io/managed-by": "Flux"}

    def meta() -> Obj:
        return {"name": name, **({"namespace": namespace} if namespace else {}),
                "labels": dict(labels)}

    selector = {"app.kubernetes.io/name": name}
    probe = {"httpGet": {"path": "/readyz", "port": 9898}, "initialDelaySeconds": 1,
             "timeoutSeconds": 5, "periodSeconds": 10}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta()},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta(),
         "spec": {"type": "ClusterIP", "selector": selector, "ports": [
             {"name": "http", "port": 9898, "targetPort": "http", "protocol": "TCP"},
             {"name": "grpc", "port": 9999, "targetPort": "grpc", "protocol": "TCP"}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(),
         "spec": {"replicas": 0,
                  "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                  "selector": {"matchLabels": selector},
                  "template": {
                      "metadata": {"labels": selector,
                                   "annotations": {"prometheus.io/scrape": "true",
                                                   "prometheus.io/port": "9898"}},
                      "spec": {"serviceAccountName": name, "containers": [{
                          "name": "podinfo", "image": "ghcr.io/stefanprodan/podinfo:6.5.3",
                          "command": ["./podinfo", "--port=9898", "--grpc-port=9999",
                                      "--level=info"],
                          "ports": [{"name": "http", "containerPort": 9898, "protocol": "TCP"},
                                    {"name": "grpc", "containerPort": 9999, "protocol": "TCP"}],
                          "readinessProbe": probe,
                          "resources": {"requests": {"cpu": "1m", "memory": "16Mi"}}}]}}}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta(),
         "spec": {"ingressClassName": "nginx", "rules": [{
             "host": f"{name}.local",
             "http": {"paths": [{"path": "/", "pathType": "ImplementationSpecific",
                                 "backend": {"service": {"name": name,
                                                         "port": {"number": 9898}}}}]}}]}},
    ]


def app_manifest(i: int, namespace: str | None, version: str = "6.5.3") -> str:
    """App ``i``'s one file in the repository: the objects with upstream's variables in
    place of the replica count and the CPU request."""
    text = yaml.safe_dump_all(app_objects(i, namespace, version), sort_keys=False)
    for plain, variable in (("replicas: 0\n", "replicas: ${PODS:=0}\n"),
                            ("cpu: 1m\n", "cpu: ${MCPU}\n")):
        assert text.count(plain) == 1, plain
        text = text.replace(plain, variable)
    return text


def app_files(count: int, namespace: str | None, version: str = "6.5.3") -> dict[str, str]:
    return {f"apps/{app_name(i)}/podinfo.yaml": app_manifest(i, namespace, version)
            for i in range(count)}


def kustomization(name: str, namespace: str, source: str, path: str, *,
                  target_namespace: str | None) -> Obj:
    spec: Obj = {"interval": "60m", "retryInterval": "2m", "timeout": "1m", "prune": True,
                 "wait": True, "path": path,
                 "sourceRef": {"kind": "GitRepository", "name": source},
                 "postBuild": {"substitute": dict(SUBSTITUTE)}}
    if target_namespace:
        spec["targetNamespace"] = target_namespace
    return {"apiVersion": KS_API, "kind": "Kustomization",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def gitrepo(name: str, namespace: str, url: str) -> Obj:
    return {"apiVersion": SOURCE_API, "kind": "GitRepository",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "60m", "url": url, "ref": {"branch": "main"}}}


_PLURALS = {"ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
            "Service": "/api/v1/namespaces/{ns}/services",
            "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
            "Ingress": "/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses"}


def object_path(obj: Obj) -> str:
    meta = obj["metadata"]
    return _PLURALS[obj["kind"]].format(ns=meta["namespace"]) + f"/{meta['name']}"


# --------------------------------------------------------------------------- the cluster

@dataclass
class Target:
    """Where the benchmark sends its requests: a dev cluster it started, or the real
    cluster of a kubeconfig (token or client certificate; exec plugins are not read)."""

    url: str
    kubeconfig: Path
    ssl_context: ssl.SSLContext
    token: str = ""
    #: the dev cluster process, None on a real cluster
    server: Server | None = None

    @classmethod
    def dev(cls, server: Server) -> Target:
        return cls(server.url, server.kubeconfig,
                   ssl.create_default_context(cadata=server.ca.decode()), server.token, server)

    @classmethod
    def real(cls, kubeconfig: Path, tmp: Path) -> Target:
        config = yaml.safe_load(kubeconfig.read_text())
        context_name = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"]
                       if c["name"] == context["cluster"])
        user: Obj = next((u["user"] for u in config.get("users") or []
                     if u["name"] == context.get("user")), {})

        def material(key: str) -> str | None:
            # "<key>-data" is inline base64, "<key>" a file path (relative to the kubeconfig)
            for source in (cluster, user):
                if source.get(f"{key}-data"):
                    path = tmp / key
                    path.write_bytes(base64.b64decode(source[f"{key}-data"]))
                    return str(path)
                if source.get(key):
                    return str(kubeconfig.parent / source[key])
            return None

        ctx = ssl.create_default_context(cafile=material("certificate-authority"))
        if cluster.get("insecure-skip-tls-verify"):
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        cert, key = material("client-certificate"), material("client-key")
        if cert and key:
            ctx.load_cert_chain(cert, key)
        token = user.get("token") or ""
        if not token and user.get("tokenFile"):
            token = (kubeconfig.parent / user["tokenFile"]).read_text().strip()
        if not (token or cert):
            raise SystemExit(f"{kubeconfig}: only token and client-certificate users are read")
        return cls(str(cluster["server"]).rstrip("/"), kubeconfig, ctx, token)

    def server_cpu(self) -> float | None:
        return None if self.server is None else proc_stat(self.server.proc.pid)[0]


class Cluster:
    """An aiohttp session on a Target."""

    def __init__(self, target: Target, session: aiohttp.ClientSession) -> None:
        self.target = target
        self.session = session
        self.url = target.url
        self.headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}

    async def send(self, method: str, path: str, body: Any = None, *,
                   content_type: str = "application/json", missing_ok: bool = False) -> Any:
        async with self.session.request(
                method, self.url + path, data=None if body is None else json.dumps(body),
                headers={**self.headers, "Content-Type": content_type}) as resp:
            data = await resp.read()
            if resp.status == 404 and missing_ok:
                return None
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
            return json.loads(data) if data else None

    async def apply(self, path: str, obj: Obj) -> Any:
        return await self.send("PATCH", f"{path}?fieldManager=bench&force=true", obj,
                               content_type="application/apply-patch+yaml")

    async def namespace(self, name: str) -> None:
        await self.apply(f"/api/v1/namespaces/{name}",
                         {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    async def run_all(self, count: int, concurrency: int,
                      make: Callable[[int], tuple[str, str, Any]]) -> None:
        await run_all(self.session, self.url, self.target.token, count=count,
                      concurrency=concurrency, make=make)

    async def follow(self, path: str, see: Callable[[Obj], bool], *, within: float,
                     listed: asyncio.Event | None = None) -> None:
        """List ``path`` and watch it from there, calling ``see(obj)`` for every object
        (listed or changed) until it returns True. A 410 or an ended watch re-lists;
        bounded by ``within`` seconds and ``MAX_RECONNECTS`` watches. ``listed`` is set
        after the first list: from then on no change can be missed."""
        async with asyncio.timeout(within):
            for _ in range(MAX_RECONNECTS):
                page = await self.send("GET", path)
                if listed is not None:
                    listed.set()
                if any([see(obj) for obj in page["items"]]):
                    return
                rv = page["metadata"]["resourceVersion"]
                async with self.session.get(
                        self.url + path, headers=self.headers,
                        params={"watch": "1", "resourceVersion": rv,
                                "allowWatchBookmarks": "true", "timeoutSeconds": "60"}) as resp:
                    if resp.status >= 300:
                        await asyncio.sleep(0.1)
                        continue
                    async for line in resp.content:
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            break  # 410 Gone and friends: list again
                        if event["type"] in ("ADDED", "MODIFIED") and see(event["object"]):
                            return
            raise RuntimeError(f"watch of {path}: more than {MAX_RECONNECTS} reconnects")


async def following(cluster: Cluster, path: str, see: Callable[[Obj], bool], *,
                    within: float) -> asyncio.Future[None]:
    """``cluster.follow(...)`` started, returned once its first list is done (so nothing
    that happens from now on is missed)."""
    listed = asyncio.Event()
    watcher = asyncio.ensure_future(cluster.follow(path, see, within=within, listed=listed))
    waiter = asyncio.ensure_future(listed.wait())
    await asyncio.wait([watcher, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if watcher.done():
        watcher.result()  # a failure surfaces here
    return watcher


def condition(obj: Obj, kind: str) -> Obj:
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c.get("type") == kind), {})


@dataclass
class Readiness:
    """Kustomizations turning Ready at an accepted revision, as a watch reports them."""

    pending: set[str]
    accepts: Callable[[str], bool]
    first: float | None = None
    last: float | None = None
    failed: set[str] = field(default_factory=set)
    stop_at_first: bool = False

    def see(self, obj: Obj) -> bool:
        name = obj["metadata"].get("name")
        ready = condition(obj, "Ready")
        if ready.get("status") == "False":
            self.failed.add(str(name))
        revision = str((obj.get("status") or {}).get("lastAppliedRevision") or "")
        if name in self.pending and ready.get("status") == "True" and self.accepts(revision):
            self.pending.discard(name)
            now = time.perf_counter()
            self.first = self.first or now
            if not self.pending or self.stop_at_first:
                self.last = now
                return True
        return False


def proc_stat(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = re.search(r"VmHWM:\s+(\d+)", status)
    return cpu, (int(hwm.group(1)) / 1024 if hwm else 0.0)


# --------------------------------------------------------------------------- fluxd

def start_fluxd(tmp: Path, kubeconfig: Path, *, tuned: bool,
                tag: str) -> subprocess.Popen[bytes]:
    """``fluxd run`` with the default configuration: only where the cluster is, where the
    artifacts live and loopback listen addresses are set (``tuned`` doubles the
    Kustomization workers)."""
    config = tmp / "fluxd.toml"
    tuning = "[concurrency]\nkustomize = 8\n" if tuned else ""
    config.write_text(f"""
[kube]
kubeconfig = "{kubeconfig}"

[server]
metrics_address = "127.0.0.1:{free_port()}"
[storage]
path = "{tmp / 'storage'}"
address = "127.0.0.1:{free_port()}"
[notification]
events_address = "127.0.0.1:0"
receiver_address = "127.0.0.1:0"
{tuning}""")
    log_path = Path(os.environ.get("FLUXD_BENCH_LOG") or tmp / "fluxd.log")
    with log_path.with_name(f"{log_path.name}.{tag}").open("wb") as log:
        profile = os.environ.get("FLUXD_BENCH_PROFILE")
        wrap = [os.environ["FLUXD_BENCH_PROFILER"]] if profile else ["-m", "fluxd"]
        return subprocess.Popen([sys.executable, *wrap, "--config", str(config), "run"],
                                stdout=subprocess.DEVNULL, stderr=log)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


async def wait_source(cluster: Cluster, namespace: str, name: str, *,
                      within: float = 120) -> str:
    """The revision of the GitRepository's artifact, once it has one."""
    revision = ""

    def see(obj: Obj) -> bool:
        nonlocal revision
        if obj["metadata"]["name"] != name:
            return False
        revision = str(((obj.get("status") or {}).get("artifact") or {}).get("revision") or "")
        return bool(revision)

    await cluster.follow(f"/apis/{SOURCE_API}/namespaces/{namespace}/gitrepositories", see,
                         within=within)
    return revision


async def check_applied(cluster: Cluster, namespace: str) -> None:
    """What fluxd applied is the app as meant: variables substituted, in ``namespace``."""
    live = await cluster.send("GET", object_path(app_objects(0, namespace)[2]))
    want = app_objects(0, namespace)[2]["spec"]
    got = live["spec"]
    if got["replicas"] != 0 or got["template"]["spec"]["containers"][0]["resources"] != \
            want["template"]["spec"]["containers"][0]["resources"]:
        raise RuntimeError(f"app-0000 applied wrongly: {got}")


# --------------------------------------------------------------------------- floors

async def bare_floor(cluster: Cluster, count: int, namespace: str, *, within: float) -> float:
    """Server-side apply the 4·N objects, 16 in flight, and follow the Deployments with one
    watch until every one is Available; seconds from the first apply."""
    await cluster.namespace(namespace)
    objects = [o for i in range(count) for o in app_objects(i, namespace)]
    pending = {app_name(i) for i in range(count)}

    def see(obj: Obj) -> bool:
        meta = obj["metadata"]
        status = obj.get("status") or {}
        if (condition(obj, "Available").get("status") == "True"
                and status.get("observedGeneration", 0) >= meta.get("generation", 1)):
            pending.discard(meta["name"])
        return not pending

    watcher = await following(cluster, f"/apis/apps/v1/namespaces/{namespace}/deployments",
                              see, within=within)
    started = time.perf_counter()
    await cluster.run_all(len(objects), 16, lambda i: (
        "PATCH", object_path(objects[i]) + "?fieldManager=bench", objects[i]))
    await watcher
    return time.perf_counter() - started


FLOOR_GROUP = "bench.fluxd.io"


def floor_crd() -> Obj:
    """The Kustomization CRD under another group: the same schema to validate and default,
    but no controller watches it."""
    crd: Obj = copy.deepcopy(next(d for d in CRDS if d["spec"]["names"]["kind"] == "Kustomization"))
    crd["metadata"] = {"name": f"kustomizations.{FLOOR_GROUP}"}
    crd["spec"]["group"] = FLOOR_GROUP
    return crd


async def floor_loop(cluster: Cluster, count: int, sample: Obj, events: list[Obj], *,
                     ks_namespace: str, floor_namespace: str, within: float) -> float:
    """Send, per app, the requests fluxd's reconcile of a new Kustomization sends, with no
    controller: create the Kustomization, add the finalizer, dry-run the 4 objects, apply
    them, write the status fluxd wrote, create the Events fluxd created. ``sample`` and
    ``events`` are fluxd's own for app-0000; 16 apps at a time, each app's objects in
    parallel. This is the least time any implementation of Flux's reconcile could take
    against this server."""
    await cluster.namespace(floor_namespace)
    api = f"/apis/{FLOOR_GROUP}/v1/namespaces/{ks_namespace}/kustomizations"
    status_text = json.dumps({"status": sample["status"]}).replace(ks_namespace,
                                                                   floor_namespace)
    semaphore = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        name = app_name(i)
        spec = kustomization(name, ks_namespace, "floor", f"./apps/{name}",
                             target_namespace=sample["spec"].get("targetNamespace"))
        spec["apiVersion"] = f"{FLOOR_GROUP}/v1"
        async with semaphore:
            created = await cluster.apply(f"{api}/{name}", spec)
            await cluster.send("PATCH", f"{api}/{name}",
                               {"metadata": {"finalizers": sample["metadata"]["finalizers"]}},
                               content_type="application/merge-patch+json")
            # fluxd's owner labels, as it applies them
            owner = {"kustomize.toolkit.fluxcd.io/name": name,
                     "kustomize.toolkit.fluxcd.io/namespace": ks_namespace}
            objects = app_objects(i, floor_namespace)
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
                "POST", f"/api/v1/namespaces/{ks_namespace}/events",
                {**event, "metadata": {**event["metadata"], "name": f"{name}.{n}"},
                 "involvedObject": {**event["involvedObject"], "name": name, "uid": uid,
                                    "apiVersion": f"{FLOOR_GROUP}/v1"}})
                for n, event in enumerate(events)))

    started = time.perf_counter()
    async with asyncio.timeout(within):
        await asyncio.gather(*(one(i) for i in range(count)))
    return time.perf_counter() - started


async def fluxd_sample(cluster: Cluster, namespace: str) -> tuple[Obj, list[Obj]]:
    """fluxd's app-0000 Kustomization and the Events it created for it."""
    obj = await cluster.send("GET", f"/apis/{KS_API}/namespaces/{namespace}/kustomizations/"
                                    "app-0000")
    listed = await cluster.send("GET", f"/api/v1/namespaces/{namespace}/events")
    events = []
    for event in listed["items"]:
        if event["involvedObject"].get("name") != "app-0000" or \
                event["involvedObject"].get("kind") != "Kustomization":
            continue
        meta = {k: v for k, v in event["metadata"].items()
                if k in ("namespace", "annotations", "labels")}
        events.append({k: v for k, v in event.items()
                       if k not in ("metadata", "count", "lastTimestamp", "firstTimestamp")}
                      | {"apiVersion": "v1", "kind": "Event", "metadata": meta})
    return obj, events


# --------------------------------------------------------------------------- one row

@dataclass
class Run:
    """What every row shares: the git server, the work directory, the options."""

    git: GitServer
    tmp: Path
    ready_delay: float
    real_kubeconfig: Path | None
    #: namespaces the current row created on a real cluster (removed after it)
    created: list[str] = field(default_factory=list)
    #: whether this run created the runtime namespace on a real cluster (removed last)
    created_runtime: bool = False
    suffix: str = ""

    def ns(self, name: str) -> str:
        return name + self.suffix


async def with_target(run: Run, work: Path, body: Callable[[Cluster], Any]) -> Any:
    """``body(cluster)`` against a fresh dev cluster, or the real one."""
    server: Server | None = None
    try:
        if run.real_kubeconfig:
            target = Target.real(run.real_kubeconfig, work)
        else:
            server = Server(work, ready_delay=run.ready_delay)
            target = Target.dev(server)
        connector = aiohttp.TCPConnector(ssl=target.ssl_context, limit=64)
        async with aiohttp.ClientSession(connector=connector) as session:
            cluster = Cluster(target, session)
            if await cluster.send("GET", f"/api/v1/namespaces/{RUNTIME_NAMESPACE}",
                                  missing_ok=True) is None:
                await cluster.namespace(RUNTIME_NAMESPACE)
                run.created_runtime = bool(run.real_kubeconfig)
            for doc in [*CRDS, floor_crd()]:
                await cluster.apply("/apis/apiextensions.k8s.io/v1/"
                                    f"customresourcedefinitions/{doc['metadata']['name']}", doc)
            try:
                return await body(cluster)
            finally:
                if run.real_kubeconfig:
                    await clean_up(cluster, run)
    finally:
        if server is not None:
            server.stop()


async def clean_up(cluster: Cluster, run: Run) -> None:
    """Remove this run's namespaces from a real cluster: finalizers of Flux objects first
    (no fluxd is left to honour them), then the namespaces."""
    for namespace in run.created:
        for api, plural in ((KS_API, "kustomizations"), (SOURCE_API, "gitrepositories"),
                            (f"{FLOOR_GROUP}/v1", "kustomizations")):
            path = f"/apis/{api}/namespaces/{namespace}/{plural}"
            listed = await cluster.send("GET", path, missing_ok=True)
            for obj in (listed or {}).get("items") or []:
                await cluster.send("PATCH", f"{path}/{obj['metadata']['name']}",
                                   {"metadata": {"finalizers": None}},
                                   content_type="application/merge-patch+json",
                                   missing_ok=True)
        await cluster.send("DELETE", f"/api/v1/namespaces/{namespace}", missing_ok=True)
    run.created.clear()
    await cluster.send("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                                 f"kustomizations.{FLOOR_GROUP}", missing_ok=True)


async def row(cluster: Cluster, *, run: Run, count: int, variant: str,
              tuned: bool) -> dict[str, Any]:
    tag = f"{variant}{'-tuned' if tuned else ''}-{count}"
    work = run.tmp / tag
    work.mkdir()
    ks_ns, bare_ns, floor_ns = run.ns(f"ks-{tag}"), run.ns(f"bare-{tag}"), run.ns(f"floor-{tag}")
    if run.real_kubeconfig:
        run.created += [ks_ns, bare_ns, floor_ns]
    within = 300 + 2.0 * count
    server_cpu = cluster.target.server_cpu

    # 1. the bare-apply floor
    bare = await bare_floor(cluster, count, bare_ns, within=within)

    # 2. all Ready, on a fresh fluxd with the source Ready before the clock starts
    target_ns = ks_ns if variant == "a" else None
    source = f"apps-{tag}{run.suffix}"
    repo = run.git.make_repo(source, app_files(count, None if target_ns else ks_ns))
    await cluster.namespace(ks_ns)
    fluxd = start_fluxd(work, cluster.target.kubeconfig, tuned=tuned, tag=f"{tag}-p1")
    try:
        await cluster.apply(f"/apis/{SOURCE_API}/namespaces/{ks_ns}/gitrepositories/{source}",
                            gitrepo(source, ks_ns, run.git.repo_url(source)))
        revision = await wait_source(cluster, ks_ns, source)
        names = {app_name(i) for i in range(count)}
        ready = Readiness(set(names), lambda r: r == revision)
        path = f"/apis/{KS_API}/namespaces/{ks_ns}/kustomizations"
        watcher = await following(cluster, path, ready.see, within=within)
        cpu_before, _ = proc_stat(fluxd.pid)
        server_before = server_cpu()
        started = time.perf_counter()
        await cluster.run_all(count, 8, lambda i: (
            "PATCH", f"{path}/{app_name(i)}?fieldManager=bench",
            kustomization(app_name(i), ks_ns, source, f"./apps/{app_name(i)}",
                          target_namespace=target_ns)))
        await watcher
        assert ready.last is not None and ready.first is not None
        all_ready = ready.last - started
        cpu_after, peak = proc_stat(fluxd.pid)
        server_after = server_cpu()
        sample, events = await fluxd_sample(cluster, ks_ns)
        await check_applied(cluster, ks_ns)
    finally:
        stop(fluxd)

    # 3. the floor loop, with fluxd's own status and Events; this process's CPU over it
    # is what the bare client spends on those requests (TLS, HTTP, JSON) and nothing else
    floor_cpu = time.process_time()
    floor = await floor_loop(cluster, count, sample, events, ks_namespace=ks_ns,
                             floor_namespace=floor_ns, within=within)
    floor_cpu = time.process_time() - floor_cpu

    # 4. first Ready at start-up: every Kustomization pending behind a new commit
    commit(repo, app_files(count, None if target_ns else ks_ns, version="6.5.4"),
           message="bump every app")
    startup = Readiness(set(names), lambda r: r not in ("", revision), stop_at_first=True)
    watcher = await following(cluster, path, startup.see, within=within)
    spawned = time.perf_counter()
    fluxd = start_fluxd(work, cluster.target.kubeconfig, tuned=tuned, tag=f"{tag}-p2")
    try:
        await watcher
    finally:
        stop(fluxd)
    assert startup.first is not None
    cpu = cpu_after - cpu_before
    result: dict[str, Any] = {
        "n": count, "variant": variant, "config": "tuned" if tuned else "default",
        "all_ready_s": round(all_ready, 2),
        "first_ready_after_create_s": round(ready.first - started, 2),
        "first_ready_after_start_s": round(startup.first - spawned, 2),
        "bare_floor_s": round(bare, 2), "ratio_to_bare_floor": round(all_ready / bare, 2),
        "floor_loop_s": round(floor, 2), "ratio_to_floor_loop": round(all_ready / floor, 2),
        "floor_loop_client_cpu_ms_per_ks": round(floor_cpu * 1000 / count, 1),
        "fluxd_cpu_s": round(cpu, 1), "fluxd_cpu_ms_per_ks": round(cpu * 1000 / count, 1),
        "fluxd_peak_rss_mib": round(peak, 1),
        "not_ready_seen": len(ready.failed),
    }
    if server_before is not None and server_after is not None:
        result["api_server_cpu_s_fluxd"] = round(server_after - server_before, 1)
    return result


# --------------------------------------------------------------------------- commit latency

async def commits(cluster: Cluster, run: Run, count: int) -> dict[str, Any]:
    """One Kustomization of the same shape (variant A); ``count`` commits, each changing
    the app's version label and followed by a reconcile request on the GitRepository;
    seconds from the request to the changed ServiceAccount in the cluster."""
    work = run.tmp / "commits"
    work.mkdir()
    namespace, source = run.ns("latency"), f"latency{run.suffix}"
    if run.real_kubeconfig:
        run.created.append(namespace)
    repo = run.git.make_repo(source, {"app/podinfo.yaml": app_manifest(9999, None)})
    await cluster.namespace(namespace)
    fluxd = start_fluxd(work, cluster.target.kubeconfig, tuned=False, tag="commits")
    try:
        await cluster.apply(f"/apis/{SOURCE_API}/namespaces/{namespace}/gitrepositories/"
                            f"{source}", gitrepo(source, namespace, run.git.repo_url(source)))
        revision = await wait_source(cluster, namespace, source)
        path = f"/apis/{KS_API}/namespaces/{namespace}/kustomizations"
        await cluster.apply(f"{path}/latency", kustomization(
            "latency", namespace, source, "./app", target_namespace=namespace))
        await cluster.follow(path, Readiness({"latency"}, lambda r: r == revision).see,
                             within=120)
        times: list[float] = []
        sa = f"/api/v1/namespaces/{namespace}/serviceaccounts/{app_name(9999)}"
        for n in range(count):
            value = f"commit-{n}"
            commit(repo, {"app/podinfo.yaml": app_manifest(9999, None, version=value)})
            started = time.perf_counter()
            await cluster.send(
                "PATCH", f"/apis/{SOURCE_API}/namespaces/{namespace}/gitrepositories/{source}",
                {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": value}}},
                content_type="application/merge-patch+json")
            async with asyncio.timeout(60):
                while ((await cluster.send("GET", sa))["metadata"]["labels"]  # noqa: ASYNC110
                       .get("app.kubernetes.io/version") != value):
                    await asyncio.sleep(0.01)
            times.append(time.perf_counter() - started)
    finally:
        stop(fluxd)
    times.sort()
    return {"commits": count, "p50_s": round(statistics.median(times), 3),
            "p95_s": round(times[math.ceil(len(times) * 0.95) - 1], 3),
            "max_s": round(times[-1], 3)}


# --------------------------------------------------------------------------- output

COLUMNS = [("n", "N"), ("variant", "variant"), ("config", "config"),
           ("all_ready_s", "all Ready s"), ("bare_floor_s", "bare floor s"),
           ("ratio_to_bare_floor", "÷ bare"), ("floor_loop_s", "floor loop s"),
           ("ratio_to_floor_loop", "÷ loop"), ("first_ready_after_start_s", "first Ready s"),
           ("fluxd_cpu_s", "CPU s"), ("fluxd_cpu_ms_per_ks", "CPU ms/KS"),
           ("floor_loop_client_cpu_ms_per_ks", "loop client CPU ms/KS"),
           ("fluxd_peak_rss_mib", "peak RSS MiB"), ("api_server_cpu_s_fluxd", "API CPU s"),
           ("not_ready_seen", "not Ready")]


def table(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    lines = [head, "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(key, "-")) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


async def main_async(sizes: list[int], variants: list[str], commit_count: int, *,
                     tuned: bool, ready_delay: float) -> dict[str, Any]:
    real = os.environ.get("FLUXD_TEST_KUBECONFIG")
    results: dict[str, Any] = {"target": "real cluster" if real else "dev cluster",
                               "rows": []}
    with tempfile.TemporaryDirectory(prefix="fluxd-bench-ks-") as tmp_name:
        tmp = Path(tmp_name)
        with GitServer(tmp / "repos") as git:
            run = Run(git, tmp, ready_delay, Path(real) if real else None,
                      suffix=f"-{secrets.token_hex(3)}" if real else "")
            n = 0
            for count in sizes:
                for variant in variants:
                    for config in [False, True] if tuned else [False]:
                        n += 1
                        work = tmp / f"cluster-{n}"
                        work.mkdir()
                        result = await with_target(run, work, functools.partial(
                            row, run=run, count=count, variant=variant, tuned=config))
                        print(json.dumps(result), flush=True)
                        results["rows"].append(result)
            if commit_count:
                work = tmp / "cluster-commits"
                work.mkdir()
                results["commit_to_applied"] = await with_target(
                    run, work, lambda c: commits(c, run, commit_count))
                print(json.dumps(results["commit_to_applied"]), flush=True)
            if run.created_runtime:
                # last, so that no row finds it terminating
                work = tmp / "cluster-cleanup"
                work.mkdir()
                run.created.append(RUNTIME_NAMESPACE)
                await with_target(run, work, lambda c: asyncio.sleep(0))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--variants", default="a,b",
                        help="a: targetNamespace; b: the namespace in the manifests")
    parser.add_argument("--commits", type=int, default=20)
    parser.add_argument("--tuned", action="store_true",
                        help="also rows with [concurrency] kustomize = 8 (Flux: 4)")
    parser.add_argument("--ready-delay", type=float, default=0.1,
                        help="dev cluster: seconds before a Deployment turns Available")
    parser.add_argument("--json", action="store_true", help="print the results as JSON last")
    opts = parser.parse_args()
    sizes = [int(s) for s in opts.sizes.split(",") if s]
    variants = [v for v in opts.variants.split(",") if v]
    if set(variants) - {"a", "b"}:
        parser.error("--variants takes a and/or b")
    started = time.perf_counter()
    results = asyncio.run(main_async(sizes, variants, opts.commits, tuned=opts.tuned,
                                     ready_delay=opts.ready_delay))
    results["wall_s"] = round(time.perf_counter() - started, 1)
    print(table(results["rows"]))
    if "commit_to_applied" in results:
        c = results["commit_to_applied"]
        print(f"commit → applied ({c['commits']} commits): p50 {c['p50_s']} s, "
              f"p95 {c['p95_s']} s, max {c['max_s']} s")
    print(f"{results['target']}, {os.cpu_count()} CPUs, wall time {results['wall_s']} s")
    if opts.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
