"""``kustomize.toolkit.fluxcd.io/v1``: the Kustomization kind, field for field as Flux
serves it.

The fields are those of the CRD Flux 2.9 ships (kustomize-controller v1.9), with Flux's
names, defaults and enums, so a user's existing manifests validate the same way: the
drift-ignore rules are ``spec.ignore`` (``driftIgnoreRules`` was their name while the
feature was under review; Flux released them as ``ignore``), and ``spec.buildMetadata`` and
``spec.postBuild.substituteStrategy`` are served. ``decryption`` is accepted for
compatibility, but fluxd does not decrypt SOPS: a Kustomization that sets it fails its
build with a clear message.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from fluxd.api.crd import AGE_COLUMN, READY_COLUMN, STATUS_COLUMN, Kind
from fluxd.api.meta import (
    DURATION_PATTERN,
    ConditionList,
    DependencyReference,
    FluxModel,
    HistorySnapshot,
    Int64,
    KubeConfigReference,
    LocalObjectReference,
    NamespacedObjectKindReference,
)

GROUP = "kustomize.toolkit.fluxcd.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"

DELETION_POLICIES = ("MirrorPrune", "Delete", "WaitForTermination", "Orphan")


class CrossNamespaceSourceReference(FluxModel):
    """CrossNamespaceSourceReference locates the source of a Kustomization, in any
    namespace."""

    api_version: str | None = None
    """API version of the referent."""
    kind: Literal["OCIRepository", "GitRepository", "Bucket", "ExternalArtifact"]
    """Kind of the referent."""
    name: str
    """Name of the referent."""
    namespace: str | None = None
    """Namespace of the referent, defaults to the namespace of the Kustomization."""


class Selector(FluxModel):
    """Selector picks objects: an object is selected when it matches every field
    that is set."""

    group: str | None = None
    """Group is the API group of the objects."""
    version: str | None = None
    """Version is the API version of the objects."""
    kind: str | None = None
    """Kind of the objects."""
    namespace: str | None = None
    """Namespace of the objects."""
    name: str | None = None
    """Name of the objects."""
    annotation_selector: str | None = None
    """AnnotationSelector is a label-selector expression matched against the objects'
    annotations."""
    label_selector: str | None = None
    """LabelSelector is a label-selector expression matched against the objects'
    labels."""


class Patch(FluxModel):
    """Patch is a strategic merge or JSON 6902 patch, inline, and the objects it
    applies to."""

    patch: str
    """Patch is the patch document: a strategic merge patch or a JSON 6902 list of
    operations."""
    target: Selector | None = None
    """Target selects the objects the patch applies to."""


class Image(FluxModel):
    """Image replaces the name, tag or digest of a container image."""

    name: str
    """Name is the image name without a tag."""
    new_name: str | None = None
    """NewName replaces the image name."""
    new_tag: str | None = None
    """NewTag replaces the image tag."""
    digest: str | None = None
    """Digest replaces the image tag with a digest; NewTag is then ignored."""


class CustomHealthCheck(FluxModel):
    """CustomHealthCheck decides the health of objects of one kind with CEL
    expressions."""

    api_version: str
    """APIVersion of the objects the expressions apply to."""
    kind: str
    """Kind of the objects the expressions apply to."""
    current: str
    """Current is the CEL expression that is true once an object has reached its desired
    state."""
    in_progress: str | None = None
    """InProgress is the CEL expression that is true while an object is still on its way
    to its desired state."""
    failed: str | None = None
    """Failed is the CEL expression that is true when an object has failed to reach its
    desired state."""


class CommonMetadata(FluxModel):
    """CommonMetadata holds the labels and annotations set on every object."""

    annotations: dict[str, str] | None = None
    """Annotations added to every object's metadata."""
    labels: dict[str, str] | None = None
    """Labels added to every object's metadata."""


