"""kstatus: the reconcile status of one object, read from the object alone.

``compute(obj)`` gives the answer kstatus (``kubernetes-sigs/cli-utils`` ``pkg/kstatus/status``,
as Flux vendors it) gives, with its words, in this order:

1. **Generic rules.** ``metadata.deletionTimestamp`` set → Terminating;
   ``status.observedGeneration`` present and not ``metadata.generation`` → InProgress; a
   ``Reconciling=True`` condition → InProgress, ``Stalled=True`` → Failed.
2. **The rule of a built-in kind**, chosen by API group and kind (the version is ignored):
   Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, Pod, PodDisruptionBudget, Service,
   PersistentVolumeClaim, CustomResourceDefinition; Secret, ConfigMap and CronJob are always
   Current. A built-in kind's answer is final.
3. **A Ready condition**, for every other kind (Flux's own included): True → Current, False or
   Unknown → InProgress.
4. Otherwise Current: kstatus assumes an object that says nothing is reconciled.

An object whose fields have the wrong shapes (conditions that are not a list, a Pod phase
nobody knows) reads Unknown, as a kstatus poller reports a status it could not compute.

``job_health(obj)`` is the Job rule Flux's health checks use instead (Current only once the
Job completed). Everything here is pure: the Pod scheduling grace window needs the time,
which the caller passes as ``now``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple


class Status(enum.StrEnum):
    InProgress = "InProgress"
    Failed = "Failed"
    Current = "Current"
    Terminating = "Terminating"
    NotFound = "NotFound"
    Unknown = "Unknown"


@dataclass(frozen=True)
class Result:
    status: Status
    message: str


#: How long a Pod may stay Unschedulable before kstatus calls it Failed.
SCHEDULE_WINDOW = timedelta(seconds=15)

# The controller's own default when progressDeadlineSeconds is unset (math.MaxInt32): no
# deadline, so no Progressing condition is ever written and only the counters matter.
_NO_PROGRESS_DEADLINE = 2**31 - 1


class _Unreadable(Exception):
    """A field kstatus needs has a shape it cannot decode."""


class _Condition(NamedTuple):
    type: str
    status: str
    reason: str
    message: str


_MISSING: Any = object()


def _in_progress(message: str) -> Result:
    return Result(Status.InProgress, message)


def _failed(message: str) -> Result:
    return Result(Status.Failed, message)


def _current(message: str) -> Result:
    return Result(Status.Current, message)


# --------------------------------------------------------------------------- field access


def _nested(obj: Mapping[str, Any], *path: str) -> Any:
    """The value at ``path``, ``_MISSING`` when absent; an intermediate non-object is an error
    (as ``unstructured.NestedFieldNoCopy`` has it)."""
    value: Any = obj
    for i, key in enumerate(path):
        if not isinstance(value, Mapping):
            where = ".".join(path[:i])
            raise _Unreadable(f"{where} is a {type(value).__name__}, expected an object")
        if key not in value:
            return _MISSING
        value = value[key]
    return value


def _lenient(obj: Mapping[str, Any], path: str) -> Any:
    try:
        return _nested(obj, *path.split("."))
    except _Unreadable:
        return _MISSING


def _int(obj: Mapping[str, Any], path: str, default: int) -> int:
    """kstatus' GetIntField: an integer, or the default for anything else (floats included)."""
    value = _lenient(obj, path)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return default


def _str(obj: Mapping[str, Any], path: str, default: str) -> str:
    value = _lenient(obj, path)
    return value if isinstance(value, str) else default


def _strict_int(obj: Mapping[str, Any], *path: str) -> int | None:
    """unstructured.NestedInt64: None when absent, an error when present but not an integer."""
    value = _nested(obj, *path)
    if value is _MISSING:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Unreadable(f"{'.'.join(path)} is {value!r}, expected an integer")
    return value


def _conditions(obj: Mapping[str, Any]) -> list[_Condition]:
    """``status.conditions`` decoded as kstatus decodes them: absent means none."""
    status = obj.get("status")
    if status is None:
        return []
    if not isinstance(status, Mapping):
        raise _Unreadable(f"status is a {type(status).__name__}, expected an object")
    items = status.get("conditions")
    if items is None:
        return []
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise _Unreadable("status.conditions is not a list")
    out = []
    for item in items:
        if not isinstance(item, Mapping):
            raise _Unreadable("status.conditions holds an entry that is not an object")
        fields = []
        for key in ("type", "status", "reason", "message"):
            value = item.get(key)
            if value is not None and not isinstance(value, str):
                raise _Unreadable(f"status.conditions[].{key} is {value!r}, expected a string")
            fields.append(value or "")
        out.append(_Condition(*fields))
    return out


