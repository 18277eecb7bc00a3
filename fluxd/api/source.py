"""``source.toolkit.fluxcd.io/v1``: the source kinds, field for field as Flux serves them.

GitRepository, HelmRepository, HelmChart and OCIRepository are here now; Bucket joins them
when its controller is built. The fields are those of the CRDs Flux 2.9 ships
(source-controller v1.9), with Flux's defaults, patterns and enums, so a user's existing
manifests validate the same way. Both of Flux's CEL rules are in the CRDs (GitRepository:
serviceAccountName only with the azure/aws providers; HelmChart: verify only with a
HelmRepository source); the reconcilers check them too, for objects stored before the
rules were served.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from fluxd.api.crd import AGE_COLUMN, READY_COLUMN, STATUS_COLUMN, Kind, PrinterColumn
from fluxd.api.meta import (
    DURATION_PATTERN,
    TIMEOUT_PATTERN,
    Artifact,
    ConditionList,
    FluxModel,
    Int64,
    LocalObjectReference,
)

GROUP = "source.toolkit.fluxcd.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"


class GitRepositoryRef(FluxModel):
    """GitRepositoryRef specifies the Git reference to resolve and checkout."""

    branch: str | None = None
    """Branch to check out, defaults to 'master' if no other field is defined."""
    tag: str | None = None
    """Tag to check out, takes precedence over Branch."""
    semver: str | None = None
    """SemVer tag expression to check out, takes precedence over Tag."""
    name: str | None = None
    """Name of the reference to check out; takes precedence over Branch, Tag and SemVer.
    It must be a valid Git reference, e.g. "refs/heads/main", "refs/tags/v0.1.0",
    "refs/pull/420/head"."""
    commit: str | None = None
    """Commit SHA to check out, takes precedence over all reference fields. It can be
    combined with Branch to shallow clone the branch, in which the commit is expected to
    exist."""


class GitRepositoryVerification(FluxModel):
    """GitRepositoryVerification specifies the Git commit signature verification
    strategy."""

    mode: Literal["head", "HEAD", "Tag", "TagAndHEAD"] = "HEAD"
    """Mode specifies which Git object(s) should be verified. "head" and "HEAD" both mean
    the commit HEAD points to; "head" exists for backwards compatibility."""
    secret_ref: LocalObjectReference
    """SecretRef specifies the Secret containing the public keys of trusted Git authors
    (PGP keys under keys ending in .asc, SSH keys under keys ending in .sshpub)."""


class GitRepositoryInclude(FluxModel):
    """GitRepositoryInclude specifies a local reference to a GitRepository which Artifact
    (sub-)contents must be included, and where they should be placed."""

    repository: LocalObjectReference
    """GitRepositoryRef specifies the GitRepository which Artifact contents must be
    included."""
    from_path: str | None = None
    """FromPath specifies the path to copy contents from, defaults to the root of the
    Artifact."""
    to_path: str | None = None
    """ToPath specifies the path to copy contents to, defaults to the name of the
    GitRepositoryRef."""


class GitRepositorySpec(FluxModel):
    """GitRepositorySpec specifies the required configuration to produce an Artifact for
    a Git repository."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.serviceAccountName) || (has(self.provider) && "
                 "(self.provider == 'azure' || self.provider == 'aws'))",
         "message": "serviceAccountName can only be set when provider is 'azure' or 'aws'"},
    ]})

    url: Annotated[str, Field(pattern=r"^(http|https|ssh)://.*$")]
    """URL specifies the Git repository URL, it can be an HTTP/S or SSH address."""
    secret_ref: LocalObjectReference | None = None
    """SecretRef specifies the Secret containing authentication credentials: 'username'
    and 'password' (or 'bearerToken') for HTTPS, 'identity' and 'known_hosts' for SSH."""
    provider: Literal["generic", "aws", "azure", "github"] | None = None
    """Provider used for authentication, can be 'aws', 'azure', 'github', 'generic'. When
    not specified, defaults to 'generic'."""
    service_account_name: str | None = None
    """ServiceAccountName is the Kubernetes ServiceAccount used to authenticate; only for
    the 'azure' and 'aws' providers."""
    interval: Annotated[str, Field(pattern=DURATION_PATTERN)]
    """Interval at which the GitRepository URL is checked for updates. This interval is
    approximate and may be subject to jitter to ensure efficient use of resources."""
    timeout: Annotated[str, Field(pattern=TIMEOUT_PATTERN)] = "60s"
    """Timeout for Git operations like cloning, defaults to 60s."""
    ref: GitRepositoryRef | None = None
    """Reference specifies the Git reference to resolve and monitor for changes, defaults
    to the 'master' branch."""
    verify: GitRepositoryVerification | None = None
    """Verification specifies the configuration to verify the Git commit signature(s)."""
    proxy_secret_ref: LocalObjectReference | None = None
    """ProxySecretRef specifies the Secret containing the proxy configuration to use while
    communicating with the Git server."""
    ignore: str | None = None
    """Ignore overrides the set of excluded patterns in the .sourceignore format (which is
    the same as .gitignore). If not provided, a default will be used."""
    suspend: bool | None = None
    """Suspend tells the controller to suspend the reconciliation of this GitRepository."""
    recurse_submodules: bool | None = None
    """RecurseSubmodules enables the initialization of all submodules within the
    GitRepository as cloned from the URL, using their default settings."""
    include: list[GitRepositoryInclude] | None = None
    """Include specifies a list of GitRepository resources which Artifacts should be
    included in the Artifact produced for this GitRepository."""
    sparse_checkout: list[str] | None = None
    """SparseCheckout specifies a list of directories to checkout when cloning the
    repository. If specified, only these directories are included in the Artifact."""


