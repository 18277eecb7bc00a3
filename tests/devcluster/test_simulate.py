"""Tests for fluxd.devcluster.simulate: the statuses written in place of kubelet and controllers.

Success and failure are judged by ``kstatus``, a transcription of the rules of
sigs.k8s.io/cli-utils/pkg/kstatus/status (generic observedGeneration and condition checks,
then the per-kind rules), which is what helm's ``--wait`` and Flux's health checks use.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fluxd.devcluster.defaults import apply_defaults
from fluxd.devcluster.simulate import (
    DELAY_ANNOTATION,
    FAIL_ANNOTATION,
    final_status,
    needs_simulation,
    pending_status,
    ready_delay,
    simulated_kinds,
    template_hash,
    wants_failure,
)

Obj = dict[str, Any]

NOW = "2026-01-02T03:04:05Z"
LATER = "2026-01-02T03:04:09Z"

CURRENT, IN_PROGRESS, FAILED = "Current", "InProgress", "Failed"


# --------------------------------------------------------------------------- kstatus


def _int(obj: Obj, path: str, default: int) -> int:
    node: Any = obj
    for key in path.strip(".").split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return int(node)


def _str(obj: Obj, path: str, default: str) -> str:
    node: Any = obj
    for key in path.strip(".").split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return str(node)


def _conditions(obj: Obj) -> list[Obj]:
    return list((obj.get("status") or {}).get("conditions") or [])


def _has(obj: Obj, type_: str, status: str = "True") -> bool:
    return any(c["type"] == type_ and c["status"] == status for c in _conditions(obj))


def kstatus(group: str, kind: str, obj: Obj) -> str:
    """The status kstatus computes for ``obj``, for the kinds this module simulates."""
    status = obj.get("status") or {}
    observed = status.get("observedGeneration")
    if observed is not None and observed != obj["metadata"].get("generation", 0):
        return IN_PROGRESS
    if _has(obj, "Reconciling"):
        return IN_PROGRESS
    if _has(obj, "Stalled"):
        return FAILED
    return _KSTATUS[(group, kind)](obj)


def _k_deployment(obj: Obj) -> str:
    progressing = _int(obj, ".spec.progressDeadlineSeconds", 2**31 - 1) == 2**31 - 1
    available = False
    for c in _conditions(obj):
        if c["type"] == "Progressing":
            if c.get("reason") == "ProgressDeadlineExceeded":
                return FAILED
            if c["status"] == "True" and c.get("reason") == "NewReplicaSetAvailable":
                progressing = True
        if c["type"] == "Available" and c["status"] == "True":
            available = True
    spec = _int(obj, ".spec.replicas", 1)
    replicas = _int(obj, ".status.replicas", 0)
    updated = _int(obj, ".status.updatedReplicas", 0)
    ready = _int(obj, ".status.readyReplicas", 0)
    avail = _int(obj, ".status.availableReplicas", 0)
    if spec > replicas or spec > updated or replicas > spec or updated > avail or spec > ready:
        return IN_PROGRESS
    return CURRENT if progressing and available else IN_PROGRESS


def _k_statefulset(obj: Obj) -> str:
    if _str(obj, ".spec.updateStrategy.type", "") == "OnDelete":
        return CURRENT
    spec = _int(obj, ".spec.replicas", 1)
    ready = _int(obj, ".status.readyReplicas", 0)
    current = _int(obj, ".status.currentReplicas", 0)
    updated = _int(obj, ".status.updatedReplicas", 0)
    replicas = _int(obj, ".status.replicas", 0)
    partition = _int(obj, ".spec.updateStrategy.rollingUpdate.partition", -1)
    if spec > replicas or spec > ready or replicas > spec:
        return IN_PROGRESS
    if partition != -1:
        return IN_PROGRESS if updated < spec - partition else CURRENT
    if spec > current:
        return IN_PROGRESS
    same = _str(obj, ".status.currentRevision", "") == _str(obj, ".status.updateRevision", "")
    return CURRENT if same else IN_PROGRESS


def _k_daemonset(obj: Obj) -> str:
    if "generation" not in obj["metadata"] or "observedGeneration" not in obj["status"]:
        return IN_PROGRESS
    desired = _int(obj, ".status.desiredNumberScheduled", -1)
    if desired == -1:
        return IN_PROGRESS
    for field in ("currentNumberScheduled", "updatedNumberScheduled", "numberAvailable"):
        if desired > _int(obj, ".status." + field, 0):
            return IN_PROGRESS
    return IN_PROGRESS if desired > _int(obj, ".status.numberReady", 0) else CURRENT


def _k_replicaset(obj: Obj) -> str:
    if _has(obj, "ReplicaFailure"):
        return IN_PROGRESS
    spec = _int(obj, ".spec.replicas", 1)
    for field in ("fullyLabeledReplicas", "availableReplicas", "readyReplicas"):
        if spec > _int(obj, ".status." + field, 0):
            return IN_PROGRESS
    return IN_PROGRESS if _int(obj, ".status.replicas", 0) > spec else CURRENT


def _k_job(obj: Obj) -> str:
    for c in _conditions(obj):
        if c["type"] == "Complete" and c["status"] == "True":
            return CURRENT
        if c["type"] == "Failed" and c["status"] == "True":
            return FAILED
        if c["type"] == "Suspended" and c["status"] == "True":
            return CURRENT
    return CURRENT if _str(obj, ".status.startTime", "") else IN_PROGRESS


def _k_pod(obj: Obj) -> str:
    phase = _str(obj, ".status.phase", "")
    if phase in ("Succeeded", "Failed"):
        return CURRENT  # kstatus treats a finished pod as done either way
    if phase == "Running":
        if _has(obj, "Ready"):
            return CURRENT
        for cs in obj["status"].get("containerStatuses") or []:
            if cs.get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff":
                return FAILED
        return IN_PROGRESS
    return IN_PROGRESS


def _k_pvc(obj: Obj) -> str:
    return CURRENT if _str(obj, ".status.phase", "") == "Bound" else IN_PROGRESS


def _k_service(obj: Obj) -> str:
    lb = _str(obj, ".spec.type", "ClusterIP") == "LoadBalancer"
    return IN_PROGRESS if lb and not _str(obj, ".spec.clusterIP", "") else CURRENT


_KSTATUS = {
    ("apps", "Deployment"): _k_deployment,
    ("apps", "StatefulSet"): _k_statefulset,
    ("apps", "DaemonSet"): _k_daemonset,
    ("apps", "ReplicaSet"): _k_replicaset,
    ("batch", "Job"): _k_job,
    ("", "Pod"): _k_pod,
    ("", "PersistentVolumeClaim"): _k_pvc,
    ("", "Service"): _k_service,
}


def helm_hook_status(kind: str, obj: Obj) -> str:
    """Helm 4's own readers for hook and test Jobs and Pods: Current only once finished."""
    if kind == "Job":
        if _has(obj, "Complete"):
            return CURRENT
        return FAILED if _has(obj, "Failed") else IN_PROGRESS
    phase = _str(obj, ".status.phase", "")
    return {"Succeeded": CURRENT, "Failed": FAILED}.get(phase, IN_PROGRESS)


