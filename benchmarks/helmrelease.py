"""Benchmark of the HelmRelease controller in the shape of Flux's own benchmark.

The shape is fluxcd/flux-benchmark's HelmRelease benchmark (``timoni/modules/flux-hr-bench``):
N HelmReleases of one chart, created at once, all in one namespace with one
HelmRepository, each with its own release (``podinfo-<i>``), ``targetNamespace`` and
``storageNamespace`` set to that namespace, ``interval: 60m``, the chart's
``interval: 600m``, ``install.crds: Create``, ``upgrade.crds: CreateReplace`` and
upstream's values (no replicas, a ServiceAccount, an Ingress, small requests). As the
issue asks, every release runs its test hook (``test.enable: true``; upstream only does
with replicas). The chart is a small podinfo look-alike made here — a ServiceAccount, a
Service, a Deployment, an Ingress and a ``helm.sh/hook: test`` Pod — packaged with the
real helm and served from a static Helm repository on loopback (``HelmRepoServer``;
upstream pulls podinfo from an OCI HelmRepository).
Upstream's ``serviceAccountName`` (impersonation) is left out, as in the Kustomization
benchmark. fluxd runs with its **default configuration** (``[concurrency] helm = 4``).

Each row (N) gets a fresh dev cluster in its own process and runs, in order:

1. **helm floor**: ``helm install --wait`` then ``helm test`` of the same N releases
   (same chart archive, same values, same binary, fluxd's install flags, straight to the
   API server, no post-renderer), with 4 releases in flight — fluxd's default helm
   workers; the time from the first install to the last test, helm's CPU, and the median
   install and test (fluxd's own medians come from its log, for comparison).
2. **all Ready** (fresh ``fluxd run`` process): the HelmRepository is created and waited
   Ready first; then the clock starts and the N HelmReleases are created (8 in flight);
   the time to the last one Ready with its test passed (a stalled one ends the run),
   fluxd's own CPU seconds, peak RSS (VmHWM, start-up included) and RSS at the end, and
   apart from it the CPU of the processes it started
   and reaped (helm and helm's post-renderer) and the largest sum of their RSS seen
   (sampled every ``SAMPLE_S``).
3. **in-sync reconcile** (same process, all Ready): K of them get a reconcile request
   (``reconcile.fluxcd.io/requestedAt``), one after the other; the reconcile's own
   duration comes from fluxd's ``gotk_reconcile_duration_seconds`` (per object: the
   sum's change over the count's change), the request → ``lastHandledReconcileAt`` time
   from one watch; no process may start meanwhile (fluxd's reaped-children CPU must not
   move and no child may be seen, sampled every ``IN_SYNC_SAMPLE_S``).

Every wait is bounded in time and in watch reconnects.

    .venv/bin/python -m benchmarks.helmrelease [--sizes 100,500,1000] [--in-sync 20]
        [--ready-delay 0.1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import resource
import ssl
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from benchmarks.devcluster import Server
from benchmarks.kustomization import (
    CRDS,
    RUNTIME_NAMESPACE,
    Cluster,
    Target,
    condition,
    following,
    proc_stat,
    start_fluxd,
    stop,
)
from fluxd import health
from fluxd.tools import find_tool
from tests.support.helmrepo import HelmCLI, HelmRepoServer

HELM_API = "helm.toolkit.fluxcd.io/v2"
SOURCE_API = "source.toolkit.fluxcd.io/v1"
CHART, CHART_VERSION = "podinfo", "6.5.3"
#: fluxd's default ``[concurrency] helm``: the floor runs as many releases at once
HELM_WORKERS = 4
#: how often the processes fluxd started are looked at while all turn Ready
SAMPLE_S = 0.5
#: how often fluxd's descendants are looked at while in-sync reconciles run
IN_SYNC_SAMPLE_S = 0.02
#: the most bytes of /metrics read
METRICS_LIMIT = 64 << 20
#: the flags fluxd's ``helm install`` gets for this HelmRelease besides the release, the
#: timeout and the post-renderer (``fluxd.controllers.helm.action.install_args``)
INSTALL_FLAGS = ("--wait=watcher", "--wait-for-jobs", "--server-side=true",
                 "--force-conflicts", "--take-ownership")
#: how long one helm command of the floor may take
HELM_TIMEOUT_S = 300.0

Obj = dict[str, Any]

# upstream's values (timoni/modules/flux-hr-bench), with no replicas
VALUES: Obj = {"replicaCount": 0,
               "serviceAccount": {"enabled": True},
               "ingress": {"enabled": True, "className": "nginx"},
               "resources": {"requests": {"cpu": "1m", "memory": "16Mi"}}}


# --------------------------------------------------------------------------- the chart

CHART_VALUES = """\
replicaCount: 1
image: {repository: ghcr.io/stefanprodan/podinfo, tag: 6.5.3}
service: {type: ClusterIP, httpPort: 9898, grpcPort: 9999}
serviceAccount: {enabled: false}
ingress: {enabled: false, className: ""}
resources: {}
"""

TEMPLATES = {
    "_helpers.tpl": """\
{{- define "bench.labels" -}}
app.kubernetes.io/name: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
""",
    "serviceaccount.yaml": """\
{{- if .Values.serviceAccount.enabled }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .Release.Name }}
  labels: {{- include "bench.labels" . | nindent 4 }}
{{- end }}
""",
    "service.yaml": """\
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
  labels: {{- include "bench.labels" . | nindent 4 }}