class GitRepositoryStatus(FluxModel):
    """GitRepositoryStatus records the observed state of a Git repository."""

    observed_generation: Int64 | None = None
    """ObservedGeneration is the last observed generation of the GitRepository object."""
    conditions: ConditionList | None = None
    """Conditions holds the conditions for the GitRepository."""
    artifact: Artifact | None = None
    """Artifact represents the last successful GitRepository reconciliation."""
    included_artifacts: list[Artifact] | None = None
    """IncludedArtifacts contains a list of the last successfully included Artifacts as
    instructed by GitRepositorySpec.Include."""
    observed_ignore: str | None = None
    """ObservedIgnore is the observed exclusion patterns used for constructing the source
    artifact."""
    observed_recurse_submodules: bool | None = None
    """ObservedRecurseSubmodules is the observed resource submodules configuration used to
    produce the current Artifact."""
    observed_include: list[GitRepositoryInclude] | None = None
    """ObservedInclude is the observed list of GitRepository resources used to produce the
    current Artifact."""
    observed_sparse_checkout: list[str] | None = None
    """ObservedSparseCheckout is the observed list of directories used to produce the
    current Artifact."""
    source_verification_mode: str | None = None
    """SourceVerificationMode is the last used verification mode indicating which Git
    object(s) have been verified."""
    last_handled_reconcile_at: str | None = None
    """LastHandledReconcileAt holds the value of the most recent reconcile request value,
    so a change of the annotation value can be detected."""


class NamespaceSelector(FluxModel):
    """NamespaceSelector selects the namespaces to which this ACL applies. An empty map of
    MatchLabels matches all namespaces in a cluster."""

    match_labels: dict[str, str] | None = None
    """MatchLabels is a map of {key,value} pairs. A single {key,value} in the matchLabels
    map is equivalent to an element of matchExpressions, whose key field is "key", the
    operator is "In", and the values array contains only "value". The requirements are
    ANDed."""


class AccessFrom(FluxModel):
    """AccessFrom defines an ACL for allowing cross-namespace references to a source object
    based on the caller's namespace labels."""

    namespace_selectors: list[NamespaceSelector]
    """NamespaceSelectors is the list of namespace selectors to which this ACL applies.
    Items in this list are evaluated using a logical OR operation."""


