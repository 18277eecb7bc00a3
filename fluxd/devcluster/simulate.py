"""The statuses a kubelet and the workload controllers would write, as pure functions.

The development server runs no kubelet or controllers. After a short delay it writes the
``status`` computed here, so ``kubectl wait``, ``kubectl rollout status``, helm's
kstatus-based ``--wait`` and hook waiting, and Flux's health checks see what a real cluster
would show. This module only computes statuses; scheduling and writing them is the caller's.

Contract:

- ``simulated_kinds()``: the (group, kind) pairs handled; every other kind is left alone
  (``needs_simulation`` is False, ``pending_status`` is None, ``final_status`` raises).
- ``wants_failure(obj)``: the annotation ``FAIL_ANNOTATION: "fail"`` asks for the failure
  outcome instead of success.
- ``ready_delay(obj, default)``: seconds to wait, from ``DELAY_ANNOTATION`` (a Go duration
  made of ``h``, ``m``, ``s``, ``ms`` parts, e.g. ``1m30s``, ``500ms``, ``0``); anything else
  gives ``default``.
- ``needs_simulation(group, kind, obj)``: True while the object's status does not show the
  settled outcome (success or, when asked, failure) of its current spec and generation.
- ``pending_status(group, kind, obj, now)``: the status right after a create or spec change
  (rollout in progress, Job active, Pod creating containers), or None when there is no such
  intermediate state or the object already shows it.
- ``final_status(group, kind, obj, now)``: the settled status. Success is judged Current by
  kstatus; failure is judged Failed, or InProgress where kstatus cannot tell failure apart.

As on a real cluster, a finished Job or Pod and a bound claim never change again: they need
no simulation, get no pending status, and their final status is the one they have.

Every timestamp written is ``now`` (RFC 3339), except that a condition keeps its
``lastTransitionTime`` while its status is unchanged and a started Job or Pod keeps its
``startTime``. Results are fresh dicts; inputs are never mutated. ``obj`` is expected to be
the stored object, i.e. already through ``fluxd.devcluster.defaults``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from fluxd.devcluster.defaults import qos_class
from fluxd.jsonvalue import clone

__all__ = [
    "DELAY_ANNOTATION",
    "FAIL_ANNOTATION",
    "final_status",
    "needs_simulation",
    "pending_status",
    "ready_delay",
    "simulated_kinds",
    "template_hash",
    "wants_failure",
]

FAIL_ANNOTATION = "devcluster.fluxd.io/simulate"
DELAY_ANNOTATION = "devcluster.fluxd.io/ready-after"

Obj = dict[str, Any]

_NODE_IP = "127.0.0.1"

_KINDS = frozenset(
    {
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("apps", "ReplicaSet"),
        ("batch", "Job"),
        ("", "Pod"),
        ("", "PersistentVolumeClaim"),
        ("", "Service"),
    }
)


def simulated_kinds() -> frozenset[tuple[str, str]]:
    """The (group, kind) pairs whose status this module simulates."""
    return _KINDS


def wants_failure(obj: Mapping[str, Any]) -> bool:
    """True when the object asks, by annotation, to fail instead of becoming ready."""
    value = _annotations(obj).get(FAIL_ANNOTATION)
    return isinstance(value, str) and value.strip().lower() == "fail"


# --------------------------------------------------------------------------- delay

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def ready_delay(obj: Mapping[str, Any], default: float) -> float:
    """Seconds before the final status is written: the annotation's duration or ``default``."""
    value = _annotations(obj).get(DELAY_ANNOTATION)
    if not isinstance(value, str):
        return default
    parsed = _parse_duration(value.strip())
    return default if parsed is None else parsed


def _parse_duration(text: str) -> float | None:
    # Go's time.ParseDuration, restricted to the units that make sense for a delay, and
    # without a sign: a negative delay is as meaningless as a malformed one.
    if text == "0":
        return 0.0
    if not text:
        return None
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return total if position == len(text) else None


