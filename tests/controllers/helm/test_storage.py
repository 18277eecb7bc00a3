"""Helm's release storage read in-process: releases made by the real helm in the cluster
fixture, read back through ``ReleaseStorage``; hostile Secrets refused; Flux's history
truncation."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fluxd.api.helm import Snapshot, TestHookStatus
from fluxd.clock import SystemClock
from fluxd.controllers.helm import storage
from fluxd.controllers.helm.storage import (
    Release,
    ReleaseStorage,
    StorageError,
    decode,
    retain,
    snapshot,
)
from fluxd.kube import KubeClient, NotFound
from tests.conftest import Cluster, tool
from tests.devcluster.test_helm import helm

pytestmark = pytest.mark.anyio

CHART_YAML = """\
apiVersion: v2
name: shop
version: 1.2.3
appVersion: "4.5"
"""

VALUES = """\
greeting: hello
failTest: false
readyAfter: "0"
padding: 0
"""

TEMPLATES = {
    "configmap.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-greeting
data:
  greeting: {{ .Values.greeting | quote }}
  padding: {{ repeat (int .Values.padding) "x" | quote }}
""",
    "deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  annotations:
    devcluster.fluxd.io/ready-after: {{ .Values.readyAfter | quote }}
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:1.36
""",
    "hook-job.yaml": """\
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: busybox:1.36
""",
    "test-pod.yaml": """\
apiVersion: v1
kind: Pod
metadata:
  name: {{ .Release.Name }}-smoke
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation
    {{- if .Values.failTest }}
    devcluster.fluxd.io/simulate: fail
    {{- end }}
spec:
  restartPolicy: Never
  containers:
  - name: smoke
    image: busybox:1.36
