"""The HelmRelease model reads Flux's manifests, defaults and refuses as Flux's CRD does,
and writes camelCase JSON back."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
import yaml

from fluxd.api import crd, helm
from fluxd.api.helm import HelmReleaseSpec, HelmReleaseStatus

# The podinfo example of Flux's HelmRelease documentation, with most options set.
PODINFO = yaml.safe_load("""
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
  namespace: default
spec:
  interval: 10m
  timeout: 5m
  chart:
    spec:
      chart: podinfo
      version: '6.5.*'
      sourceRef:
        kind: HelmRepository
        name: podinfo
      interval: 5m
  releaseName: podinfo
  dependsOn:
    - name: cert-manager
      namespace: infra
  install:
    remediation:
      retries: 3
    crds: CreateReplace
    disableOpenAPIValidation: true
    skipCRDs: false
  upgrade:
    remediation:
      retries: 3
      strategy: rollback
      remediateLastFailure: false
    cleanupOnFail: true
    serverSideApply: auto
  test:
    enable: true
    filters:
      - name: podinfo-grpc
        exclude: true
  driftDetection:
    mode: enabled
    ignore:
      - paths: ["/spec/replicas"]
        target:
          kind: Deployment
  values:
    replicaCount: 2
    ingress:
      enabled: true
      hosts: [{host: podinfo.local}]
  valuesFrom:
    - kind: ConfigMap
      name: podinfo-values
    - kind: Secret
      name: podinfo-secret
      valuesKey: token
      targetPath: auth.token
  postRenderers:
    - kustomize:
        patches:
          - target:
              kind: Deployment
              name: podinfo
            patch: |
              - op: add
                path: /metadata/labels/team
                value: web
        images:
          - name: ghcr.io/stefanprodan/podinfo
            newTag: 6.5.4
  commonMetadata:
    labels:
      app.kubernetes.io/part-of: podinfo
