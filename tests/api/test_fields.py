"""Every served kind holds Flux's API field for field: the CRD generated from the models
serves exactly the paths of Flux's CRD, with Flux's types, required fields, enums and
defaults.

The expected fields below are written down from Flux 2.9 (the CRDs flux2 v2.9.4 ships:
source-controller v1.9, kustomize-controller v1.9, notification-controller v1.9), each
dict naming the upstream Go file it comes from. A field Flux adds fails this test until it
is served; a field fluxd serves beyond Flux fails unless ``FLUXD_ADDITIONS`` lists it with
the reason.

One entry per field: ``"spec.verify.secretRef.name": "string!"``. The value is the type
(``string``, ``boolean``, ``integer``, ``int-or-string``, ``object``, ``map[string]`` for a
map of strings, ``any`` for free-form JSON, ``[]<item type>`` for a list whose object
items are listed under ``path[]``), then ``!`` when the field is required in its parent,
`` in a|b`` for an enum and `` = value`` for a default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from fluxd.api import crd, kinds
from tests.conftest import Cluster

CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"

# --------------------------------------------------------------------------- shared types


def under(prefix: str, fields: Mapping[str, str]) -> dict[str, str]:
    """``fields`` of a nested type, placed at ``prefix``."""
    return {f"{prefix}.{name}": kind for name, kind in fields.items()}


# fluxcd/pkg apis/meta/reference_types.go
LOCAL_REF = {"name": "string!"}
SECRET_KEY_REF = {"name": "string!", "key": "string"}

# k8s.io/apimachinery metav1.Condition, as Flux's status.conditions
CONDITION = {
    "type": "string!", "status": "string! in True|False|Unknown",
    "observedGeneration": "integer", "lastTransitionTime": "string!", "reason": "string!",
    "message": "string!",
}

# fluxcd/pkg apis/meta/artifact_types.go
ARTIFACT = {
    "path": "string!", "url": "string!", "revision": "string!", "digest": "string!",
    "lastUpdateTime": "string!", "size": "integer", "metadata": "map[string]",
}

# fluxcd/pkg apis/kustomize/kustomize_types.go
SELECTOR = {
    "group": "string", "version": "string", "kind": "string", "namespace": "string",
    "name": "string", "annotationSelector": "string", "labelSelector": "string",
}

# fluxcd/pkg apis/acl/acl_types.go
ACCESS_FROM = {
    "namespaceSelectors": "[]object!", "namespaceSelectors[].matchLabels": "map[string]",
}


def reconcile_status(*, conditions: bool = True) -> dict[str, str]:
    """``observedGeneration``, ``conditions`` and ``meta.ReconcileRequestStatus``."""
    fields = {"status.observedGeneration": "integer",
              "status.lastHandledReconcileAt": "string"}
    if conditions:
        fields["status.conditions"] = "[]object"
        fields.update(under("status.conditions[]", CONDITION))
    return fields


def artifact_status(prefix: str = "status.artifact") -> dict[str, str]:
    return {prefix: "object", **under(prefix, ARTIFACT)}


def ref(prefix: str, fields: Mapping[str, str] = LOCAL_REF, *,
        required: bool = False) -> dict[str, str]:
    """An object-typed field and its fields."""
    return {prefix: "object!" if required else "object", **under(prefix, fields)}


# ---------------------------------------------------------------- source.toolkit.fluxcd.io/v1

# fluxcd/source-controller api/v1/gitrepository_types.go
GIT_REPOSITORY = {
    "spec.url": "string!",
    **ref("spec.secretRef"),
    "spec.provider": "string in generic|aws|azure|github",
    "spec.serviceAccountName": "string",
    "spec.interval": "string!",
    "spec.timeout": "string = 60s",
    "spec.ref": "object",
    "spec.ref.branch": "string", "spec.ref.tag": "string", "spec.ref.semver": "string",
    "spec.ref.name": "string", "spec.ref.commit": "string",
    "spec.verify": "object",
    "spec.verify.mode": "string in head|HEAD|Tag|TagAndHEAD = HEAD",
    **ref("spec.verify.secretRef", required=True),
    **ref("spec.proxySecretRef"),
    "spec.ignore": "string",
    "spec.suspend": "boolean",
    "spec.recurseSubmodules": "boolean",
    "spec.include": "[]object",
    **ref("spec.include[].repository", required=True),
    "spec.include[].fromPath": "string", "spec.include[].toPath": "string",
    "spec.sparseCheckout": "[]string",
    **reconcile_status(),
    **artifact_status(),
    "status.includedArtifacts": "[]object",
    **under("status.includedArtifacts[]", ARTIFACT),
    "status.observedIgnore": "string",
    "status.observedRecurseSubmodules": "boolean",
    "status.observedInclude": "[]object",
    **ref("status.observedInclude[].repository", required=True),
    "status.observedInclude[].fromPath": "string",
    "status.observedInclude[].toPath": "string",
    "status.observedSparseCheckout": "[]string",
    "status.sourceVerificationMode": "string",
}

# fluxcd/source-controller api/v1/helmrepository_types.go
HELM_REPOSITORY = {
    "spec.url": "string!",
    **ref("spec.secretRef"),
    **ref("spec.certSecretRef"),
    "spec.passCredentials": "boolean",
    "spec.interval": "string",
    "spec.insecure": "boolean",
    "spec.timeout": "string",
    "spec.suspend": "boolean",
    **ref("spec.accessFrom", ACCESS_FROM),
    "spec.type": "string in default|oci",
    "spec.provider": "string in generic|aws|azure|gcp = generic",
    **reconcile_status(),
    "status.url": "string",
    **artifact_status(),
}

# fluxcd/source-controller api/v1/ociverification_types.go (OCIRepositoryVerification)
OCI_VERIFY = {
    "provider": "string! in cosign|notation = cosign",
    "secretRef": "object", "secretRef.name": "string!",
    "matchOIDCIdentity": "[]object",
    "matchOIDCIdentity[].issuer": "string!", "matchOIDCIdentity[].subject": "string!",
}

# fluxcd/source-controller api/v1/helmchart_types.go: v1 has no valuesFile or accessFrom,
# and its verify has no trustedRootSecretRef
HELM_CHART = {
    "spec.chart": "string!",
    "spec.version": "string = *",
    "spec.sourceRef": "object!",
    "spec.sourceRef.apiVersion": "string",
    "spec.sourceRef.kind": "string! in HelmRepository|GitRepository|Bucket",
    "spec.sourceRef.name": "string!",
    "spec.interval": "string!",
    "spec.reconcileStrategy": "string in ChartVersion|Revision = ChartVersion",
    "spec.valuesFiles": "[]string",
    "spec.ignoreMissingValuesFiles": "boolean",
    "spec.suspend": "boolean",
    **ref("spec.verify", OCI_VERIFY),
    **reconcile_status(),
    "status.observedSourceArtifactRevision": "string",
    "status.observedChartName": "string",
    "status.observedValuesFiles": "[]string",
    "status.url": "string",
    **artifact_status(),
}

# fluxcd/source-controller api/v1/ocirepository_types.go, api/v1/ociverification_types.go
OCI_REPOSITORY = {
    "spec.url": "string!",
    "spec.ref": "object",
    "spec.ref.digest": "string", "spec.ref.semver": "string",
    "spec.ref.semverFilter": "string", "spec.ref.tag": "string",
    "spec.layerSelector": "object",
    "spec.layerSelector.mediaType": "string",
    "spec.layerSelector.operation": "string in extract|copy",
    "spec.provider": "string in generic|aws|azure|gcp = generic",
    **ref("spec.secretRef"),
    **ref("spec.verify", OCI_VERIFY),
    **ref("spec.verify.trustedRootSecretRef"),
    "spec.serviceAccountName": "string",
    **ref("spec.certSecretRef"),
    **ref("spec.proxySecretRef"),
    "spec.interval": "string!",
    "spec.timeout": "string = 60s",
    "spec.ignore": "string",
    "spec.insecure": "boolean",
    "spec.suspend": "boolean",
    **reconcile_status(),
    "status.url": "string",
    **artifact_status(),
    "status.observedIgnore": "string",
    "status.observedLayerSelector": "object",
    "status.observedLayerSelector.mediaType": "string",
    "status.observedLayerSelector.operation": "string in extract|copy",
}

# ---------------------------------------------------------------- kustomize.toolkit.fluxcd.io/v1

# fluxcd/kustomize-controller api/v1/kustomization_types.go, api/v1/reference_types.go,
# api/v1/inventory_types.go; fluxcd/pkg apis/meta (KubeConfigReference,
# DependencyReference, History) and apis/kustomize (Patch, Image, Selector,
# CustomHealthCheck)
KUSTOMIZATION = {
    "spec.commonMetadata": "object",
    "spec.commonMetadata.annotations": "map[string]",
    "spec.commonMetadata.labels": "map[string]",
    "spec.dependsOn": "[]object",
    "spec.dependsOn[].name": "string!", "spec.dependsOn[].namespace": "string",
    "spec.dependsOn[].readyExpr": "string",
    "spec.decryption": "object",
    "spec.decryption.provider": "string! in sops",
    "spec.decryption.serviceAccountName": "string",
    **ref("spec.decryption.secretRef"),
    "spec.interval": "string!",
    "spec.retryInterval": "string",
    "spec.kubeConfig": "object",
    **ref("spec.kubeConfig.configMapRef"),
    **ref("spec.kubeConfig.secretRef", SECRET_KEY_REF),
    "spec.path": "string",
    "spec.postBuild": "object",
    "spec.postBuild.substitute": "map[string]",
    "spec.postBuild.substituteFrom": "[]object",
    "spec.postBuild.substituteFrom[].kind": "string! in Secret|ConfigMap",
    "spec.postBuild.substituteFrom[].name": "string!",
    "spec.postBuild.substituteFrom[].optional": "boolean = false",
    "spec.postBuild.substituteStrategy": "string in WithVariables|Always",
    "spec.prune": "boolean!",
    "spec.deletionPolicy": "string in MirrorPrune|Delete|WaitForTermination|Orphan",
    "spec.healthChecks": "[]object",
    "spec.healthChecks[].apiVersion": "string", "spec.healthChecks[].kind": "string!",
    "spec.healthChecks[].name": "string!", "spec.healthChecks[].namespace": "string",
    "spec.namePrefix": "string",
    "spec.nameSuffix": "string",
    "spec.patches": "[]object",
    "spec.patches[].patch": "string!",
    **ref("spec.patches[].target", SELECTOR),
    "spec.images": "[]object",
    "spec.images[].name": "string!", "spec.images[].newName": "string",
    "spec.images[].newTag": "string", "spec.images[].digest": "string",
    "spec.serviceAccountName": "string",
    "spec.sourceRef": "object!",
    "spec.sourceRef.apiVersion": "string",
    "spec.sourceRef.kind": "string! in OCIRepository|GitRepository|Bucket|ExternalArtifact",
    "spec.sourceRef.name": "string!",
    "spec.sourceRef.namespace": "string",
    "spec.suspend": "boolean",
    "spec.targetNamespace": "string",
    "spec.timeout": "string",
    "spec.force": "boolean = false",
    "spec.wait": "boolean",
    "spec.buildMetadata": "[]string in originAnnotations|transformerAnnotations",
    "spec.components": "[]string",
    "spec.ignoreMissingComponents": "boolean",
    "spec.healthCheckExprs": "[]object",
    "spec.healthCheckExprs[].apiVersion": "string!", "spec.healthCheckExprs[].kind": "string!",
    "spec.healthCheckExprs[].current": "string!",
    "spec.healthCheckExprs[].inProgress": "string",
    "spec.healthCheckExprs[].failed": "string",
    "spec.ignore": "[]object",
    "spec.ignore[].paths": "[]string!",
    **ref("spec.ignore[].target", SELECTOR),
    **reconcile_status(),
    "status.lastAppliedRevision": "string",
    "status.lastAppliedOriginRevision": "string",
    "status.lastAttemptedRevision": "string",
    "status.inventory": "object",
    "status.inventory.entries": "[]object!",
    "status.inventory.entries[].id": "string!", "status.inventory.entries[].v": "string!",
    "status.history": "[]object",
    "status.history[].digest": "string!",
    "status.history[].firstReconciled": "string!",
    "status.history[].lastReconciled": "string!",
    "status.history[].lastReconciledDuration": "string!",
    "status.history[].lastReconciledStatus": "string!",
    "status.history[].totalReconciliations": "integer!",
    "status.history[].metadata": "map[string]",
}

# ---------------------------------------------------------------- helm.toolkit.fluxcd.io/v2

# fluxcd/helm-controller api/v2/helmrelease_types.go, api/v2/snapshot_types.go,
# api/v2/reference_types.go; fluxcd/pkg apis/meta (KubeConfigReference,
# DependencyReference, ValuesReference) and apis/kustomize (Patch, Image, Selector,
# CustomHealthCheck)
ACTION_STRATEGY = {"name": "string! in RemediateOnFailure|RetryOnFailure",
                   "retryInterval": "string"}
ACTION_FLAGS = {"timeout": "string", "disableTakeOwnership": "boolean",
                "disableWait": "boolean", "disableWaitForJobs": "boolean",
                "disableHooks": "boolean", "disableOpenAPIValidation": "boolean",
                "disableSchemaValidation": "boolean",
                "crds": "string in Skip|Create|CreateReplace"}
HELM_RELEASE = {
    "spec.chart": "object",
    "spec.chart.metadata": "object",
    "spec.chart.metadata.labels": "map[string]",
    "spec.chart.metadata.annotations": "map[string]",
    "spec.chart.spec": "object!",
    "spec.chart.spec.chart": "string!",
    "spec.chart.spec.version": "string = *",
    **ref("spec.chart.spec.sourceRef", {
        "apiVersion": "string", "kind": "string! in HelmRepository|GitRepository|Bucket",
        "name": "string!", "namespace": "string"}, required=True),
    "spec.chart.spec.interval": "string",
    "spec.chart.spec.reconcileStrategy": "string in ChartVersion|Revision = ChartVersion",
    "spec.chart.spec.valuesFiles": "[]string",
    "spec.chart.spec.ignoreMissingValuesFiles": "boolean",
    **ref("spec.chart.spec.verify", OCI_VERIFY),
    **ref("spec.chartRef", {
        "apiVersion": "string", "kind": "string! in OCIRepository|HelmChart|ExternalArtifact",
        "name": "string!", "namespace": "string"}),
    "spec.interval": "string!",
    "spec.kubeConfig": "object",
    **ref("spec.kubeConfig.configMapRef"),
    **ref("spec.kubeConfig.secretRef", SECRET_KEY_REF),
    "spec.suspend": "boolean",
    "spec.releaseName": "string",
    "spec.targetNamespace": "string",
    "spec.storageNamespace": "string",
    "spec.dependsOn": "[]object",
    "spec.dependsOn[].name": "string!", "spec.dependsOn[].namespace": "string",
    "spec.dependsOn[].readyExpr": "string",
    "spec.timeout": "string",
    "spec.maxHistory": "integer",
    "spec.serviceAccountName": "string",
    "spec.persistentClient": "boolean",
    "spec.driftDetection": "object",
    "spec.driftDetection.mode": "string in enabled|warn|disabled",
    "spec.driftDetection.ignore": "[]object",
    "spec.driftDetection.ignore[].paths": "[]string!",
    **ref("spec.driftDetection.ignore[].target", SELECTOR),
    "spec.install": "object",
    **under("spec.install", ACTION_FLAGS),
    **ref("spec.install.strategy", ACTION_STRATEGY),
    **ref("spec.install.remediation", {
        "retries": "integer", "ignoreTestFailures": "boolean",
        "remediateLastFailure": "boolean"}),
    "spec.install.replace": "boolean",
    "spec.install.skipCRDs": "boolean",
    "spec.install.createNamespace": "boolean",
    "spec.install.serverSideApply": "boolean",
    "spec.upgrade": "object",
    **under("spec.upgrade", ACTION_FLAGS),
    **ref("spec.upgrade.strategy", ACTION_STRATEGY),
    **ref("spec.upgrade.remediation", {
        "retries": "integer", "ignoreTestFailures": "boolean",
        "remediateLastFailure": "boolean", "strategy": "string in rollback|uninstall"}),
    "spec.upgrade.force": "boolean",
    "spec.upgrade.preserveValues": "boolean",
    "spec.upgrade.cleanupOnFail": "boolean",
    "spec.upgrade.serverSideApply": "string in enabled|disabled|auto",
    "spec.upgrade.chartNameChangeStrategy": "string in Reinstall|InPlaceUpdate",
    "spec.test": "object",
    "spec.test.enable": "boolean", "spec.test.timeout": "string",
    "spec.test.ignoreFailures": "boolean",
    "spec.test.filters": "[]object",
    "spec.test.filters[].name": "string!", "spec.test.filters[].exclude": "boolean",
    "spec.rollback": "object",
    **under("spec.rollback", {
        "timeout": "string", "disableWait": "boolean", "disableWaitForJobs": "boolean",
        "disableHooks": "boolean", "recreate": "boolean", "force": "boolean",
        "cleanupOnFail": "boolean", "serverSideApply": "boolean"}),
    "spec.uninstall": "object",
    **under("spec.uninstall", {
        "timeout": "string", "disableHooks": "boolean", "keepHistory": "boolean",
        "disableWait": "boolean",
        "deletionPropagation": "string in background|foreground|orphan = background"}),
    "spec.valuesFrom": "[]object",
    "spec.valuesFrom[].kind": "string! in Secret|ConfigMap",
    "spec.valuesFrom[].name": "string!",
    "spec.valuesFrom[].valuesKey": "string",
    "spec.valuesFrom[].targetPath": "string",
    "spec.valuesFrom[].optional": "boolean",
    "spec.valuesFrom[].literal": "boolean",
    "spec.values": "any",
    "spec.postRenderers": "[]object",
    "spec.postRenderers[].kustomize": "object",
    "spec.postRenderers[].kustomize.patches": "[]object",
    "spec.postRenderers[].kustomize.patches[].patch": "string!",
    **ref("spec.postRenderers[].kustomize.patches[].target", SELECTOR),
    "spec.postRenderers[].kustomize.images": "[]object",
    **under("spec.postRenderers[].kustomize.images[]", {
        "name": "string!", "newName": "string", "newTag": "string", "digest": "string"}),
    "spec.postRenderStrategy": "string in nohooks|combined|separate",
    "spec.commonMetadata": "object",
    "spec.commonMetadata.annotations": "map[string]",
    "spec.commonMetadata.labels": "map[string]",
    **ref("spec.waitStrategy", {"name": "string! in poller|legacy"}),
    "spec.healthCheckExprs": "[]object",
    **under("spec.healthCheckExprs[]", {
        "apiVersion": "string!", "kind": "string!", "current": "string!",
        "inProgress": "string", "failed": "string"}),
    **reconcile_status(),
    "status.observedPostRenderersDigest": "string",
    "status.observedCommonMetadataDigest": "string",
    "status.lastAttemptedGeneration": "integer",
    "status.helmChart": "string",
    "status.storageNamespace": "string",
    "status.history": "[]object",
    **under("status.history[]", {
        "apiVersion": "string", "digest": "string!", "name": "string!",
        "namespace": "string!", "version": "integer!", "status": "string!",
        "action": "string", "chartName": "string!", "chartVersion": "string!",
        "appVersion": "string", "configDigest": "string!", "firstDeployed": "string!",
        "lastDeployed": "string!", "deleted": "string", "testHooks": "map[object]",
        "ociDigest": "string"}),
    "status.inventory": "object",
    "status.inventory.entries": "[]object!",
    "status.inventory.entries[].id": "string!", "status.inventory.entries[].v": "string!",
    "status.lastAttemptedReleaseAction": "string in install|upgrade",
    "status.lastAttemptedReleaseActionDuration": "string",
    "status.failures": "integer",
    "status.installFailures": "integer",
    "status.upgradeFailures": "integer",
    "status.lastAttemptedRevision": "string",
    "status.lastAttemptedRevisionDigest": "string",
    "status.lastAttemptedValuesChecksum": "string",
    "status.lastReleaseRevision": "integer",
    "status.lastAttemptedConfigDigest": "string",
    "status.lastHandledForceAt": "string",
    "status.lastHandledResetAt": "string",
}

# ---------------------------------------------------------------- notification.toolkit.fluxcd.io

# fluxcd/notification-controller api/v1beta3/provider_types.go
PROVIDER_TYPES = (
    "slack", "discord", "msteams", "rocket", "generic", "generic-hmac", "github", "gitlab",
    "gitea", "bitbucketserver", "bitbucket", "azuredevops", "googlechat", "googlepubsub",
    "webex", "sentry", "azureeventhub", "telegram", "lark", "matrix", "opsgenie",
    "alertmanager", "grafana", "githubdispatch", "pagerduty", "datadog", "nats", "zulip",
    "otel", "zoom", "incident.io", "githubpullrequestcomment", "gitlabmergerequestcomment",
    "giteapullrequestcomment",
)
PROVIDER = {
    "spec.type": "string! in " + "|".join(PROVIDER_TYPES),
    "spec.interval": "string",
    "spec.channel": "string",
    "spec.username": "string",
    "spec.address": "string",
    "spec.timeout": "string",
    "spec.proxy": "string",
    **ref("spec.proxySecretRef"),
    **ref("spec.secretRef"),
    "spec.serviceAccountName": "string",
    **ref("spec.certSecretRef"),
    "spec.suspend": "boolean",
    "spec.commitStatusExpr": "string",
}

# fluxcd/notification-controller api/v1/reference_types.go (CrossNamespaceObjectReference)
EVENT_SOURCE = {
    "apiVersion": "string",
    "kind": "string! in Bucket|GitRepository|Kustomization|HelmRelease|HelmChart|"
            "HelmRepository|ImageRepository|ImagePolicy|ImageUpdateAutomation|"
            "OCIRepository|ArtifactGenerator|ExternalArtifact",
    "name": "string!", "namespace": "string", "matchLabels": "map[string]",
}

# fluxcd/notification-controller api/v1beta3/alert_types.go
ALERT = {
    **ref("spec.providerRef", required=True),
    "spec.eventSeverity": "string in info|error = info",
    "spec.eventSources": "[]object!",
    **under("spec.eventSources[]", EVENT_SOURCE),
    "spec.inclusionList": "[]string",
    "spec.eventMetadata": "map[string]",
    "spec.exclusionList": "[]string",
    "spec.summary": "string",
    "spec.suspend": "boolean",
}

# fluxcd/notification-controller api/v1/receiver_types.go
RECEIVER = {
    "spec.type": "string! in generic|generic-hmac|generic-oidc|github|gitlab|bitbucket|"
                 "harbor|dockerhub|quay|gcr|nexus|acr|cdevents",
    "spec.interval": "string = 10m",
    "spec.events": "[]string",
    "spec.resources": "[]object!",
    **under("spec.resources[]", EVENT_SOURCE),
    "spec.resources[].filter": "string",
    "spec.resourceFilter": "string",
    **ref("spec.secretRef"),
    "spec.oidcProviders": "[]object",
    "spec.oidcProviders[].issuerURL": "string!",
    "spec.oidcProviders[].audience": "string",
    "spec.oidcProviders[].variables": "[]object",
    "spec.oidcProviders[].variables[].name": "string!",
    "spec.oidcProviders[].variables[].expression": "string!",
    "spec.oidcProviders[].validations": "[]object!",
    "spec.oidcProviders[].validations[].expression": "string!",
    "spec.oidcProviders[].validations[].message": "string!",
    "spec.suspend": "boolean",
    **reconcile_status(),
    "status.webhookPath": "string",
}

EXPECTED: dict[str, dict[str, str]] = {
    "source.toolkit.fluxcd.io/v1 GitRepository": GIT_REPOSITORY,
    "source.toolkit.fluxcd.io/v1 HelmRepository": HELM_REPOSITORY,
    "source.toolkit.fluxcd.io/v1 HelmChart": HELM_CHART,
    "source.toolkit.fluxcd.io/v1 OCIRepository": OCI_REPOSITORY,
    "kustomize.toolkit.fluxcd.io/v1 Kustomization": KUSTOMIZATION,
    "helm.toolkit.fluxcd.io/v2 HelmRelease": HELM_RELEASE,
    "notification.toolkit.fluxcd.io/v1beta3 Provider": PROVIDER,
    "notification.toolkit.fluxcd.io/v1beta3 Alert": ALERT,
    "notification.toolkit.fluxcd.io/v1 Receiver": RECEIVER,
}

#: fields fluxd serves beyond Flux's API, by kind, each with the reason; none today
FLUXD_ADDITIONS: dict[str, dict[str, str]] = {}


# --------------------------------------------------------------------------- reading the CRD


def _describe(node: Mapping[str, Any], *, required: bool) -> str:
    """One field's entry, in the notation of the module docstring."""
    kind = node.get("type")
    enum = node.get("enum")
    if node.get("x-kubernetes-int-or-string"):
        text = "int-or-string"
    elif kind == "array":
        items = node.get("items") or {}
        text = "[]" + _describe(items, required=False).split(" ")[0]
        enum = enum or items.get("enum")
    elif kind == "object" and "properties" not in node:
        extra = node.get("additionalProperties")
        text = f"map[{extra.get('type')}]" if isinstance(extra, Mapping) else "any"
    elif kind is None:
        text = "any"
    else:
        text = str(kind)
    if required:
        text += "!"
    if enum:
        text += " in " + "|".join(str(value) for value in enum)
    if "default" in node:
        default = node["default"]
        text += " = " + (str(default).lower() if isinstance(default, bool) else str(default))
    return text


