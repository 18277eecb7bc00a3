"""``helm.toolkit.fluxcd.io/v2``: the HelmRelease kind, field for field as Flux serves it.

The fields are those of the CRD Flux 2.9 ships (helm-controller v1.6): a release either
templates a HelmChart (``spec.chart``) or points at an existing chart source
(``spec.chartRef``), never both; the action sub-objects (install, upgrade, test, rollback,
uninstall) carry Flux's enums and defaults; ``status.history`` holds release snapshots
rather than the ``meta`` reconciliation history Kustomizations keep. The kustomize types of
the post-renderers, drift-ignore rules and common metadata are those of
``fluxd.api.kustomize``; the chart verification is the source API's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from fluxd.api.crd import AGE_COLUMN, READY_COLUMN, STATUS_COLUMN, Kind
from fluxd.api.kustomize import (
    CommonMetadata,
    CustomHealthCheck,
    IgnoreRule,
    Image,
    Patch,
    ResourceInventory,
)
from fluxd.api.meta import (
    DURATION_PATTERN,
    ConditionList,
    DependencyReference,
    FluxModel,
    Int64,
    KubeConfigReference,
    Time,
    ValuesReference,
)
from fluxd.api.source import OCIVerification

GROUP = "helm.toolkit.fluxcd.io"
VERSION = "v2"
API_VERSION = f"{GROUP}/{VERSION}"

#: A Go duration, as the action timeouts and intervals accept it.
_Duration = Annotated[str, Field(pattern=DURATION_PATTERN)]


class ChartSourceReference(FluxModel):
    """ChartSourceReference names the source a templated HelmChart fetches its chart
    from."""

    api_version: str | None = None
    """API version of the source."""
    kind: Literal["HelmRepository", "GitRepository", "Bucket"]
    """Kind of the source."""
    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Name of the source."""
    namespace: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    """Namespace of the source; the HelmRelease's namespace when not set."""


class ChartReference(FluxModel):
    """ChartReference points at an existing object whose artifact is the chart."""

    api_version: str | None = None
    """API version of the referent."""
    kind: Literal["OCIRepository", "HelmChart", "ExternalArtifact"]
    """Kind of the referent."""
    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Name of the referent."""
    namespace: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    """Namespace of the referent; the HelmRelease's namespace when not set."""


class HelmChartTemplateObjectMeta(FluxModel):
    """HelmChartTemplateObjectMeta holds the labels and annotations given to the
    templated HelmChart."""

    labels: dict[str, str] | None = None
    """Labels set on the HelmChart."""
    annotations: dict[str, str] | None = None
    """Annotations set on the HelmChart."""


class HelmChartTemplateSpec(FluxModel):
    """HelmChartTemplateSpec is the spec of the HelmChart generated for the release."""

    chart: Annotated[str, Field(min_length=1, max_length=2048)]
    """Chart is the chart's name in a Helm repository, or its path in a Git or Bucket
    source."""
    version: str = "*"
    """Version is a semver range for charts from a HelmRepository (ignored for Git and
    Bucket sources); the latest version when not set."""
    source_ref: ChartSourceReference
    """SourceRef is the source the chart is fetched from."""
    interval: _Duration | None = None
    """Interval at which the source is checked for a new chart; the HelmRelease's
    interval when not set."""
    reconcile_strategy: Literal["ChartVersion", "Revision"] = "ChartVersion"
    """ReconcileStrategy decides what makes a new chart artifact: a new 'ChartVersion'
    (the default) or any new source 'Revision'."""
    values_files: list[str] | None = None
    """ValuesFiles lists values files in the source, merged in order (later ones win),
    used instead of the chart's own values.yaml."""
    ignore_missing_values_files: bool | None = None
    """IgnoreMissingValuesFiles skips values files missing from the source instead of
    failing."""
    verify: OCIVerification | None = None
    """Verify checks the signature of a chart stored in an OCI registry; dependencies not
    bundled in the chart are not verified."""


class HelmChartTemplate(FluxModel):
    """HelmChartTemplate describes the HelmChart created for the release, next to its
    source."""

    metadata: HelmChartTemplateObjectMeta | None = None
    """Metadata holds labels and annotations for the HelmChart."""
    spec: HelmChartTemplateSpec
    """Spec is the HelmChart's spec."""


class DriftDetection(FluxModel):
    """DriftDetection compares the release manifest with the objects in the cluster and
    says what to do about differences."""

    mode: Literal["enabled", "warn", "disabled"] | None = None
    """Mode is 'enabled' (correct drift with an upgrade), 'warn' (only report it) or
    'disabled' (the default: do not look)."""
    ignore: list[IgnoreRule] | None = None
    """Ignore lists rules naming fields left out of the comparison."""