def _find(conditions: list[_Condition], type_: str, status: str) -> _Condition | None:
    return next((c for c in conditions if c.type == type_ and c.status == status), None)


def _kind(obj: Mapping[str, Any]) -> str:
    kind = obj.get("kind")
    return kind if isinstance(kind, str) else ""


def _rule_key(obj: Mapping[str, Any]) -> str:
    """``group/Kind``, or ``Kind`` for the core group; "" when the apiVersion does not parse."""
    api_version = obj.get("apiVersion")
    api_version = api_version if isinstance(api_version, str) else ""
    if api_version.count("/") > 1:
        return ""
    group = api_version.partition("/")[0] if "/" in api_version else ""
    return f"{group}/{_kind(obj)}" if group else _kind(obj)


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


# --------------------------------------------------------------------------- generic rules


def _generic(obj: Mapping[str, Any]) -> Result | None:
    deletion = _nested(obj, "metadata", "deletionTimestamp")
    if deletion is not _MISSING and deletion is not None:
        if not isinstance(deletion, str):
            raise _Unreadable("metadata.deletionTimestamp is not a string")
        if deletion:
            return Result(Status.Terminating, "Resource scheduled for deletion")

    generation = _strict_int(obj, "metadata", "generation")
    if generation is not None:
        observed = _strict_int(obj, "status", "observedGeneration")
        # Lenient when the field is absent: not every kind reports what it observed.
        if observed is not None and observed != generation:
            return _in_progress(f"{_kind(obj)} generation is {generation}, "
                                f"but latest observed generation is {observed}")

    for cond in _conditions(obj):
        if cond.type == "Reconciling" and cond.status == "True":
            return _in_progress(cond.message)
        if cond.type == "Stalled" and cond.status == "True":
            return _failed(cond.message)
    return None


def _ready_condition(obj: Mapping[str, Any]) -> Result | None:
    # kstatus' last resort: a Ready condition is not its convention, but it is common.
    for cond in _conditions(obj):
        if cond.type != "Ready":
            continue
        if cond.status == "True":
            return _current("Resource is Ready")
        if cond.status in ("False", "Unknown"):
            return _in_progress(cond.message)
    return None


# --------------------------------------------------------------------------- kind rules


def _always_ready(obj: Mapping[str, Any], now: datetime | None) -> Result:
    return _current("Resource is always ready")


def _deployment(obj: Mapping[str, Any], now: datetime | None) -> Result:
    progressing = _int(obj, "spec.progressDeadlineSeconds",
                       _NO_PROGRESS_DEADLINE) == _NO_PROGRESS_DEADLINE
    available = False
    for cond in _conditions(obj):
        if cond.type == "Progressing":
            if cond.reason == "ProgressDeadlineExceeded":
                return _failed("Progress deadline exceeded")
            if cond.status == "True" and cond.reason == "NewReplicaSetAvailable":
                progressing = True
        elif cond.type == "Available" and cond.status == "True":
            available = True

    spec = _int(obj, "spec.replicas", 1)  # the controller's default
    replicas = _int(obj, "status.replicas", 0)
    updated = _int(obj, "status.updatedReplicas", 0)
    ready = _int(obj, "status.readyReplicas", 0)
    available_replicas = _int(obj, "status.availableReplicas", 0)

    if spec > replicas:
        return _in_progress(f"Replicas: {replicas}/{spec}")
    if spec > updated:
        return _in_progress(f"Updated: {updated}/{spec}")
    if replicas > spec:
        return _in_progress(f"Pending termination: {replicas - spec}")
    if updated > available_replicas:
        return _in_progress(f"Available: {available_replicas}/{updated}")
    if spec > ready:
        return _in_progress(f"Ready: {ready}/{spec}")
    if not progressing:
        return _in_progress("ReplicaSet not Available")
    if not available:
        return _in_progress("Deployment not Available")
    return _current(f"Deployment is available. Replicas: {replicas}")


def _replicaset(obj: Mapping[str, Any], now: datetime | None) -> Result:
    if _find(_conditions(obj), "ReplicaFailure", "True"):
        return _in_progress("Replica Failure condition. Check Pods")
    spec = _int(obj, "spec.replicas", 1)
    replicas = _int(obj, "status.replicas", 0)
    ready = _int(obj, "status.readyReplicas", 0)
    available = _int(obj, "status.availableReplicas", 0)
    labelled = _int(obj, "status.fullyLabeledReplicas", 0)
    if spec > labelled:
        return _in_progress(f"Labelled: {labelled}/{spec}")
    if spec > available:
        return _in_progress(f"Available: {available}/{spec}")
    if spec > ready:
        return _in_progress(f"Ready: {ready}/{spec}")
    if replicas > spec:
        return _in_progress(f"Pending termination: {replicas - spec}")
    return _current(f"ReplicaSet is available. Replicas: {replicas}")