DONE, WAITING, ERROR = "done", "waiting", "error"


def rollout_status(kind: str, obj: Obj) -> str:
    """What ``kubectl rollout status`` concludes from one look at ``obj``."""
    status = obj.get("status") or {}
    generation = obj["metadata"].get("generation", 0)
    observed = status.get("observedGeneration", 0)
    spec = obj["spec"]
    if kind == "Deployment":
        if generation > observed:
            return WAITING
        if any(c.get("reason") == "ProgressDeadlineExceeded" for c in _conditions(obj)):
            return ERROR
        updated = status.get("updatedReplicas", 0)
        if updated < spec["replicas"] or status.get("replicas", 0) > updated:
            return WAITING
        return WAITING if status.get("availableReplicas", 0) < updated else DONE
    if kind == "StatefulSet":
        if observed == 0 or generation > observed:
            return WAITING
        if status.get("readyReplicas", 0) < spec["replicas"]:
            return WAITING
        partition = spec["updateStrategy"].get("rollingUpdate", {}).get("partition")
        if partition is not None:
            return (
                WAITING if status.get("updatedReplicas", 0) < spec["replicas"] - partition else DONE
            )
        return DONE if status.get("updateRevision") == status.get("currentRevision") else WAITING
    # DaemonSet
    if generation > observed:
        return WAITING
    desired = status.get("desiredNumberScheduled", 0)
    if status.get("updatedNumberScheduled", 0) < desired:
        return WAITING
    return WAITING if status.get("numberAvailable", 0) < desired else DONE


# --------------------------------------------------------------------------- fixtures


def pod_spec(**extra: Any) -> Obj:
    spec: Obj = {"containers": [{"name": "app", "image": "web:1"}]}
    spec.update(extra)
    return spec


def stored(group: str, kind: str, spec: Obj, *, fail: bool = False, generation: int = 1) -> Obj:
    """An object as the server stores it: defaulted, with a generation, maybe failing."""
    metadata: Obj = {
        "name": "web",
        "namespace": "apps",
        "uid": "0b7c1f2e-0000-4000-8000-000000000001",
        "generation": generation,
    }
    if fail:
        metadata["annotations"] = {FAIL_ANNOTATION: "fail"}
    return apply_defaults(group, kind, {"kind": kind, "metadata": metadata, "spec": spec})


def workload(kind: str, **spec: Any) -> Obj:
    body: Obj = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec()},
    }
    body.update(spec)
    return body


def deployment(replicas: int = 3, *, fail: bool = False) -> Obj:
    return stored("apps", "Deployment", workload("Deployment", replicas=replicas), fail=fail)


def statefulset(replicas: int = 2, *, fail: bool = False) -> Obj:
    return stored("apps", "StatefulSet", workload("StatefulSet", replicas=replicas), fail=fail)


def daemonset(*, fail: bool = False) -> Obj:
    return stored("apps", "DaemonSet", workload("DaemonSet"), fail=fail)


def replicaset(replicas: int = 2, *, fail: bool = False) -> Obj:
    return stored("apps", "ReplicaSet", workload("ReplicaSet", replicas=replicas), fail=fail)


