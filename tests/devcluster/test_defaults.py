"""Tests for fluxd.devcluster.defaults: the fields a real API server's defaulting adds."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fluxd.devcluster.defaults import apply_defaults, image_pull_policy, qos_class

Obj = dict[str, Any]


def pod_spec(**extra: Any) -> Obj:
    spec: Obj = {"containers": [{"name": "app", "image": "web:1"}]}
    spec.update(extra)
    return spec


def workload(kind: str, **spec: Any) -> Obj:
    body: Obj = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec()},
    }
    body.update(spec)
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "web"}, "spec": body}


def job(**spec: Any) -> Obj:
    template = {"spec": pod_spec(restartPolicy="Never")}
    return {"kind": "Job", "metadata": {"name": "migrate"}, "spec": {"template": template, **spec}}


EXPECTED_CONTAINER = {
    "name": "app",
    "image": "web:1",
    "imagePullPolicy": "IfNotPresent",
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
    "resources": {},
}


# --------------------------------------------------------------------------- general


def test_the_input_object_is_never_mutated() -> None:
    obj = workload("Deployment")
    before = copy.deepcopy(obj)
    result = apply_defaults("apps", "Deployment", obj)
    assert obj == before
    result["spec"]["template"]["spec"]["containers"][0]["name"] = "changed"
    assert obj == before


@pytest.mark.parametrize(
    ("group", "kind"),
    [
        ("", "ConfigMap"),
        ("", "ServiceAccount"),
        ("networking.k8s.io", "Ingress"),
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("coordination.k8s.io", "Lease"),
        ("example.com", "Widget"),
    ],
)
def test_kinds_without_defaults_come_back_unchanged_as_a_copy(group: str, kind: str) -> None:
    obj: Obj = {"kind": kind, "metadata": {"name": "x"}, "spec": {"a": [1]}, "data": {"k": "v"}}
    result = apply_defaults(group, kind, obj)
    assert result == obj
    assert result is not obj
    assert result["spec"]["a"] is not obj["spec"]["a"]


def test_a_kind_is_only_defaulted_in_its_own_group() -> None:
    obj = workload("Deployment")
    assert apply_defaults("example.com", "Deployment", obj) == obj


def test_applying_defaults_twice_changes_nothing_more() -> None:
    once = apply_defaults("apps", "StatefulSet", workload("StatefulSet"))
    assert apply_defaults("apps", "StatefulSet", once) == once


# --------------------------------------------------------------------------- Namespace


def test_a_namespace_gets_the_kubernetes_finalizer_active_phase_and_name_label() -> None:
    result = apply_defaults("", "Namespace", {"kind": "Namespace", "metadata": {"name": "apps"}})
    assert result["spec"] == {"finalizers": ["kubernetes"]}
    assert result["status"] == {"phase": "Active"}
    assert result["metadata"]["labels"] == {"kubernetes.io/metadata.name": "apps"}


def test_a_namespace_keeps_its_own_labels_finalizers_and_phase() -> None:
    obj = {
        "metadata": {"name": "apps", "labels": {"team": "a"}},
        "spec": {"finalizers": []},
        "status": {"phase": "Terminating"},
    }
    result = apply_defaults("", "Namespace", obj)
    assert result["spec"]["finalizers"] == []
    assert result["status"]["phase"] == "Terminating"
    assert result["metadata"]["labels"] == {"team": "a", "kubernetes.io/metadata.name": "apps"}


def test_the_namespace_name_label_always_mirrors_the_name() -> None:
    obj = {"metadata": {"name": "apps", "labels": {"kubernetes.io/metadata.name": "other"}}}
    result = apply_defaults("", "Namespace", obj)
    assert result["metadata"]["labels"]["kubernetes.io/metadata.name"] == "apps"


# --------------------------------------------------------------------------- Secret


def test_secret_string_data_is_merged_into_data_as_the_api_converts_it() -> None:
    got = apply_defaults("", "Secret", {"data": {"a": "b2xk", "keep": "eA=="},
                                        "stringData": {"a": "new", "n": None}})
    assert "stringData" not in got
    assert got["data"] == {"a": "bmV3", "keep": "eA==", "n": ""}


def test_a_secret_is_opaque_unless_it_says_otherwise() -> None:
    assert apply_defaults("", "Secret", {"data": {}})["type"] == "Opaque"
    tls = {"type": "kubernetes.io/tls", "data": {}}
    assert apply_defaults("", "Secret", tls)["type"] == "kubernetes.io/tls"


# --------------------------------------------------------------------------- Service


def test_a_service_gets_cluster_ip_type_affinity_families_and_traffic_policy() -> None:
    obj = {"spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
    spec = apply_defaults("", "Service", obj)["spec"]
    assert spec == {
        "selector": {"app": "web"},
        "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
        "type": "ClusterIP",
        "sessionAffinity": "None",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "internalTrafficPolicy": "Cluster",
    }


def test_a_service_cluster_ip_is_left_alone() -> None:
    spec = apply_defaults("", "Service", {"spec": {"ports": [{"port": 80}]}})["spec"]
    assert "clusterIP" not in spec
    given = {"spec": {"clusterIP": "10.0.0.9", "ports": [{"port": 80}]}}
    assert apply_defaults("", "Service", given)["spec"]["clusterIP"] == "10.0.0.9"


def test_a_service_port_keeps_its_target_port_and_protocol() -> None:
    ports = [{"port": 53, "targetPort": "dns", "protocol": "UDP"}]
    result = apply_defaults("", "Service", {"spec": {"ports": ports}})
    assert result["spec"]["ports"] == ports


def test_a_service_keeps_every_field_it_sets() -> None:
    spec = {
        "type": "NodePort",
        "sessionAffinity": "ClientIP",
        "ipFamilies": ["IPv6"],
        "ipFamilyPolicy": "PreferDualStack",
        "internalTrafficPolicy": "Local",
        "externalTrafficPolicy": "Local",
        "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
    }
    assert apply_defaults("", "Service", {"spec": spec})["spec"] == spec


def test_a_load_balancer_service_also_gets_external_traffic_and_node_port_defaults() -> None:
    spec = apply_defaults("", "Service", {"spec": {"type": "LoadBalancer"}})["spec"]
    assert spec["externalTrafficPolicy"] == "Cluster"
    assert spec["allocateLoadBalancerNodePorts"] is True


def test_an_external_name_service_gets_no_ip_family_or_traffic_fields() -> None:
    obj = {"spec": {"type": "ExternalName", "externalName": "db.example.com"}}
    spec = apply_defaults("", "Service", obj)["spec"]
    assert spec == {
        "type": "ExternalName",
        "externalName": "db.example.com",
        "sessionAffinity": "None",
    }


def test_a_headless_service_without_selector_requires_dual_stack() -> None:
    spec = apply_defaults("", "Service", {"spec": {"clusterIP": "None"}})["spec"]
    assert spec["ipFamilyPolicy"] == "RequireDualStack"
    assert spec["ipFamilies"] == ["IPv4"]


# --------------------------------------------------------------------------- pod specs


def test_a_pod_spec_gets_restart_dns_scheduler_grace_and_security_defaults() -> None:
    spec = apply_defaults("", "Pod", {"spec": pod_spec()})["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["securityContext"] == {}
    assert spec["enableServiceLinks"] is True
    assert spec["containers"] == [EXPECTED_CONTAINER]


def test_a_pod_spec_keeps_never_and_every_other_value_it_sets() -> None:
    given = pod_spec(
        restartPolicy="Never",
        terminationGracePeriodSeconds=0,
        dnsPolicy="Default",
        schedulerName="custom",
        securityContext={"runAsNonRoot": True},
        enableServiceLinks=False,
    )
    given["containers"][0].update(
        imagePullPolicy="Never",
        terminationMessagePath="/tmp/msg",
        terminationMessagePolicy="FallbackToLogsOnError",
        resources={"limits": {"cpu": "1"}, "requests": {"cpu": "1"}},
        ports=[{"containerPort": 53, "protocol": "UDP"}],
    )
    spec = apply_defaults("", "Pod", {"spec": given})["spec"]
    assert spec == given


def test_init_containers_get_the_container_defaults_too() -> None:
    spec = pod_spec(initContainers=[{"name": "init", "image": "busybox"}])
    result = apply_defaults("", "Pod", {"spec": spec})["spec"]
    init = result["initContainers"][0]
    assert init["imagePullPolicy"] == "Always"
    assert init["terminationMessagePath"] == "/dev/termination-log"
    assert init["terminationMessagePolicy"] == "File"
    assert init["resources"] == {}


def test_container_ports_default_to_tcp() -> None:
    spec = pod_spec()
    spec["containers"][0]["ports"] = [{"containerPort": 80}]
    result = apply_defaults("", "Pod", {"spec": spec})["spec"]
    assert result["containers"][0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("registry:5000/team/nginx", "Always"),
        ("registry:5000/team/nginx:latest", "Always"),
        ("nginx:1.27", "IfNotPresent"),
        ("registry:5000/team/nginx:1.27", "IfNotPresent"),
        ("nginx@sha256:" + "a" * 64, "IfNotPresent"),
        (None, "Always"),
    ],
)
def test_image_pull_policy_is_always_only_for_latest_or_untagged_images(
    image: str | None, policy: str
) -> None:
    assert image_pull_policy(image) == policy


def test_probes_get_their_timing_defaults_and_http_scheme() -> None:
    spec = pod_spec()
    spec["containers"][0]["readinessProbe"] = {"httpGet": {"path": "/", "port": 80}}
    probe = apply_defaults("", "Pod", {"spec": spec})["spec"]["containers"][0]["readinessProbe"]
    assert probe == {
        "httpGet": {"path": "/", "port": 80, "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }


def test_secret_and_config_map_volumes_get_the_default_file_mode() -> None:
    spec = pod_spec(
        volumes=[
            {"name": "s", "secret": {"secretName": "s"}},
            {"name": "c", "configMap": {"name": "c", "defaultMode": 256}},
            {"name": "e", "emptyDir": {}},
        ]
    )
    volumes = apply_defaults("", "Pod", {"spec": spec})["spec"]["volumes"]
    assert volumes[0]["secret"]["defaultMode"] == 420
    assert volumes[1]["configMap"]["defaultMode"] == 256
    assert volumes[2] == {"name": "e", "emptyDir": {}}


def test_env_field_refs_get_the_v1_api_version() -> None:
    spec = pod_spec()
    spec["containers"][0]["env"] = [
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    ]
    result = apply_defaults("", "Pod", {"spec": spec})["spec"]["containers"][0]["env"]
    assert result[0]["valueFrom"]["fieldRef"]["apiVersion"] == "v1"


@pytest.mark.parametrize(
    ("group", "kind", "path"),
    [
        ("apps", "Deployment", ("spec", "template", "spec")),
        ("apps", "StatefulSet", ("spec", "template", "spec")),
        ("apps", "DaemonSet", ("spec", "template", "spec")),
        ("apps", "ReplicaSet", ("spec", "template", "spec")),
    ],
)
def test_every_workload_template_gets_the_pod_spec_defaults(
    group: str, kind: str, path: tuple[str, ...]
) -> None:
    node: Any = apply_defaults(group, kind, workload(kind))
    for key in path:
        node = node[key]
    assert node["restartPolicy"] == "Always"
    assert node["dnsPolicy"] == "ClusterFirst"
    assert node["containers"] == [EXPECTED_CONTAINER]
    assert "enableServiceLinks" not in node  # a Pod-only default


def test_templates_get_no_null_creation_timestamp() -> None:
    template = apply_defaults("apps", "Deployment", workload("Deployment"))["spec"]["template"]
    assert template["metadata"] == {"labels": {"app": "web"}}


# --------------------------------------------------------------------------- Pod


def test_a_new_pod_is_pending_with_a_best_effort_qos_class() -> None:
    result = apply_defaults("", "Pod", {"spec": pod_spec()})
    assert result["status"] == {"phase": "Pending", "qosClass": "BestEffort"}


def test_a_pod_keeps_the_status_it_has() -> None:
    obj = {"spec": pod_spec(), "status": {"phase": "Running"}}
    assert apply_defaults("", "Pod", obj)["status"] == {"phase": "Running"}


def test_a_pod_container_with_only_limits_requests_its_limits() -> None:
    spec = pod_spec()
    spec["containers"][0]["resources"] = {"limits": {"cpu": "1", "memory": "1Gi"}}
    result = apply_defaults("", "Pod", {"spec": spec})
    resources = result["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert result["status"]["qosClass"] == "Guaranteed"


def test_qos_class_follows_the_containers_resources() -> None:
    assert qos_class(pod_spec()) == "BestEffort"
    burstable = pod_spec()
    burstable["containers"][0]["resources"] = {"requests": {"cpu": "100m"}}
    assert qos_class(burstable) == "Burstable"
    guaranteed = pod_spec()
    both = {"cpu": "1", "memory": "1Gi"}
    guaranteed["containers"][0]["resources"] = {"requests": both, "limits": both}
    assert qos_class(guaranteed) == "Guaranteed"


# --------------------------------------------------------------------------- PVC


def test_a_claim_gets_filesystem_volume_mode_and_pending_phase() -> None:
    result = apply_defaults("", "PersistentVolumeClaim", {"spec": {"accessModes": ["RWO"]}})
    assert result["spec"]["volumeMode"] == "Filesystem"
    assert result["status"] == {"phase": "Pending"}


def test_a_claim_keeps_its_volume_mode_and_status() -> None:
    obj = {"spec": {"volumeMode": "Block"}, "status": {"phase": "Bound"}}
    assert apply_defaults("", "PersistentVolumeClaim", obj) == obj


# --------------------------------------------------------------------------- apps


def test_a_deployment_gets_replicas_history_deadline_and_rolling_update() -> None:
    spec = apply_defaults("apps", "Deployment", workload("Deployment"))["spec"]
    assert spec["replicas"] == 1
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
    }


def test_a_recreate_deployment_gets_no_rolling_update_parameters() -> None:
    obj = workload("Deployment", strategy={"type": "Recreate"})
    assert apply_defaults("apps", "Deployment", obj)["spec"]["strategy"] == {"type": "Recreate"}


def test_a_deployment_keeps_zero_replicas_and_its_own_rollout_parameters() -> None:
    obj = workload(
        "Deployment",
        replicas=0,
        revisionHistoryLimit=0,
        progressDeadlineSeconds=30,
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
    )
    spec = apply_defaults("apps", "Deployment", obj)["spec"]
    assert spec["replicas"] == 0
    assert spec["revisionHistoryLimit"] == 0
    assert spec["progressDeadlineSeconds"] == 30
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": "25%"}


def test_a_statefulset_gets_ordered_rolling_updates_and_retained_claims() -> None:
    spec = apply_defaults("apps", "StatefulSet", workload("StatefulSet"))["spec"]
    assert spec["replicas"] == 1
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["revisionHistoryLimit"] == 10
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }


def test_a_statefulset_keeps_on_delete_and_its_own_policies() -> None:
    obj = workload(
        "StatefulSet",
        replicas=3,
        podManagementPolicy="Parallel",
        updateStrategy={"type": "OnDelete"},
        persistentVolumeClaimRetentionPolicy={"whenDeleted": "Delete"},
    )
    spec = apply_defaults("apps", "StatefulSet", obj)["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"] == {"type": "OnDelete"}
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete",
        "whenScaled": "Retain",
    }


def test_statefulset_claim_templates_are_defaulted_as_claims() -> None:
    claim = {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}
    obj = workload("StatefulSet", volumeClaimTemplates=[claim])
    result = apply_defaults("apps", "StatefulSet", obj)["spec"]["volumeClaimTemplates"][0]
    assert result["spec"]["volumeMode"] == "Filesystem"
    assert result["status"] == {"phase": "Pending"}


def test_a_daemonset_gets_history_and_a_one_at_a_time_rolling_update() -> None:
    spec = apply_defaults("apps", "DaemonSet", workload("DaemonSet"))["spec"]
    assert spec["revisionHistoryLimit"] == 10
    assert spec["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    assert "replicas" not in spec


def test_a_daemonset_keeps_its_update_strategy() -> None:
    obj = workload("DaemonSet", updateStrategy={"type": "OnDelete"}, revisionHistoryLimit=2)
    spec = apply_defaults("apps", "DaemonSet", obj)["spec"]
    assert spec["updateStrategy"] == {"type": "OnDelete"}
    assert spec["revisionHistoryLimit"] == 2


def test_a_replicaset_gets_one_replica_unless_it_has_some() -> None:
    assert apply_defaults("apps", "ReplicaSet", workload("ReplicaSet"))["spec"]["replicas"] == 1
    obj = workload("ReplicaSet", replicas=0)
    assert apply_defaults("apps", "ReplicaSet", obj)["spec"]["replicas"] == 0


# --------------------------------------------------------------------------- batch


def test_a_job_gets_one_completion_backoff_six_and_its_modes() -> None:
    spec = apply_defaults("batch", "Job", job())["spec"]
    assert spec["parallelism"] == 1
    assert spec["completions"] == 1
    assert spec["backoffLimit"] == 6
    assert spec["completionMode"] == "NonIndexed"
    assert spec["suspend"] is False
    assert spec["podReplacementPolicy"] == "TerminatingOrFailed"
    assert "manualSelector" not in spec


def test_a_job_with_only_parallelism_is_left_without_completions() -> None:
    spec = apply_defaults("batch", "Job", job(parallelism=3))["spec"]
    assert spec["parallelism"] == 3
    assert "completions" not in spec


def test_a_job_with_only_completions_still_gets_parallelism_one() -> None:
    spec = apply_defaults("batch", "Job", job(completions=5))["spec"]
    assert spec["completions"] == 5
    assert spec["parallelism"] == 1


def test_a_job_keeps_its_own_limits_and_modes() -> None:
    given = job(backoffLimit=0, completionMode="Indexed", suspend=True, completions=2)
    spec = apply_defaults("batch", "Job", given)["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["completionMode"] == "Indexed"
    assert spec["suspend"] is True


def test_a_job_with_a_pod_failure_policy_replaces_only_failed_pods() -> None:
    spec = apply_defaults("batch", "Job", job(podFailurePolicy={"rules": []}))["spec"]
    assert spec["podReplacementPolicy"] == "Failed"


def test_a_job_template_gets_pod_defaults_but_no_restart_policy() -> None:
    obj = job()
    del obj["spec"]["template"]["spec"]["restartPolicy"]
    template = apply_defaults("batch", "Job", obj)["spec"]["template"]["spec"]
    assert "restartPolicy" not in template
    assert template["dnsPolicy"] == "ClusterFirst"
    assert template["containers"] == [EXPECTED_CONTAINER]


def test_a_job_template_keeps_its_restart_policy() -> None:
    template = apply_defaults("batch", "Job", job())["spec"]["template"]["spec"]
    assert template["restartPolicy"] == "Never"


def test_a_cronjob_gets_concurrency_suspend_and_history_limits() -> None:
    obj = {"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": job()["spec"]}}}
    spec = apply_defaults("batch", "CronJob", obj)["spec"]
    assert spec["concurrencyPolicy"] == "Allow"
    assert spec["suspend"] is False
    assert spec["successfulJobsHistoryLimit"] == 3
    assert spec["failedJobsHistoryLimit"] == 1
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"] == [EXPECTED_CONTAINER]
    assert pod["restartPolicy"] == "Never"
    # The job template itself is not a Job: it gets no Job defaults.
    assert "backoffLimit" not in spec["jobTemplate"]["spec"]


def test_a_cronjob_keeps_its_own_policies() -> None:
    given = {
        "concurrencyPolicy": "Forbid",
        "suspend": True,
        "successfulJobsHistoryLimit": 0,
        "failedJobsHistoryLimit": 0,
        "schedule": "@hourly",
    }
    assert apply_defaults("batch", "CronJob", {"spec": given})["spec"] == given


# --------------------------------------------------------------------------- never overwrite


@pytest.mark.parametrize(
    ("group", "kind", "obj"),
    [
        ("", "Secret", {"type": "kubernetes.io/dockerconfigjson"}),
        ("", "Service", {"spec": {"type": "NodePort", "sessionAffinity": "ClientIP"}}),
        ("apps", "Deployment", workload("Deployment", replicas=5, revisionHistoryLimit=1)),
        ("apps", "StatefulSet", workload("StatefulSet", replicas=2)),
        ("batch", "Job", job(backoffLimit=1, parallelism=2, completions=4)),
    ],
)
def test_defaults_never_overwrite_values_the_object_has(group: str, kind: str, obj: Obj) -> None:
    result = apply_defaults(group, kind, obj)

    def contains(big: Any, small: Any) -> bool:
        if isinstance(small, dict):
            return isinstance(big, dict) and all(
                k in big and contains(big[k], v) for k, v in small.items()
            )
        if isinstance(small, list):
            return (
                isinstance(big, list)
                and len(big) == len(small)
                and all(contains(b, s) for b, s in zip(big, small, strict=True))
            )
        return bool(big == small)

    assert contains(result, obj)


def test_an_empty_string_counts_as_unset_for_string_defaults() -> None:
    spec = pod_spec(dnsPolicy="")
    spec["containers"][0]["imagePullPolicy"] = ""
    result = apply_defaults("", "Pod", {"spec": spec})["spec"]
    assert result["dnsPolicy"] == "ClusterFirst"
    assert result["containers"][0]["imagePullPolicy"] == "IfNotPresent"