class IgnoreRule(FluxModel):
    """IgnoreRule names fields that drift detection and apply leave alone."""

    paths: list[str]
    """Paths is a list of JSON Pointers (RFC 6901) to fields left alone."""
    target: Selector | None = None
    """Target selects the objects the rule applies to; every object when not set."""


class Decryption(FluxModel):
    """Decryption configures the decryption of Secrets before they are applied. fluxd
    does not decrypt SOPS; the field is accepted for compatibility only."""

    provider: Literal["sops"]
    """Provider is the name of the decryption engine."""
    service_account_name: str | None = None
    """ServiceAccountName is the service account used to authenticate with a cloud KMS."""
    secret_ref: LocalObjectReference | None = None
    """SecretRef names the Secret holding the decryption keys."""


class SubstituteReference(FluxModel):
    """SubstituteReference names a ConfigMap or Secret whose data keys are variables for
    post-build substitution."""

    kind: Literal["Secret", "ConfigMap"]
    """Kind of the referent, Secret or ConfigMap."""
    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Name of the referent, in the Kustomization's namespace."""
    optional: bool = False
    """Optional tolerates a referent that does not exist: substitution then goes on as
    if it were present and empty."""


class PostBuild(FluxModel):
    """PostBuild describes what to do with the built manifests before they are
    applied."""

    substitute: dict[str, str] | None = None
    """Substitute holds variables and their values, substituted in the manifests'
    ${var} references; bash-like operators such as ${var:=default}, ${var:1:2} and
    ${var/a/b} are supported."""
    substitute_from: list[SubstituteReference] | None = None
    """SubstituteFrom names ConfigMaps and Secrets whose data keys are variables; later
    entries win, and Substitute wins over all of them."""
    substitute_strategy: Literal["WithVariables", "Always"] | None = None
    """SubstituteStrategy decides when substitution runs: 'WithVariables' (the default)
    only when at least one variable is defined, inline or from a referenced ConfigMap or
    Secret; 'Always' even when none is, so that ${var:=default} expressions resolve."""


class KustomizationSpec(FluxModel):
    """KustomizationSpec is the desired state: which source, what to build from it and
    how to apply it."""

    common_metadata: CommonMetadata | None = None
    """CommonMetadata holds labels and annotations set on every applied object, over
    existing keys of the same name."""
    depends_on: list[DependencyReference] | None = None
    """DependsOn names Kustomizations that must be ready before this one is
    reconciled."""
    decryption: Decryption | None = None
    """Decryption of Secrets before they are applied (not supported by fluxd)."""
    interval: Annotated[str, Field(pattern=DURATION_PATTERN)]
    """Interval at which the Kustomization is reconciled; approximate, with jitter."""
    retry_interval: Annotated[str, Field(pattern=DURATION_PATTERN)] | None = None
    """RetryInterval is how long to wait after a failed reconciliation; Interval when not
    set."""
    kube_config: KubeConfigReference | None = None
    """KubeConfig targets a remote cluster; with ServiceAccountName, that service account
    is impersonated there."""
    path: str | None = None
    """Path to the directory holding the kustomization.yaml, or the plain YAML files one
    is generated for; the root of the source when not set."""
    post_build: PostBuild | None = None
    """PostBuild describes what to do with the built manifests before they are
    applied."""
    prune: bool
    """Prune enables garbage collection of objects removed from the source."""
    deletion_policy: Literal["MirrorPrune", "Delete", "WaitForTermination",
                             "Orphan"] | None = None
    """DeletionPolicy decides what happens to the applied objects when the
    Kustomization is deleted: 'MirrorPrune' (delete them if Prune is true, the
    default), 'Delete', 'WaitForTermination' (delete them and wait until they are gone)
    or 'Orphan'."""
    health_checks: list[NamespacedObjectKindReference] | None = None
    """HealthChecks lists objects whose health decides the Kustomization's."""
    name_prefix: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """NamePrefix is prepended to the names of all objects."""
    name_suffix: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """NameSuffix is appended to the names of all objects."""
    patches: list[Patch] | None = None
    """Patches are strategic merge and JSON 6902 patches, inline, with target
    selectors."""
    images: list[Image] | None = None
    """Images replaces image names, tags or digests."""
    service_account_name: str | None = None
    """ServiceAccountName is the service account impersonated when applying."""
    source_ref: CrossNamespaceSourceReference
    """SourceRef is the source of the manifests."""
    suspend: bool | None = None
    """Suspend stops further reconciliations; one in progress finishes."""
    target_namespace: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    """TargetNamespace sets or overrides the namespace of all namespaced objects."""
    timeout: Annotated[str, Field(pattern=DURATION_PATTERN)] | None = None
    """Timeout for building, applying and health checking; Interval less 30s (at least
    30s) when not set."""
    force: bool = False
    """Force recreates objects whose update fails on an immutable field."""
    wait: bool | None = None
    """Wait checks the health of every applied object; HealthChecks is then ignored."""
    components: list[str] | None = None
    """Components are relative paths to kustomize Components."""
    ignore_missing_components: bool | None = None
    """IgnoreMissingComponents drops Components paths missing from the source instead of
    failing the build."""
    health_check_exprs: list[CustomHealthCheck] | None = None
    """HealthCheckExprs decide the health of custom kinds with CEL expressions; used only
    with Wait or HealthChecks."""
    build_metadata: list[Literal["originAnnotations", "transformerAnnotations"]] | None = None
    """BuildMetadata lists the kustomize build metadata added to the built objects:
    'originAnnotations' (where each object came from) and 'transformerAnnotations' (which
    transformers changed it)."""
    ignore: list[IgnoreRule] | None = None
    """Ignore lists rules naming fields that drift detection and apply leave alone, such
    as the replicas an autoscaler manages."""