# --------------------------------------------------------------------------- dispatch


def needs_simulation(group: str, kind: str, obj: Mapping[str, Any]) -> bool:
    """True when the status does not yet show the settled outcome of the current spec."""
    if (group, kind) not in _KINDS:
        return False
    special = _NEEDS.get((group, kind))
    if special is not None:
        return special(obj)
    # Workload controllers: settled exactly when the status already is the final status
    # (timestamps aside), which covers generation, replica counts, revisions and outcome.
    settled: bool = _timeless(final_status(group, kind, obj, "")) == _timeless(_status(obj))
    return not settled


def pending_status(
    group: str, kind: str, obj: Mapping[str, Any], now: str
) -> dict[str, Any] | None:
    """The in-progress status right after a create or spec change, or None if none is due."""
    builder = _PENDING.get((group, kind))
    if builder is None:
        return None
    status = builder(obj, now)
    if status is None or _timeless(status) == _timeless(_status(obj)):
        return None
    return status


def final_status(group: str, kind: str, obj: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The settled status: success, or failure when ``wants_failure(obj)``."""
    builder = _FINAL.get((group, kind))
    if builder is None:
        raise ValueError(f"no simulated status for {group or 'core'}/{kind}")
    return builder(obj, now, wants_failure(obj))


# --------------------------------------------------------------------------- helpers


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    return annotations if isinstance(annotations, dict) else {}


def _meta(obj: Mapping[str, Any], key: str) -> Any:
    meta = obj.get("metadata")
    return meta.get(key) if isinstance(meta, dict) else None


def _spec(obj: Mapping[str, Any]) -> Obj:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _status(obj: Mapping[str, Any]) -> Obj:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def _int(value: Any, default: int) -> int:
    # bool is an int in Python but never a count in Kubernetes
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _counts(status: Obj, **counts: int) -> None:
    """Add the counts, leaving out zeros as the ``omitempty`` fields of the real types do."""
    for key, value in counts.items():
        if value:
            status[key] = value


def _with_generation(obj: Mapping[str, Any]) -> Obj:
    # Only echo a generation that exists: kstatus reads a stray observedGeneration against a
    # missing generation (0) as "not yet observed".
    generation = _meta(obj, "generation")
    return {"observedGeneration": generation} if isinstance(generation, int) else {}


_TIME_KEYS = frozenset(
    {
        "lastTransitionTime",
        "lastUpdateTime",
        "lastProbeTime",
        "lastHeartbeatTime",
        "startTime",
        "completionTime",
        "startedAt",
        "finishedAt",
    }
)


def _timeless(value: Any) -> Any:
    """``value`` without timestamps, for comparing what a status says rather than when."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k not in _TIME_KEYS}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def _condition(
    previous: Obj,
    now: str,
    type_: str,
    status: str,
    reason: str | None = None,
    message: str | None = None,
    *,
    times: tuple[str, ...] = ("lastTransitionTime",),
) -> Obj:
    """A condition as the controllers write it, keeping history the way they do.

    An unchanged condition is kept as it was (its times included); one whose reason or
    message changed keeps its ``lastTransitionTime`` as long as its status did not flip.
    """
    condition: Obj = {"type": type_, "status": status}
    for key in times:
        condition[key] = now
    if reason is not None:
        condition["reason"] = reason
    if message is not None:
        condition["message"] = message
    old = next(
        (
            c
            for c in previous.get("conditions") or []
            if isinstance(c, dict) and c.get("type") == type_
        ),
        None,
    )
    if old is None or old.get("status") != status:
        return condition
    if old.get("reason") == reason and old.get("message") == message:
        kept = clone(old)
        for key in times:
            kept.setdefault(key, now)
        return kept
    if "lastTransitionTime" in old:
        condition["lastTransitionTime"] = old["lastTransitionTime"]
    return condition