class ActionStrategy(FluxModel):
    """ActionStrategy says what follows a failed install or upgrade."""

    name: Literal["RemediateOnFailure", "RetryOnFailure"]
    """Name is 'RemediateOnFailure' (remediate as the action's remediation says, the
    default) or 'RetryOnFailure' (retry the action after RetryInterval, without
    remediation)."""
    retry_interval: _Duration | None = None
    """RetryInterval is how long to wait before retrying with RetryOnFailure; 5m when
    not set."""


class InstallRemediation(FluxModel):
    """InstallRemediation says how a failed install is remediated (by uninstalling)."""

    retries: int | None = None
    """Retries is how many times a failed install is retried, with an uninstall in
    between; 0 when not set, a negative number means without end."""
    ignore_test_failures: bool | None = None
    """IgnoreTestFailures leaves failing tests after an install unremediated; Test's
    IgnoreFailures when not set."""
    remediate_last_failure: bool | None = None
    """RemediateLastFailure remediates the last failure too, once no retry is left;
    false when not set."""


class UpgradeRemediation(FluxModel):
    """UpgradeRemediation says how a failed upgrade is remediated."""

    retries: int | None = None
    """Retries is how many times a failed upgrade is retried, remediating in between; 0
    when not set, a negative number means without end."""
    ignore_test_failures: bool | None = None
    """IgnoreTestFailures leaves failing tests after an upgrade unremediated; Test's
    IgnoreFailures when not set."""
    remediate_last_failure: bool | None = None
    """RemediateLastFailure remediates the last failure too, once no retry is left; true
    when not set and Retries is above 0, false otherwise."""
    strategy: Literal["rollback", "uninstall"] | None = None
    """Strategy is how a failed upgrade is remediated: 'rollback' (the default) or
    'uninstall'."""


class _ReleaseAction(FluxModel):
    """The options install and upgrade share: ownership, waiting, hooks and
    validation."""

    disable_take_ownership: bool | None = None
    """DisableTakeOwnership refuses to adopt existing objects the release does not own
    yet."""
    disable_wait: bool | None = None
    """DisableWait skips waiting for the released objects to be ready."""
    disable_wait_for_jobs: bool | None = None
    """DisableWaitForJobs skips waiting for the released Jobs to complete."""
    disable_hooks: bool | None = None
    """DisableHooks skips the chart's hooks during the action."""
    disable_open_api_validation: bool | None = Field(
        default=None, alias="disableOpenAPIValidation")
    """DisableOpenAPIValidation skips validating the rendered manifests against the
    cluster's OpenAPI schema."""
    disable_schema_validation: bool | None = None
    """DisableSchemaValidation skips validating the values against the chart's JSON
    schema."""


class Install(_ReleaseAction):
    """Install configures the Helm install action."""

    timeout: _Duration | None = None
    """Timeout for each Kubernetes operation of the install; the HelmRelease's Timeout
    when not set."""
    remediation: InstallRemediation | None = None
    """Remediation says what to do when the install fails; nothing by default."""
    strategy: ActionStrategy | None = None
    """Strategy says what follows a failed install."""
    replace: bool | None = None
    """Replace reuses the release name when it belongs to a deleted release kept in the
    history."""
    skip_crds: bool | None = Field(default=None, alias="skipCRDs")
    """SkipCRDs installs no CRDs. Deprecated: set CRDs to 'Skip'."""
    crds: Literal["Skip", "Create", "CreateReplace"] | None = None
    """CRDs is the policy for the chart's crds directory on install: 'Skip', 'Create'
    (the default: create missing CRDs, leave existing ones) or 'CreateReplace' (also
    replace existing ones)."""
    create_namespace: bool | None = None
    """CreateNamespace creates the target namespace when missing; it is not deleted on
    uninstall."""
    server_side_apply: bool | None = None
    """ServerSideApply installs with server-side apply; true when not set."""