spec:
  type: {{ .Values.service.type }}
  selector: {app.kubernetes.io/name: {{ .Release.Name }}}
  ports:
  - {name: http, port: {{ .Values.service.httpPort }}, targetPort: http, protocol: TCP}
  - {name: grpc, port: {{ .Values.service.grpcPort }}, targetPort: grpc, protocol: TCP}
""",
    "deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels: {{- include "bench.labels" . | nindent 4 }}
spec:
  replicas: {{ .Values.replicaCount }}
  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}
  selector:
    matchLabels: {app.kubernetes.io/name: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app.kubernetes.io/name: {{ .Release.Name }}}
    spec:
      {{- if .Values.serviceAccount.enabled }}
      serviceAccountName: {{ .Release.Name }}
      {{- end }}
      containers:
      - name: podinfo
        image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
        command: ["./podinfo", "--port=9898", "--grpc-port=9999", "--level=info"]
        ports:
        - {name: http, containerPort: 9898, protocol: TCP}
        - {name: grpc, containerPort: 9999, protocol: TCP}
        readinessProbe:
          httpGet: {path: /readyz, port: 9898}
        resources: {{- toYaml .Values.resources | nindent 10 }}
""",
    "ingress.yaml": """\
{{- if .Values.ingress.enabled }}
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {{ .Release.Name }}
  labels: {{- include "bench.labels" . | nindent 4 }}
spec:
  ingressClassName: {{ .Values.ingress.className }}
  rules:
  - host: {{ .Release.Name }}.local
    http:
      paths:
      - path: /
        pathType: ImplementationSpecific
        backend: {service: {name: {{ .Release.Name }}, port: {number: 9898}}}
{{- end }}
""",
    "tests/smoke.yaml": """\
apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-smoke
  labels: {{- include "bench.labels" . | nindent 4 }}
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation
spec:
  restartPolicy: Never
  containers:
  - name: curl
    image: curlimages/curl:8.5.0
    command: ["curl", "-sf", "http://{{ .Release.Name }}:{{ .Values.service.httpPort }}/healthz"]
""",
}


def write_bench_chart(parent: Path) -> Path:
    """The chart's directory, ``parent/podinfo``."""
    chart = parent / CHART
    (chart / "templates" / "tests").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        f"apiVersion: v2\nname: {CHART}\nversion: {CHART_VERSION}\n"
        f"appVersion: \"{CHART_VERSION}\"\ndescription: A podinfo look-alike\n"
        "type: application\n")
    (chart / "values.yaml").write_text(CHART_VALUES)
    for name, text in TEMPLATES.items():
        (chart / "templates" / name).write_text(text)
    return chart


