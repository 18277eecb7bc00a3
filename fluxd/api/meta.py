"""Flux's shared API types (``fluxcd/pkg`` ``apis/meta``) as pydantic models.

Python names are snake_case; the JSON names are Flux's camelCase (``by_alias``), and an
optional Go field (``omitempty``) is ``X | None = None`` here so that it is left out of the
JSON when unset. A field's Python default is its CRD default, its docstring its CRD
description, its ``Field`` constraints its OpenAPI validation (``fluxd.api.crd`` turns the
models into CRDs). Unknown fields are ignored when parsing, as a client must for objects
written by a newer server.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from fluxd.clock import rfc3339

#: Go duration as Flux's CRDs accept it (``metav1.Duration``).
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
#: Timeouts allow only ms, s and m.
TIMEOUT_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m))+$"
#: ``<algorithm>:<encoded>`` (OCI digest grammar).
DIGEST_PATTERN = r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"
CONDITION_TYPE_PATTERN = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                          r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

#: A 64-bit integer (``format: int64`` in the CRD).
Int64 = Annotated[int, Field(json_schema_extra={"format": "int64"})]
#: ``metav1.Time``: RFC 3339 in UTC with second precision on the wire.
Time = Annotated[datetime, PlainSerializer(rfc3339, return_type=str, when_used="json")]
#: ``metav1.Duration`` as text, e.g. ``1m30s``.
Duration = Annotated[str, Field(pattern=DURATION_PATTERN)]
#: ``intstr.IntOrString``.
IntOrString = int | str


class FluxModel(BaseModel):
    """Base of every fluxd API model: camelCase JSON names, docstrings as descriptions."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True,
                              validate_by_alias=True, serialize_by_alias=True,
                              use_attribute_docstrings=True, extra="ignore")

    def to_json(self) -> dict[str, Any]:
        """The JSON object Kubernetes stores: camelCase names, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def spec_of(cls, obj: Mapping[str, Any]) -> Self | None:
        """``obj["spec"]`` read with this model; None when the model refuses it (indexes
        and other readers skip such an object; its reconciler says why)."""
        try:
            return cls.model_validate(obj.get("spec") or {})
        except ValidationError:
            return None


class Condition(FluxModel):
    """Condition contains details for one aspect of the current state of this API
    resource."""

    type: Annotated[str, Field(max_length=316, pattern=CONDITION_TYPE_PATTERN)]
    """Type of condition in CamelCase or in foo.example.com/CamelCase."""
    status: Literal["True", "False", "Unknown"]
    """Status of the condition, one of True, False, Unknown."""
    observed_generation: Annotated[Int64, Field(ge=0)] | None = None
    """ObservedGeneration is the .metadata.generation the condition was set for; a
    lower value than the object's generation means the condition is out of date."""
    last_transition_time: Time
    """LastTransitionTime is when the condition last changed from one state to another."""
    reason: Annotated[str, Field(min_length=1, max_length=1024,
                                 pattern=CONDITION_REASON_PATTERN)]
    """Reason is a CamelCase, machine-readable identifier of the cause of the condition's
    last transition. It may not be empty."""
    message: Annotated[str, Field(max_length=32768)]
    """Message is a human-readable account of the transition. It may be empty."""


