"""``notification.toolkit.fluxcd.io``: Provider and Alert (``v1beta3``) and Receiver
(``v1``), field for field as Flux serves them.

The fields are those of the CRDs Flux 2.9 ships (notification-controller v1.9). Provider
and Alert have no status in ``v1beta3``: they are read when an event is dispatched. A
Receiver's status carries its webhook path.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from fluxd.api.crd import AGE_COLUMN, READY_COLUMN, STATUS_COLUMN, Kind
from fluxd.api.meta import (
    DURATION_PATTERN,
    TIMEOUT_PATTERN,
    ConditionList,
    FluxModel,
    Int64,
    LocalObjectReference,
)

GROUP = "notification.toolkit.fluxcd.io"
V1BETA3 = "v1beta3"
V1 = "v1"
API_VERSION_V1BETA3 = f"{GROUP}/{V1BETA3}"
API_VERSION_V1 = f"{GROUP}/{V1}"

#: alerting provider types fluxd implements, then the Git commit-status and
#: change-request comment types (the CRD enum is Flux's whole list)
PROVIDER_TYPES = (
    "slack", "discord", "msteams", "rocket", "generic", "generic-hmac", "github", "gitlab",
    "gitea", "bitbucketserver", "bitbucket", "azuredevops", "googlechat", "googlepubsub",
    "webex", "sentry", "azureeventhub", "telegram", "lark", "matrix", "opsgenie",
    "alertmanager", "grafana", "githubdispatch", "pagerduty", "datadog", "nats", "zulip",
    "otel", "zoom", "incident.io", "githubpullrequestcomment", "gitlabmergerequestcomment",
    "giteapullrequestcomment",
)
GIT_PROVIDER_TYPES = ("github", "gitlab", "gitea", "bitbucketserver", "bitbucket",
                      "azuredevops")
RECEIVER_TYPES = ("generic", "generic-hmac", "generic-oidc", "github", "gitlab",
                  "bitbucket", "harbor", "dockerhub", "quay", "gcr", "nexus", "acr",
                  "cdevents")
EVENT_SOURCE_KINDS = ("Bucket", "GitRepository", "Kustomization", "HelmRelease",
                      "HelmChart", "HelmRepository", "ImageRepository", "ImagePolicy",
                      "ImageUpdateAutomation", "OCIRepository", "ArtifactGenerator",
                      "ExternalArtifact")

ProviderType = Literal[PROVIDER_TYPES]  # type: ignore[valid-type]
ReceiverType = Literal[RECEIVER_TYPES]  # type: ignore[valid-type]
SourceKind = Literal[EVENT_SOURCE_KINDS]  # type: ignore[valid-type]


class CrossNamespaceObjectReference(FluxModel):
    """CrossNamespaceObjectReference selects objects by kind, name (or '*') and
    namespace, and optionally by labels."""

    api_version: str | None = None
    """API version of the referent."""
    kind: SourceKind
    """Kind of the referent."""
    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Name of the referent; '*' selects every object of the kind in the namespace."""
    namespace: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """Namespace of the referent; the referring object's when not set."""
    match_labels: dict[str, str] | None = None
    """MatchLabels selects objects by labels; only with name '*'."""


class ProviderSpec(FluxModel):
    """ProviderSpec says where and how events are sent."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [{
        "rule": " || ".join(f"self.type == '{t}'" for t in GIT_PROVIDER_TYPES)
                + " || !has(self.commitStatusExpr)",
        "message": "spec.commitStatusExpr is only supported for the "
                   + ", ".join(f"'{t}'" for t in GIT_PROVIDER_TYPES) + " provider types"}]})

    type: ProviderType
    """Type specifies which Provider implementation to use."""
    interval: Annotated[str, Field(pattern=DURATION_PATTERN)] | None = None
    """Interval is deprecated and not used in v1beta3."""
    channel: Annotated[str, Field(max_length=2048)] | None = None
    """Channel is the destination channel where events are posted."""
    username: Annotated[str, Field(max_length=2048)] | None = None
    """Username is the name under which events are posted."""
    address: Annotated[str, Field(max_length=2048)] | None = None
    """Address is the endpoint events are sent to: a webhook URL, a repository URL or an
    API address depending on the type; the Secret's 'address' key overrides it."""
    timeout: Annotated[str, Field(pattern=TIMEOUT_PATTERN)] | None = None
    """Timeout for sending an event; 15s when not set."""
    proxy: Annotated[str, Field(max_length=2048, pattern=r"^(http|https)://.*$")] \
        | None = None
    """Proxy is the HTTP/S address of a proxy (deprecated: use ProxySecretRef)."""
    proxy_secret_ref: LocalObjectReference | None = None
    """ProxySecretRef names a Secret with the proxy 'address' and optional 'username' and
    'password'."""
    secret_ref: LocalObjectReference | None = None
    """SecretRef names a Secret with the credentials: 'token', 'address', 'username',
    'password', 'headers' (a YAML map), 'ca.crt'."""
    service_account_name: str | None = None
    """ServiceAccountName is used for cloud workload identity (not supported by fluxd)."""
    cert_secret_ref: LocalObjectReference | None = None
    """CertSecretRef names a Secret with 'ca.crt' and/or 'tls.crt' and 'tls.key'."""
    suspend: bool | None = None
    """Suspend stops sending events through this Provider."""
    commit_status_expr: str | None = None
    """CommitStatusExpr is a CEL expression (variables event, provider, alert) giving the
    commit status id, for the Git provider types."""