# --------------------------------------------------------------------------- the objects

def release_name(i: int) -> str:
    return f"{CHART}-{i}"


def helmrepository(name: str, namespace: str, url: str) -> Obj:
    return {"apiVersion": SOURCE_API, "kind": "HelmRepository",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"interval": "12h", "timeout": "2m", "url": url}}


def helmrelease(i: int, namespace: str, source: str) -> Obj:
    name = release_name(i)
    return {"apiVersion": HELM_API, "kind": "HelmRelease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"releaseName": name, "targetNamespace": namespace,
                     "storageNamespace": namespace, "interval": "60m",
                     "chart": {"spec": {"chart": CHART, "version": CHART_VERSION,
                                        "sourceRef": {"kind": "HelmRepository",
                                                      "name": source},
                                        "interval": "600m"}},
                     "install": {"crds": "Create"}, "upgrade": {"crds": "CreateReplace"},
                     "test": {"enable": True},
                     "values": VALUES}}


# --------------------------------------------------------------------------- processes

def children(pid: int) -> dict[int, int]:
    """The live descendants of ``pid``: pid → RSS in KiB (one pass over /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(entry.name)] = int(fields[1])
        rss[int(entry.name)] = int(fields[21]) * page_kib
    found: dict[int, int] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found[child] = rss[child]
                frontier.append(child)
    return found


def vm_rss_mib(pid: int) -> float:
    """The resident memory of ``pid`` now (VmRSS), MiB."""
    match = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


def reaped_cpu(pid: int) -> float:
    """CPU seconds of the children ``pid`` started and reaped (cutime + cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


@dataclass
class ChildWatch:
    """Samples fluxd's descendants every ``period`` seconds: every pid seen, the most at
    once, the largest sum of their RSS."""

    pid: int
    period: float
    seen: set[int] = field(default_factory=set)
    most: int = 0
    peak_rss_kib: int = 0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ChildWatch]:
        async def loop() -> None:
            while True:
                found = children(self.pid)
                self.seen.update(found)
                self.most = max(self.most, len(found))
                self.peak_rss_kib = max(self.peak_rss_kib, sum(found.values()))
                await asyncio.sleep(self.period)

        task = asyncio.create_task(loop())
        try:
            yield self
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


def metrics_url(work: Path) -> str:
    """Where the fluxd that ``start_fluxd(work, ...)`` started serves /metrics."""
    text = (work / "fluxd.toml").read_text()
    match = re.search(r'metrics_address = "([^"]+)"', text)
    assert match, text
    return f"http://{match.group(1)}/metrics"


_SERIES = re.compile(r'^gotk_reconcile_duration_seconds_(sum|count)\{([^}]*)\} (\S+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')


async def reconcile_durations(session: aiohttp.ClientSession, url: str,
                              namespace: str) -> dict[str, tuple[float, float]]:
    """HelmRelease name → (sum, count) of its ``gotk_reconcile_duration_seconds``."""
    body = bytearray()
    async with asyncio.timeout(30), session.get(url) as resp:
        resp.raise_for_status()
        async for chunk in resp.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > METRICS_LIMIT:
                raise RuntimeError(f"{url}: more than {METRICS_LIMIT} bytes")
    out: dict[str, tuple[float, float]] = {}
    for line in body.decode().splitlines():
        match = _SERIES.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match.group(2)))
        if labels.get("kind") != "HelmRelease" or labels.get("namespace") != namespace:
            continue
        total, count = out.get(labels["name"], (0.0, 0.0))
        value = float(match.group(3))
        out[labels["name"]] = (value, count) if match.group(1) == "sum" else (total, value)
    return out


# --------------------------------------------------------------------------- waiting