def served_fields(schema: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Every field path under ``schema`` with its entry; list items appear as ``[]``."""
    out: dict[str, str] = {}
    required = set(schema.get("required") or ())
    for name, node in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}" if prefix else name
        out[path] = _describe(node, required=name in required)
        if node.get("type") == "array":
            items = node.get("items") or {}
            if items.get("type") == "object":
                out.update(served_fields(items, f"{path}[]"))
        elif node.get("type") == "object":
            out.update(served_fields(node, path))
    return out


def kind_fields(kind: crd.Kind) -> dict[str, str]:
    """The spec and status fields the CRD of ``kind`` serves."""
    schema = crd.openapi_schema(kind)["properties"]
    out: dict[str, str] = {}
    for root in ("spec", "status"):
        if root in schema:
            out.update(served_fields(schema[root], root))
    return out


SERVED = {f"{k.api_version} {k.kind}": k for k in kinds.all_kinds()}


# --------------------------------------------------------------------------- tests


def test_every_served_kind_has_its_expected_fields_written_down() -> None:
    assert sorted(SERVED) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_served_kind_has_exactly_fluxs_fields(name: str) -> None:
    served = kind_fields(SERVED[name])
    expected = EXPECTED[name]
    additions = FLUXD_ADDITIONS.get(name, {})
    missing = sorted(set(expected) - set(served))
    extra = sorted(set(served) - set(expected) - set(additions))
    different = sorted(f"{path}: served {served[path]!r}, Flux {expected[path]!r}"
                       for path in set(expected) & set(served)
                       if served[path] != expected[path])
    assert (missing, extra, different) == ([], [], []), (
        f"{name} differs from Flux's API:\n  missing: {missing}\n  not in Flux: {extra}\n"
        "  different: " + "\n    ".join(different))


def test_every_fluxd_addition_is_served_and_has_a_reason() -> None:
    for name, fields in FLUXD_ADDITIONS.items():
        served = kind_fields(SERVED[name])
        for path, reason in fields.items():
            assert path in served, f"{name}: {path} is listed as an addition but not served"
            assert reason.strip(), f"{name}: {path} needs the reason it is served"


def test_the_notation_reads_types_requiredness_enums_and_defaults() -> None:
    schema = {"type": "object", "required": ["a", "m"], "properties": {
        "a": {"type": "string", "enum": ["x", "y"], "default": "x"},
        "b": {"type": "array", "items": {"type": "object", "required": ["c"],
                                          "properties": {"c": {"type": "boolean"}}}},
        "m": {"type": "object", "additionalProperties": {"type": "string"}},
        "n": {"type": "integer", "format": "int64"},
        "p": {"x-kubernetes-int-or-string": True},
        "f": {"type": "boolean", "default": False},
        "s": {"type": "array", "items": {"type": "string", "enum": ["k"]}},
    }}
    assert served_fields(schema, "spec") == {
        "spec.a": "string! in x|y = x", "spec.b": "[]object", "spec.b[].c": "boolean!",
        "spec.m": "map[string]!", "spec.n": "integer", "spec.p": "int-or-string",
        "spec.f": "boolean = false", "spec.s": "[]string in k",
    }


# --------------------------------------------------------------------------- through kubectl


def test_fields_flux_added_are_kept_by_the_api_server(cluster: Cluster, namespace: str) -> None:
    """Applied with kubectl against the committed CRDs, the fields the earlier CRDs lacked
    are stored, not pruned without a word."""
    for name in ("kustomize.toolkit.fluxcd.io_kustomizations.yaml",
                 "source.toolkit.fluxcd.io_ocirepositories.yaml"):
        cluster.kubectl("apply", "--server-side", "-f", str(CRDS / name))
    for name in ("kustomizations.kustomize.toolkit.fluxcd.io",
                 "ocirepositories.source.toolkit.fluxcd.io"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s")
    ignore = [{"paths": ["/spec/replicas"], "target": {"kind": "Deployment"}}]
    kustomization: dict[str, Any] = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "apps"},
        "spec": {"interval": "10m", "prune": True,
                 "sourceRef": {"kind": "GitRepository", "name": "repo"},
                 "ignore": ignore, "buildMetadata": ["originAnnotations"],
                 "postBuild": {"substituteStrategy": "Always"}}}
    oci: dict[str, Any] = {
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
        "metadata": {"name": "app"},
        "spec": {"url": "oci://registry.example/app", "interval": "5m",
                 "verify": {"secretRef": {"name": "keys"},
                            "trustedRootSecretRef": {"name": "sigstore"}}}}
    for manifest in (kustomization, oci):
        cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-",
                        input=json.dumps(manifest))
    stored = cluster.kubectl_json("get", "-n", namespace, "kustomization/apps")["spec"]
    assert stored["ignore"] == ignore
    assert stored["buildMetadata"] == ["originAnnotations"]
    assert stored["postBuild"] == {"substituteStrategy": "Always"}
    verify = cluster.kubectl_json("get", "-n", namespace, "ocirepository/app")["spec"]["verify"]
    assert verify == {"provider": "cosign", "secretRef": {"name": "keys"},
                      "trustedRootSecretRef": {"name": "sigstore"}}


def test_values_outside_fluxs_enums_are_refused(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "--server-side", "-f",
                    str(CRDS / "kustomize.toolkit.fluxcd.io_kustomizations.yaml"))
    cluster.kubectl("wait", "--for=condition=Established",
                    "crd/kustomizations.kustomize.toolkit.fluxcd.io", "--timeout=30s")
    manifest = yaml.safe_dump({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": "apps"},
        "spec": {"interval": "10m", "prune": True,
                 "sourceRef": {"kind": "GitRepository", "name": "repo"},
                 "buildMetadata": ["managedByLabel"],
                 "patches": [{"target": {"kind": "Deployment"}}]}})
    done = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest, check=False)
    assert done.returncode != 0
    assert "spec.buildMetadata[0]: Unsupported value: \"managedByLabel\"" in done.stderr
    assert "spec.patches[0].patch: Required value" in done.stderr