class AlertSpec(FluxModel):
    """AlertSpec says which events go to which Provider."""

    provider_ref: LocalObjectReference
    """ProviderRef names the Provider this Alert uses."""
    event_severity: Literal["info", "error"] = "info"
    """EventSeverity filters events by severity: 'info' lets all through, 'error' only
    errors."""
    event_sources: list[CrossNamespaceObjectReference]
    """EventSources selects the objects whose events this Alert sends."""
    inclusion_list: list[str] | None = None
    """InclusionList holds regular expressions; when set, a message must match one."""
    event_metadata: dict[str, str] | None = None
    """EventMetadata is added to every event sent; the emitter's own keys win."""
    exclusion_list: list[str] | None = None
    """ExclusionList holds regular expressions; a message matching one is dropped."""
    summary: Annotated[str, Field(max_length=255)] | None = None
    """Summary is a short description of the impact, sent as metadata (deprecated)."""
    suspend: bool | None = None
    """Suspend stops this Alert from sending events."""


class ReceiverResource(CrossNamespaceObjectReference):
    """A Receiver's target: objects to reconcile when a webhook arrives."""

    filter: str | None = None
    """Filter is a CEL expression over the request (req) and the object (res); false
    skips the object."""


class OIDCVariable(FluxModel):
    """A named CEL expression over an OIDC token's claims."""

    name: str
    """Name is the variable's name."""
    expression: str
    """Expression is the CEL expression giving its value."""


class OIDCValidation(FluxModel):
    """A CEL condition an OIDC token's claims must meet."""

    expression: str
    """Expression is the CEL boolean expression."""
    message: str
    """Message is returned when the expression is false."""


class OIDCProvider(FluxModel):
    """An OIDC issuer that authenticates a 'generic-oidc' Receiver's requests."""

    issuer_url: Annotated[str, Field(alias="issuerURL", pattern=r"^https?://")]
    """IssuerURL is the issuer's URL; it must match the token's 'iss' claim."""
    audience: str | None = None
    """Audience is the expected 'aud' claim; 'notification-controller' when not set."""
    variables: list[OIDCVariable] | None = None
    """Variables are named CEL expressions shared by the validations."""
    validations: Annotated[list[OIDCValidation], Field(min_length=1)]
    """Validations must all be true for a request to be accepted."""


class ReceiverSpec(FluxModel):
    """ReceiverSpec says which webhook is accepted and what it reconciles."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.type != 'generic-oidc' || (has(self.oidcProviders) && "
                 "size(self.oidcProviders) > 0)",
         "message": "generic-oidc receivers must define at least one oidcProvider"},
        {"rule": "self.type == 'generic-oidc' || !has(self.oidcProviders) || "
                 "size(self.oidcProviders) == 0",
         "message": "oidcProviders can only be set when type is generic-oidc"},
        {"rule": "self.type == 'generic-oidc' || has(self.secretRef)",
         "message": "secretRef is required when type is not generic-oidc"},
    ]})

    type: ReceiverType
    """Type of the webhook sender: how requests are validated and read."""
    interval: Annotated[str, Field(pattern=DURATION_PATTERN)] = "10m"
    """Interval at which the Receiver's Secret is checked again."""
    events: list[str] | None = None
    """Events lists the event types handled, e.g. 'push' (GitHub, Gitea) or 'Push Hook'
    (GitLab); all when not set."""
    resources: list[ReceiverResource]
    """Resources are reconciled when a valid webhook arrives."""
    resource_filter: str | None = None
    """ResourceFilter is a CEL expression over each resource (res) and the request (req);
    false skips the resource."""
    secret_ref: LocalObjectReference | None = None
    """SecretRef names the Secret whose 'token' validates requests."""
    oidc_providers: list[OIDCProvider] | None = Field(
        default=None, alias="oidcProviders",
        json_schema_extra={"x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["issuerURL"]})
    """OIDCProviders authenticate a 'generic-oidc' Receiver's requests."""
    suspend: bool | None = None
    """Suspend stops the Receiver from handling requests."""


class ReceiverStatus(FluxModel):
    """ReceiverStatus is the observed state of a Receiver."""

    last_handled_reconcile_at: str | None = None
    """LastHandledReconcileAt holds the value of the most recent reconcile request value,
    so a change of the annotation value can be detected."""
    conditions: ConditionList | None = None
    """Conditions holds the conditions of the Receiver."""
    webhook_path: str | None = None
    """WebhookPath is '/hook/' followed by sha256 of the token, name and namespace."""
    observed_generation: Int64 | None = None
    """ObservedGeneration is the last observed generation of the Receiver."""


#: ``kubectl get fluxcd-notifications`` lists the three notification kinds, as in Flux
CATEGORIES = ("all", "fluxcd", "fluxcd-notifications")

PROVIDER = Kind(
    group=GROUP, version=V1BETA3, kind="Provider", plural="providers", singular="provider",
    spec=ProviderSpec, status=None, categories=CATEGORIES, printer_columns=(AGE_COLUMN,),
    description="Provider is the Schema for the providers API",
)

ALERT = Kind(
    group=GROUP, version=V1BETA3, kind="Alert", plural="alerts", singular="alert",
    spec=AlertSpec, status=None, categories=CATEGORIES, printer_columns=(AGE_COLUMN,),
    description="Alert is the Schema for the alerts API",
)

RECEIVER = Kind(
    group=GROUP, version=V1, kind="Receiver", plural="receivers", singular="receiver",
    spec=ReceiverSpec, status=ReceiverStatus, categories=CATEGORIES,
    printer_columns=(AGE_COLUMN, READY_COLUMN, STATUS_COLUMN),
    description="Receiver is the Schema for the receivers API.",
)

KINDS: tuple[Kind, ...] = (PROVIDER, ALERT, RECEIVER)