@dataclass
class Released:
    """HelmReleases turning Ready at their generation with the test passed, as a watch
    reports them."""

    pending: set[str]
    first: float | None = None
    last: float | None = None
    #: (name, reason) of every Ready=False seen on the way, transient ones included
    not_ready: set[tuple[str, str]] = field(default_factory=set)

    def see(self, obj: Obj) -> bool:
        meta = obj["metadata"]
        name = str(meta.get("name"))
        ready = condition(obj, "Ready")
        if ready.get("status") == "False":
            self.not_ready.add((name, str(ready.get("reason"))))
        if condition(obj, "Stalled").get("status") == "True":
            raise RuntimeError(f"HelmRelease {name} stalled: {ready.get('message')}")
        current = (obj.get("status") or {}).get("observedGeneration") == meta.get("generation")
        if name in self.pending and current and ready.get("status") == "True" and \
                condition(obj, "TestSuccess").get("status") == "True":
            self.pending.discard(name)
            now = time.perf_counter()
            self.first = self.first or now
            if not self.pending:
                self.last = now
                return True
        return False


async def wait_repository(cluster: Cluster, namespace: str, name: str, *,
                          within: float = 120) -> None:
    def see(obj: Obj) -> bool:
        return bool(obj["metadata"]["name"] == name and
                    ((obj.get("status") or {}).get("artifact") or {}).get("revision"))

    await cluster.follow(f"/apis/{SOURCE_API}/namespaces/{namespace}/helmrepositories", see,
                         within=within)


# --------------------------------------------------------------------------- the floor

def helm_env(home: Path, kubeconfig: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "KUBECONFIG": str(kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data")}


async def run_helm(binary: str, env: dict[str, str], *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        binary, *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(HELM_TIMEOUT_S):
            out, _ = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args[:2])}: {proc.returncode}\n"
                           f"{out[-2000:].decode(errors='replace')}")


@dataclass
class Floor:
    seconds: float
    cpu: float
    #: seconds of each ``helm install`` and ``helm test``
    installs: list[float]
    tests: list[float]


async def helm_floor(binary: str, archive: Path, kubeconfig: Path, work: Path, count: int,
                     namespace: str, *, within: float) -> Floor:
    """``helm install --wait`` + ``helm test`` of ``count`` releases, ``HELM_WORKERS`` at
    once; seconds from the first install to the last test, and helm's CPU seconds."""
    home = work / "helm-floor"
    home.mkdir()
    values = home / "values.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    env = helm_env(home, kubeconfig)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    installs: list[float] = []
    tests: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            name = release_name(queue.get_nowait())
            began = time.perf_counter()
            await run_helm(binary, env, "install", name, str(archive),
                           f"--namespace={namespace}", f"--values={values}",
                           "--timeout=5m0s", "--hide-notes", *INSTALL_FLAGS)
            installed = time.perf_counter()
            await run_helm(binary, env, "test", name, f"--namespace={namespace}",
                           "--timeout=5m0s")
            installs.append(installed - began)
            tests.append(time.perf_counter() - installed)

    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    async with asyncio.timeout(within):
        await asyncio.gather(*(worker() for _ in range(HELM_WORKERS)))
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Floor(elapsed, after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime,
                 installs, tests)


def action_times(log: Path) -> tuple[list[float], list[float]]:
    """From fluxd's JSON log: seconds of each helm install and test, each from fluxd's
    "running '<action>' action" line to the next line of the same reconcile."""
    began: dict[str, tuple[str, float]] = {}
    times: dict[str, list[float]] = {"install": [], "test": []}
    with log.open() as lines:
        for line in lines:
            try:
                entry = json.loads(line)
                at = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
                key, message = str(entry.get("reconcileID") or ""), str(entry["msg"])
            except (ValueError, KeyError, TypeError):
                continue
            if key in began:
                action, start = began.pop(key)
                times[action].append(at - start)
            for action in times:
                if key and message.startswith(f"running '{action}' action"):
                    began[key] = (action, at)
    return times["install"], times["test"]