def job(*, fail: bool = False, **spec: Any) -> Obj:
    body = {"template": {"spec": pod_spec(restartPolicy="Never")}, **spec}
    return stored("batch", "Job", body, fail=fail)


def pod(restart: str = "Always", *, fail: bool = False, **extra: Any) -> Obj:
    return stored("", "Pod", pod_spec(restartPolicy=restart, **extra), fail=fail)


def claim(*, fail: bool = False) -> Obj:
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    return stored("", "PersistentVolumeClaim", spec, fail=fail)


def service(type_: str = "LoadBalancer", *, fail: bool = False) -> Obj:
    obj = stored("", "Service", {"type": type_, "ports": [{"port": 80}]}, fail=fail)
    obj["spec"]["clusterIP"] = "10.96.0.10"  # allocated by the server, not by defaulting
    return obj


def settle(group: str, kind: str, obj: Obj, now: str = NOW) -> Obj:
    """The object with its final status written."""
    return {**obj, "status": final_status(group, kind, obj, now)}


def with_pending(group: str, kind: str, obj: Obj, now: str = NOW) -> Obj:
    status = pending_status(group, kind, obj, now)
    assert status is not None
    return {**obj, "status": status}


def condition(obj: Obj, type_: str) -> Obj:
    matches = [c for c in _conditions(obj) if c["type"] == type_]
    assert len(matches) == 1, f"expected one {type_} condition"
    return matches[0]


ALL = sorted(simulated_kinds())


# --------------------------------------------------------------------------- annotations


def test_the_simulated_kinds_are_the_workloads_pods_claims_and_services() -> None:
    assert simulated_kinds() == frozenset(
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


def test_an_object_wants_failure_only_when_annotated_fail() -> None:
    assert wants_failure(deployment(fail=True))
    assert not wants_failure(deployment())
    other = {"metadata": {"annotations": {FAIL_ANNOTATION: "succeed"}}}
    assert not wants_failure(other)
    assert not wants_failure({})


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("2s", 2.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1h2m3s4ms", 3723.004),
    ],
)
def test_the_delay_annotation_is_read_as_a_go_duration(value: str, seconds: float) -> None:
    obj = {"metadata": {"annotations": {DELAY_ANNOTATION: value}}}
    assert ready_delay(obj, 7.0) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "2", "soon", "-1s", "2 s", "1d", "s", "1.2.3s", "5us"])
def test_an_invalid_delay_falls_back_to_the_default(value: str) -> None:
    obj = {"metadata": {"annotations": {DELAY_ANNOTATION: value}}}
    assert ready_delay(obj, 7.0) == 7.0


def test_without_the_delay_annotation_the_default_delay_applies() -> None:
    assert ready_delay(deployment(), 1.25) == 1.25


# --------------------------------------------------------------------------- other kinds


def test_kinds_that_are_not_simulated_are_left_alone() -> None:
    cm = {"kind": "ConfigMap", "metadata": {"name": "c"}}
    assert not needs_simulation("", "ConfigMap", cm)
    assert pending_status("", "ConfigMap", cm, NOW) is None
    with pytest.raises(ValueError, match="ConfigMap"):
        final_status("", "ConfigMap", cm, NOW)
    assert not needs_simulation("example.com", "Deployment", deployment())


@pytest.mark.parametrize(("group", "kind"), ALL)
def test_no_function_mutates_its_input(group: str, kind: str) -> None:
    obj = {
        ("apps", "Deployment"): deployment(),
        ("apps", "StatefulSet"): statefulset(),
        ("apps", "DaemonSet"): daemonset(),
        ("apps", "ReplicaSet"): replicaset(),
        ("batch", "Job"): job(),
        ("", "Pod"): pod(),
        ("", "PersistentVolumeClaim"): claim(),
        ("", "Service"): service(),
    }[(group, kind)]
    before = copy.deepcopy(obj)
    needs_simulation(group, kind, obj)
    pending_status(group, kind, obj, NOW)
    settled = settle(group, kind, obj)
    final_status(group, kind, settled, LATER)
    assert obj == before


# --------------------------------------------------------------------------- Deployment


def test_a_settled_deployment_is_available_and_current() -> None:
    obj = settle("apps", "Deployment", deployment(3))
    status = obj["status"]
    assert status["observedGeneration"] == 1
    for key in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
        assert status[key] == 3
    assert "unavailableReplicas" not in status
    available = condition(obj, "Available")
    assert (available["status"], available["reason"]) == ("True", "MinimumReplicasAvailable")
    assert available["message"] == "Deployment has minimum availability."
    assert available["lastUpdateTime"] == available["lastTransitionTime"] == NOW
    progressing = condition(obj, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "NewReplicaSetAvailable")
    rs = f"web-{template_hash(obj['spec']['template'])}"
    assert progressing["message"] == f'ReplicaSet "{rs}" has successfully progressed.'
    assert kstatus("apps", "Deployment", obj) == CURRENT


def test_the_replicaset_hash_is_ten_safe_characters_fixed_by_the_template() -> None:
    template = deployment()["spec"]["template"]
    digest = template_hash(template)
    assert len(digest) == 10
    assert set(digest) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert template_hash(copy.deepcopy(template)) == digest
    changed = copy.deepcopy(template)
    changed["spec"]["containers"][0]["image"] = "web:2"
    assert template_hash(changed) != digest