def _statefulset(obj: Mapping[str, Any], now: datetime | None) -> Result:
    if _str(obj, "spec.updateStrategy.type", "") == "OnDelete":
        # The user rolls the Pods by hand: nothing to wait for.
        return _current("StatefulSet is using the ondelete update strategy")
    spec = _int(obj, "spec.replicas", 1)
    ready = _int(obj, "status.readyReplicas", 0)
    current = _int(obj, "status.currentReplicas", 0)
    updated = _int(obj, "status.updatedReplicas", 0)
    replicas = _int(obj, "status.replicas", 0)
    partition = _int(obj, "spec.updateStrategy.rollingUpdate.partition", -1)

    if spec > replicas:
        return _in_progress(f"Replicas: {replicas}/{spec}")
    if spec > ready:
        return _in_progress(f"Ready: {ready}/{spec}")
    if replicas > spec:
        return _in_progress(f"Pending termination: {replicas - spec}")
    if partition != -1:
        if updated < spec - partition:
            return _in_progress(f"updated: {updated}/{spec - partition}")
        return _current(f"Partition rollout complete. updated: {updated}")
    if spec > current:
        return _in_progress(f"current: {current}/{spec}")
    if _str(obj, "status.currentRevision", "") != _str(obj, "status.updateRevision", ""):
        return _in_progress("Waiting for updated revision to match current")
    return _current(f"All replicas scheduled as expected. Replicas: {replicas}")


def _daemonset(obj: Mapping[str, Any], now: datetime | None) -> Result:
    # The generic check forgives absent generations; a DaemonSet the controller has seen
    # always has both, so their absence means "not yet observed".
    kind = _kind(obj)
    if _strict_int(obj, "metadata", "generation") is None:
        return _in_progress(f"{kind} metadata.generation not found")
    if _strict_int(obj, "status", "observedGeneration") is None:
        return _in_progress(f"{kind} status.observedGeneration not found")

    desired = _int(obj, "status.desiredNumberScheduled", -1)
    current = _int(obj, "status.currentNumberScheduled", 0)
    updated = _int(obj, "status.updatedNumberScheduled", 0)
    available = _int(obj, "status.numberAvailable", 0)
    ready = _int(obj, "status.numberReady", 0)
    if desired == -1:
        return _in_progress("Missing .status.desiredNumberScheduled")
    if desired > current:
        return _in_progress(f"Current: {current}/{desired}")
    if desired > updated:
        return _in_progress(f"Updated: {updated}/{desired}")
    if desired > available:
        return _in_progress(f"Available: {available}/{desired}")
    if desired > ready:
        return _in_progress(f"Ready: {ready}/{desired}")
    return _current(f"All replicas scheduled as expected. Replicas: {desired}")


def _pvc(obj: Mapping[str, Any], now: datetime | None) -> Result:
    phase = _str(obj, "status.phase", "unknown")
    if phase != "Bound":
        return _in_progress(f"PVC is not Bound. phase: {phase}")
    return _current("PVC is Bound")


def _crash_looping(obj: Mapping[str, Any]) -> list[str]:
    statuses = _nested(obj, "status", "containerStatuses")
    if statuses is _MISSING or statuses is None:
        return []
    if not isinstance(statuses, Sequence) or isinstance(statuses, str):
        raise _Unreadable("status.containerStatuses is not a list")
    names = []
    for item in statuses:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            continue
        reason = _lenient(item, "state.waiting.reason")
        if reason == "CrashLoopBackOff":
            names.append(item["name"])
    return names


def _pod(obj: Mapping[str, Any], now: datetime | None) -> Result:
    conditions = _conditions(obj)
    phase = _str(obj, "status.phase", "")
    if phase == "Succeeded":
        return _current("Pod has completed successfully")
    if phase == "Failed":
        # A finished Pod is as reconciled as it will ever be.
        return _current("Pod has completed, but not successfully")
    if phase == "Running":
        if _find(conditions, "Ready", "True"):
            return _current("Pod is Ready")
        looping = _crash_looping(obj)
        if looping:
            return _failed(f"Containers in CrashLoop state: {','.join(looping)}")
        return _in_progress("Pod is running but is not Ready")
    if phase == "Pending":
        scheduled = _find(conditions, "PodScheduled", "False")
        if scheduled and scheduled.reason == "Unschedulable":
            created = _parse_time(_lenient(obj, "metadata.creationTimestamp"))
            if now is not None and created is not None and now - SCHEDULE_WINDOW < created:
                return _in_progress("Pod has not been scheduled")
            return _failed("Pod could not be scheduled")
        return _in_progress("Pod is in the Pending phase")
    if phase == "":
        return _in_progress("Pod phase not available")
    raise _Unreadable(f"unknown phase {phase}")