#: ``status.conditions``: one entry per type, merged by type under server-side apply.
ConditionList = Annotated[list[Condition], Field(json_schema_extra={
    "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})]


class Artifact(FluxModel):
    """Artifact represents the output of a source reconciliation."""

    path: str
    """Path is the artifact file's path relative to the root of the artifact storage of
    the controller that manages the source."""
    url: str
    """URL is the HTTP address the artifact is served at, for consumers to download it."""
    revision: str
    """Revision is a human-readable identifier traceable in the origin source system, such
    as a Git commit SHA, a Git tag, a Helm chart version or an OCI digest."""
    digest: Annotated[str, Field(pattern=DIGEST_PATTERN)]
    """Digest of the file, in the form '<algorithm>:<checksum>'."""
    last_update_time: Time
    """LastUpdateTime is when the artifact was last updated."""
    size: Int64 | None = None
    """Size is the number of bytes in the file."""
    metadata: dict[str, str] | None = None
    """Metadata holds upstream information such as OCI annotations."""


class LocalObjectReference(FluxModel):
    """LocalObjectReference locates an object in the namespace of the referring object."""

    name: str
    """Name of the referent."""


class NamespacedObjectReference(FluxModel):
    """NamespacedObjectReference locates an object in any namespace."""

    name: str
    """Name of the referent."""
    namespace: str | None = None
    """Namespace of the referent; when not set, the namespace of the referring object."""


class NamespacedObjectKindReference(FluxModel):
    """NamespacedObjectKindReference locates an object of a given kind in any namespace."""

    api_version: str | None = None
    """API version of the referent; when not set, the preferred version of the kind."""
    kind: str
    """Kind of the referent."""
    name: str
    """Name of the referent."""
    namespace: str | None = None
    """Namespace of the referent; when not set, the namespace of the referring object."""


class SecretKeyReference(FluxModel):
    """SecretKeyReference locates a Secret in the namespace of the referring object and,
    optionally, a key in it."""

    name: str
    """Name of the Secret."""
    key: str | None = None
    """Key in the Secret; when not set, an implementation-specific default key."""


class DependencyReference(FluxModel):
    """DependencyReference names an object that must be ready before the referring object
    is reconciled."""

    name: str
    """Name of the referent."""
    namespace: str | None = None
    """Namespace of the referent; when not set, the namespace of the referring object."""
    ready_expr: str | None = None
    """ReadyExpr is a CEL expression deciding whether the dependency is ready. When set,
    it replaces the built-in readiness check (unless the AdditiveCELDependencyCheck
    feature gate makes it an additional check)."""

    @classmethod
    def parse(cls, text: str) -> DependencyReference:
        """Read the short form ``[namespace/]name[@readyExpr]``."""
        name, _, expr = text.partition("@")
        namespace, _, rest = name.partition("/")
        if not rest:
            namespace, rest = "", name
        return cls(name=rest, namespace=namespace or None, ready_expr=expr or None)


class KubeConfigReference(FluxModel):
    """KubeConfigReference says how to reach a remote cluster: exactly one of a ConfigMap
    describing a cloud provider's cluster, or a Secret holding a kubeconfig file."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.configMapRef) || has(self.secretRef)",
         "message": "one of configMapRef or secretRef is required"},
        {"rule": "!has(self.configMapRef) || !has(self.secretRef)",
         "message": "configMapRef and secretRef are mutually exclusive"},
    ]})

    config_map_ref: LocalObjectReference | None = None
    """ConfigMapRef names a ConfigMap describing the cluster: 'provider' (aws, azure, gcp
    or generic; required), 'cluster' (the provider's resource name of the cluster),
    'address' (the API server address), 'ca.crt' (the API server's CA certificate),
    'audiences' (line-separated token audiences) and 'serviceAccountName' (the
    ServiceAccount to authenticate as). Mutually exclusive with SecretRef."""
    secret_ref: SecretKeyReference | None = None
    """SecretRef names a Secret holding a kubeconfig file under its key ('value' when no
    key is given). The kubeconfig should be self-contained: exec and cmd-path credential
    helpers do not work. Mutually exclusive with ConfigMapRef."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.config_map_ref is None) == (self.secret_ref is None):
            raise ValueError("exactly one of configMapRef or secretRef is required")
        return self

    @property
    def secret_key(self) -> str:
        """The Secret key holding the kubeconfig."""
        return (self.secret_ref.key if self.secret_ref else None) or "value"


class ValuesReference(FluxModel):
    """ValuesReference names a ConfigMap or Secret holding Helm values, and optionally the
    key they are at."""

    kind: Literal["Secret", "ConfigMap"]
    """Kind of the values referent, Secret or ConfigMap."""
    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Name of the values referent, in the namespace of the referring object."""
    values_key: Annotated[str, Field(max_length=253, pattern=r"^[\-._a-zA-Z0-9]+$")] | None = None
    """ValuesKey is the data key holding the values.yaml, or a single value when TargetPath
    is set. Defaults to 'values.yaml'."""
    target_path: Annotated[str, Field(max_length=250,
                                      pattern=r"^([a-zA-Z0-9_\-.\\\/]|\[[0-9]{1,5}\])+$")] \
        | None = None
    """TargetPath is the YAML dot-notation path the value is written at (Helm --set
    semantics); ValuesKey then names a single flat value. When not set, the values are
    merged at the root."""
    optional: bool | None = None
    """Optional tolerates a referent that does not exist; a missing key, a bad TargetPath
    or a transient error still fail the reconcile."""
    literal: bool | None = None
    """Literal writes the TargetPath value verbatim (Helm --set-literal semantics)."""

    @property
    def key(self) -> str:
        """The data key to read."""
        return self.values_key or "values.yaml"


class HistorySnapshot(FluxModel):
    """HistorySnapshot records the reconciliations of one set of resources: when, how long
    and with what result."""

    digest: str
    """Digest identifies the reconciled resources, in the form '<algorithm>:<checksum>'."""
    first_reconciled: Time
    """FirstReconciled is when this digest was first reconciled."""
    last_reconciled: Time
    """LastReconciled is when this digest was last reconciled; the history is sorted by it,
    newest first."""
    last_reconciled_duration: str
    """LastReconciledDuration is how long the last reconciliation of this digest took."""
    last_reconciled_status: str
    """LastReconciledStatus is the result of the last reconciliation of this digest."""
    total_reconciliations: Int64
    """TotalReconciliations counts the reconciliations of this digest with this status."""
    metadata: dict[str, str] | None = None
    """Metadata holds reconciler-specific details such as revisions or resource counts."""


#: ``status.history``: newest first, at most ``HISTORY_MAX_SIZE`` entries.
HISTORY_MAX_SIZE = 5


class ReconcileRequestStatus(FluxModel):
    """The status field that records handled ``reconcile.fluxcd.io/requestedAt`` requests;
    Flux statuses inline it."""

    last_handled_reconcile_at: str | None = None
    """LastHandledReconcileAt holds the value of the most recent reconcile request that was
    handled, so that a change of the annotation value can be detected."""


class ForceRequestStatus(FluxModel):
    """The status field that records handled ``reconcile.fluxcd.io/forceAt`` requests."""

    last_handled_force_at: str | None = None
    """LastHandledForceAt holds the value of the most recent force request that was
    handled, so that a change of the annotation value can be detected."""