""",
}


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text(CHART_YAML)
    (root / "values.yaml").write_text(VALUES)
    for name, text in TEMPLATES.items():
        (root / "templates" / name).write_text(text)
    return root


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[KubeClient]:
    async with await KubeClient.connect(clock=SystemClock(),
                                        kubeconfig=str(cluster.kubeconfig)) as kube:
        yield kube


def install(cluster: Cluster, tmp_path: Path, chart: Path, namespace: str, *args: str,
            verb: str = "install") -> None:
    helm(cluster, tmp_path, verb, "shop", str(chart), "--namespace", namespace, "--wait",
         "--timeout", "60s", *args)


def stored(cluster: Cluster, namespace: str, version: int) -> bytes:
    """The release JSON exactly as helm wrote it."""
    secret = cluster.kubectl_json("get", "secret", f"sh.helm.release.v1.shop.v{version}",
                                  "-n", namespace)
    return gzip.decompress(base64.b64decode(base64.b64decode(secret["data"]["release"])))


def helm_secret(data: bytes | str, *, type_: str = storage.SECRET_TYPE,
                name: str = "shop", version: int = 1) -> dict[str, Any]:
    """A Secret as the API returns one: ``data`` base64-encoded once more."""
    inner = data if isinstance(data, str) else base64.b64encode(data).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": type_,
            "metadata": {"name": f"sh.helm.release.v1.{name}.v{version}", "namespace": "ns",
                         "labels": {"owner": "helm", "name": name, "version": str(version),
                                    "status": "deployed"}},
            "data": {"release": base64.b64encode(inner.encode()).decode()}}


def release_json(**changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "name": "shop", "namespace": "ns", "version": 1,
        "info": {"first_deployed": "2026-01-02T03:04:05.123456789Z",
                 "last_deployed": "2026-01-02T03:04:05.123456789Z",
                 "description": "Install complete", "status": "deployed"},
        "chart": {"metadata": {"name": "shop", "version": "1.2.3", "appVersion": "4.5"}},
        "config": {"b": 1, "a": 0.000001}, "manifest": "", "hooks": []}
    doc.update(changes)
    return gzip.compress(json.dumps(doc).encode())


# --- reading what helm wrote -------------------------------------------------------------

async def test_latest_reads_the_release_helm_installed(
        cluster: Cluster, namespace: str, chart: Path, tmp_path: Path,
        client: KubeClient) -> None:
    install(cluster, tmp_path, chart, namespace, "--set", "greeting=a<b&c")
    releases = ReleaseStorage(client)

    release = await releases.latest(namespace, "shop")

    assert release is not None
    assert (release.name, release.namespace, release.version, release.status) == (
        "shop", namespace, 1, "deployed")
    assert (release.chart_name, release.chart_version, release.app_version) == (
        "shop", "1.2.3", "4.5")
    assert release.config == {"greeting": "a<b&c"}
    assert release.description == "Install complete"
    assert release.first_deployed is not None and release.first_deployed == \
        release.last_deployed and release.deleted is None
    assert not release.pending
    hooks = {h.name: h for h in release.hooks}
    assert hooks["shop-migrate"].events == ("pre-install", "pre-upgrade")
    assert hooks["shop-migrate"].phase == "Succeeded" and hooks["shop-migrate"].kind == "Job"
    assert hooks["shop-smoke"].events == ("test",) and hooks["shop-smoke"].phase is None
    assert not release.has_been_tested()
    assert sorted((o["kind"], o["metadata"]["name"]) for o in release.objects()) == [
        ("ConfigMap", "shop-greeting"), ("Deployment", "shop-web")]
    # the digest is stable across reads, and the same from a list as from a get
    again = await releases.get(namespace, "shop", 1)
    history = await releases.history(namespace, "shop")
    assert again is not None and again.digest == release.digest == history[0].digest
    assert release.digest.startswith("sha256:") and len(release.digest) == 71


async def test_the_digest_rebuilds_go_encoding_byte_for_byte(
        cluster: Cluster, namespace: str, chart: Path, tmp_path: Path,
        client: KubeClient) -> None:
    """Flux's digest is sha256 over Go's JSON of parts of the release: re-encoding what
    helm (Go) stored gives back its exact bytes, escaping and number text included."""
    install(cluster, tmp_path, chart, namespace, "--set", "greeting=<&>\u2028é",
            "--set-json", 'extra={"z":1e-7,"a":[1.5,10000000000000000000000]}')
    raw = stored(cluster, namespace, 1)
    assert storage._go(json.loads(raw, parse_float=storage._Number)).encode() == raw

    release = await ReleaseStorage(client).latest(namespace, "shop")
    assert release is not None
    doc = json.loads(raw, parse_float=storage._Number)
    hooks = [h for h in doc["hooks"] if "test" not in h["events"]]
    observation = (
        '{"name":"shop","version":1,"info":' + storage._go(doc["info"])
        + ',"chartMetadata":' + storage._go(doc["chart"]["metadata"])
        + ',"config":' + storage._go(storage._sorted(doc["config"]))
        + ',"manifest":' + storage._go(doc["manifest"]) + ',"hooks":' + storage._go(hooks)
        + f',"namespace":"{namespace}"}}\n')
    assert release.digest == "sha256:" + hashlib.sha256(observation.encode()).hexdigest()
    with_oci = observation[:-2] + ',"ociDigest":"sha256:abc"}\n'
    assert release.digest_for("sha256:abc") == \
        "sha256:" + hashlib.sha256(with_oci.encode()).hexdigest()


async def test_history_holds_every_revision_oldest_first(
        cluster: Cluster, namespace: str, chart: Path, tmp_path: Path,
        client: KubeClient) -> None:
    install(cluster, tmp_path, chart, namespace)
    install(cluster, tmp_path, chart, namespace, "--set", "greeting=two", verb="upgrade")
    install(cluster, tmp_path, chart, namespace, "--set", "greeting=three", verb="upgrade")
    releases = ReleaseStorage(client)

    history = await releases.history(namespace, "shop")

    assert [(r.version, r.status) for r in history] == [
        (1, "superseded"), (2, "superseded"), (3, "deployed")]
    assert [r.config.get("greeting") for r in history] == [None, "two", "three"]
    assert len({r.digest for r in history}) == 3
    latest = await releases.latest(namespace, "shop")
    assert latest is not None and latest.version == 3 and latest.digest == history[-1].digest
    second = await releases.get(namespace, "shop", 2)
    assert second is not None and second.config == {"greeting": "two"}
    assert await releases.get(namespace, "shop", 9) is None
    assert await releases.latest(namespace, "other") is None
    assert await releases.history(namespace, "other") == []


async def test_helm_test_runs_show_as_test_hook_phases(
        cluster: Cluster, namespace: str, chart: Path, tmp_path: Path,
        client: KubeClient) -> None:
    install(cluster, tmp_path, chart, namespace)
    releases = ReleaseStorage(client)
    untested = await releases.latest(namespace, "shop")
    helm(cluster, tmp_path, "test", "shop", "--namespace", namespace, "--timeout", "60s")

    passed = await releases.latest(namespace, "shop")

    assert passed is not None and passed.has_been_tested()
    # Flux leaves test hooks out of the digest: a test run does not change it
    assert untested is not None and untested.digest == passed.digest
    hooks = passed.test_hooks()
    assert list(hooks) == ["shop-smoke"] and hooks["shop-smoke"].phase == "Succeeded"
    assert hooks["shop-smoke"].last_started is not None
    assert hooks["shop-smoke"].last_completed is not None
    assert not passed.has_test_in_phase("Failed")

    install(cluster, tmp_path, chart, namespace, "--set", "failTest=true", verb="upgrade")
    done = helm(cluster, tmp_path, "test", "shop", "--namespace", namespace, "--timeout",
                "60s", check=False)
    assert done.returncode != 0
    failed = await releases.latest(namespace, "shop")
    assert failed is not None and failed.version == 2
    assert failed.test_hooks()["shop-smoke"].phase == "Failed"
    assert failed.has_test_in_phase("Failed")


async def test_an_interrupted_install_is_left_pending(
        cluster: Cluster, namespace: str, chart: Path, tmp_path: Path,
        client: KubeClient) -> None:
    env = cluster.env({"HELM_CACHE_HOME": str(tmp_path / "helm-cache"),
                       "HELM_CONFIG_HOME": str(tmp_path / "helm-config"),
                       "HELM_DATA_HOME": str(tmp_path / "helm-data")})
    # the Deployment becomes ready only after an hour: helm waits until it is killed
    proc = await asyncio.create_subprocess_exec(
        tool("helm"), "install", "shop", str(chart), "--namespace", namespace, "--wait",
        "--timeout", "10m", "--set", "readyAfter=1h",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    releases = ReleaseStorage(client)
    try:
        async with asyncio.timeout(60):
            while True:  # polled: the API server is the only one who knows
                if await applied(client, namespace, "shop-web"):
                    break
                await asyncio.sleep(0.2)
    finally:
        proc.kill()
        await proc.wait()

    release = await releases.latest(namespace, "shop")
    assert release is not None and release.status == "pending-install" and release.pending


async def applied(client: KubeClient, namespace: str, name: str) -> bool:
    try:
        await client.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    except NotFound:
        return False
    return True


async def test_a_hostile_secret_in_storage_is_refused(
        cluster: Cluster, namespace: str, client: KubeClient) -> None:
    bomb = gzip.compress(b"{" + b" " * (8 << 20) + b"}")
    secret = helm_secret(bomb)
    secret["metadata"]["namespace"] = namespace
    cluster.kubectl("create", "-f", "-", input=json.dumps(secret))
    releases = ReleaseStorage(client, max_release_bytes=1 << 20)

    with pytest.raises(StorageError, match="inflates beyond"):
        await releases.latest(namespace, "shop")
    with pytest.raises(StorageError, match="inflates beyond"):
        await releases.history(namespace, "shop")


async def test_latest_stays_cheap_with_a_long_history_of_big_releases(
        cluster: Cluster, namespace: str, chart: Path, tmp_path: Path,
        client: KubeClient) -> None:
    """Five revisions of a ~100 KB manifest: latest lists metadata and gets one Secret."""
    install(cluster, tmp_path, chart, namespace, "--set", "padding=100000")
    for n in range(4):
        install(cluster, tmp_path, chart, namespace, "--set", "padding=100000",
                "--set", f"greeting=g{n}", verb="upgrade")
    releases = ReleaseStorage(client)
    await releases.latest(namespace, "shop")  # warm the connection

    started = time.perf_counter()
    for _ in range(10):
        release = await releases.latest(namespace, "shop")
    each = (time.perf_counter() - started) / 10

    assert release is not None and release.version == 5 and len(release.manifest) > 100_000
    assert each < 0.05, f"latest took {each * 1000:.1f} ms"


# --- decoding hostile bytes ----------------------------------------------------------------

def test_a_release_decodes_from_its_secret() -> None:
    release = decode(helm_secret(release_json()))
    assert (release.name, release.version, release.chart_version) == ("shop", 1, "1.2.3")
    assert release.config == {"b": 1, "a": 0.000001}
    assert release.first_deployed == "2026-01-02T03:04:05.123456789Z"


def test_a_release_stored_without_gzip_still_decodes() -> None:
    assert decode(helm_secret(gzip.decompress(release_json()))).name == "shop"


@pytest.mark.parametrize(("secret", "problem"), [
    (helm_secret(release_json(), type_="Opaque"), "type 'Opaque'"),
    (helm_secret("not base64!"), "not base64"),
    (helm_secret(b"\x1f\x8b\x08garbage"), "not gzip"),
    (helm_secret(release_json()[:-12]), "truncated"),
    (helm_secret(gzip.compress(b"{\"name\": ")), "not JSON"),
    (helm_secret(gzip.compress(b"[1, 2]")), "not a JSON object"),
    (helm_secret(gzip.compress(b'{"version": NaN}')), "not JSON"),
    (helm_secret(gzip.compress(b"[" * 100_000 + b"]" * 100_000)), "not JSON"),
    (helm_secret(release_json(version="1")), "not a revision number"),
    (helm_secret(release_json(info=None)), "info is not an object"),
    (helm_secret(release_json(hooks=[{"events": [1]}])), "hook events"),
    (helm_secret(release_json(info={"status": "deployed", "first_deployed": "yesterday"})),
     "not an RFC 3339 time"),
    ({"type": storage.SECRET_TYPE, "data": {}}, "no data.release"),
])
def test_a_malformed_release_secret_is_a_storage_error(secret: dict[str, Any],
                                                       problem: str) -> None:
    with pytest.raises(StorageError, match=problem):
        decode(secret)


def test_a_gzip_bomb_is_stopped_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))
    with pytest.raises(StorageError, match="inflates beyond 1048576 bytes"):
        decode(helm_secret(bomb), max_bytes=1 << 20)


def test_an_oversized_payload_is_refused_before_decoding() -> None:
    secret = helm_secret(b"\x1f\x8b\x08" + b"\0" * (2 << 20))
    with pytest.raises(StorageError, match="larger than 1048576 bytes"):
        decode(secret, max_bytes=1 << 20)


async def test_names_that_are_not_release_names_are_refused(client: KubeClient) -> None:
    releases = ReleaseStorage(client)
    with pytest.raises(ValueError, match="invalid release name"):
        await releases.latest("default", "a,owner!=helm")
    with pytest.raises(ValueError, match="invalid namespace"):
        await releases.history("../kube-system", "shop")


# --- snapshots -------------------------------------------------------------------------------

def test_a_snapshot_carries_the_release_as_flux_records_it() -> None:
    release = decode(helm_secret(release_json(hooks=[
        {"name": "smoke", "kind": "Pod", "path": "t.yaml", "manifest": "", "events": ["test"],
         "last_run": {"started_at": "2026-01-02T03:05:00Z",
                      "completed_at": "2026-01-02T03:05:07Z", "phase": "Failed"}}])))

    snap = snapshot(release, config_digest="sha256:cfg", oci_digest="sha256:oci",
                    action="install")

    assert snap.model_dump(by_alias=True, exclude_none=True, mode="json") == {
        "apiVersion": "v2", "digest": release.digest_for("sha256:oci"), "name": "shop",
        "namespace": "ns", "version": 1, "status": "deployed", "action": "install",
        "chartName": "shop", "chartVersion": "1.2.3", "appVersion": "4.5",
        "configDigest": "sha256:cfg", "firstDeployed": "2026-01-02T03:04:05Z",
        "lastDeployed": "2026-01-02T03:04:05Z", "ociDigest": "sha256:oci"}
    assert release.matches(snap) and snap.digest != release.digest
    tested = snapshot(release, config_digest="sha256:cfg", with_test_hooks=True)
    assert tested.test_hooks == {"smoke": TestHookStatus(
        last_started=datetime(2026, 1, 2, 3, 5, tzinfo=UTC),
        last_completed=datetime(2026, 1, 2, 3, 5, 7, tzinfo=UTC), phase="Failed")}
    assert tested.digest == release.digest and release.matches(tested)
    other = decode(helm_secret(release_json(config={"b": 2})))
    assert not other.matches(tested)


def test_the_values_map_is_digested_with_sorted_keys_as_go_writes_it() -> None:
    a = decode(helm_secret(release_json(config={"b": 1, "a": {"y": 1, "x": 2}})))
    b = decode(helm_secret(release_json(config={"a": {"x": 2, "y": 1}, "b": 1})))
    assert a.digest == b.digest


# --- retain: Flux's Snapshots.Truncate --------------------------------------------------------

def snap(version: int, status: str, *, failed_tests: bool = False) -> Snapshot:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    hooks = {"t": TestHookStatus(phase="Failed")} if failed_tests else None
    return Snapshot(digest=f"sha256:{version}", name="shop", namespace="ns", version=version,
                    status=status, chart_name="shop", chart_version="1.0.0",
                    config_digest="sha256:c", first_deployed=at, last_deployed=at,
                    test_hooks=hooks)


def versions(history: list[Snapshot]) -> list[int]:
    return [s.version for s in history]


def test_retain_keeps_down_to_the_previous_successful_release() -> None:
    history = [snap(5, "failed"), snap(4, "failed"), snap(3, "superseded"), snap(2, "superseded"),
               snap(1, "superseded")]
    assert versions(retain(history)) == [5, 4, 3]
    assert versions(retain([snap(2, "deployed"), snap(1, "superseded")])) == [2, 1]


def test_retain_orders_by_version_newest_first() -> None:
    assert versions(retain([snap(1, "superseded"), snap(3, "failed"), snap(2, "deployed")])) \
        == [3, 2]


def test_retain_skips_a_release_with_failed_tests_unless_they_are_ignored() -> None:
    history = [snap(4, "deployed"), snap(3, "superseded", failed_tests=True),
               snap(2, "superseded"), snap(1, "superseded")]
    assert versions(retain(history)) == [4, 3, 2]
    assert versions(retain(history, ignore_tests=True)) == [4, 3]


def test_retain_keeps_five_when_none_succeeded() -> None:
    history = [snap(v, "failed") for v in range(8, 0, -1)]
    assert versions(retain(history)) == [8, 7, 6, 5, 4]
    assert versions(retain(history[:3])) == [8, 7, 6]
    assert versions(retain([snap(1, "failed")])) == [1] and retain([]) == []


def test_a_release_decoded_twice_is_equal() -> None:
    one: Release = decode(helm_secret(release_json()))
    assert decode(helm_secret(release_json())) == one