def median_s(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


# --------------------------------------------------------------------------- one row

@asynccontextmanager
async def dev_cluster(work: Path, ready_delay: float) -> AsyncIterator[Cluster]:
    """A fresh dev cluster with Flux's CRDs and the runtime namespace."""
    server = Server(work, ready_delay=ready_delay)
    try:
        target = Target.dev(server)
        ctx: ssl.SSLContext = target.ssl_context
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=64)
                                         ) as session:
            cluster = Cluster(target, session)
            await cluster.namespace(RUNTIME_NAMESPACE)
            for doc in CRDS:
                await cluster.apply("/apis/apiextensions.k8s.io/v1/"
                                    f"customresourcedefinitions/{doc['metadata']['name']}", doc)
            yield cluster
    finally:
        server.stop()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(len(ordered) * p) - 1, 0)]


async def in_sync(cluster: Cluster, fluxd_pid: int, url: str, namespace: str,
                  names: list[str]) -> dict[str, Any]:
    """Reconcile requests on ``names``, one after the other, with every release in sync."""
    path = f"/apis/{HELM_API}/namespaces/{namespace}/helmreleases"
    session = cluster.session
    await asyncio.sleep(2)  # let the last status writes' own reconciles settle
    before = await reconcile_durations(session, url, namespace)
    reaped_before = reaped_cpu(fluxd_pid)
    latencies: list[float] = []
    handled: dict[str, asyncio.Event] = {}
    seen_at: dict[str, float] = {}

    def see(obj: Obj) -> bool:
        token = str((obj.get("status") or {}).get("lastHandledReconcileAt") or "")
        if token in handled and token not in seen_at:
            seen_at[token] = time.perf_counter()
            handled[token].set()
        return len(seen_at) == len(names)

    # one watch for all the requests (no polling: the API server and fluxd share the CPUs)
    watcher = await following(cluster, path, see, within=60 + 10.0 * len(names))
    # a helm process lives far longer than the sampling period
    async with ChildWatch(fluxd_pid, IN_SYNC_SAMPLE_S).running() as watch:
        for n, name in enumerate(names):
            token = f"bench-{n}-{time.time_ns()}"
            handled[token] = asyncio.Event()
            started = time.perf_counter()
            await cluster.send("PATCH", f"{path}/{name}", {"metadata": {"annotations": {
                "reconcile.fluxcd.io/requestedAt": token}}},
                content_type="application/merge-patch+json")
            async with asyncio.timeout(60):
                await handled[token].wait()
            latencies.append(seen_at[token] - started)
        await watcher
        await asyncio.sleep(health.RENDER_TTL + 0.5)  # a /metrics body is reused that long
    after = await reconcile_durations(session, url, namespace)
    durations: list[float] = []
    extra = 0
    for name in names:
        (s0, c0), (s1, c1) = before.get(name, (0.0, 0.0)), after.get(name, (0.0, 0.0))
        if c1 > c0:
            durations.append((s1 - s0) / (c1 - c0))
            extra += int(c1 - c0) - 1
    return {
        "requests": len(names),
        "reconcile_p50_ms": round(statistics.median(durations) * 1000, 1) if durations else None,
        "reconcile_p95_ms": round(percentile(durations, 0.95) * 1000, 1) if durations else None,
        "reconciles_beyond_one": extra,
        "request_to_handled_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "request_to_handled_p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "processes_started": len(watch.seen),
        "children_cpu_s": round(reaped_cpu(fluxd_pid) - reaped_before, 2),
    }