class HelmRepositorySpec(FluxModel):
    """HelmRepositorySpec specifies the required configuration to produce an Artifact for
    a Helm repository index YAML."""

    url: Annotated[str, Field(pattern=r"^(http|https|oci)://.*$")]
    """URL of the Helm repository, a valid URL contains at least a protocol and host."""
    secret_ref: LocalObjectReference | None = None
    """SecretRef specifies the Secret containing authentication credentials for the
    HelmRepository. For HTTP/S basic auth the secret must contain 'username' and
    'password' fields. Support for TLS auth using the 'certFile' and 'keyFile', and/or
    'caFile' keys is deprecated. Please use `.spec.certSecretRef` instead."""
    cert_secret_ref: LocalObjectReference | None = None
    """CertSecretRef can be given the name of a Secret containing either or both of a
    PEM-encoded client certificate (`tls.crt`) and private key (`tls.key`), and a
    PEM-encoded CA certificate (`ca.crt`); whichever are supplied will be used for
    connecting to the registry. The client cert and key are useful if you are
    authenticating with a certificate; the CA cert is useful if you are using a
    self-signed server certificate. The Secret must be of type `Opaque` or
    `kubernetes.io/tls`. It takes precedence over the values specified in the Secret
    referred to by `.spec.secretRef`."""
    pass_credentials: bool | None = None
    """PassCredentials allows the credentials from the SecretRef to be passed on to a host
    that does not match the host as defined in URL. This may be required if the host of
    the advertised chart URLs in the index differ from the defined URL. Enabling this
    should be done with caution, as it can potentially result in credentials getting
    stolen in a MITM-attack."""
    interval: Annotated[str, Field(pattern=DURATION_PATTERN)] | None = None
    """Interval at which the HelmRepository URL is checked for updates. This interval is
    approximate and may be subject to jitter to ensure efficient use of resources."""
    insecure: bool | None = None
    """Insecure allows connecting to a non-TLS HTTP container registry. This field is only
    taken into account if the .spec.type field is set to 'oci'."""
    timeout: Annotated[str, Field(pattern=TIMEOUT_PATTERN)] | None = None
    """Timeout is used for the index fetch operation for an HTTPS helm repository, and for
    remote OCI Repository operations like pulling for an OCI helm chart by the associated
    HelmChart. Its default value is 60s."""
    suspend: bool | None = None
    """Suspend tells the controller to suspend the reconciliation of this
    HelmRepository."""
    access_from: AccessFrom | None = None
    """AccessFrom specifies an Access Control List for allowing cross-namespace references
    to this object. NOTE: Not implemented, provisional as of
    https://github.com/fluxcd/flux2/pull/2092"""
    type: Literal["default", "oci"] | None = None
    """Type of the HelmRepository. When this field is set to  "oci", the URL field value
    must be prefixed with "oci://"."""
    provider: Literal["generic", "aws", "azure", "gcp"] = "generic"
    """Provider used for authentication, can be 'aws', 'azure', 'gcp' or 'generic'. This
    field is optional, and only taken into account if the .spec.type field is set to
    'oci'. When not specified, defaults to 'generic'."""


class HelmRepositoryStatus(FluxModel):
    """HelmRepositoryStatus records the observed state of the HelmRepository."""

    observed_generation: Int64 | None = None
    """ObservedGeneration is the last observed generation of the HelmRepository object."""
    conditions: ConditionList | None = None
    """Conditions holds the conditions for the HelmRepository."""
    url: str | None = None
    """URL is the dynamic fetch link for the latest Artifact. It is provided on a "best
    effort" basis, and using the precise HelmRepositoryStatus.Artifact data is
    recommended."""
    artifact: Artifact | None = None
    """Artifact represents the last successful HelmRepository reconciliation."""
    last_handled_reconcile_at: str | None = None
    """LastHandledReconcileAt holds the value of the most recent reconcile request value,
    so a change of the annotation value can be detected."""


