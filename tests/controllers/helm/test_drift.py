"""Drift detection and correction of a release's objects: releases made by the real helm
in the cluster fixture, changed with kubectl, compared and corrected in-process; and end
to end through the HelmRelease controller (``driftDetection.mode`` enabled and warn)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxd.api.helm import API_VERSION as HELM_API
from fluxd.api.helm import HelmReleaseSpec
from fluxd.clock import SystemClock
from fluxd.controllers.helm import drift
from fluxd.controllers.helm.drift import DriftType
from fluxd.controllers.helm.storage import Release, ReleaseStorage
from fluxd.kube import KubeClient
from tests.conftest import Cluster, tool
from tests.controllers.conftest import Flux, condition
from tests.controllers.helm.test_helmrelease import (
    events,
    helmrelease,
    helmrepository,
    publish,
    ready,
    reconcile,
)
from tests.devcluster.test_helm import helm
from tests.support.helmrepo import HelmCLI, HelmRepoServer

pytestmark = pytest.mark.anyio

CHART_YAML = """\
apiVersion: v2
name: drifty
version: 0.1.0
"""

TEMPLATES = {
    "configmap.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-greeting
data:
  greeting: hello
  color: blue
""",
    "secret.yaml": """\
apiVersion: v1
kind: Secret
metadata:
  name: {{ .Release.Name }}-token
stringData:
  token: s3cr3t-value
""",
    "deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
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
    "excluded.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-free
  annotations:
    helm.toolkit.fluxcd.io/driftDetection: disabled
data:
  anything: goes