class Upgrade(_ReleaseAction):
    """Upgrade configures the Helm upgrade action."""

    timeout: _Duration | None = None
    """Timeout for each Kubernetes operation of the upgrade; the HelmRelease's Timeout
    when not set."""
    remediation: UpgradeRemediation | None = None
    """Remediation says what to do when the upgrade fails; nothing by default."""
    strategy: ActionStrategy | None = None
    """Strategy says what follows a failed upgrade."""
    force: bool | None = None
    """Force replaces objects that cannot be updated in place."""
    preserve_values: bool | None = None
    """PreserveValues merges Values into the previous release's values, which makes the
    HelmRelease depend on history."""
    cleanup_on_fail: bool | None = None
    """CleanupOnFail deletes the objects a failed upgrade created."""
    crds: Literal["Skip", "Create", "CreateReplace"] | None = None
    """CRDs is the policy for the chart's crds directory on upgrade: 'Skip' (the
    default), 'Create' (create missing CRDs) or 'CreateReplace' (also replace existing
    ones)."""
    server_side_apply: Literal["enabled", "disabled", "auto"] | None = None
    """ServerSideApply is 'enabled', 'disabled' or 'auto' (the default: as the release
    being upgraded was applied)."""
    chart_name_change_strategy: Literal["Reinstall", "InPlaceUpdate"] | None = None
    """ChartNameChangeStrategy is what happens when the chart's name changes: 'Reinstall'
    (the default: uninstall, then install) or 'InPlaceUpdate' (upgrade as usual)."""


class TestFilter(FluxModel):
    """TestFilter selects one Helm test to run or leave out."""

    __test__ = False

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Name of the test."""
    exclude: bool | None = None
    """Exclude leaves the named test out."""


class Test(FluxModel):
    """Test configures the Helm test action."""

    __test__ = False

    enable: bool | None = None
    """Enable runs the chart's tests after each install or upgrade."""
    timeout: _Duration | None = None
    """Timeout for each Kubernetes operation of the tests; the HelmRelease's Timeout when
    not set."""
    ignore_failures: bool | None = None
    """IgnoreFailures leaves failing tests unremediated; Install and Upgrade remediation
    may say otherwise."""
    filters: list[TestFilter] | None = None
    """Filters selects the tests to run or to leave out."""


class Rollback(FluxModel):
    """Rollback configures the Helm rollback action."""

    timeout: _Duration | None = None
    """Timeout for each Kubernetes operation of the rollback; the HelmRelease's Timeout
    when not set."""
    disable_wait: bool | None = None
    """DisableWait skips waiting for the rolled back objects to be ready."""
    disable_wait_for_jobs: bool | None = None
    """DisableWaitForJobs skips waiting for the rolled back Jobs to complete."""
    disable_hooks: bool | None = None
    """DisableHooks skips the chart's hooks during the rollback."""
    recreate: bool | None = None
    """Recreate restarted pods where applicable. Deprecated: it has no effect."""
    force: bool | None = None
    """Force replaces objects that cannot be updated in place."""
    cleanup_on_fail: bool | None = None
    """CleanupOnFail deletes the objects a failed rollback created."""
    server_side_apply: bool | None = None
    """ServerSideApply rolls back with server-side apply; as the release rolled back to
    was applied when not set."""


class Uninstall(FluxModel):
    """Uninstall configures the Helm uninstall action."""

    timeout: _Duration | None = None
    """Timeout for each Kubernetes operation of the uninstall; the HelmRelease's Timeout
    when not set."""
    disable_hooks: bool | None = None
    """DisableHooks skips the chart's hooks during the uninstall."""
    keep_history: bool | None = None
    """KeepHistory deletes the release's objects but keeps its history, marking it
    deleted."""
    disable_wait: bool | None = None
    """DisableWait skips waiting for the objects to be gone."""
    deletion_propagation: Literal["background", "foreground", "orphan"] = "background"
    """DeletionPropagation is the propagation policy of the deletions: 'background'
    (the default), 'foreground' or 'orphan'."""


class PostRendererKustomize(FluxModel):
    """PostRendererKustomize patches the rendered manifests the way a kustomization
    would."""

    patches: list[Patch] | None = None
    """Patches are strategic merge and JSON 6902 patches, inline, with target
    selectors."""
    images: list[Image] | None = None
    """Images replaces image names, tags or digests."""


class PostRenderer(FluxModel):
    """PostRenderer transforms the rendered manifests before Helm applies them."""

    kustomize: PostRendererKustomize | None = None
    """Kustomize patches the manifests and rewrites their images."""


class WaitStrategy(FluxModel):
    """WaitStrategy says how Helm waits for the release's objects."""

    name: Literal["poller", "legacy"]
    """Name is 'poller' (the default: kstatus, with HealthCheckExprs for custom kinds) or
    'legacy' (Helm's own checks)."""