class OCIRepositoryRef(FluxModel):
    """OCIRepositoryRef defines the image reference for the OCIRepository's URL."""

    digest: str | None = None
    """Digest is the image digest to pull, takes precedence over SemVer. The value should
    be in the format 'sha256:<HASH>'."""
    semver: str | None = None
    """SemVer is the range of tags to pull selecting the latest within the range, takes
    precedence over Tag."""
    semver_filter: str | None = None
    """SemverFilter is a regex pattern to filter the tags within the SemVer range."""
    tag: str | None = None
    """Tag is the image tag to pull, defaults to latest."""


class OCILayerSelector(FluxModel):
    """OCILayerSelector specifies which layer should be extracted from an OCI Artifact."""

    media_type: str | None = None
    """MediaType specifies the OCI media type of the layer which should be extracted from
    the OCI Artifact. The first layer matching this type is selected."""
    operation: Literal["extract", "copy"] | None = None
    """Operation specifies how the selected layer should be processed: extracted
    (default) or copied to storage as it is."""


class OIDCIdentityMatch(FluxModel):
    """OIDCIdentityMatch specifies options for verifying the certificate identity."""

    issuer: str
    """Issuer specifies the regex pattern to match against to verify the OIDC issuer."""
    subject: str
    """Subject specifies the regex pattern to match against to verify the identity
    subject."""


class OCIVerification(FluxModel):
    """OCIVerification says how the signature of an OCI artifact (or a Helm chart stored
    as one) is checked."""

    # Flux lists provider as required and defaults it, so the API server fills it in
    # before checking; an explicit empty object still validates.
    model_config = ConfigDict(json_schema_extra={"required": ["provider"]})

    provider: Literal["cosign", "notation"] = "cosign"
    """Provider is the signing technology: 'cosign' or 'notation'."""
    secret_ref: LocalObjectReference | None = None
    """SecretRef names the Secret holding the trusted public keys (or, for notation, the
    trust policy and certificates)."""
    match_oidc_identity: list[OIDCIdentityMatch] | None = Field(
        default=None, alias="matchOIDCIdentity")
    """MatchOIDCIdentity lists the identities accepted for a keyless (Fulcio) cosign
    signature; the artifact is verified when any one of them matches."""


class OCIRepositoryVerification(OCIVerification):
    """OCIRepositoryVerification is an OCIRepository's signature check, which can also
    trust a self-hosted Sigstore."""

    trusted_root_secret_ref: LocalObjectReference | None = None
    """TrustedRootSecretRef names a Secret whose 'trusted_root.json' key holds a Sigstore
    trusted root, for signatures made with a self-hosted Fulcio CA and Rekor log."""


class OCIRepositorySpec(FluxModel):
    """OCIRepositorySpec defines the desired state of OCIRepository."""

    url: Annotated[str, Field(pattern=r"^oci://.*$")]
    """URL is a reference to an OCI artifact repository hosted on a remote container
    registry."""
    ref: OCIRepositoryRef | None = None
    """The OCI reference to pull and monitor for changes, defaults to the latest tag."""
    layer_selector: OCILayerSelector | None = None
    """LayerSelector specifies which layer should be extracted from the OCI artifact. When
    not specified, the first layer found in the artifact is selected."""
    provider: Literal["generic", "aws", "azure", "gcp"] = "generic"
    """The provider used for authentication, can be 'aws', 'azure', 'gcp' or 'generic'."""
    secret_ref: LocalObjectReference | None = None
    """SecretRef contains the secret name containing the registry login credentials to
    resolve image metadata. The secret must be of type kubernetes.io/dockerconfigjson."""
    verify: OCIRepositoryVerification | None = None
    """Verify contains the secret name containing the trusted public keys used to verify
    the signature and specifies which provider to use."""
    service_account_name: str | None = None
    """ServiceAccountName is the name of the Kubernetes ServiceAccount used to
    authenticate the image pull if the service account has attached pull secrets."""
    cert_secret_ref: LocalObjectReference | None = None
    """CertSecretRef names a Secret with a client certificate and key (tls.crt, tls.key)
    and/or a CA certificate (ca.crt) used to connect to the registry."""
    proxy_secret_ref: LocalObjectReference | None = None
    """ProxySecretRef specifies the Secret containing the proxy configuration to use while
    communicating with the container registry."""
    interval: Annotated[str, Field(pattern=DURATION_PATTERN)]
    """Interval at which the OCIRepository URL is checked for updates."""
    timeout: Annotated[str, Field(pattern=TIMEOUT_PATTERN)] = "60s"
    """The timeout for remote OCI Repository operations like pulling, defaults to 60s."""
    ignore: str | None = None
    """Ignore overrides the set of excluded patterns in the .sourceignore format."""
    insecure: bool | None = None
    """Insecure allows connecting to a non-TLS HTTP container registry."""
    suspend: bool | None = None
    """This flag tells the controller to suspend the reconciliation of this source."""