def _pdb(obj: Mapping[str, Any], now: datetime | None) -> Result:
    # Reached only once the disruption controller observed this generation (generic rule).
    return _current("AllowedDisruptions has been computed.")


def _job(obj: Mapping[str, Any], now: datetime | None) -> Result:
    parallelism = _int(obj, "spec.parallelism", 1)
    completions = _int(obj, "spec.completions", parallelism)
    succeeded = _int(obj, "status.succeeded", 0)
    active = _int(obj, "status.active", 0)
    failed = _int(obj, "status.failed", 0)
    for cond in _conditions(obj):
        if cond.status != "True":
            continue
        if cond.type == "Complete":
            return _current(f"Job Completed. succeeded: {succeeded}/{completions}")
        if cond.type == "Failed":
            return _failed(f"Job Failed. failed: {failed}/{completions}")
        if cond.type == "Suspended":
            return _current("Job is suspended")
    if _str(obj, "status.startTime", "") == "":
        return _in_progress("Job not started")
    return _current(f"Job in progress. success:{succeeded}, active: {active}, failed: {failed}")


def _service(obj: Mapping[str, Any], now: datetime | None) -> Result:
    if (_str(obj, "spec.type", "ClusterIP") == "LoadBalancer"
            and _str(obj, "spec.clusterIP", "") == ""):
        return _in_progress("ClusterIP not set. Service type: LoadBalancer")
    return _current("Service is ready")


def _crd(obj: Mapping[str, Any], now: datetime | None) -> Result:
    for cond in _conditions(obj):
        if cond.type == "NamesAccepted" and cond.status == "False":
            return _failed(cond.message)
        if cond.type == "Established":
            if cond.status == "False" and cond.reason != "Installing":
                return _failed(cond.message)
            if cond.status == "True":
                return _current("CRD is established")
    return _in_progress("Install in progress")


_Rule = Callable[[Mapping[str, Any], datetime | None], Result]

_RULES: dict[str, _Rule] = {
    "Service": _service,
    "Pod": _pod,
    "Secret": _always_ready,
    "ConfigMap": _always_ready,
    "PersistentVolumeClaim": _pvc,
    "apps/StatefulSet": _statefulset,
    "apps/DaemonSet": _daemonset,
    "extensions/DaemonSet": _daemonset,
    "apps/Deployment": _deployment,
    "extensions/Deployment": _deployment,
    "apps/ReplicaSet": _replicaset,
    "extensions/ReplicaSet": _replicaset,
    "policy/PodDisruptionBudget": _pdb,
    "batch/CronJob": _always_ready,
    "batch/Job": _job,
    "apiextensions.k8s.io/CustomResourceDefinition": _crd,
}


# --------------------------------------------------------------------------- entry points


def compute(obj: Mapping[str, Any], *, now: datetime | None = None) -> Result:
    """kstatus' verdict on ``obj``. ``now`` (timezone-aware) opens the 15 s grace window for an
    Unschedulable Pod; without it such a Pod reads Failed at once."""
    try:
        generic = _generic(obj)
        if generic is not None:
            return generic
        rule = _RULES.get(_rule_key(obj))
        if rule is not None:
            return rule(obj, now)
        return _ready_condition(obj) or _current("Resource is current")
    except _Unreadable as err:
        return Result(Status.Unknown, str(err))


def job_health(obj: Mapping[str, Any]) -> Result:
    """Flux's Job rule for health checks (``fluxcd/pkg`` ``runtime/statusreaders``): unlike
    kstatus, a running Job is InProgress until it completes. No generic rules apply."""
    try:
        conditions = _conditions(obj)
    except _Unreadable as err:
        return Result(Status.Unknown, str(err))
    parallelism = _int(obj, "spec.parallelism", 1)
    completions = _int(obj, "spec.completions", parallelism)
    for cond in conditions:
        if cond.type == "Complete" and cond.status == "True":
            succeeded = _int(obj, "status.succeeded", 0)
            return _current(f"Job Completed. succeeded: {succeeded}/{completions}")
        if cond.type == "Failed" and cond.status == "True":
            failed = _int(obj, "status.failed", 0)
            return _failed(f"Job Failed. failed: {failed}/{completions}")
    return _in_progress("Job in progress")