async def row(cluster: Cluster, *, work: Path, count: int, archive: Path,
              repo: HelmRepoServer, in_sync_count: int) -> dict[str, Any]:
    binary = find_tool("helm")
    if binary is None:
        raise SystemExit("no helm binary next to this Python or on PATH")
    hr_ns, floor_ns = f"hr-{count}", f"floor-{count}"
    within = 600 + 5.0 * count
    kubeconfig = cluster.target.kubeconfig
    server_cpu = cluster.target.server_cpu

    # 1. the helm floor
    await cluster.namespace(floor_ns)
    floor = await helm_floor(binary, archive, kubeconfig, work, count, floor_ns,
                             within=within)

    # 2. all Ready
    await cluster.namespace(hr_ns)
    tag = f"{count}"
    fluxd = start_fluxd(work, kubeconfig, tuned=False, tag=tag)
    try:
        await cluster.apply(f"/apis/{SOURCE_API}/namespaces/{hr_ns}/helmrepositories/charts",
                            helmrepository("charts", hr_ns, repo.url))
        await wait_repository(cluster, hr_ns, "charts")
        names = [release_name(i) for i in range(count)]
        released = Released(set(names))
        path = f"/apis/{HELM_API}/namespaces/{hr_ns}/helmreleases"
        watcher = await following(cluster, path, released.see, within=within)
        cpu_before, _ = proc_stat(fluxd.pid)
        reaped_before = reaped_cpu(fluxd.pid)
        server_before = server_cpu()
        async with ChildWatch(fluxd.pid, SAMPLE_S).running() as watch:
            started = time.perf_counter()
            await cluster.run_all(count, 8, lambda i: (
                "PATCH", f"{path}/{release_name(i)}?fieldManager=bench",
                helmrelease(i, hr_ns, "charts")))
            await watcher
        assert released.last is not None and released.first is not None
        all_ready = released.last - started
        cpu_after, peak = proc_stat(fluxd.pid)
        reaped = reaped_cpu(fluxd.pid) - reaped_before
        server_after = server_cpu()
        deployed = await cluster.send(
            "GET", f"/api/v1/namespaces/{hr_ns}/secrets?labelSelector=owner%3Dhelm%2C"
                   "status%3Ddeployed")
        if len(deployed["items"]) != count:
            raise RuntimeError(f"{len(deployed['items'])} deployed releases, not {count}")

        # 3. in-sync reconciles
        sync = await in_sync(cluster, fluxd.pid, metrics_url(work), hr_ns,
                             names[:: max(count // in_sync_count, 1)][:in_sync_count])
        _, peak = proc_stat(fluxd.pid)
        rss_end = vm_rss_mib(fluxd.pid)
    finally:
        stop(fluxd)
    # where start_fluxd writes the log
    log = Path(os.environ.get("FLUXD_BENCH_LOG") or work / "fluxd.log")
    installs, tests = action_times(log.with_name(f"{log.name}.{tag}"))
    cpu = cpu_after - cpu_before
    result: dict[str, Any] = {
        "n": count, "config": "default",
        "all_ready_s": round(all_ready, 2),
        "first_ready_s": round(released.first - started, 2),
        "helm_floor_s": round(floor.seconds, 2),
        "ratio_to_helm_floor": round(all_ready / floor.seconds, 2),
        "install_p50_s": median_s(installs), "test_p50_s": median_s(tests),
        "floor_install_p50_s": median_s(floor.installs),
        "floor_test_p50_s": median_s(floor.tests),
        "fluxd_cpu_s": round(cpu, 1), "fluxd_cpu_ms_per_hr": round(cpu * 1000 / count, 1),
        "children_cpu_s": round(reaped, 1), "helm_floor_cpu_s": round(floor.cpu, 1),
        "children_cpu_ms_per_hr": round(reaped * 1000 / count, 1),
        "fluxd_peak_rss_mib": round(peak, 1), "fluxd_rss_end_mib": round(rss_end, 1),
        "children_peak_rss_mib": round(watch.peak_rss_kib / 1024, 1),
        "children_most_at_once": watch.most,
        "ready_false_seen": dict(Counter(reason for _, reason in released.not_ready)),
        "in_sync": sync,
    }
    if server_before is not None and server_after is not None:
        result["api_server_cpu_s_fluxd"] = round(server_after - server_before, 1)
    return result


# --------------------------------------------------------------------------- output

COLUMNS: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
    ("n", "N", lambda r: r["n"]),
    ("all_ready_s", "all Ready s", lambda r: r["all_ready_s"]),
    ("helm_floor_s", "helm floor s", lambda r: r["helm_floor_s"]),
    ("ratio", "÷ floor", lambda r: r["ratio_to_helm_floor"]),
    ("first", "first Ready s", lambda r: r["first_ready_s"]),
    ("actions", "install/test p50 s (floor)",
     lambda r: f"{r['install_p50_s']}/{r['test_p50_s']} "
               f"({r['floor_install_p50_s']}/{r['floor_test_p50_s']})"),
    ("cpu", "fluxd CPU s", lambda r: r["fluxd_cpu_s"]),
    ("cpu_hr", "CPU ms/HR", lambda r: r["fluxd_cpu_ms_per_hr"]),
    ("child_cpu", "helm CPU s (floor)",
     lambda r: f"{r['children_cpu_s']} ({r['helm_floor_cpu_s']})"),
    ("rss", "fluxd peak (end) RSS MiB",
     lambda r: f"{r['fluxd_peak_rss_mib']} ({r['fluxd_rss_end_mib']})"),
    ("child_rss", "helm peak RSS MiB", lambda r: r["children_peak_rss_mib"]),
    ("sync", "in-sync p50/p95 ms", lambda r: f"{r['in_sync']['reconcile_p50_ms']}/"
                                             f"{r['in_sync']['reconcile_p95_ms']}"),
    ("handled", "request→handled p50/p95 ms",
     lambda r: f"{r['in_sync']['request_to_handled_p50_ms']}/"
               f"{r['in_sync']['request_to_handled_p95_ms']}"),
    ("procs", "in-sync processes", lambda r: r["in_sync"]["processes_started"]),
    ("api", "API CPU s", lambda r: r.get("api_server_cpu_s_fluxd", "-")),
    ("not_ready", "Ready=False seen", lambda r: ", ".join(
        f"{reason}: {n}" for reason, n in r["ready_false_seen"].items()) or "-"),
]


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(str(get(r)) for _, _, get in COLUMNS) + " |")
    return "\n".join(lines)


async def main_async(sizes: list[int], *, in_sync_count: int,
                     ready_delay: float) -> dict[str, Any]:
    results: dict[str, Any] = {"target": "dev cluster", "rows": []}
    with tempfile.TemporaryDirectory(prefix="fluxd-bench-hr-") as tmp_name:
        tmp = Path(tmp_name)
        binary = find_tool("helm")
        if binary is None:
            raise SystemExit("no helm binary next to this Python or on PATH")
        cli = HelmCLI(binary, tmp / "helm-home")
        with HelmRepoServer(tmp / "repo") as repo:
            archive = cli.package(write_bench_chart(tmp / "src"), repo.root)
            cli.index(repo.root, repo.url)
            for count in sizes:
                work = tmp / f"row-{count}"
                work.mkdir()
                async with dev_cluster(work, ready_delay) as cluster:
                    result = await row(cluster, work=work, count=count, archive=archive,
                                       repo=repo, in_sync_count=in_sync_count)
                print(json.dumps(result), flush=True)
                results["rows"].append(result)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--in-sync", type=int, default=20,
                        help="how many in-sync HelmReleases get a reconcile request")
    parser.add_argument("--ready-delay", type=float, default=0.1,
                        help="dev cluster: seconds before a workload turns ready")
    parser.add_argument("--json", action="store_true", help="print the results as JSON last")
    opts = parser.parse_args()
    sizes = [int(s) for s in opts.sizes.split(",") if s]
    started = time.perf_counter()
    results = asyncio.run(main_async(sizes, in_sync_count=max(opts.in_sync, 1),
                                     ready_delay=opts.ready_delay))
    results["wall_s"] = round(time.perf_counter() - started, 1)
    print(table(results["rows"]))
    print(f"{results['target']}, {os.cpu_count()} CPUs, wall time {results['wall_s']} s")
    if opts.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