class OCIRepositoryStatus(FluxModel):
    """OCIRepositoryStatus defines the observed state of OCIRepository."""

    observed_generation: Int64 | None = None
    """ObservedGeneration is the last observed generation."""
    conditions: ConditionList | None = None
    """Conditions holds the conditions for the OCIRepository."""
    url: str | None = None
    """URL is the download link for the artifact output of the last OCI Repository
    sync."""
    artifact: Artifact | None = None
    """Artifact represents the output of the last successful OCI Repository sync."""
    observed_ignore: str | None = None
    """ObservedIgnore is the observed exclusion patterns used for constructing the source
    artifact."""
    observed_layer_selector: OCILayerSelector | None = None
    """ObservedLayerSelector is the observed layer selector used for constructing the
    source artifact."""
    last_handled_reconcile_at: str | None = None
    """LastHandledReconcileAt holds the value of the most recent reconcile request value,
    so a change of the annotation value can be detected."""


class LocalHelmChartSourceReference(FluxModel):
    """LocalHelmChartSourceReference contains enough information to let you locate the
    typed referenced object at namespace level."""

    api_version: str | None = None
    """APIVersion of the referent."""
    kind: Literal["HelmRepository", "GitRepository", "Bucket"]
    """Kind of the referent, valid values are ('HelmRepository', 'GitRepository',
    'Bucket')."""
    name: str
    """Name of the referent."""


class HelmChartSpec(FluxModel):
    """HelmChartSpec specifies the desired state of a Helm chart."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.verify) || self.sourceRef.kind == 'HelmRepository'",
         "message": "spec.verify is only supported when spec.sourceRef.kind is "
                    "'HelmRepository'"},
    ]})

    chart: str
    """Chart is the name or path the Helm chart is available at in the SourceRef."""
    version: str = "*"
    """Version is the chart version semver expression, ignored for charts from
    GitRepository and Bucket sources. Defaults to latest when omitted."""
    source_ref: LocalHelmChartSourceReference
    """SourceRef is the reference to the Source the chart is available at."""
    interval: Annotated[str, Field(pattern=DURATION_PATTERN)]
    """Interval at which the HelmChart SourceRef is checked for updates. This interval is
    approximate and may be subject to jitter to ensure efficient use of resources."""
    reconcile_strategy: Literal["ChartVersion", "Revision"] = "ChartVersion"
    """ReconcileStrategy determines what enables the creation of a new artifact. Valid
    values are ('ChartVersion', 'Revision'). See the documentation of the values for an
    explanation on their behavior. Defaults to ChartVersion when omitted."""
    values_files: list[str] | None = None
    """ValuesFiles is an alternative list of values files to use as the chart values
    (values.yaml is not included by default), expected to be a relative path in the
    SourceRef. Values files are merged in the order of this list with the last file
    overriding the first. Ignored when omitted."""
    ignore_missing_values_files: bool | None = None
    """IgnoreMissingValuesFiles controls whether to silently ignore missing values files
    rather than failing."""
    suspend: bool | None = None
    """Suspend tells the controller to suspend the reconciliation of this source."""
    verify: OCIVerification | None = None
    """Verify contains the secret name containing the trusted public keys used to verify
    the signature and specifies which provider to use to check whether OCI image is
    authentic. This field is only supported when using HelmRepository source with
    spec.type 'oci'. Chart dependencies, which are not bundled in the umbrella chart
    artifact, are not verified."""


class HelmChartStatus(FluxModel):
    """HelmChartStatus records the observed state of the HelmChart."""

    observed_generation: Int64 | None = None
    """ObservedGeneration is the last observed generation of the HelmChart object."""
    observed_source_artifact_revision: str | None = None
    """ObservedSourceArtifactRevision is the last observed Artifact.Revision of the
    HelmChartSpec.SourceRef."""
    observed_chart_name: str | None = None
    """ObservedChartName is the last observed chart name as specified by the resolved
    chart reference."""
    observed_values_files: list[str] | None = None
    """ObservedValuesFiles are the observed value files of the last successful
    reconciliation. It matches the chart in the last successfully reconciled artifact."""
    conditions: ConditionList | None = None
    """Conditions holds the conditions for the HelmChart."""
    url: str | None = None
    """URL is the dynamic fetch link for the latest Artifact. It is provided on a "best
    effort" basis, and using the precise BucketStatus.Artifact data is recommended."""
    artifact: Artifact | None = None
    """Artifact represents the output of the last successful reconciliation."""
    last_handled_reconcile_at: str | None = None
    """LastHandledReconcileAt holds the value of the most recent reconcile request value,
    so a change of the annotation value can be detected."""