class ResourceRef(FluxModel):
    """ResourceRef identifies one applied object."""

    id: str
    """ID is the object's '<namespace>_<name>_<group>_<kind>'."""
    v: str
    """Version is the object's API version."""


class ResourceInventory(FluxModel):
    """ResourceInventory lists the objects a Kustomization applied."""

    entries: list[ResourceRef]
    """Entries are the applied objects."""


class KustomizationStatus(FluxModel):
    """KustomizationStatus is the observed state of a Kustomization."""

    last_handled_reconcile_at: str | None = None
    """LastHandledReconcileAt holds the value of the most recent reconcile request value,
    so a change of the annotation value can be detected."""
    observed_generation: Int64 | None = None
    """ObservedGeneration is the last reconciled generation."""
    conditions: ConditionList | None = None
    """Conditions holds the conditions of the Kustomization."""
    last_applied_revision: str | None = None
    """LastAppliedRevision is the source revision last applied successfully."""
    last_applied_origin_revision: str | None = None
    """LastAppliedOriginRevision is the origin revision (e.g. the OCI annotation
    'org.opencontainers.image.revision') of the artifact last applied successfully."""
    last_attempted_revision: str | None = None
    """LastAttemptedRevision is the source revision of the last reconciliation
    attempt."""
    inventory: ResourceInventory | None = None
    """Inventory lists the objects applied by the last successful reconciliation."""
    history: list[HistorySnapshot] | None = None
    """History holds snapshots of the last reconciliations: revision, result and
    duration, newest first."""


KUSTOMIZATION = Kind(
    group=GROUP, version=VERSION, kind="Kustomization", plural="kustomizations",
    singular="kustomization", spec=KustomizationSpec, status=KustomizationStatus,
    short_names=("ks",), categories=("all", "fluxcd", "fluxcd-appliers"),
    printer_columns=(AGE_COLUMN, READY_COLUMN, STATUS_COLUMN),
    description="Kustomization is the Schema for the kustomizations API.",
)

KINDS: tuple[Kind, ...] = (KUSTOMIZATION,)