def test_a_deployment_scaled_to_zero_settles_without_zero_counts() -> None:
    obj = settle("apps", "Deployment", deployment(0))
    status = obj["status"]
    assert set(status) == {"observedGeneration", "conditions"}
    assert kstatus("apps", "Deployment", obj) == CURRENT


def test_a_failing_deployment_exceeds_its_progress_deadline() -> None:
    obj = settle("apps", "Deployment", deployment(2, fail=True))
    status = obj["status"]
    assert status["replicas"] == status["updatedReplicas"] == status["unavailableReplicas"] == 2
    assert "readyReplicas" not in status
    assert "availableReplicas" not in status
    progressing = condition(obj, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert progressing["message"].endswith("has timed out progressing.")
    available = condition(obj, "Available")
    assert (available["status"], available["reason"]) == ("False", "MinimumReplicasUnavailable")
    assert kstatus("apps", "Deployment", obj) == FAILED


def test_a_new_deployment_is_pending_unavailable_while_its_replicaset_progresses() -> None:
    obj = with_pending("apps", "Deployment", deployment(3))
    status = obj["status"]
    assert status["observedGeneration"] == 1
    assert status["replicas"] == status["updatedReplicas"] == 3
    assert status["unavailableReplicas"] == 3
    assert "availableReplicas" not in status
    assert condition(obj, "Progressing")["reason"] == "ReplicaSetUpdated"
    assert condition(obj, "Progressing")["message"].endswith("is progressing.")
    available = condition(obj, "Available")
    assert (available["status"], available["reason"]) == ("False", "MinimumReplicasUnavailable")
    assert kstatus("apps", "Deployment", obj) == IN_PROGRESS


def test_a_rollout_over_an_available_deployment_stays_available_but_not_updated() -> None:
    old = settle("apps", "Deployment", deployment(3))
    new = copy.deepcopy(old)
    new["metadata"]["generation"] = 2
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "web:2"
    obj = with_pending("apps", "Deployment", new, LATER)
    status = obj["status"]
    assert status["observedGeneration"] == 2
    assert status["availableReplicas"] == 3
    assert "updatedReplicas" not in status  # what kubectl rollout status waits on
    available = condition(obj, "Available")
    assert available["status"] == "True"
    assert available["lastTransitionTime"] == NOW  # unchanged condition keeps its history
    assert kstatus("apps", "Deployment", obj) == IN_PROGRESS


def test_scaling_an_available_deployment_up_waits_for_the_new_pods() -> None:
    old = settle("apps", "Deployment", deployment(2))
    new = copy.deepcopy(old)
    new["metadata"]["generation"] = 2
    new["spec"]["replicas"] = 4
    obj = with_pending("apps", "Deployment", new)
    status = obj["status"]
    assert status["updatedReplicas"] == 4  # same template: the pods are the updated ones
    assert status["availableReplicas"] == 2
    assert status["unavailableReplicas"] == 2
    assert kstatus("apps", "Deployment", obj) == IN_PROGRESS


def test_a_deployment_needs_simulation_until_its_final_status_is_written() -> None:
    obj = deployment()
    assert needs_simulation("apps", "Deployment", obj)
    assert needs_simulation("apps", "Deployment", with_pending("apps", "Deployment", obj))
    settled = settle("apps", "Deployment", obj)
    assert not needs_simulation("apps", "Deployment", settled)
    bumped = copy.deepcopy(settled)
    bumped["metadata"]["generation"] = 2
    assert needs_simulation("apps", "Deployment", bumped)
    scaled = copy.deepcopy(settled)
    scaled["spec"]["replicas"] = 5
    assert needs_simulation("apps", "Deployment", scaled)


def test_a_failed_deployment_needs_no_more_simulation_until_the_failure_is_lifted() -> None:
    failed = settle("apps", "Deployment", deployment(fail=True))
    assert not needs_simulation("apps", "Deployment", failed)
    fixed = copy.deepcopy(failed)
    del fixed["metadata"]["annotations"]
    assert needs_simulation("apps", "Deployment", fixed)
    assert kstatus("apps", "Deployment", settle("apps", "Deployment", fixed)) == CURRENT


def test_a_resettled_deployment_keeps_unchanged_conditions_as_they_were() -> None:
    first = settle("apps", "Deployment", deployment())
    again = settle("apps", "Deployment", first, LATER)
    assert again["status"] == first["status"]


def test_no_pending_status_is_due_when_the_object_already_shows_it() -> None:
    pending = with_pending("apps", "Deployment", deployment())
    assert pending_status("apps", "Deployment", pending, LATER) is None


def test_no_observed_generation_is_written_for_an_object_without_generation() -> None:
    obj = deployment()
    del obj["metadata"]["generation"]
    assert "observedGeneration" not in final_status("apps", "Deployment", obj, NOW)


# --------------------------------------------------------------------------- StatefulSet


def test_a_settled_statefulset_has_every_replica_ready_at_one_revision() -> None:
    obj = settle("apps", "StatefulSet", statefulset(2))
    status = obj["status"]
    assert status["observedGeneration"] == 1
    for key in ("replicas", "readyReplicas", "currentReplicas", "updatedReplicas"):
        assert status[key] == 2
    assert status["availableReplicas"] == 2
    assert status["currentRevision"] == status["updateRevision"]
    assert status["updateRevision"] == f"web-{template_hash(obj['spec']['template'])}"
    assert status["collisionCount"] == 0
    assert kstatus("apps", "StatefulSet", obj) == CURRENT


def test_a_failing_statefulset_never_gets_ready_nor_current() -> None:
    obj = settle("apps", "StatefulSet", statefulset(2, fail=True))
    status = obj["status"]
    assert status.get("readyReplicas", 0) == 0
    assert status["availableReplicas"] == 0
    assert status["currentRevision"] != status["updateRevision"]
    assert kstatus("apps", "StatefulSet", obj) == IN_PROGRESS
    assert not needs_simulation("apps", "StatefulSet", obj)


def test_a_statefulset_stuck_in_an_update_keeps_its_old_revision() -> None:
    old = settle("apps", "StatefulSet", statefulset(2))
    new = copy.deepcopy(old)
    new["metadata"]["generation"] = 2
    new["metadata"]["annotations"] = {FAIL_ANNOTATION: "fail"}
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "web:2"
    status = final_status("apps", "StatefulSet", new, LATER)
    assert status["currentRevision"] == old["status"]["currentRevision"]
    assert status["updateRevision"] != status["currentRevision"]


def test_a_new_statefulset_is_pending_with_no_ready_replicas() -> None:
    obj = with_pending("apps", "StatefulSet", statefulset(2))
    assert obj["status"]["replicas"] == 2
    assert "readyReplicas" not in obj["status"]
    assert kstatus("apps", "StatefulSet", obj) == IN_PROGRESS
    assert needs_simulation("apps", "StatefulSet", obj)


def test_a_statefulset_update_is_pending_until_pods_move_to_the_new_revision() -> None:
    old = settle("apps", "StatefulSet", statefulset(2))
    new = copy.deepcopy(old)
    new["metadata"]["generation"] = 2
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "web:2"
    obj = with_pending("apps", "StatefulSet", new)
    status = obj["status"]
    assert status["currentRevision"] == old["status"]["currentRevision"]
    assert status["updateRevision"] != status["currentRevision"]
    assert "updatedReplicas" not in status
    assert kstatus("apps", "StatefulSet", obj) == IN_PROGRESS
    assert kstatus("apps", "StatefulSet", settle("apps", "StatefulSet", obj)) == CURRENT


def test_a_statefulset_needs_simulation_until_settled() -> None:
    obj = statefulset()
    assert needs_simulation("apps", "StatefulSet", obj)
    assert not needs_simulation("apps", "StatefulSet", settle("apps", "StatefulSet", obj))


# --------------------------------------------------------------------------- DaemonSet


def test_a_settled_daemonset_runs_one_ready_pod_on_the_one_node() -> None:
    obj = settle("apps", "DaemonSet", daemonset())
    assert obj["status"] == {
        "observedGeneration": 1,
        "currentNumberScheduled": 1,
        "desiredNumberScheduled": 1,
        "numberMisscheduled": 0,
        "numberReady": 1,
        "numberAvailable": 1,
        "updatedNumberScheduled": 1,
    }
    assert kstatus("apps", "DaemonSet", obj) == CURRENT


def test_a_failing_daemonset_has_its_pod_unavailable() -> None:
    obj = settle("apps", "DaemonSet", daemonset(fail=True))
    status = obj["status"]
    assert status["numberReady"] == 0
    assert status["numberUnavailable"] == 1
    assert "numberAvailable" not in status
    assert kstatus("apps", "DaemonSet", obj) == IN_PROGRESS
    assert not needs_simulation("apps", "DaemonSet", obj)


def test_a_daemonset_is_pending_unready_then_needs_no_simulation_once_settled() -> None:
    obj = daemonset()
    assert needs_simulation("apps", "DaemonSet", obj)
    pending = with_pending("apps", "DaemonSet", obj)
    assert pending["status"]["numberUnavailable"] == 1
    assert kstatus("apps", "DaemonSet", pending) == IN_PROGRESS
    assert needs_simulation("apps", "DaemonSet", pending)
    assert not needs_simulation("apps", "DaemonSet", settle("apps", "DaemonSet", obj))


# --------------------------------------------------------------------------- ReplicaSet


def test_a_settled_replicaset_has_every_replica_labeled_ready_and_available() -> None:
    obj = settle("apps", "ReplicaSet", replicaset(2))
    assert obj["status"] == {
        "replicas": 2,
        "fullyLabeledReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
        "observedGeneration": 1,
    }
    assert kstatus("apps", "ReplicaSet", obj) == CURRENT


def test_a_failing_replicaset_has_no_ready_replicas() -> None:
    obj = settle("apps", "ReplicaSet", replicaset(2, fail=True))
    assert "readyReplicas" not in obj["status"]
    assert kstatus("apps", "ReplicaSet", obj) == IN_PROGRESS


def test_a_replicaset_is_pending_then_settled() -> None:
    obj = replicaset(2)
    pending = with_pending("apps", "ReplicaSet", obj)
    assert pending["status"]["replicas"] == 2
    assert kstatus("apps", "ReplicaSet", pending) == IN_PROGRESS
    assert needs_simulation("apps", "ReplicaSet", pending)
    assert not needs_simulation("apps", "ReplicaSet", settle("apps", "ReplicaSet", obj))


# --------------------------------------------------------------------------- Job


def test_a_settled_job_met_its_success_criteria_and_completed() -> None:
    obj = settle("batch", "Job", job())
    status = obj["status"]
    assert [c["type"] for c in status["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    for c in status["conditions"]:
        assert c["status"] == "True"
        assert c["reason"] == "CompletionsReached"
        assert c["message"] == "Reached expected number of succeeded pods"
    assert status["succeeded"] == 1
    assert status["startTime"] == status["completionTime"] == NOW
    assert (status["ready"], status["terminating"]) == (0, 0)
    assert status["uncountedTerminatedPods"] == {}
    assert kstatus("batch", "Job", obj) == CURRENT


def test_a_job_succeeds_as_many_times_as_its_completions() -> None:
    assert final_status("batch", "Job", job(completions=3), NOW)["succeeded"] == 3


def test_an_indexed_job_reports_its_completed_indexes() -> None:
    status = final_status("batch", "Job", job(completions=3, completionMode="Indexed"), NOW)
    assert status["completedIndexes"] == "0-2"


def test_a_failing_job_reaches_its_backoff_limit() -> None:
    obj = settle("batch", "Job", job(fail=True))
    status = obj["status"]
    assert [c["type"] for c in status["conditions"]] == ["FailureTarget", "Failed"]
    for c in status["conditions"]:
        assert (c["status"], c["reason"]) == ("True", "BackoffLimitExceeded")
        assert c["message"] == "Job has reached the specified backoff limit"
    assert status["failed"] == 7
    assert status["startTime"] == NOW
    assert "completionTime" not in status
    assert "succeeded" not in status
    assert kstatus("batch", "Job", obj) == FAILED


def test_a_failing_job_fails_one_more_time_than_its_backoff_limit() -> None:
    assert final_status("batch", "Job", job(fail=True, backoffLimit=0), NOW)["failed"] == 1


def test_a_new_job_is_pending_with_one_active_pod_and_a_start_time() -> None:
    obj = with_pending("batch", "Job", job())
    status = obj["status"]
    assert status["active"] == 1
    assert status["startTime"] == NOW
    assert "conditions" not in status
    assert needs_simulation("batch", "Job", obj)


def test_a_running_job_keeps_its_start_time_when_it_finishes() -> None:
    running = with_pending("batch", "Job", job())
    finished = settle("batch", "Job", running, LATER)
    assert finished["status"]["startTime"] == NOW
    assert finished["status"]["completionTime"] == LATER


def test_a_finished_job_needs_no_simulation_whatever_its_annotations_say() -> None:
    done = settle("batch", "Job", job())
    assert not needs_simulation("batch", "Job", done)
    annotated = copy.deepcopy(done)
    annotated["metadata"]["annotations"] = {FAIL_ANNOTATION: "fail"}
    assert not needs_simulation("batch", "Job", annotated)
    failed = settle("batch", "Job", job(fail=True))
    assert not needs_simulation("batch", "Job", failed)
    assert pending_status("batch", "Job", failed, NOW) is None


def test_a_finished_job_pod_or_bound_claim_keeps_its_status_as_final() -> None:
    for group, kind, obj in [
        ("batch", "Job", job()),
        ("", "Pod", pod("Never")),
        ("", "PersistentVolumeClaim", claim()),
    ]:
        done = settle(group, kind, obj)
        done["metadata"]["annotations"] = {FAIL_ANNOTATION: "fail"}
        assert final_status(group, kind, done, LATER) == done["status"]


def test_a_suspended_job_settles_suspended_and_resumes_when_unsuspended() -> None:
    suspended = job(suspend=True)
    assert pending_status("batch", "Job", suspended, NOW) is None
    obj = settle("batch", "Job", suspended)
    assert condition(obj, "Suspended")["status"] == "True"
    assert kstatus("batch", "Job", obj) == CURRENT
    assert not needs_simulation("batch", "Job", obj)
    resumed = copy.deepcopy(obj)
    resumed["spec"]["suspend"] = False
    assert needs_simulation("batch", "Job", resumed)
    done = settle("batch", "Job", resumed, LATER)
    assert condition(done, "Suspended")["status"] == "False"
    assert condition(done, "Complete")["status"] == "True"


# --------------------------------------------------------------------------- Pod


def test_a_settled_long_running_pod_is_running_and_ready() -> None:
    obj = settle("", "Pod", pod())
    status = obj["status"]
    assert status["phase"] == "Running"
    assert status["hostIP"] == status["podIP"] == "127.0.0.1"
    assert status["startTime"] == NOW
    assert status["qosClass"] == "BestEffort"
    for type_ in ("Initialized", "Ready", "ContainersReady", "PodScheduled"):
        assert condition(obj, type_)["status"] == "True"
        assert condition(obj, type_)["lastTransitionTime"] == NOW
        assert condition(obj, type_)["lastProbeTime"] is None
    [container] = status["containerStatuses"]
    assert container["name"] == "app"
    assert container["image"] == "web:1"
    assert (container["ready"], container["started"], container["restartCount"]) == (
        True,
        True,
        0,
    )
    assert container["state"] == {"running": {"startedAt": NOW}}
    assert kstatus("", "Pod", obj) == CURRENT


@pytest.mark.parametrize("restart", ["Never", "OnFailure"])
def test_a_settled_run_to_completion_pod_succeeded(restart: str) -> None:
    obj = settle("", "Pod", pod(restart))
    status = obj["status"]
    assert status["phase"] == "Succeeded"
    assert condition(obj, "Initialized")["status"] == "True"
    assert condition(obj, "PodScheduled")["status"] == "True"
    for type_ in ("Ready", "ContainersReady"):
        assert (condition(obj, type_)["status"], condition(obj, type_)["reason"]) == (
            "False",
            "PodCompleted",
        )
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert kstatus("", "Pod", obj) == CURRENT
    assert not needs_simulation("", "Pod", obj)


@pytest.mark.parametrize("restart", ["Never", "OnFailure"])
def test_a_failing_run_to_completion_pod_failed_with_exit_code_one(restart: str) -> None:
    obj = settle("", "Pod", pod(restart, fail=True))
    status = obj["status"]
    assert status["phase"] == "Failed"
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (1, "Error")
    assert condition(obj, "Ready")["reason"] == "PodFailed"
    assert not needs_simulation("", "Pod", obj)


def test_a_failing_long_running_pod_crash_loops_and_is_never_ready() -> None:
    obj = settle("", "Pod", pod(fail=True))
    status = obj["status"]
    assert status["phase"] == "Running"
    assert condition(obj, "Ready")["status"] == "False"
    [container] = status["containerStatuses"]
    assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert container["lastState"]["terminated"]["exitCode"] == 1
    assert container["ready"] is False
    assert kstatus("", "Pod", obj) == FAILED
    assert not needs_simulation("", "Pod", obj)


def test_a_new_pod_is_pending_while_its_containers_are_created() -> None:
    obj = with_pending("", "Pod", pod())
    status = obj["status"]
    assert status["phase"] == "Pending"
    assert condition(obj, "PodScheduled")["status"] == "True"
    ready = condition(obj, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ContainersNotReady")
    assert ready["message"] == "containers with unready status: [app]"
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {"reason": "ContainerCreating"}
    assert kstatus("", "Pod", obj) == IN_PROGRESS
    assert needs_simulation("", "Pod", obj)


def test_a_pod_with_init_containers_waits_on_them_then_reports_them_done() -> None:
    obj = pod(initContainers=[{"name": "init", "image": "busybox:1"}])
    pending = with_pending("", "Pod", obj)
    assert condition(pending, "Initialized")["reason"] == "ContainersNotInitialized"
    main = pending["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
    assert main == "PodInitializing"
    settled = settle("", "Pod", pending)
    init = settled["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["reason"] == "Completed"
    assert kstatus("", "Pod", settled) == CURRENT


def test_a_pod_needs_simulation_until_running_ready_or_finished() -> None:
    obj = pod()
    assert needs_simulation("", "Pod", obj)
    assert not needs_simulation("", "Pod", settle("", "Pod", obj))
    assert pending_status("", "Pod", settle("", "Pod", obj), NOW) is None


def test_a_pod_keeps_its_start_time_and_qos_class() -> None:
    obj = pod()
    obj["status"] = {
        "phase": "Pending",
        "qosClass": "Burstable",
        "startTime": "2026-01-01T00:00:00Z",
    }
    status = final_status("", "Pod", obj, NOW)
    assert status["qosClass"] == "Burstable"
    assert status["startTime"] == "2026-01-01T00:00:00Z"


# --------------------------------------------------------------------------- PVC


def test_a_settled_claim_is_bound_with_its_requested_capacity() -> None:
    obj = settle("", "PersistentVolumeClaim", claim())
    assert obj["status"] == {
        "phase": "Bound",
        "accessModes": ["ReadWriteOnce"],
        "capacity": {"storage": "1Gi"},
    }
    assert kstatus("", "PersistentVolumeClaim", obj) == CURRENT
    assert not needs_simulation("", "PersistentVolumeClaim", obj)


def test_a_failing_claim_stays_pending() -> None:
    obj = claim(fail=True)
    assert final_status("", "PersistentVolumeClaim", obj, NOW) == {"phase": "Pending"}
    assert kstatus("", "PersistentVolumeClaim", obj) == IN_PROGRESS
    assert not needs_simulation("", "PersistentVolumeClaim", obj)


def test_a_new_claim_needs_simulation_but_is_already_pending() -> None:
    obj = claim()
    assert obj["status"] == {"phase": "Pending"}
    assert needs_simulation("", "PersistentVolumeClaim", obj)
    assert pending_status("", "PersistentVolumeClaim", obj, NOW) is None


# --------------------------------------------------------------------------- Service


def test_a_settled_load_balancer_gets_a_local_ingress() -> None:
    obj = settle("", "Service", service())
    assert obj["status"]["loadBalancer"] == {"ingress": [{"ip": "127.0.0.1", "ipMode": "VIP"}]}
    assert kstatus("", "Service", obj) == CURRENT
    assert not needs_simulation("", "Service", obj)


def test_a_failing_load_balancer_gets_no_ingress() -> None:
    obj = service(fail=True)
    assert final_status("", "Service", obj, NOW)["loadBalancer"] == {}
    assert not needs_simulation("", "Service", obj)


def test_only_a_load_balancer_service_needs_simulation() -> None:
    assert needs_simulation("", "Service", service())
    assert not needs_simulation("", "Service", service("ClusterIP"))
    assert not needs_simulation("", "Service", service("NodePort"))
    assert pending_status("", "Service", service(), NOW) is None


def test_a_service_that_stops_being_a_load_balancer_loses_its_ingress() -> None:
    obj = settle("", "Service", service())
    obj["spec"]["type"] = "ClusterIP"
    assert needs_simulation("", "Service", obj)
    assert final_status("", "Service", obj, NOW)["loadBalancer"] == {}


# --------------------------------------------------------------------------- all kinds


@pytest.mark.parametrize(("group", "kind"), ALL)
def test_every_kind_settles_current_on_success(group: str, kind: str) -> None:
    obj = {
        ("apps", "Deployment"): deployment(),
        ("apps", "StatefulSet"): statefulset(),
        ("apps", "DaemonSet"): daemonset(),
        ("apps", "ReplicaSet"): replicaset(),
        ("batch", "Job"): job(),
        ("", "Pod"): pod(),
        ("", "PersistentVolumeClaim"): claim(),
        ("", "Service"): service(),
    }[(group, kind)]
    settled = settle(group, kind, obj)
    assert kstatus(group, kind, settled) == CURRENT
    assert not needs_simulation(group, kind, settled)
    assert final_status(group, kind, settled, LATER) == final_status(group, kind, settled, LATER)


@pytest.mark.parametrize(("group", "kind"), ALL)
def test_every_workload_settles_failed_or_in_progress_on_failure(group: str, kind: str) -> None:
    obj = {
        ("apps", "Deployment"): deployment(fail=True),
        ("apps", "StatefulSet"): statefulset(fail=True),
        ("apps", "DaemonSet"): daemonset(fail=True),
        ("apps", "ReplicaSet"): replicaset(fail=True),
        ("batch", "Job"): job(fail=True),
        ("", "Pod"): pod(fail=True),
        ("", "PersistentVolumeClaim"): claim(fail=True),
        ("", "Service"): service(fail=True),
    }[(group, kind)]
    settled = settle(group, kind, obj)
    if kind == "Service":
        # kstatus only asks a LoadBalancer for a cluster IP; a missing ingress is invisible.
        assert settled["status"]["loadBalancer"] == {}
    else:
        assert kstatus(group, kind, settled) in (FAILED, IN_PROGRESS)
    assert not needs_simulation(group, kind, settled)


# --------------------------------------------------------------------------- other waiters


@pytest.mark.parametrize(
    ("kind", "make"),
    [("Deployment", deployment), ("StatefulSet", statefulset), ("DaemonSet", daemonset)],
)
def test_kubectl_rollout_status_waits_while_pending_and_is_done_once_settled(
    kind: str, make: Any
) -> None:
    obj = make()
    assert rollout_status(kind, obj) == WAITING
    assert rollout_status(kind, with_pending("apps", kind, obj)) == WAITING
    assert rollout_status(kind, settle("apps", kind, obj)) == DONE


def test_kubectl_rollout_status_reports_a_failed_deployment_as_an_error() -> None:
    assert (
        rollout_status("Deployment", settle("apps", "Deployment", deployment(fail=True))) == ERROR
    )


@pytest.mark.parametrize(("kind", "make"), [("StatefulSet", statefulset), ("DaemonSet", daemonset)])
def test_kubectl_rollout_status_keeps_waiting_on_a_failed_rollout(kind: str, make: Any) -> None:
    assert rollout_status(kind, settle("apps", kind, make(fail=True))) == WAITING


def test_kubectl_rollout_status_waits_for_a_template_change_to_roll_out() -> None:
    old = settle("apps", "Deployment", deployment())
    new = copy.deepcopy(old)
    new["metadata"]["generation"] = 2
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "web:2"
    assert rollout_status("Deployment", new) == WAITING
    assert rollout_status("Deployment", with_pending("apps", "Deployment", new)) == WAITING
    assert rollout_status("Deployment", settle("apps", "Deployment", new)) == DONE


@pytest.mark.parametrize(
    ("kind", "make"),
    [("Job", lambda **kw: job(**kw)), ("Pod", lambda **kw: pod("Never", **kw))],
)
def test_helm_hooks_wait_for_jobs_and_pods_to_finish_and_see_failures(kind: str, make: Any) -> None:
    group = "batch" if kind == "Job" else ""
    obj = make()
    assert helm_hook_status(kind, with_pending(group, kind, obj)) == IN_PROGRESS
    assert helm_hook_status(kind, settle(group, kind, obj)) == CURRENT
    assert helm_hook_status(kind, settle(group, kind, make(fail=True))) == FAILED