GIT_REPOSITORY = Kind(
    group=GROUP, version=VERSION, kind="GitRepository", plural="gitrepositories",
    singular="gitrepository", spec=GitRepositorySpec, status=GitRepositoryStatus,
    short_names=("gitrepo",), categories=("all", "fluxcd", "fluxcd-sources"),
    printer_columns=(PrinterColumn("URL", ".spec.url"), AGE_COLUMN, READY_COLUMN,
                     STATUS_COLUMN),
    description="GitRepository is the Schema for the gitrepositories API.",
)

HELM_REPOSITORY = Kind(
    group=GROUP, version=VERSION, kind="HelmRepository", plural="helmrepositories",
    singular="helmrepository", spec=HelmRepositorySpec, status=HelmRepositoryStatus,
    short_names=("helmrepo",), categories=("all", "fluxcd", "fluxcd-sources"),
    printer_columns=(PrinterColumn("URL", ".spec.url"), AGE_COLUMN, READY_COLUMN,
                     STATUS_COLUMN),
    description="HelmRepository is the Schema for the helmrepositories API.",
)

OCI_REPOSITORY = Kind(
    group=GROUP, version=VERSION, kind="OCIRepository", plural="ocirepositories",
    singular="ocirepository", spec=OCIRepositorySpec, status=OCIRepositoryStatus,
    short_names=("ocirepo",), categories=("all", "fluxcd", "fluxcd-sources"),
    printer_columns=(PrinterColumn("URL", ".spec.url"), READY_COLUMN, STATUS_COLUMN,
                     AGE_COLUMN),
    description="OCIRepository is the Schema for the ocirepositories API.",
)

HELM_CHART = Kind(
    group=GROUP, version=VERSION, kind="HelmChart", plural="helmcharts",
    singular="helmchart", spec=HelmChartSpec, status=HelmChartStatus,
    short_names=("hc",), categories=("all", "fluxcd", "fluxcd-sources"),
    printer_columns=(PrinterColumn("Chart", ".spec.chart"),
                     PrinterColumn("Version", ".spec.version"),
                     PrinterColumn("Source Kind", ".spec.sourceRef.kind"),
                     PrinterColumn("Source Name", ".spec.sourceRef.name"),
                     AGE_COLUMN, READY_COLUMN, STATUS_COLUMN),
    description="HelmChart is the Schema for the helmcharts API.",
)

KINDS: tuple[Kind, ...] = (GIT_REPOSITORY, HELM_REPOSITORY, HELM_CHART, OCI_REPOSITORY)