""")

STATUS = {
    "observedGeneration": 2,
    "conditions": [{"type": "Ready", "status": "True", "observedGeneration": 2,
                    "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": "UpgradeSucceeded",
                    "message": "Helm upgrade succeeded for release default/podinfo.v2"}],
    "helmChart": "default/default-podinfo",
    "history": [{
        "apiVersion": "v2", "digest": "sha256:abc", "name": "podinfo", "namespace": "default",
        "version": 2, "status": "deployed", "chartName": "podinfo", "chartVersion": "6.5.4",
        "appVersion": "6.5.4", "configDigest": "sha256:def",
        "firstDeployed": "2026-01-01T00:00:00Z", "lastDeployed": "2026-01-02T00:00:00Z",
        "testHooks": {"podinfo-grpc": {"lastStarted": "2026-01-02T00:00:01Z",
                                       "lastCompleted": "2026-01-02T00:00:02Z",
                                       "phase": "Succeeded"}},
        "ociDigest": "sha256:0123"}],
    "lastAttemptedReleaseAction": "upgrade",
    "lastAttemptedRevision": "6.5.4",
    "lastAttemptedConfigDigest": "sha256:def",
    "lastAttemptedGeneration": 2,
    "storageNamespace": "default",
    "installFailures": 0, "upgradeFailures": 1, "failures": 1,
    "lastHandledReconcileAt": "now", "lastHandledForceAt": "then",
    "lastHandledResetAt": "before",
    "observedPostRenderersDigest": "sha256:1",
    "inventory": {"entries": [{"id": "default_podinfo_apps_Deployment", "v": "v1"}]},
}


def spec(**fields: Any) -> dict[str, Any]:
    return {"interval": "5m", "chartRef": {"kind": "OCIRepository", "name": "podinfo"},
            **fields}


def test_the_documented_example_parses() -> None:
    model = HelmReleaseSpec.model_validate(PODINFO["spec"])
    assert model.chart is not None and model.chart.spec.source_ref.kind == "HelmRepository"
    assert model.install and model.install.remediation
    assert model.install.remediation.retries == 3 and model.install.crds == "CreateReplace"
    assert model.install.disable_open_api_validation is True
    assert model.upgrade and model.upgrade.server_side_apply == "auto"
    assert model.values["ingress"]["hosts"] == [{"host": "podinfo.local"}]
    assert model.values_from and model.values_from[1].target_path == "auth.token"
    assert model.depends_on and model.depends_on[0].namespace == "infra"
    renderer = model.post_renderers[0].kustomize if model.post_renderers else None
    assert renderer and renderer.images and renderer.images[0].new_tag == "6.5.4"


def test_status_with_history_snapshots_parses_and_round_trips() -> None:
    status = HelmReleaseStatus.model_validate(STATUS)
    assert status.history and status.history[0].chart_version == "6.5.4"
    assert status.history[0].test_hooks
    assert status.history[0].test_hooks["podinfo-grpc"].phase == "Succeeded"
    assert status.to_json() == STATUS


def test_round_trip_keeps_flux_camel_case_names() -> None:
    out = HelmReleaseSpec.model_validate(PODINFO["spec"]).to_json()
    assert out["install"]["disableOpenAPIValidation"] is True
    assert out["install"]["skipCRDs"] is False
    assert out["upgrade"]["remediation"]["remediateLastFailure"] is False
    assert out["driftDetection"]["ignore"][0]["paths"] == ["/spec/replicas"]
    assert out["postRenderers"][0]["kustomize"]["images"][0]["newTag"] == "6.5.4"
    assert out["valuesFrom"][1] == {"kind": "Secret", "name": "podinfo-secret",
                                    "valuesKey": "token", "targetPath": "auth.token"}
    assert out["values"] == PODINFO["spec"]["values"]
    assert HelmReleaseSpec.model_validate(out).to_json() == out
    assert "_" not in "".join(_keys(out))


def _keys(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [k for k, v in node.items() if k != "values" for k in (k, *_keys(v))]
    if isinstance(node, list):
        return [k for item in node for k in _keys(item)]
    return []


def test_defaults_are_fluxs() -> None:
    model = HelmReleaseSpec.model_validate(spec(
        chartRef=None, chart={"spec": {"chart": "podinfo", "sourceRef": {
            "kind": "HelmRepository", "name": "podinfo"}, "verify": {}}},
        uninstall={}))
    assert model.chart is not None
    assert model.chart.spec.version == "*"
    assert model.chart.spec.reconcile_strategy == "ChartVersion"
    assert model.chart.spec.verify and model.chart.spec.verify.provider == "cosign"
    assert model.uninstall and model.uninstall.deletion_propagation == "background"
    # Flux leaves the rest to the controller: no CRD default, so nothing is written.
    bare = HelmReleaseSpec.model_validate(spec()).to_json()
    assert bare == {"interval": "5m", "chartRef": {"kind": "OCIRepository", "name": "podinfo"}}


@pytest.mark.parametrize("fields", [
    {"interval": "ten minutes"},
    {"timeout": "5 m"},
    {"releaseName": "x" * 54},
    {"targetNamespace": ""},
    {"storageNamespace": "n" * 64},
    {"chartRef": {"kind": "GitRepository", "name": "podinfo"}},
    {"install": {"crds": "Replace"}},
    {"upgrade": {"remediation": {"strategy": "retry"}}},
    {"upgrade": {"serverSideApply": "true"}},
    {"upgrade": {"chartNameChangeStrategy": "Rename"}},
    {"install": {"strategy": {"name": "RetryOnFailure", "retryInterval": "soon"}}},
    {"install": {"strategy": {}}},
    {"uninstall": {"deletionPropagation": "now"}},
    {"driftDetection": {"mode": "on"}},
    {"driftDetection": {"ignore": [{"target": {"kind": "Deployment"}}]}},
    {"postRenderStrategy": "all"},
    {"waitStrategy": {"name": "kstatus"}},
    {"test": {"filters": [{"name": ""}]}},
    {"valuesFrom": [{"kind": "Pod", "name": "values"}]},
    {"kubeConfig": {}},
])
def test_values_the_crd_forbids_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        HelmReleaseSpec.model_validate(spec(**fields))


def test_chart_template_needs_its_spec_and_source() -> None:
    with pytest.raises(pydantic.ValidationError):
        HelmReleaseSpec.model_validate(spec(chartRef=None, chart={}))
    with pytest.raises(pydantic.ValidationError):
        HelmReleaseSpec.model_validate(spec(chartRef=None, chart={"spec": {
            "chart": "podinfo", "sourceRef": {"kind": "OCIRepository", "name": "p"}}}))


def test_exactly_one_of_chart_or_chart_ref() -> None:
    template = {"spec": {"chart": "podinfo", "sourceRef": {"kind": "HelmRepository",
                                                           "name": "podinfo"}}}
    with pytest.raises(pydantic.ValidationError, match="either chart or chartRef"):
        HelmReleaseSpec.model_validate(spec(chart=template))
    with pytest.raises(pydantic.ValidationError, match="either chart or chartRef"):
        HelmReleaseSpec.model_validate({"interval": "5m"})


def test_status_refuses_an_unknown_release_action() -> None:
    with pytest.raises(pydantic.ValidationError):
        HelmReleaseStatus.model_validate({"lastAttemptedReleaseAction": "rollback"})


def test_crd_is_flux_s() -> None:
    out = crd.crd([helm.HELM_RELEASE])
    assert out["metadata"]["name"] == "helmreleases.helm.toolkit.fluxcd.io"
    names = out["spec"]["names"]
    assert names["shortNames"] == ["hr"] and names["kind"] == "HelmRelease"
    assert names["categories"] == ["all", "fluxcd", "fluxcd-appliers"]
    (version,) = out["spec"]["versions"]
    assert version["name"] == "v2" and version["storage"] and version["served"]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Age", "Ready", "Status"]
    schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert schema["x-kubernetes-validations"] == [{
        "rule": "(has(self.chart) && !has(self.chartRef)) || "
                "(!has(self.chart) && has(self.chartRef))",
        "message": "either chart or chartRef must be set"}]
    assert schema["required"] == ["interval"]
    assert schema["properties"]["values"] == {
        "description": "Values are inline Helm values, of any shape.",
        "x-kubernetes-preserve-unknown-fields": True}
