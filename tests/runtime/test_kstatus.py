"""fluxd.runtime.kstatus: the status and message kstatus gives each kind, and Flux's Job rule
for health checks. Expected values are kstatus' own (cli-utils ``status_compute_test.go`` and
``core.go``)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from fluxd.runtime.kstatus import Result, Status, compute, job_health

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def obj(api_version: str, kind: str, *, spec: dict[str, Any] | None = None,
        status: dict[str, Any] | None = None, generation: int | None = 1,
        **metadata: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "test", "namespace": "qual", **metadata}
    if generation is not None:
        meta["generation"] = generation
    out: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": meta}
    if spec is not None:
        out["spec"] = spec
    if status is not None:
        out["status"] = status
    return out


def cond(type_: str, status: str = "True", reason: str = "", message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def deployment(spec: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    return obj("apps/v1", "Deployment", spec=spec, status={"observedGeneration": 1, **status})


ROLLED_OUT = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
              "conditions": [cond("Progressing", reason="NewReplicaSetAvailable"),
                             cond("Available", reason="MinimumReplicasAvailable")]}


def sts(spec: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    return obj("apps/v1", "StatefulSet", spec={"replicas": 3, **(spec or {})},
               status={"observedGeneration": 1, **status})


STS_DONE = {"replicas": 3, "readyReplicas": 3, "currentReplicas": 3, "updatedReplicas": 3,
            "currentRevision": "web-1", "updateRevision": "web-1"}


def daemonset(**status: Any) -> dict[str, Any]:
    return obj("apps/v1", "DaemonSet", status={"observedGeneration": 1, **status})


DS_DONE = {"desiredNumberScheduled": 4, "currentNumberScheduled": 4, "updatedNumberScheduled": 4,
           "numberAvailable": 4, "numberReady": 4}


def job(spec: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    return obj("batch/v1", "Job", spec=spec, status=status or None)


def pod(**status: Any) -> dict[str, Any]:
    return obj("v1", "Pod", status=status or None)


def crd(*conditions: dict[str, Any]) -> dict[str, Any]:
    return obj("apiextensions.k8s.io/v1", "CustomResourceDefinition",
               status={"conditions": list(conditions)} if conditions else None)


def kustomization(*conditions: dict[str, Any], observed: int = 1) -> dict[str, Any]:
    return obj("kustomize.toolkit.fluxcd.io/v1", "Kustomization",
               status={"observedGeneration": observed, "conditions": list(conditions)})


CASES: list[tuple[str, dict[str, Any], Status, str]] = [
    # generic rules, before any kind's
    ("an object being deleted",
     {**deployment(**ROLLED_OUT),
      "metadata": {"generation": 1, "deletionTimestamp": "2026-01-01T00:00:00Z"}},
     Status.Terminating, "Resource scheduled for deletion"),
    ("a deployment whose new generation is not yet observed",
     {**deployment(**ROLLED_OUT), "metadata": {"generation": 2}},
     Status.InProgress, "Deployment generation is 2, but latest observed generation is 1"),
    ("a custom resource whose controller says Reconciling",
     kustomization(cond("Reconciling", reason="Progressing", message="Building manifests")),
     Status.InProgress, "Building manifests"),
    ("a custom resource whose controller says Stalled",
     kustomization(cond("Ready", "False", "InvalidCELExpression", "bad expr"),
                   cond("Stalled", reason="InvalidCELExpression", message="bad expr")),
     Status.Failed, "bad expr"),
    ("a Flux object retrying after a failure",
     kustomization(cond("Ready", "False", "BuildFailed", "kustomize build failed"),
                   cond("Reconciling", reason="ProgressingWithRetry", message="retrying")),
     Status.InProgress, "retrying"),
    # generic custom resources: the Ready condition
    ("a custom resource that is Ready",
     kustomization(cond("Ready", reason="ReconciliationSucceeded", message="Applied revision")),
     Status.Current, "Resource is Ready"),
    ("a custom resource that is not Ready",
     kustomization(cond("Ready", "False", "DependencyNotReady", "dependency 'a' is not ready")),
     Status.InProgress, "dependency 'a' is not ready"),
    ("a custom resource whose readiness is Unknown",
     kustomization(cond("Ready", "Unknown", "Progressing", "Reconciliation in progress")),
     Status.InProgress, "Reconciliation in progress"),
    ("a custom resource with a stale observedGeneration, Ready from before",
     {**kustomization(cond("Ready", message="old")), "metadata": {"generation": 3}},
     Status.InProgress, "Kustomization generation is 3, but latest observed generation is 1"),
    ("a custom resource without status",
     obj("example.com/v1", "Widget"), Status.Current, "Resource is current"),
    ("a custom resource with conditions kstatus does not know",
     obj("example.com/v1", "Widget", status={"conditions": [cond("Healthy", "False")]}),
     Status.Current, "Resource is current"),
    # Deployment
    ("a deployment nobody has looked at yet",
     obj("apps/v1", "Deployment"), Status.InProgress, "Replicas: 0/1"),
    ("a rolled-out deployment",
     deployment(**ROLLED_OUT), Status.Current, "Deployment is available. Replicas: 1"),
    ("a deployment rolling out its new replicas",
     deployment({"replicas": 3}, **{**ROLLED_OUT, "replicas": 3, "updatedReplicas": 1}),
     Status.InProgress, "Updated: 1/3"),
    ("a deployment with old pods still terminating",
     deployment(**{**ROLLED_OUT, "replicas": 2}), Status.InProgress, "Pending termination: 1"),
    ("a deployment whose new pods are not yet available",
     deployment({"replicas": 2}, **{**ROLLED_OUT, "replicas": 2, "updatedReplicas": 2,
                                    "availableReplicas": 1}),
     Status.InProgress, "Available: 1/2"),
    ("a deployment whose pods are not all ready",
     deployment({"replicas": 2}, **{**ROLLED_OUT, "replicas": 2, "updatedReplicas": 2,
                                    "availableReplicas": 2, "readyReplicas": 1}),
     Status.InProgress, "Ready: 1/2"),
    ("a deployment with a deadline whose new replica set is not yet available",
     deployment({"progressDeadlineSeconds": 600},
                **{**ROLLED_OUT, "conditions": [cond("Progressing", reason="ReplicaSetUpdated"),
                                                cond("Available")]}),
     Status.InProgress, "ReplicaSet not Available"),
    ("a deployment without the Available condition",
     deployment(**{**ROLLED_OUT, "conditions": [cond("Progressing",
                                                     reason="NewReplicaSetAvailable")]}),
     Status.InProgress, "Deployment not Available"),
    ("a deployment past its progress deadline",
     deployment({"progressDeadlineSeconds": 600},
                **{**ROLLED_OUT, "conditions": [cond("Progressing", "False",
                                                     "ProgressDeadlineExceeded")]}),
     Status.Failed, "Progress deadline exceeded"),
    ("a deployment scaled to zero",
     deployment({"replicas": 0}, conditions=[cond("Available")]),
     Status.Current, "Deployment is available. Replicas: 0"),
    ("a deployment of the old extensions group",
     {**deployment(**ROLLED_OUT), "apiVersion": "extensions/v1beta1"},
     Status.Current, "Deployment is available. Replicas: 1"),
    # StatefulSet
    ("a statefulset without status",
     obj("apps/v1", "StatefulSet"), Status.InProgress, "Replicas: 0/1"),
    ("a rolled-out statefulset",
     sts(**STS_DONE), Status.Current, "All replicas scheduled as expected. Replicas: 3"),
    ("a statefulset whose pods are not all ready",
     sts(**{**STS_DONE, "readyReplicas": 2}), Status.InProgress, "Ready: 2/3"),
    ("a statefulset with extra pods",
     sts(**{**STS_DONE, "replicas": 4}), Status.InProgress, "Pending termination: 1"),
    ("a statefulset whose pods are not all current",
     sts(**{**STS_DONE, "currentReplicas": 2}), Status.InProgress, "current: 2/3"),
    ("a statefulset between revisions",
     sts(**{**STS_DONE, "updateRevision": "web-2"}),
     Status.InProgress, "Waiting for updated revision to match current"),
    ("a statefulset in a partitioned rollout",
     sts({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}},
         **{**STS_DONE, "updatedReplicas": 1}),
     Status.InProgress, "updated: 1/2"),
    ("a statefulset whose partitioned rollout is done",
     sts({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}},
         **{**STS_DONE, "updatedReplicas": 2}),
     Status.Current, "Partition rollout complete. updated: 2"),
    ("a statefulset updated by hand",
     sts({"updateStrategy": {"type": "OnDelete"}}),
     Status.Current, "StatefulSet is using the ondelete update strategy"),
    # DaemonSet
    ("a daemonset its controller has not seen",
     obj("apps/v1", "DaemonSet"),
     Status.InProgress, "DaemonSet status.observedGeneration not found"),
    ("a daemonset without a generation",
     obj("apps/v1", "DaemonSet", generation=None, status={"observedGeneration": 1}),
     Status.InProgress, "DaemonSet metadata.generation not found"),
    ("a daemonset without its desired count",
     daemonset(currentNumberScheduled=1),
     Status.InProgress, "Missing .status.desiredNumberScheduled"),
    ("a rolled-out daemonset",
     daemonset(**DS_DONE), Status.Current, "All replicas scheduled as expected. Replicas: 4"),
    ("a daemonset with pods still updating",
     daemonset(**{**DS_DONE, "updatedNumberScheduled": 3}), Status.InProgress, "Updated: 3/4"),
    ("a daemonset whose pods are not all available",
     daemonset(**{**DS_DONE, "numberAvailable": 2}), Status.InProgress, "Available: 2/4"),
    ("a daemonset whose pods are not all ready",
     daemonset(**{**DS_DONE, "numberReady": 2}), Status.InProgress, "Ready: 2/4"),
    # ReplicaSet
    ("a replicaset with all its replicas",
     obj("apps/v1", "ReplicaSet", spec={"replicas": 2},
         status={"observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
                 "availableReplicas": 2, "fullyLabeledReplicas": 2}),
     Status.Current, "ReplicaSet is available. Replicas: 2"),
    ("a replicaset that cannot create its pods",
     obj("apps/v1", "ReplicaSet", status={"conditions": [cond("ReplicaFailure")]}),
     Status.InProgress, "Replica Failure condition. Check Pods"),
    ("a replicaset without status",
     obj("apps/v1", "ReplicaSet"), Status.InProgress, "Labelled: 0/1"),
    # Job (kstatus' rule: a running Job is Current)
    ("a job that has not started", job(), Status.InProgress, "Job not started"),
    ("a running job",
     job({"completions": 10, "parallelism": 2}, startTime="2026-01-01T00:00:00Z",
         succeeded=3, failed=1, active=2,
         conditions=[cond("Failed", "False"), cond("Complete", "False")]),
     Status.Current, "Job in progress. success:3, active: 2, failed: 1"),
    ("a completed job",
     job(succeeded=1, conditions=[cond("Complete")]),
     Status.Current, "Job Completed. succeeded: 1/1"),
    ("a failed job",
     job({"completions": 4}, succeeded=3, failed=1,
         conditions=[cond("Failed", reason="BackoffLimitExceeded")]),
     Status.Failed, "Job Failed. failed: 1/4"),
    ("a suspended job",
     job(conditions=[cond("Suspended")]), Status.Current, "Job is suspended"),
    # Pod
    ("a pod without a phase", pod(), Status.InProgress, "Pod phase not available"),
    ("a ready pod",
     pod(phase="Running", conditions=[cond("Ready")]), Status.Current, "Pod is Ready"),
    ("a pod that ran to completion",
     pod(phase="Succeeded", conditions=[cond("Ready", "False", "PodCompleted")]),
     Status.Current, "Pod has completed successfully"),
    ("a pod that failed",
     pod(phase="Failed"), Status.Current, "Pod has completed, but not successfully"),
    ("a running pod that is not ready",
     pod(phase="Running", conditions=[cond("Ready", "False")]),
     Status.InProgress, "Pod is running but is not Ready"),
    ("a pod whose containers crash-loop",
     pod(phase="Running", containerStatuses=[
         {"name": "nginx", "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
         {"name": "sidecar", "state": {"running": {}}},
         {"name": "init", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]),
     Status.Failed, "Containers in CrashLoop state: nginx,init"),
    ("a pending pod", pod(phase="Pending"), Status.InProgress, "Pod is in the Pending phase"),
    ("a pod in a phase nobody knows", pod(phase="Weird"), Status.Unknown, "unknown phase Weird"),
    # PodDisruptionBudget
    ("an observed disruption budget",
     obj("policy/v1", "PodDisruptionBudget", status={"observedGeneration": 1}),
     Status.Current, "AllowedDisruptions has been computed."),
    ("a disruption budget not yet observed",
     obj("policy/v1", "PodDisruptionBudget", generation=2, status={"observedGeneration": 1}),
     Status.InProgress, "PodDisruptionBudget generation is 2, but latest observed generation is 1"),
    # Service
    ("a cluster IP service", obj("v1", "Service"), Status.Current, "Service is ready"),
    ("a load balancer without its cluster IP",
     obj("v1", "Service", spec={"type": "LoadBalancer"}),
     Status.InProgress, "ClusterIP not set. Service type: LoadBalancer"),
    ("a load balancer with its cluster IP",
     obj("v1", "Service", spec={"type": "LoadBalancer", "clusterIP": "10.0.0.1"}),
     Status.Current, "Service is ready"),
    # PersistentVolumeClaim
    ("a claim without status",
     obj("v1", "PersistentVolumeClaim"), Status.InProgress, "PVC is not Bound. phase: unknown"),
    ("a pending claim",
     obj("v1", "PersistentVolumeClaim", status={"phase": "Pending"}),
     Status.InProgress, "PVC is not Bound. phase: Pending"),
    ("a bound claim",
     obj("v1", "PersistentVolumeClaim", status={"phase": "Bound"}), Status.Current, "PVC is Bound"),
    # CustomResourceDefinition
    ("a CRD without conditions", crd(), Status.InProgress, "Install in progress"),
    ("a CRD being installed",
     crd(cond("NamesAccepted", reason="NoConflicts"), cond("Established", "False", "Installing")),
     Status.InProgress, "Install in progress"),
    ("a CRD whose names conflict",
     crd(cond("NamesAccepted", "False", "SomeReason", "names in use")),
     Status.Failed, "names in use"),
    ("a CRD that failed to establish",
     crd(cond("Established", "False", "Broken", "storage failed")),
     Status.Failed, "storage failed"),
    ("an established CRD",
     crd(cond("NamesAccepted", reason="NoConflicts"),
         cond("Established", reason="InitialNamesAccepted")),
     Status.Current, "CRD is established"),
    # always ready
    ("a config map", obj("v1", "ConfigMap"), Status.Current, "Resource is always ready"),
    ("a secret", obj("v1", "Secret"), Status.Current, "Resource is always ready"),
    ("a cron job", obj("batch/v1", "CronJob"), Status.Current, "Resource is always ready"),
]


@pytest.mark.parametrize(("case", "manifest", "status", "message"), CASES,
                         ids=[c[0] for c in CASES])
def test_each_kind_reads_as_kstatus_reads_it(case: str, manifest: dict[str, Any],
                                             status: Status, message: str) -> None:
    assert compute(manifest) == Result(status, message)


def test_a_built_in_kind_ignores_a_ready_condition() -> None:
    # The Ready fallback is only for kinds without a rule of their own.
    manifest = obj("v1", "PersistentVolumeClaim", status={"conditions": [cond("Ready")]})
    assert compute(manifest).status is Status.InProgress


def test_a_kind_in_another_group_gets_no_built_in_rule() -> None:
    manifest = obj("example.com/v1", "Deployment")
    assert compute(manifest) == Result(Status.Current, "Resource is current")


def test_an_unschedulable_pod_gets_fifteen_seconds_before_it_fails() -> None:
    manifest = pod(phase="Pending", conditions=[cond("PodScheduled", "False", "Unschedulable")])
    manifest["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    soon = T0 + datetime.timedelta(seconds=10)
    late = T0 + datetime.timedelta(seconds=20)
    assert compute(manifest, now=soon) == Result(Status.InProgress, "Pod has not been scheduled")
    assert compute(manifest, now=late) == Result(Status.Failed, "Pod could not be scheduled")


def test_without_a_clock_an_unschedulable_pod_fails_at_once() -> None:
    manifest = pod(phase="Pending", conditions=[cond("PodScheduled", "False", "Unschedulable")])
    assert compute(manifest).status is Status.Failed


def test_malformed_conditions_read_unknown() -> None:
    manifest = obj("example.com/v1", "Widget", status={"conditions": "Ready"})
    assert compute(manifest).status is Status.Unknown
    manifest = obj("example.com/v1", "Widget", status={"conditions": [{"type": 1}]})
    assert compute(manifest).status is Status.Unknown


def test_a_generation_that_is_not_a_number_reads_unknown() -> None:
    manifest = obj("example.com/v1", "Widget", generation=None, status={"observedGeneration": 1})
    manifest["metadata"]["generation"] = "one"
    assert compute(manifest).status is Status.Unknown


def test_counts_that_are_not_integers_fall_back_to_their_defaults() -> None:
    # kstatus reads only integers; anything else is as good as absent.
    manifest = deployment(**{**ROLLED_OUT, "replicas": "1"})
    assert compute(manifest) == Result(Status.InProgress, "Replicas: 0/1")


def test_status_values_are_the_kstatus_strings() -> None:
    assert [str(s) for s in Status] == ["InProgress", "Failed", "Current", "Terminating",
                                        "NotFound", "Unknown"]


# --------------------------------------------------------------------------- Flux's Job rule


def test_flux_health_checks_wait_for_a_running_job_to_complete() -> None:
    running = job(startTime="2026-01-01T00:00:00Z", active=1)
    assert compute(running).status is Status.Current  # kstatus' view
    assert job_health(running) == Result(Status.InProgress, "Job in progress")


def test_flux_health_checks_see_a_completed_job_as_current() -> None:
    done = job({"completions": 2}, succeeded=2, conditions=[cond("Complete")])
    assert job_health(done) == Result(Status.Current, "Job Completed. succeeded: 2/2")


def test_flux_health_checks_see_a_failed_job_as_failed() -> None:
    failed = job(failed=1, conditions=[cond("Failed", reason="BackoffLimitExceeded")])
    assert job_health(failed) == Result(Status.Failed, "Job Failed. failed: 1/1")


def test_flux_health_checks_do_not_treat_a_suspended_job_as_done() -> None:
    assert job_health(job(conditions=[cond("Suspended")])).status is Status.InProgress


def test_there_are_six_statuses() -> None:
    assert [str(s) for s in Status] == ["InProgress", "Failed", "Current", "Terminating",
                                        "NotFound", "Unknown"]