class HelmReleaseSpec(FluxModel):
    """HelmReleaseSpec is the desired state: which chart, with what values, and how each
    Helm action is run."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "(has(self.chart) && !has(self.chartRef)) || "
                 "(!has(self.chart) && has(self.chartRef))",
         "message": "either chart or chartRef must be set"},
    ]})

    chart: HelmChartTemplate | None = None
    """Chart templates the HelmChart created for the release; exclusive with
    ChartRef."""
    chart_ref: ChartReference | None = None
    """ChartRef points at an existing source of the chart; exclusive with Chart."""
    interval: _Duration
    """Interval at which the release is reconciled."""
    kube_config: KubeConfigReference | None = None
    """KubeConfig targets a remote cluster; with ServiceAccountName, that service account
    is impersonated there."""
    suspend: bool | None = None
    """Suspend stops further reconciliations; one in progress finishes."""
    release_name: Annotated[str, Field(min_length=1, max_length=53)] | None = None
    """ReleaseName is the Helm release's name; '[TargetNamespace-]Name' when not set,
    shortened with a hash when that is too long."""
    target_namespace: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    """TargetNamespace is the namespace the release is installed in; the HelmRelease's
    namespace when not set."""
    storage_namespace: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    """StorageNamespace is the namespace Helm stores the release in; the HelmRelease's
    namespace when not set."""
    depends_on: list[DependencyReference] | None = None
    """DependsOn names HelmReleases that must be ready before this one is reconciled."""
    timeout: _Duration | None = None
    """Timeout for each Kubernetes operation of a Helm action (such as a hook's Job);
    5m0s when not set."""
    max_history: int | None = None
    """MaxHistory is how many release revisions Helm keeps; 5 when not set, 0 for no
    limit."""
    service_account_name: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """ServiceAccountName is the service account impersonated for the Helm actions."""
    persistent_client: bool | None = None
    """PersistentClient reuses one Kubernetes client for the whole reconciliation
    instead of one per action; true when not set. Charts creating CRDs outside Helm's
    CRD handling may need it off."""
    drift_detection: DriftDetection | None = None
    """DriftDetection compares the release manifest with the cluster's objects."""
    install: Install | None = None
    """Install configures Helm install actions."""
    upgrade: Upgrade | None = None
    """Upgrade configures Helm upgrade actions."""
    test: Test | None = None
    """Test configures Helm test actions."""
    rollback: Rollback | None = None
    """Rollback configures Helm rollback actions."""
    uninstall: Uninstall | None = None
    """Uninstall configures Helm uninstall actions."""
    values_from: list[ValuesReference] | None = None
    """ValuesFrom names ConfigMaps and Secrets holding values, merged in order; Values
    is merged last."""
    values: Any = None
    """Values are inline Helm values, of any shape."""
    post_renderers: list[PostRenderer] | None = None
    """PostRenderers transform the rendered manifests, in order."""
    post_render_strategy: Literal["nohooks", "combined", "separate"] | None = None
    """PostRenderStrategy says which manifests the post-renderers see: 'combined' (the
    default: the manifests and the hooks together), 'separate' (each hook on its own) or
    'nohooks' (the manifests only)."""
    common_metadata: CommonMetadata | None = None
    """CommonMetadata holds labels and annotations set on every object of the release,
    through a post-renderer."""
    wait_strategy: WaitStrategy | None = None
    """WaitStrategy says how Helm waits for the release's objects to be ready."""
    health_check_exprs: list[CustomHealthCheck] | None = None
    """HealthCheckExprs decide the health of custom kinds with CEL expressions; used by
    the poller wait strategy."""

    @model_validator(mode="after")
    def _chart_or_chart_ref(self) -> Self:
        if (self.chart is None) == (self.chart_ref is None):
            raise ValueError("either chart or chartRef must be set")
        return self


class TestHookStatus(FluxModel):
    """TestHookStatus records one run of a Helm test hook."""

    __test__ = False

    last_started: Time | None = None
    """LastStarted is when the test last started."""
    last_completed: Time | None = None
    """LastCompleted is when the test last completed."""
    phase: str | None = None
    """Phase is the test's last phase."""


class Snapshot(FluxModel):
    """Snapshot records one Helm release revision made for the HelmRelease."""

    api_version: str | None = None
    """APIVersion of the snapshot's format; 'v2' when the digests are those of Helm
    4."""
    digest: str
    """Digest identifies the release object, in the form '<algorithm>:<checksum>'."""
    name: str
    """Name of the release."""
    namespace: str
    """Namespace of the release."""
    version: int
    """Version is the release's revision number."""
    status: str
    """Status of the release, such as 'deployed', 'superseded' or 'failed'."""
    action: str | None = None
    """Action is the Helm action that made the release."""
    chart_name: str
    """ChartName is the name of the chart released."""
    chart_version: str
    """ChartVersion is the version of the chart released."""
    app_version: str | None = None
    """AppVersion is the application version of the chart released."""
    config_digest: str
    """ConfigDigest identifies the values of the release."""
    first_deployed: Time
    """FirstDeployed is when the release was first deployed."""
    last_deployed: Time
    """LastDeployed is when this revision was deployed."""
    deleted: Time | None = None
    """Deleted is when the release was uninstalled."""
    test_hooks: dict[str, TestHookStatus] | None = None
    """TestHooks records the test hooks run for the release, by name."""
    oci_digest: str | None = None
    """OCIDigest is the digest of the chart's OCI artifact, when it came from one."""


class HelmReleaseStatus(FluxModel):
    """HelmReleaseStatus is the observed state of a HelmRelease."""

    observed_generation: Int64 | None = None
    """ObservedGeneration is the last reconciled generation."""
    observed_post_renderers_digest: str | None = None
    """ObservedPostRenderersDigest is the digest of the post-renderers of the last
    successful reconciliation."""
    observed_common_metadata_digest: str | None = None
    """ObservedCommonMetadataDigest is the digest of the common metadata of the last
    successful reconciliation."""
    last_attempted_generation: Int64 | None = None
    """LastAttemptedGeneration is the last generation a reconciliation was attempted
    for."""
    conditions: ConditionList | None = None
    """Conditions holds the conditions of the HelmRelease."""
    helm_chart: str | None = None
    """HelmChart is the '<namespace>/<name>' of the HelmChart made from Spec.Chart."""
    storage_namespace: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    """StorageNamespace is the namespace Helm stores the current release in."""
    history: list[Snapshot] | None = None
    """History holds the releases made for the HelmRelease, newest first, down to the
    last successful one."""
    inventory: ResourceInventory | None = None
    """Inventory lists the objects of the current release."""
    last_attempted_release_action: Literal["install", "upgrade"] | None = None
    """LastAttemptedReleaseAction is the last release action attempted; it decides which
    remediation applies."""
    last_attempted_release_action_duration: str | None = None
    """LastAttemptedReleaseActionDuration is how long the last release action took."""
    failures: Int64 | None = None
    """Failures counts the failed reconciliations of the current desired state; reset
    by a success."""
    install_failures: Int64 | None = None
    """InstallFailures counts the failed installs of the current desired state; reset by
    a success."""
    upgrade_failures: Int64 | None = None
    """UpgradeFailures counts the failed upgrades of the current desired state; reset by
    a success."""
    last_attempted_revision: str | None = None
    """LastAttemptedRevision is the chart version of the last attempt, followed by
    '+<first 12 digest characters>' for charts from an OCIRepository."""
    last_attempted_revision_digest: str | None = None
    """LastAttemptedRevisionDigest is the artifact digest of the last attempt, for OCI
    sources."""
    last_attempted_values_checksum: str | None = None
    """LastAttemptedValuesChecksum is the SHA-1 of the values of the last attempt.
    Deprecated: see LastAttemptedConfigDigest."""
    last_release_revision: int | None = None
    """LastReleaseRevision is the revision of the last successful release. Deprecated:
    see History."""
    last_attempted_config_digest: str | None = None
    """LastAttemptedConfigDigest is the digest of the values of the last attempt."""
    last_handled_force_at: str | None = None
    """LastHandledForceAt holds the value of the most recent force request handled, so a
    change of the annotation value can be detected."""
    last_handled_reset_at: str | None = None
    """LastHandledResetAt holds the value of the most recent reset request handled, so a
    change of the annotation value can be detected."""
    last_handled_reconcile_at: str | None = None
    """LastHandledReconcileAt holds the value of the most recent reconcile request
    handled, so a change of the annotation value can be detected."""


HELM_RELEASE = Kind(
    group=GROUP, version=VERSION, kind="HelmRelease", plural="helmreleases",
    singular="helmrelease", spec=HelmReleaseSpec, status=HelmReleaseStatus,
    short_names=("hr",), categories=("all", "fluxcd", "fluxcd-appliers"),
    printer_columns=(AGE_COLUMN, READY_COLUMN, STATUS_COLUMN),
    description="HelmRelease is the Schema for the helmreleases API.",
)

KINDS: tuple[Kind, ...] = (HELM_RELEASE,)