""",
}


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    async with await KubeClient.connect(clock=SystemClock(),
                                        kubeconfig=str(cluster.kubeconfig)) as client:
        yield client


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    root = tmp_path / "drifty"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text(CHART_YAML)
    for name, text in TEMPLATES.items():
        (root / "templates" / name).write_text(text)
    return root


async def installed(cluster: Cluster, kube: KubeClient, tmp_path: Path, chart: Path,
                    namespace: str) -> Release:
    helm(cluster, tmp_path, "install", "app", str(chart), "--namespace", namespace)
    release = await ReleaseStorage(kube).latest(namespace, "app")
    assert release is not None
    return release


def spec(**drift_detection: Any) -> HelmReleaseSpec:
    return HelmReleaseSpec.model_validate({
        "interval": "10m", "chartRef": {"kind": "OCIRepository", "name": "x"},
        "driftDetection": {"mode": "enabled", **drift_detection}})


# --------------------------------------------------------------------------- in-process


async def test_an_untouched_release_has_no_drift(
        cluster: Cluster, kube: KubeClient, tmp_path: Path, chart: Path,
        namespace: str) -> None:
    release = await installed(cluster, kube, tmp_path, chart, namespace)
    report = await drift.detect(kube, release, spec(), clock=SystemClock())
    assert report.summary == ""
    assert report.changes == []
    kinds = {(e.meta.kind, e.meta.name): e.type for e in report.entries}
    assert kinds == {("ConfigMap", "app-greeting"): DriftType.NONE,
                     ("Secret", "app-token"): DriftType.NONE,
                     ("Deployment", "app-web"): DriftType.NONE,
                     ("ConfigMap", "app-free"): DriftType.EXCLUDE}
    assert report.release == f"{namespace}/app.v1"


async def test_a_changed_and_a_deleted_object_are_drift_and_the_correction_restores_them(
        cluster: Cluster, kube: KubeClient, tmp_path: Path, chart: Path,
        namespace: str) -> None:
    release = await installed(cluster, kube, tmp_path, chart, namespace)
    cluster.kubectl("-n", namespace, "patch", "configmap", "app-greeting", "--type=merge",
            "-p", '{"data":{"greeting":"changed","extra":"x"}}')
    cluster.kubectl("-n", namespace, "delete", "deployment", "app-web")

    report = await drift.detect(kube, release, spec(), clock=SystemClock())
    assert report.summary.splitlines() == [
        f"ConfigMap/{namespace}/app-free excluded",
        f"ConfigMap/{namespace}/app-greeting changed (0 additions, 1 changes, 0 removals)",
        f"Deployment/{namespace}/app-web removed",
    ]
    assert [e.type for e in report.changes] == [DriftType.UPDATE, DriftType.CREATE]

    message = await drift.correct(kube, report, spec(), clock=SystemClock())
    assert message == (f"Cluster state of release {namespace}/app.v1 has been corrected:\n"
                       f"Deployment/{namespace}/app-web created\n"
                       f"ConfigMap/{namespace}/app-greeting configured")
    cm = cluster.kubectl_json("get", "configmap", "app-greeting", "-n", namespace)
    assert cm["data"]["greeting"] == "hello"
    assert cluster.kubectl_json("get", "deployment", "app-web", "-n", namespace)
    again = await drift.detect(kube, release, spec(), clock=SystemClock())
    assert again.summary == ""


async def test_secret_values_never_appear_in_a_report(
        cluster: Cluster, kube: KubeClient, tmp_path: Path, chart: Path,
        namespace: str) -> None:
    release = await installed(cluster, kube, tmp_path, chart, namespace)
    leaked = base64.b64encode(b"leaked-value").decode()
    cluster.kubectl("-n", namespace, "patch", "secret", "app-token", "--type=merge",
            "-p", json.dumps({"data": {"token": leaked}}))
    report = await drift.detect(kube, release, spec(), clock=SystemClock())
    (entry,) = report.changes
    assert entry.meta.kind == "Secret"
    shown = json.dumps(entry.operations)
    original = base64.b64encode(b"s3cr3t-value").decode()
    assert leaked not in shown and original not in shown
    assert entry.operations[0]["value"] == "*** (after)"
    assert entry.operations[0]["oldValue"] == "*** (before)"
    assert leaked not in report.summary and "s3cr3t" not in report.summary

    await drift.correct(kube, report, spec(), clock=SystemClock())
    secret = cluster.kubectl_json("get", "secret", "app-token", "-n", namespace)
    assert secret["data"]["token"] == original


async def test_ignore_rules_and_the_opt_out_annotation_leave_objects_alone(
        cluster: Cluster, kube: KubeClient, tmp_path: Path, chart: Path,
        namespace: str) -> None:
    release = await installed(cluster, kube, tmp_path, chart, namespace)
    cluster.kubectl("-n", namespace, "patch", "configmap", "app-greeting", "--type=merge",
            "-p", '{"data":{"greeting":"changed"}}')
    cluster.kubectl("-n", namespace, "patch", "configmap", "app-free", "--type=merge",
            "-p", '{"data":{"anything":"else"}}')
    cluster.kubectl("-n", namespace, "scale", "deployment", "app-web", "--replicas=3")
    ignoring = spec(ignore=[
        {"paths": ["/data/greeting"], "target": {"kind": "ConfigMap"}},
        {"paths": [""], "target": {"kind": "Deployment", "name": "app-.*"}},
    ])
    report = await drift.detect(kube, release, ignoring, clock=SystemClock())
    assert report.summary == ""
    types = {e.meta.name: e.type for e in report.entries}
    assert types["app-web"] is DriftType.EXCLUDE
    assert types["app-free"] is DriftType.EXCLUDE
    assert types["app-greeting"] is DriftType.NONE

    # the same changes without the rules: the ConfigMap and the Deployment drifted
    plain = await drift.detect(kube, release, spec(), clock=SystemClock())
    assert {e.meta.name for e in plain.changes} == {"app-greeting", "app-web"}


async def test_a_malformed_ignore_rule_is_a_drift_error(
        cluster: Cluster, kube: KubeClient, tmp_path: Path, chart: Path,
        namespace: str) -> None:
    release = await installed(cluster, kube, tmp_path, chart, namespace)
    with pytest.raises(drift.DriftError, match="ignore rule"):
        await drift.detect(kube, release, spec(ignore=[
            {"paths": ["/data"], "target": {"kind": "("}}]), clock=SystemClock())


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def helm_cli(tmp_path: Path) -> HelmCLI:
    return HelmCLI(tool("helm"), tmp_path / "helm-home")


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[HelmRepoServer]:
    with HelmRepoServer(tmp_path / "charts") as srv:
        yield srv


def drifted(status: str, reason: str) -> Any:
    def check(obj: dict[str, Any]) -> bool:
        found = condition(obj, "Drifted")
        return found.get("status") == status and found.get("reason") == reason
    return check


async def test_drift_of_a_release_is_corrected_when_detection_is_enabled(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster) -> None:
    publish(helm_cli, repo, "0.1.0")
    await flux.client.apply(helmrepository("charts", namespace, repo.url))
    await flux.client.apply(helmrelease("web", namespace, values={"greeting": "hi"},
                                        driftDetection={"mode": "enabled"}))
    hr = await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                         lambda o: ready(o) and drifted("False", "NoDriftDetected")(o),
                         within=90)
    assert condition(hr, "Drifted")["message"] == "No drift detected in the cluster state"

    cluster.kubectl("-n", namespace, "patch", "configmap", "web", "--type=merge",
            "-p", '{"data":{"greeting":"changed"}}')
    cluster.kubectl("-n", namespace, "delete", "deployment", "web-app")
    await reconcile(flux, "HelmRelease", HELM_API, "web", namespace, "drift")
    await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                    lambda o: o["status"].get("lastHandledReconcileAt") == "drift"
                    and ready(o), within=90)
    detected = await events(flux, namespace, "DriftDetected")
    assert any(m.startswith(f"Cluster state of release {namespace}/web.v1 has drifted "
                            "from the desired state:\n") and
               f"Deployment/{namespace}/web-app removed" in m for m in detected)
    corrected = await events(flux, namespace, "DriftCorrected")
    assert corrected and f"ConfigMap/{namespace}/web configured" in corrected[-1]
    cm = cluster.kubectl_json("get", "configmap", "web", "-n", namespace)
    assert cm["data"]["greeting"] == "hi"
    assert cluster.kubectl_json("get", "deployment", "web-app", "-n", namespace)


async def test_drift_is_only_reported_in_warn_mode(
        flux: Flux, helm_cli: HelmCLI, repo: HelmRepoServer, namespace: str,
        cluster: Cluster) -> None:
    publish(helm_cli, repo, "0.1.0")
    await flux.client.apply(helmrepository("charts", namespace, repo.url))
    await flux.client.apply(helmrelease("web", namespace, values={"greeting": "hi"},
                                        driftDetection={"mode": "warn"}))
    await flux.wait(HELM_API, "HelmRelease", "web", namespace, ready, within=90)
    cluster.kubectl("-n", namespace, "patch", "configmap", "web", "--type=merge",
            "-p", '{"data":{"greeting":"changed"}}')
    await reconcile(flux, "HelmRelease", HELM_API, "web", namespace, "warn")
    hr = await flux.wait(HELM_API, "HelmRelease", "web", namespace,
                         drifted("True", "DriftDetected"), within=90)
    assert condition(hr, "Drifted")["message"] == \
        f"Cluster state of release {namespace}/web.v1 has drifted from the desired state"
    detected = await events(flux, namespace, "DriftDetected")
    assert any(f"ConfigMap/{namespace}/web changed (0 additions, 1 changes, 0 removals)"
               in m for m in detected)
    assert not await events(flux, namespace, "DriftCorrected")
    cm = cluster.kubectl_json("get", "configmap", "web", "-n", namespace)
    assert cm["data"]["greeting"] == "changed"