def _has_condition(status: Obj, type_: str, value: str = "True") -> bool:
    return any(
        isinstance(c, dict) and c.get("type") == type_ and c.get("status") == value
        for c in status.get("conditions") or []
    )


# Kubernetes' "safe" alphabet for generated names: no vowels (no words), no 0/1/3 (no
# look-alikes), as in pod-template-hash and controller revision names.
_SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: Any, salt: str = "") -> str:
    """A 10-character name suffix derived deterministically from a pod template."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    number = int.from_bytes(hashlib.sha256((salt + canonical).encode()).digest()[:8], "big")
    chars = []
    for _ in range(10):
        number, digit = divmod(number, len(_SAFE_ALPHABET))
        chars.append(_SAFE_ALPHABET[digit])
    return "".join(chars)


def _revision_name(obj: Mapping[str, Any], salt: str = "") -> str:
    return f"{_meta(obj, 'name') or ''}-{template_hash(_spec(obj).get('template'), salt)}"


# --------------------------------------------------------------------------- Deployment

_DEPLOY_TIMES = ("lastUpdateTime", "lastTransitionTime")
_MIN_AVAILABLE = "Deployment has minimum availability."
_NOT_AVAILABLE = "Deployment does not have minimum availability."


def _deployment_pending(obj: Mapping[str, Any], now: str) -> Obj:
    previous = _status(obj)
    replicas = _int(_spec(obj).get("replicas"), 1)
    rs = _revision_name(obj)
    status = _with_generation(obj)
    progressing = _condition(
        previous,
        now,
        "Progressing",
        "True",
        "ReplicaSetUpdated",
        f'ReplicaSet "{rs}" is progressing.',
        times=_DEPLOY_TIMES,
    )
    was_available = _has_condition(previous, "Available")
    if replicas == 0 or was_available:
        # Scaling to zero is available at once; a rollout over available pods stays
        # available while the new ReplicaSet comes up.
        available = min(_int(previous.get("availableReplicas"), 0), replicas)
        ready = min(_int(previous.get("readyReplicas"), 0), replicas)
        # Same template (a scale) means the pods are already the updated ones; a new
        # template starts with no updated pods, which is what rollout status waits on.
        same_template = f'"{rs}"' in str(_progressing_message(previous))
        _counts(
            status,
            replicas=replicas,
            updatedReplicas=replicas if same_template else 0,
            readyReplicas=ready,
            availableReplicas=available,
            unavailableReplicas=replicas - available,
        )
        status["conditions"] = [
            _condition(
                previous,
                now,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                _MIN_AVAILABLE,
                times=_DEPLOY_TIMES,
            ),
            progressing,
        ]
        return status
    _counts(status, replicas=replicas, updatedReplicas=replicas, unavailableReplicas=replicas)
    status["conditions"] = [
        _condition(
            previous,
            now,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            _NOT_AVAILABLE,
            times=_DEPLOY_TIMES,
        ),
        progressing,
    ]
    return status


def _progressing_message(status: Obj) -> Any:
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == "Progressing":
            return condition.get("message")
    return None


def _deployment_final(obj: Mapping[str, Any], now: str, fail: bool) -> Obj:
    previous = _status(obj)
    replicas = _int(_spec(obj).get("replicas"), 1)
    rs = _revision_name(obj)
    status = _with_generation(obj)
    if fail:
        _counts(status, replicas=replicas, updatedReplicas=replicas, unavailableReplicas=replicas)
        status["conditions"] = [
            _condition(
                previous,
                now,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                _NOT_AVAILABLE,
                times=_DEPLOY_TIMES,
            ),
            # The reason kubectl rollout status and kstatus both read as a failed rollout.
            _condition(
                previous,
                now,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs}" has timed out progressing.',
                times=_DEPLOY_TIMES,
            ),
        ]
        return status
    _counts(
        status,
        replicas=replicas,
        updatedReplicas=replicas,
        readyReplicas=replicas,
        availableReplicas=replicas,
    )
    status["conditions"] = [
        _condition(
            previous,
            now,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            _MIN_AVAILABLE,
            times=_DEPLOY_TIMES,
        ),
        _condition(
            previous,
            now,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{rs}" has successfully progressed.',
            times=_DEPLOY_TIMES,
        ),
    ]
    return status


# --------------------------------------------------------------------------- StatefulSet


def _statefulset_status(
    obj: Mapping[str, Any], *, current_revision: str, ready: int, current: int, updated: int
) -> Obj:
    replicas = _int(_spec(obj).get("replicas"), 1)
    status = _with_generation(obj)
    # replicas and availableReplicas are not omitempty in the real type; the rest are
    status["replicas"] = replicas
    _counts(status, readyReplicas=ready, currentReplicas=current, updatedReplicas=updated)
    status["availableReplicas"] = ready
    status["currentRevision"] = current_revision
    status["updateRevision"] = _revision_name(obj)
    status["collisionCount"] = 0
    return status


def _statefulset_pending(obj: Mapping[str, Any], now: str) -> Obj:
    previous = _status(obj)
    replicas = _int(_spec(obj).get("replicas"), 1)
    revision = _revision_name(obj)
    old_revision = previous.get("currentRevision")
    ready = min(_int(previous.get("readyReplicas"), 0), replicas)
    if isinstance(old_revision, str) and old_revision and old_revision != revision:
        # A template change: the old pods are still current, none is updated yet.
        current = min(_int(previous.get("currentReplicas"), 0), replicas)
        return _statefulset_status(
            obj, current_revision=old_revision, ready=ready, current=current, updated=0
        )
    # A create or a scale: every pod is of the one revision, some not ready yet.
    return _statefulset_status(
        obj, current_revision=revision, ready=ready, current=replicas, updated=replicas
    )


def _statefulset_final(obj: Mapping[str, Any], now: str, fail: bool) -> Obj:
    replicas = _int(_spec(obj).get("replicas"), 1)
    revision = _revision_name(obj)
    if not fail:
        return _statefulset_status(
            obj, current_revision=revision, ready=replicas, current=replicas, updated=replicas
        )
    # A stuck rolling update: the new revision never becomes current. Keep the revision it
    # is stuck on when there is one; a first rollout has none, so name a stand-in.
    old_revision = _status(obj).get("currentRevision")
    if not (isinstance(old_revision, str) and old_revision and old_revision != revision):
        old_revision = _revision_name(obj, salt="previous:")
    return _statefulset_status(
        obj, current_revision=old_revision, ready=0, current=0, updated=replicas
    )


# --------------------------------------------------------------------------- DaemonSet


def _daemonset_status(obj: Mapping[str, Any], *, ready: bool, updated: int) -> Obj:
    # One simulated node, so one pod is desired; these four counts are not omitempty.
    status = {
        "currentNumberScheduled": 1,
        "desiredNumberScheduled": 1,
        "numberMisscheduled": 0,
        "numberReady": 1 if ready else 0,
    }
    status.update(_with_generation(obj))
    _counts(
        status,
        updatedNumberScheduled=updated,
        numberAvailable=1 if ready else 0,
        numberUnavailable=0 if ready else 1,
    )
    return status


def _daemonset_pending(obj: Mapping[str, Any], now: str) -> Obj:
    return _daemonset_status(obj, ready=False, updated=1)


def _daemonset_final(obj: Mapping[str, Any], now: str, fail: bool) -> Obj:
    return _daemonset_status(obj, ready=not fail, updated=1)


# --------------------------------------------------------------------------- ReplicaSet


def _replicaset_status(obj: Mapping[str, Any], ready: int) -> Obj:
    replicas = _int(_spec(obj).get("replicas"), 1)
    status: Obj = {"replicas": replicas}  # not omitempty in the real type
    _counts(
        status,
        fullyLabeledReplicas=replicas,
        readyReplicas=ready,
        availableReplicas=ready,
    )
    status.update(_with_generation(obj))
    return status


def _replicaset_pending(obj: Mapping[str, Any], now: str) -> Obj:
    replicas = _int(_spec(obj).get("replicas"), 1)
    return _replicaset_status(obj, min(_int(_status(obj).get("readyReplicas"), 0), replicas))


def _replicaset_final(obj: Mapping[str, Any], now: str, fail: bool) -> Obj:
    return _replicaset_status(obj, 0 if fail else _int(_spec(obj).get("replicas"), 1))


# --------------------------------------------------------------------------- Job

_JOB_TIMES = ("lastProbeTime", "lastTransitionTime")
_MAX_INT32 = 2**31 - 1


def _job_finished(status: Obj) -> bool:
    return _has_condition(status, "Complete") or _has_condition(status, "Failed")


def _job_needs(obj: Mapping[str, Any]) -> bool:
    status = _status(obj)
    if _job_finished(status):
        return False  # a finished Job is final, whatever its annotations say later
    if _spec(obj).get("suspend") is True:
        return not _has_condition(status, "Suspended")
    return True


def _job_base(obj: Mapping[str, Any], now: str) -> Obj:
    previous = _status(obj)
    status: Obj = {"startTime": previous.get("startTime") or now}
    if _has_condition(previous, "Suspended"):
        status["conditions"] = [
            _condition(
                previous, now, "Suspended", "False", "JobResumed", "Job resumed", times=_JOB_TIMES
            )
        ]
    return status


def _job_trailer(status: Obj) -> Obj:
    # Pointer fields a current job controller always writes, zero or not.
    status["ready"] = 0
    status["terminating"] = 0
    status["uncountedTerminatedPods"] = {}
    return status


def _job_suspended(obj: Mapping[str, Any], now: str) -> Obj:
    previous = _status(obj)
    status = {k: clone(v) for k, v in previous.items() if k not in ("active", "ready")}
    status["conditions"] = [
        _condition(
            previous, now, "Suspended", "True", "JobSuspended", "Job suspended", times=_JOB_TIMES
        )
    ]
    return status


def _job_pending(obj: Mapping[str, Any], now: str) -> Obj | None:
    if _spec(obj).get("suspend") is True or _job_finished(_status(obj)):
        return None
    spec = _spec(obj)
    parallelism = _int(spec.get("parallelism"), 1)
    completions = _int(spec.get("completions"), parallelism)
    status = _job_base(obj, now)
    _counts(status, active=min(parallelism, completions))
    return _job_trailer(status)


def _job_final(obj: Mapping[str, Any], now: str, fail: bool) -> Obj:
    if _job_finished(_status(obj)):
        return clone(_status(obj))  # finished is final: no second outcome
    spec = _spec(obj)
    if spec.get("suspend") is True:
        return _job_suspended(obj, now)
    previous = _status(obj)
    status = _job_base(obj, now)
    conditions: list[Obj] = status.setdefault("conditions", [])
    if fail:
        reason, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        # FailureTarget first, as the controller records the verdict before the outcome.
        for type_ in ("FailureTarget", "Failed"):
            conditions.append(
                _condition(previous, now, type_, "True", reason, message, times=_JOB_TIMES)
            )
        status["failed"] = min(_int(spec.get("backoffLimit"), 6) + 1, _MAX_INT32)
        return _job_trailer(status)
    reason, message = "CompletionsReached", "Reached expected number of succeeded pods"
    for type_ in ("SuccessCriteriaMet", "Complete"):
        conditions.append(
            _condition(previous, now, type_, "True", reason, message, times=_JOB_TIMES)
        )
    completions = _int(spec.get("completions"), 1)
    status["completionTime"] = now
    _counts(status, succeeded=completions)
    if spec.get("completionMode") == "Indexed" and completions > 0:
        status["completedIndexes"] = "0" if completions == 1 else f"0-{completions - 1}"
    return _job_trailer(status)


# --------------------------------------------------------------------------- Pod

# The kubelet does not probe pod conditions, so it writes lastProbeTime as null.
_POD_TIMES = ("lastTransitionTime",)


def _containers(spec: Obj, key: str) -> list[Obj]:
    value = spec.get(key)
    return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []


def _pod_restarts(obj: Mapping[str, Any]) -> bool:
    return _spec(obj).get("restartPolicy", "Always") in ("Always", None, "")


def _pod_needs(obj: Mapping[str, Any]) -> bool:
    status = _status(obj)
    phase = status.get("phase")
    if phase in ("Succeeded", "Failed"):
        return False  # terminal phases never change
    if phase != "Running":
        return True
    if wants_failure(obj):
        return not _crash_looping(status)
    return not _has_condition(status, "Ready")


def _crash_looping(status: Obj) -> bool:
    return any(
        isinstance(cs, dict)
        and (cs.get("state") or {}).get("waiting", {}).get("reason") == "CrashLoopBackOff"
        for cs in status.get("containerStatuses") or []
    )


def _pod_base(obj: Mapping[str, Any], now: str, *, with_pod_ip: bool) -> Obj:
    previous = _status(obj)
    status: Obj = _with_generation(obj)
    status["hostIP"] = _NODE_IP
    status["hostIPs"] = [{"ip": _NODE_IP}]
    if with_pod_ip:
        status["podIP"] = _NODE_IP
        status["podIPs"] = [{"ip": _NODE_IP}]
    status["qosClass"] = previous.get("qosClass") or qos_class(_spec(obj))
    status["startTime"] = previous.get("startTime") or now
    return status


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def _container_status(
    obj: Mapping[str, Any],
    container: Obj,
    state: Obj,
    *,
    ready: bool,
    started: bool,
    created: bool = True,
) -> Obj:
    name = str(container.get("name") or "")
    image = str(container.get("image") or "")
    uid = str(_meta(obj, "uid") or _meta(obj, "name") or "")
    status: Obj = {
        "name": name,
        "image": image,
        "imageID": "",
        "lastState": {},
        "ready": ready,
        "restartCount": 0,
        "started": started,
        "state": state,
    }
    if created:  # only a created container has an ID and a pulled image
        status["containerID"] = f"containerd://{_digest(uid, name)}"
        status["imageID"] = f"{image.split('@')[0]}@sha256:{_digest(image)}"
    return status


def _pod_conditions(
    obj: Mapping[str, Any],
    now: str,
    *,
    sandbox: bool,
    initialized: tuple[str, str | None, str | None],
    ready: tuple[str, str | None, str | None],
) -> list[Obj]:
    previous = _status(obj)
    conditions = [
        _condition(
            previous,
            now,
            "PodReadyToStartContainers",
            "True" if sandbox else "False",
            times=_POD_TIMES,
        ),
        _condition(previous, now, "Initialized", *initialized, times=_POD_TIMES),
        _condition(previous, now, "Ready", *ready, times=_POD_TIMES),
        _condition(previous, now, "ContainersReady", *ready, times=_POD_TIMES),
        _condition(previous, now, "PodScheduled", "True", times=_POD_TIMES),
    ]
    for condition in conditions:
        condition.setdefault("lastProbeTime", None)
    return conditions


def _unready(names: list[str], what: str = "unready") -> str:
    return f"containers with {what} status: [{' '.join(names)}]"


def _pod_pending(obj: Mapping[str, Any], now: str) -> Obj | None:
    status = _status(obj)
    if status.get("phase") in ("Succeeded", "Failed", "Running"):
        return None
    spec = _spec(obj)
    inits = _containers(spec, "initContainers")
    mains = _containers(spec, "containers")
    result = _pod_base(obj, now, with_pod_ip=False)
    result["phase"] = "Pending"
    init_names = [str(c.get("name")) for c in inits]
    main_names = [str(c.get("name")) for c in mains]
    result["conditions"] = _pod_conditions(
        obj,
        now,
        sandbox=False,
        initialized=(
            ("False", "ContainersNotInitialized", _unready(init_names, "incomplete"))
            if inits
            else ("True", None, None)
        ),
        ready=("False", "ContainersNotReady", _unready(main_names)),
    )
    creating = {"waiting": {"reason": "ContainerCreating"}}
    # With init containers to run first, the app containers wait on initialization.
    main_state = {"waiting": {"reason": "PodInitializing"}} if inits else creating
    if inits:
        result["initContainerStatuses"] = [
            _container_status(
                obj, c, clone(creating), ready=False, started=False, created=False
            )
            for c in inits
        ]
    result["containerStatuses"] = [
        _container_status(
            obj, c, clone(main_state), ready=False, started=False, created=False
        )
        for c in mains
    ]
    return result


def _terminated(now: str, start: str, code: int) -> Obj:
    return {
        "terminated": {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": start,
            "finishedAt": now,
        }
    }


def _pod_final(obj: Mapping[str, Any], now: str, fail: bool) -> Obj:
    if _status(obj).get("phase") in ("Succeeded", "Failed"):
        return clone(_status(obj))  # terminal phases never change
    spec = _spec(obj)
    restarts = _pod_restarts(obj)
    result = _pod_base(obj, now, with_pod_ip=True)
    start = str(result["startTime"])
    inits = _containers(spec, "initContainers")
    mains = _containers(spec, "containers")
    main_names = [str(c.get("name")) for c in mains]

    init_statuses = []
    for container in inits:
        if container.get("restartPolicy") == "Always":  # a sidecar keeps running
            state: Obj = {"running": {"startedAt": start}}
            init_statuses.append(_container_status(obj, container, state, ready=True, started=True))
        else:
            # a finished init container reports ready, as the kubelet does
            done = _terminated(now, start, 0)
            init_statuses.append(_container_status(obj, container, done, ready=True, started=False))
    if init_statuses:
        result["initContainerStatuses"] = init_statuses

    if restarts and fail:
        # Keeps restarting and crashing: Running, never Ready, kstatus sees the crash loop.
        result["phase"] = "Running"
        result["conditions"] = _pod_conditions(
            obj,
            now,
            sandbox=True,
            initialized=("True", None, None),
            ready=("False", "ContainersNotReady", _unready(main_names)),
        )
        pod = f"{_meta(obj, 'name')}_{_meta(obj, 'namespace') or 'default'}({_meta(obj, 'uid')})"
        statuses = []
        for container in mains:
            waiting = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off 10s restarting failed container={container.get('name')}"
                    f" pod={pod}",
                }
            }
            entry = _container_status(obj, container, waiting, ready=False, started=False)
            entry["lastState"] = _terminated(now, start, 1)
            entry["restartCount"] = 1
            statuses.append(entry)
        result["containerStatuses"] = statuses
        return result

    if restarts:
        result["phase"] = "Running"
        result["conditions"] = _pod_conditions(
            obj,
            now,
            sandbox=True,
            initialized=("True", None, None),
            ready=("True", None, None),
        )
        result["containerStatuses"] = [
            _container_status(obj, c, {"running": {"startedAt": start}}, ready=True, started=True)
            for c in mains
        ]
        return result

    # Never/OnFailure: the containers run to completion (exit 0) or fail (exit 1).
    code = 1 if fail else 0
    reason = "PodFailed" if fail else "PodCompleted"
    result["phase"] = "Failed" if fail else "Succeeded"
    result["conditions"] = _pod_conditions(
        obj,
        now,
        sandbox=False,
        initialized=("True", None if fail else "PodCompleted", None),
        ready=("False", reason, None),
    )
    result["containerStatuses"] = [
        _container_status(obj, c, _terminated(now, start, code), ready=False, started=False)
        for c in mains
    ]
    return result


# --------------------------------------------------------------------------- PVC


def _pvc_needs(obj: Mapping[str, Any]) -> bool:
    phase = _status(obj).get("phase")
    if phase == "Bound":
        return False  # a bound claim stays bound
    return not wants_failure(obj) or phase != "Pending"


def _pvc_pending(obj: Mapping[str, Any], now: str) -> Obj | None:
    if _status(obj).get("phase") == "Bound":
        return None
    return {"phase": "Pending"}


def _pvc_final(obj: Mapping[str, Any], now: str, fail: bool) -> Obj:
    if _status(obj).get("phase") == "Bound":
        return clone(_status(obj))  # a bound claim stays bound
    if fail:
        return {"phase": "Pending"}  # no volume ever binds
    spec = _spec(obj)
    status: Obj = {"phase": "Bound"}
    if isinstance(spec.get("accessModes"), list):
        status["accessModes"] = list(spec["accessModes"])
    resources = spec.get("resources")
    requests = resources.get("requests") if isinstance(resources, dict) else None
    if isinstance(requests, dict) and requests.get("storage") is not None:
        status["capacity"] = {"storage": requests["storage"]}
    return status


# --------------------------------------------------------------------------- Service


def _lb_wanted(obj: Mapping[str, Any]) -> bool:
    return _spec(obj).get("type") == "LoadBalancer" and not wants_failure(obj)


def _has_ingress(obj: Mapping[str, Any]) -> bool:
    balancer = _status(obj).get("loadBalancer")
    return isinstance(balancer, dict) and bool(balancer.get("ingress"))


def _service_needs(obj: Mapping[str, Any]) -> bool:
    # An ingress is due on a working LoadBalancer and withdrawn from anything else.
    return _has_ingress(obj) != _lb_wanted(obj)


def _service_final(obj: Mapping[str, Any], now: str, fail: bool) -> Obj:
    status = clone(_status(obj))
    balancer: Obj = {}
    if _spec(obj).get("type") == "LoadBalancer" and not fail:
        balancer["ingress"] = [{"ip": _NODE_IP, "ipMode": "VIP"}]
    status["loadBalancer"] = balancer
    return status


# --------------------------------------------------------------------------- tables

_Pending = Callable[[Mapping[str, Any], str], "Obj | None"]
_Final = Callable[[Mapping[str, Any], str, bool], Obj]

_PENDING: dict[tuple[str, str], _Pending] = {
    ("apps", "Deployment"): _deployment_pending,
    ("apps", "StatefulSet"): _statefulset_pending,
    ("apps", "DaemonSet"): _daemonset_pending,
    ("apps", "ReplicaSet"): _replicaset_pending,
    ("batch", "Job"): _job_pending,
    ("", "Pod"): _pod_pending,
    ("", "PersistentVolumeClaim"): _pvc_pending,
}

_FINAL: dict[tuple[str, str], _Final] = {
    ("apps", "Deployment"): _deployment_final,
    ("apps", "StatefulSet"): _statefulset_final,
    ("apps", "DaemonSet"): _daemonset_final,
    ("apps", "ReplicaSet"): _replicaset_final,
    ("batch", "Job"): _job_final,
    ("", "Pod"): _pod_final,
    ("", "PersistentVolumeClaim"): _pvc_final,
    ("", "Service"): _service_final,
}

_NEEDS: dict[tuple[str, str], Callable[[Mapping[str, Any]], bool]] = {
    ("batch", "Job"): _job_needs,
    ("", "Pod"): _pod_needs,
    ("", "PersistentVolumeClaim"): _pvc_needs,
    ("", "Service"): _service_needs,
}
