"""Server-side printing: Table columns and cells look like a real API server's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fluxd.devcluster.table import (
    Column,
    builtin_columns,
    crd_columns,
    evaluate_json_path,
    human_duration,
    row_cells,
    to_table,
)

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)


def ago(**delta: float) -> str:
    """An RFC 3339 timestamp ``delta`` before NOW."""
    return (NOW - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(name: str = "demo", **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "default", "creationTimestamp": ago(minutes=5), **extra}


def headers(group: str, kind: str, wide: bool = False) -> str:
    """The header line kubectl would print for the kind."""
    cols = builtin_columns(group, kind)
    return " ".join(c.name.upper() for c in cols if wide or c.priority == 0)


def printed(group: str, kind: str, obj: dict[str, Any], wide: bool = False) -> dict[str, Any]:
    """Cells keyed by upper-case header, restricted to what kubectl shows."""
    cols = builtin_columns(group, kind)
    cells = row_cells(group, kind, obj, NOW, cols)
    assert len(cells) == len(cols)
    return {
        c.name.upper(): cell for c, cell in zip(cols, cells, strict=True) if wide or c.priority == 0
    }


# --------------------------------------------------------------------------- human_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (123, "2m3s"),
        (599, "9m59s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 12 * 60, "3h12m"),
        (8 * 3600 - 1, "7h59m"),
        (8 * 3600, "8h"),
        (48 * 3600 - 1, "47h"),
        (48 * 3600, "2d"),
        (51 * 3600, "2d3h"),
        (8 * 86400 - 1, "7d23h"),
        (8 * 86400, "8d"),
        (730 * 86400 - 1, "729d"),
        (730 * 86400, "2y"),
        (831 * 86400, "2y101d"),
        (8 * 365 * 86400 - 1, "7y364d"),
        (8 * 365 * 86400, "8y"),
        (20 * 365 * 86400, "20y"),
    ],
)
def test_human_duration_follows_kubernetes_thresholds(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_human_duration_truncates_fractions_of_a_second() -> None:
    assert human_duration(5.9) == "5s"


def test_human_duration_tolerates_a_second_of_clock_skew_but_not_more() -> None:
    assert human_duration(-0.5) == "0s"
    assert human_duration(-1.9) == "0s"
    assert human_duration(-2) == "<invalid>"


# --------------------------------------------------------------------------- core kinds


def test_namespace_prints_status_and_age() -> None:
    assert headers("", "Namespace") == "NAME STATUS AGE"
    ns = {"metadata": meta("team-a"), "status": {"phase": "Active"}}
    assert printed("", "Namespace", ns) == {"NAME": "team-a", "STATUS": "Active", "AGE": "5m"}


def test_namespace_without_a_stored_phase_prints_as_active() -> None:
    assert printed("", "Namespace", {"metadata": meta()})["STATUS"] == "Active"


def test_configmap_counts_data_and_binary_data_keys() -> None:
    assert headers("", "ConfigMap") == "NAME DATA AGE"
    cm = {"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}
    assert printed("", "ConfigMap", cm) == {"NAME": "cfg", "DATA": 3, "AGE": "5m"}


def test_secret_prints_type_and_data_count() -> None:
    assert headers("", "Secret") == "NAME TYPE DATA AGE"
    secret = {"metadata": meta("tls"), "type": "kubernetes.io/tls", "data": {"a": "", "b": ""}}
    assert printed("", "Secret", secret) == {
        "NAME": "tls",
        "TYPE": "kubernetes.io/tls",
        "DATA": 2,
        "AGE": "5m",
    }


def test_service_account_counts_secrets() -> None:
    assert headers("", "ServiceAccount") == "NAME SECRETS AGE"
    sa = {"metadata": meta("default")}
    assert printed("", "ServiceAccount", sa) == {"NAME": "default", "SECRETS": 0, "AGE": "5m"}


def test_cluster_ip_service_prints_ports_and_no_external_ip() -> None:
    assert headers("", "Service") == "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE"
    assert headers("", "Service", wide=True).endswith("AGE SELECTOR")
    svc = {
        "metadata": meta("web"),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
            "selector": {"app": "web", "tier": "front"},
        },
    }
    assert printed("", "Service", svc, wide=True) == {
        "NAME": "web",
        "TYPE": "ClusterIP",
        "CLUSTER-IP": "10.96.0.10",
        "EXTERNAL-IP": "<none>",
        "PORT(S)": "80/TCP,53/UDP",
        "AGE": "5m",
        "SELECTOR": "app=web,tier=front",
    }


def test_node_port_service_shows_the_node_port_after_a_colon() -> None:
    svc = {
        "metadata": meta(),
        "spec": {"type": "NodePort", "ports": [{"port": 443, "nodePort": 30443}]},
    }
    cells = printed("", "Service", svc)
    assert cells["PORT(S)"] == "443:30443/TCP"
    assert cells["CLUSTER-IP"] == "<none>"


def test_load_balancer_service_is_pending_until_it_has_an_ingress() -> None:
    spec = {"type": "LoadBalancer", "clusterIP": "10.0.0.1", "ports": [{"port": 80}]}
    pending = {"metadata": meta(), "spec": spec}
    assert printed("", "Service", pending)["EXTERNAL-IP"] == "<pending>"
    ready = {
        "metadata": meta(),
        "spec": spec,
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.test"}]}},
    }
    assert printed("", "Service", ready)["EXTERNAL-IP"] == "203.0.113.9,lb.test"


def test_service_without_ports_prints_none() -> None:
    svc = {"metadata": meta(), "spec": {"clusterIP": "None"}}
    cells = printed("", "Service", svc)
    assert cells["TYPE"] == "ClusterIP"
    assert cells["CLUSTER-IP"] == "None"
    assert cells["PORT(S)"] == "<none>"


def test_external_name_service_shows_the_external_name() -> None:
    svc = {"metadata": meta(), "spec": {"type": "ExternalName", "externalName": "db.example"}}
    assert printed("", "Service", svc)["EXTERNAL-IP"] == "db.example"


def running_pod() -> dict[str, Any]:
    return {
        "metadata": meta("web-0"),
        "spec": {"nodeName": "dev", "containers": [{"name": "app"}, {"name": "proxy"}]},
        "status": {
            "phase": "Running",
            "podIP": "10.244.0.5",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "app", "ready": True, "restartCount": 0, "state": {"running": {}}},
                {"name": "proxy", "ready": True, "restartCount": 0, "state": {"running": {}}},
            ],
        },
    }


def test_running_pod_prints_ready_count_status_and_restarts() -> None:
    assert headers("", "Pod") == "NAME READY STATUS RESTARTS AGE"
    assert headers("", "Pod", wide=True) == (
        "NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES"
    )
    assert printed("", "Pod", running_pod(), wide=True) == {
        "NAME": "web-0",
        "READY": "2/2",
        "STATUS": "Running",
        "RESTARTS": "0",
        "AGE": "5m",
        "IP": "10.244.0.5",
        "NODE": "dev",
        "NOMINATED NODE": "<none>",
        "READINESS GATES": "<none>",
    }


def test_pod_with_a_waiting_container_shows_the_waiting_reason() -> None:
    pod = running_pod()
    pod["status"]["containerStatuses"][1] = {
        "name": "proxy",
        "ready": False,
        "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(seconds=30)}},
    }
    cells = printed("", "Pod", pod)
    assert cells["READY"] == "1/2"
    assert cells["STATUS"] == "CrashLoopBackOff"
    assert cells["RESTARTS"] == "4 (30s ago)"


def test_pending_pod_without_statuses_shows_its_phase() -> None:
    pod = {
        "metadata": meta(),
        "spec": {"containers": [{"name": "a"}]},
        "status": {"phase": "Pending"},
    }
    assert printed("", "Pod", pod)["STATUS"] == "Pending"
    assert printed("", "Pod", pod)["READY"] == "0/1"


def test_pod_status_reason_overrides_the_phase() -> None:
    pod = {"metadata": meta(), "spec": {}, "status": {"phase": "Failed", "reason": "Evicted"}}
    assert printed("", "Pod", pod)["STATUS"] == "Evicted"


def test_deleting_pod_is_terminating() -> None:
    pod = running_pod()
    pod["metadata"]["deletionTimestamp"] = ago(seconds=1)
    assert printed("", "Pod", pod)["STATUS"] == "Terminating"


def test_completed_pod_stays_completed_even_when_deleted() -> None:
    pod = {
        "metadata": meta(deletionTimestamp=ago(seconds=1)),
        "spec": {"containers": [{"name": "a"}]},
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            ],
        },
    }
    assert printed("", "Pod", pod)["STATUS"] == "Completed"


def test_pod_running_init_containers_shows_init_progress() -> None:
    pod = {
        "metadata": meta(),
        "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "a"}]},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [
                {"name": "i1", "state": {"terminated": {"exitCode": 0}}},
                {"name": "i2", "state": {"running": {}}},
            ],
        },
    }
    assert printed("", "Pod", pod)["STATUS"] == "Init:1/2"


def test_sidecar_init_containers_count_towards_ready() -> None:
    pod = running_pod()
    pod["spec"]["initContainers"] = [{"name": "mesh", "restartPolicy": "Always"}]
    pod["status"]["initContainerStatuses"] = [
        {"name": "mesh", "started": True, "ready": True, "state": {"running": {}}}
    ]
    pod["status"]["conditions"].append({"type": "Initialized", "status": "True"})
    assert printed("", "Pod", pod)["READY"] == "3/3"


def test_bound_pvc_prints_volume_capacity_and_short_access_modes() -> None:
    assert headers("", "PersistentVolumeClaim") == (
        "NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS VOLUMEATTRIBUTESCLASS AGE"
    )
    pvc = {
        "metadata": meta("data"),
        "spec": {"volumeName": "pv-1", "storageClassName": "standard"},
        "status": {
            "phase": "Bound",
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
        },
    }
    assert printed("", "PersistentVolumeClaim", pvc, wide=True) == {
        "NAME": "data",
        "STATUS": "Bound",
        "VOLUME": "pv-1",
        "CAPACITY": "1Gi",
        "ACCESS MODES": "RWO,RWX",
        "STORAGECLASS": "standard",
        "VOLUMEATTRIBUTESCLASS": "<unset>",
        "AGE": "5m",
        "VOLUMEMODE": "<unset>",
    }


def test_pending_pvc_leaves_capacity_and_access_modes_blank() -> None:
    pvc = {"metadata": meta(), "spec": {}, "status": {"phase": "Pending"}}
    cells = printed("", "PersistentVolumeClaim", pvc)
    assert (cells["STATUS"], cells["VOLUME"], cells["CAPACITY"], cells["ACCESS MODES"]) == (
        "Pending",
        "",
        "",
        "",
    )


def core_event() -> dict[str, Any]:
    return {
        "metadata": meta("web.17a"),
        "involvedObject": {"kind": "Pod", "name": "web-0", "fieldPath": "spec.containers{app}"},
        "reason": "Pulled",
        "message": "Container image pulled\n",
        "type": "Normal",
        "firstTimestamp": ago(minutes=10),
        "lastTimestamp": ago(minutes=2),
        "count": 3,
        "source": {"component": "kubelet", "host": "dev"},
    }


def test_core_event_prints_last_seen_type_reason_object_message() -> None:
    assert headers("", "Event") == "LAST SEEN TYPE REASON OBJECT MESSAGE"
    assert headers("", "Event", wide=True) == (
        "LAST SEEN TYPE REASON OBJECT SUBOBJECT SOURCE MESSAGE FIRST SEEN COUNT NAME"
    )
    assert printed("", "Event", core_event(), wide=True) == {
        "LAST SEEN": "2m",
        "TYPE": "Normal",
        "REASON": "Pulled",
        "OBJECT": "pod/web-0",
        "SUBOBJECT": "spec.containers{app}",
        "SOURCE": "kubelet, dev",
        "MESSAGE": "Container image pulled",
        "FIRST SEEN": "10m",
        "COUNT": 3,
        "NAME": "web.17a",
    }


def test_event_with_only_an_event_time_is_a_singleton() -> None:
    event = {
        "metadata": meta(),
        "involvedObject": {"kind": "Node"},
        "eventTime": "2024-06-01T11:59:29.5Z",
        "reportingComponent": "scheduler",
    }
    cells = printed("", "Event", event, wide=True)
    assert (cells["LAST SEEN"], cells["FIRST SEEN"], cells["COUNT"]) == ("30s", "30s", 1)
    assert cells["OBJECT"] == "node"
    assert cells["SOURCE"] == "scheduler"


def test_events_k8s_io_event_prints_like_the_core_event() -> None:
    assert headers("events.k8s.io", "Event") == "LAST SEEN TYPE REASON OBJECT MESSAGE"
    event = {
        "metadata": meta("web.17a"),
        "regarding": {"kind": "Deployment", "name": "web"},
        "reason": "ScalingReplicaSet",
        "note": "Scaled up replica set web-1 to 2",
        "type": "Normal",
        "eventTime": ago(minutes=9),
        "series": {"count": 4, "lastObservedTime": ago(seconds=40)},
        "reportingController": "deployment-controller",
    }
    assert printed("events.k8s.io", "Event", event, wide=True) == {
        "LAST SEEN": "40s",
        "TYPE": "Normal",
        "REASON": "ScalingReplicaSet",
        "OBJECT": "deployment/web",
        "SUBOBJECT": "",
        "SOURCE": "deployment-controller",
        "MESSAGE": "Scaled up replica set web-1 to 2",
        "FIRST SEEN": "9m",
        "COUNT": 4,
        "NAME": "web.17a",
    }


# --------------------------------------------------------------------------- apps


def pod_template() -> dict[str, Any]:
    return {
        "spec": {"containers": [{"name": "app", "image": "nginx:1"}, {"name": "s", "image": "b"}]}
    }


def test_deployment_prints_ready_fraction_up_to_date_and_available() -> None:
    assert headers("apps", "Deployment") == "NAME READY UP-TO-DATE AVAILABLE AGE"
    deploy = {
        "metadata": meta("web"),
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": pod_template(),
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    assert printed("apps", "Deployment", deploy, wide=True) == {
        "NAME": "web",
        "READY": "2/3",
        "UP-TO-DATE": 3,
        "AVAILABLE": 2,
        "AGE": "5m",
        "CONTAINERS": "app,s",
        "IMAGES": "nginx:1,b",
        "SELECTOR": "app=web",
    }


def test_fresh_deployment_without_status_is_zero_of_one() -> None:
    deploy = {"metadata": meta(), "spec": {"template": pod_template()}}
    assert printed("apps", "Deployment", deploy)["READY"] == "0/1"


def test_statefulset_prints_ready_fraction() -> None:
    assert headers("apps", "StatefulSet") == "NAME READY AGE"
    sts = {"metadata": meta("db"), "spec": {"replicas": 2}, "status": {"readyReplicas": 2}}
    assert printed("apps", "StatefulSet", sts) == {"NAME": "db", "READY": "2/2", "AGE": "5m"}


def test_daemonset_prints_scheduling_counts_and_node_selector() -> None:
    assert headers("apps", "DaemonSet") == (
        "NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE"
    )
    ds = {
        "metadata": meta("agent"),
        "spec": {
            "selector": {
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]
            },
            "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}},
        },
        "status": {
            "desiredNumberScheduled": 1,
            "currentNumberScheduled": 1,
            "numberReady": 1,
            "updatedNumberScheduled": 1,
            "numberAvailable": 1,
        },
    }
    cells = printed("apps", "DaemonSet", ds, wide=True)
    assert cells["NODE SELECTOR"] == "kubernetes.io/os=linux"
    assert [cells[h] for h in ("DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE")] == [1] * 5
    assert cells["SELECTOR"] == "tier in (a,b)"


def test_daemonset_without_node_selector_prints_none() -> None:
    ds = {"metadata": meta(), "spec": {"template": {"spec": {}}}}
    assert printed("apps", "DaemonSet", ds)["NODE SELECTOR"] == "<none>"


def test_replicaset_prints_desired_current_ready() -> None:
    assert headers("apps", "ReplicaSet") == "NAME DESIRED CURRENT READY AGE"
    rs = {"metadata": meta("web-5d9"), "spec": {"replicas": 2}, "status": {"replicas": 2}}
    assert printed("apps", "ReplicaSet", rs) == {
        "NAME": "web-5d9",
        "DESIRED": 2,
        "CURRENT": 2,
        "READY": 0,
        "AGE": "5m",
    }


# --------------------------------------------------------------------------- batch


def test_complete_job_prints_completions_and_duration() -> None:
    assert headers("batch", "Job") == "NAME STATUS COMPLETIONS DURATION AGE"
    job = {
        "metadata": meta("migrate"),
        "spec": {"completions": 1, "template": pod_template()},
        "status": {
            "succeeded": 1,
            "startTime": ago(minutes=5),
            "completionTime": ago(minutes=4, seconds=48),
            "conditions": [{"type": "Complete", "status": "True"}],
        },
    }
    assert printed("batch", "Job", job) == {
        "NAME": "migrate",
        "STATUS": "Complete",
        "COMPLETIONS": "1/1",
        "DURATION": "12s",
        "AGE": "5m",
    }


def test_running_job_measures_duration_until_now() -> None:
    job = {
        "metadata": meta(),
        "spec": {"completions": 3},
        "status": {"succeeded": 1, "startTime": ago(seconds=90)},
    }
    cells = printed("batch", "Job", job)
    assert (cells["STATUS"], cells["COMPLETIONS"], cells["DURATION"]) == ("Running", "1/3", "90s")


def test_failed_job_without_start_time_has_blank_duration() -> None:
    job = {
        "metadata": meta(),
        "spec": {"parallelism": 4},
        "status": {"conditions": [{"type": "Failed", "status": "True"}]},
    }
    cells = printed("batch", "Job", job)
    assert (cells["STATUS"], cells["COMPLETIONS"], cells["DURATION"]) == ("Failed", "0/1 of 4", "")


def test_cronjob_prints_schedule_timezone_suspend_active_and_last_schedule() -> None:
    assert headers("batch", "CronJob") == (
        "NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE"
    )
    cron = {
        "metadata": meta("nightly"),
        "spec": {"schedule": "0 3 * * *", "suspend": False, "jobTemplate": {"spec": {}}},
        "status": {"active": [{"name": "nightly-1"}], "lastScheduleTime": ago(hours=9)},
    }
    assert printed("batch", "CronJob", cron) == {
        "NAME": "nightly",
        "SCHEDULE": "0 3 * * *",
        "TIMEZONE": "<none>",
        "SUSPEND": "False",
        "ACTIVE": 1,
        "LAST SCHEDULE": "9h",
        "AGE": "5m",
    }


def test_never_scheduled_cronjob_prints_none_for_last_schedule() -> None:
    cron = {"metadata": meta(), "spec": {"schedule": "@daily", "timeZone": "Etc/UTC"}}
    cells = printed("batch", "CronJob", cron)
    assert (cells["TIMEZONE"], cells["LAST SCHEDULE"], cells["ACTIVE"]) == ("Etc/UTC", "<none>", 0)


# --------------------------------------------------------------------------- other groups


def test_ingress_prints_class_hosts_address_and_ports() -> None:
    assert headers("networking.k8s.io", "Ingress") == "NAME CLASS HOSTS ADDRESS PORTS AGE"
    ing = {
        "metadata": meta("site"),
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{"host": "a.test"}, {"host": "b.test"}],
            "tls": [{"hosts": ["a.test"]}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}},
    }
    assert printed("networking.k8s.io", "Ingress", ing) == {
        "NAME": "site",
        "CLASS": "nginx",
        "HOSTS": "a.test,b.test",
        "ADDRESS": "192.0.2.1",
        "PORTS": "80, 443",
        "AGE": "5m",
    }


def test_ingress_without_hosts_matches_everything_and_has_no_address() -> None:
    ing = {"metadata": meta(), "spec": {"rules": [{"http": {}}]}}
    cells = printed("networking.k8s.io", "Ingress", ing)
    assert (cells["CLASS"], cells["HOSTS"], cells["ADDRESS"], cells["PORTS"]) == (
        "<none>",
        "*",
        "",
        "80",
    )


def test_ingress_with_many_hosts_summarises_the_rest() -> None:
    rules = [{"host": f"h{i}.test"} for i in range(5)]
    ing = {"metadata": meta(), "spec": {"rules": rules}}
    hosts = printed("networking.k8s.io", "Ingress", ing)["HOSTS"]
    assert hosts == "h0.test,h1.test,h2.test + 2 more..."


@pytest.mark.parametrize("kind", ["Role", "ClusterRole"])
def test_roles_print_name_and_created_at_timestamp(kind: str) -> None:
    assert headers("rbac.authorization.k8s.io", kind) == "NAME CREATED AT"
    role = {"metadata": {"name": "admin", "creationTimestamp": "2024-05-01T10:00:00Z"}}
    assert printed("rbac.authorization.k8s.io", kind, role) == {
        "NAME": "admin",
        "CREATED AT": "2024-05-01T10:00:00Z",
    }
    assert builtin_columns("rbac.authorization.k8s.io", kind)[1].type == "date"


@pytest.mark.parametrize("kind", ["RoleBinding", "ClusterRoleBinding"])
def test_bindings_print_the_role_reference_and_wide_subjects(kind: str) -> None:
    assert headers("rbac.authorization.k8s.io", kind) == "NAME ROLE AGE"
    binding = {
        "metadata": meta("admins"),
        "roleRef": {"kind": "ClusterRole", "name": "admin"},
        "subjects": [
            {"kind": "User", "name": "jane"},
            {"kind": "Group", "name": "ops"},
            {"kind": "ServiceAccount", "name": "ci", "namespace": "tools"},
            {"kind": "ServiceAccount", "name": "bot", "namespace": "tools"},
        ],
    }
    assert printed("rbac.authorization.k8s.io", kind, binding, wide=True) == {
        "NAME": "admins",
        "ROLE": "ClusterRole/admin",
        "AGE": "5m",
        "USERS": "jane",
        "GROUPS": "ops",
        "SERVICEACCOUNTS": "tools/ci, tools/bot",
    }


def test_lease_prints_its_holder() -> None:
    assert headers("coordination.k8s.io", "Lease") == "NAME HOLDER AGE"
    lease = {"metadata": meta("leader"), "spec": {"holderIdentity": "fluxd-1"}}
    assert printed("coordination.k8s.io", "Lease", lease) == {
        "NAME": "leader",
        "HOLDER": "fluxd-1",
        "AGE": "5m",
    }


def test_custom_resource_definition_prints_created_at() -> None:
    assert headers("apiextensions.k8s.io", "CustomResourceDefinition") == "NAME CREATED AT"
    crd = {"metadata": {"name": "kustomizations.kustomize.toolkit.fluxcd.io"}}
    cells = printed("apiextensions.k8s.io", "CustomResourceDefinition", crd)
    assert cells["CREATED AT"] == "0001-01-01T00:00:00Z"


def test_created_at_is_rendered_in_utc_without_fractions() -> None:
    role = {"metadata": {"name": "r", "creationTimestamp": "2024-05-01T12:00:00.5+02:00"}}
    assert printed("rbac.authorization.k8s.io", "Role", role)["CREATED AT"] == (
        "2024-05-01T10:00:00Z"
    )


def test_unknown_kinds_print_name_and_age() -> None:
    assert headers("example.com", "Widget") == "NAME AGE"
    assert printed("example.com", "Widget", {"metadata": meta("w")}) == {"NAME": "w", "AGE": "5m"}


def test_missing_creation_timestamp_is_an_unknown_age() -> None:
    assert printed("", "ConfigMap", {"metadata": {"name": "x"}})["AGE"] == "<unknown>"


def test_every_builtin_table_starts_with_a_name_column_except_events() -> None:
    for group, kind in [("", "Pod"), ("apps", "Deployment"), ("batch", "Job"), ("x", "Y")]:
        first = builtin_columns(group, kind)[0]
        assert (first.name, first.type, first.format) == ("Name", "string", "name")
    assert all(c.description for c in builtin_columns("", "Pod"))


def test_core_group_may_be_spelled_core() -> None:
    assert builtin_columns("core", "Pod") == builtin_columns("", "Pod")


def test_cells_follow_the_columns_the_caller_passes() -> None:
    cols = [c for c in builtin_columns("", "Pod") if c.name in ("Status", "Name")]
    assert row_cells("", "Pod", running_pod(), NOW, cols) == ["web-0", "Running"]


# --------------------------------------------------------------------------- CRDs

KUSTOMIZATION_COLUMNS: list[dict[str, Any]] = [
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {
        "name": "Status",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].message',
    },
    {"name": "Interval", "type": "string", "priority": 1, "jsonPath": ".spec.interval"},
]


def kustomization() -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": meta("apps"),
        "spec": {"interval": "10m"},
        "status": {
            "conditions": [
                {"type": "Reconciling", "status": "False", "message": "done"},
                {"type": "Ready", "status": "True", "message": "Applied revision: main@sha1:abc"},
            ]
        },
    }


def test_crd_columns_put_name_first_and_keep_type_format_and_priority() -> None:
    cols = crd_columns(KUSTOMIZATION_COLUMNS)
    assert [c.name for c in cols] == ["Name", "Age", "Ready", "Status", "Interval"]
    assert cols[0].format == "name"
    assert cols[1].type == "date"
    assert cols[4].priority == 1
    assert cols[2].json_path == '.status.conditions[?(@.type=="Ready")].status'


def test_crd_column_description_defaults_to_its_json_path() -> None:
    cols = crd_columns([{"name": "X", "type": "string", "jsonPath": ".spec.x"}])
    assert cols[1].description == "Custom resource definition column (in JSONPath format): .spec.x"
    described = crd_columns([{"name": "X", "type": "string", "jsonPath": ".a", "description": "d"}])
    assert described[1].description == "d"


def test_crd_without_printer_columns_gets_name_and_age() -> None:
    cols = crd_columns([])
    assert [(c.name, c.type, c.json_path) for c in cols] == [
        ("Name", "string", ""),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    cells = row_cells("example.com", "Widget", {"metadata": meta("w")}, NOW, cols)
    assert cells == ["w", "5m"]


def test_crd_row_evaluates_filters_over_conditions_and_renders_dates_as_ages() -> None:
    cols = crd_columns(KUSTOMIZATION_COLUMNS)
    cells = row_cells("kustomize.toolkit.fluxcd.io", "Kustomization", kustomization(), NOW, cols)
    assert cells == ["apps", "5m", "True", "Applied revision: main@sha1:abc", "10m"]


def test_crd_cells_are_none_when_the_path_is_absent() -> None:
    cols = crd_columns(KUSTOMIZATION_COLUMNS)
    obj = {"metadata": meta("fresh"), "spec": {}}
    assert row_cells("g", "K", obj, NOW, cols) == ["fresh", "5m", None, None, None]


def test_crd_cells_are_typed_by_the_column_type() -> None:
    cols = crd_columns(
        [
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Ratio", "type": "number", "jsonPath": ".spec.ratio"},
            {"name": "Suspended", "type": "boolean", "jsonPath": ".spec.suspend"},
            {"name": "Mismatch", "type": "integer", "jsonPath": ".spec.name"},
            {"name": "Text", "type": "string", "jsonPath": ".spec.replicas"},
            {"name": "Whole", "type": "string", "jsonPath": ".spec.selector"},
        ]
    )
    obj = {
        "metadata": meta("w"),
        "spec": {
            "replicas": 3,
            "ratio": 2,
            "suspend": False,
            "name": "x",
            "selector": {"b": 1, "a": "<x>"},
        },
    }
    cells = row_cells("g", "K", obj, NOW, cols)
    assert cells == ["w", 3, 2.0, False, None, "3", '{"a":"\\u003cx\\u003e","b":1}']
    assert isinstance(cells[2], float)


def test_crd_date_cells_handle_future_unparsable_and_zero_times() -> None:
    cols = crd_columns([{"name": "When", "type": "date", "jsonPath": ".status.at"}])

    def cell(at: str) -> Any:
        return row_cells("g", "K", {"metadata": meta(), "status": {"at": at}}, NOW, cols)[1]

    assert cell("2024-06-01T11:00:00Z") == "60m"
    assert cell("2024-06-01T13:00:00Z") == "<invalid>"
    assert cell("yesterday") == "<invalid>"
    assert cell("0001-01-01T00:00:00Z") == "<unknown>"


def test_crd_column_shows_only_the_first_of_several_matches() -> None:
    cols = crd_columns(
        [{"name": "Types", "type": "string", "jsonPath": ".status.conditions[*].type"}]
    )
    assert row_cells("g", "K", kustomization(), NOW, cols)[1] == "Reconciling"


def test_crd_column_with_unsupported_syntax_yields_an_empty_cell() -> None:
    cols = crd_columns([{"name": "Bad", "type": "string", "jsonPath": ".a[?(x)]"}])
    assert row_cells("g", "K", {"metadata": meta()}, NOW, cols)[1] is None


def test_a_naive_now_is_taken_as_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    cells = row_cells(
        "", "ConfigMap", {"metadata": meta()}, naive, builtin_columns("", "ConfigMap")
    )
    assert cells[-1] == "5m"


# --------------------------------------------------------------------------- to_table


def table_for(include_object: str = "Metadata", continue_token: str = "") -> dict[str, Any]:
    cols = builtin_columns("", "ConfigMap")
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("cfg"), "data": {"a": "b"}}
    return to_table(
        cols,
        [(row_cells("", "ConfigMap", obj, NOW, cols), obj)],
        "42",
        continue_token,
        include_object,
    )


def test_table_has_kubernetes_shape_and_camel_case_keys() -> None:
    table = table_for()
    assert table["kind"] == "Table"
    assert table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {"resourceVersion": "42"}
    assert table["columnDefinitions"][0] == {
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": table["columnDefinitions"][0]["description"],
        "priority": 0,
    }
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert table["rows"][0]["cells"] == ["cfg", 1, "5m"]


def test_table_carries_a_continue_token_when_paginating() -> None:
    assert table_for(continue_token="abc")["metadata"] == {
        "resourceVersion": "42",
        "continue": "abc",
    }


def test_include_object_metadata_sends_partial_object_metadata() -> None:
    row_object = table_for("Metadata")["rows"][0]["object"]
    assert row_object == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta("cfg"),
    }


def test_include_object_object_sends_the_whole_object() -> None:
    row_object = table_for("Object")["rows"][0]["object"]
    assert row_object["kind"] == "ConfigMap"
    assert row_object["data"] == {"a": "b"}


def test_include_object_none_sends_a_null_object() -> None:
    assert table_for("None")["rows"][0]["object"] is None


def test_unknown_include_object_is_rejected() -> None:
    with pytest.raises(ValueError):
        table_for("Everything")


def test_table_with_no_rows_still_has_columns() -> None:
    table = to_table([Column("Name", "string", "name")], [], "7")
    assert table["rows"] == []
    assert len(table["columnDefinitions"]) == 1


# --------------------------------------------------------------------------- JSONPath

DOC: dict[str, Any] = {
    "metadata": {
        "name": "demo",
        "labels": {"app.kubernetes.io/name": "web", "tier": "front"},
        "annotations": {"empty": None},
    },
    "spec": {
        "containers": [
            {"name": "app", "ports": [{"containerPort": 80}]},
            {"name": "sidecar", "ports": [{"containerPort": 9090}]},
        ],
        "replicas": 2,
        "paused": False,
    },
    "status": {
        "conditions": [
            {"type": "Ready", "status": "True", "observedGeneration": 3},
            {"type": "Stalled", "status": "False", "observedGeneration": 1},
        ]
    },
}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (".metadata.name", "demo"),
        ("metadata.name", "demo"),
        ("{.metadata.name}", "demo"),
        ("$.metadata.name", "demo"),
        (".spec.replicas", 2),
        (".spec.paused", False),
        (".spec.containers[0].name", "app"),
        (".spec.containers[-1].name", "sidecar"),
        (".spec.containers[*].name", "app,sidecar"),
        (".spec.containers[*].ports[*].containerPort", "80,9090"),
        (".spec.containers[0:1].name", "app"),
        ('.status.conditions[?(@.type=="Ready")].status', "True"),
        (".status.conditions[?(@.type=='Stalled')].status", "False"),
        ('.status.conditions[?(@.status!="True")].type', "Stalled"),
        (".status.conditions[?(@.observedGeneration>2)].type", "Ready"),
        (".status.conditions[?(@.observedGeneration<=1)].type", "Stalled"),
        (".status.conditions[?(@.message)].type", None),
        ('.metadata.labels["app.kubernetes.io/name"]', "web"),
        (".metadata.labels['app.kubernetes.io/name']", "web"),
        (".metadata.labels.app\\.kubernetes\\.io/name", "web"),
        (".metadata.labels", {"app.kubernetes.io/name": "web", "tier": "front"}),
        ("..containerPort", "80,9090"),
    ],
)
def test_json_path_evaluates_the_printer_column_subset(path: str, value: Any) -> None:
    assert evaluate_json_path(DOC, path) == value


@pytest.mark.parametrize(
    "path",
    [
        ".metadata.missing",
        ".missing.deeper.still",
        ".spec.containers[5].name",
        ".spec.replicas.name",
        ".metadata.name[0]",
        '.status.conditions[?(@.type=="Nope")].status',
        ".metadata.annotations.empty",
        ".metadata.labels['app']",
    ],
)
def test_json_path_returns_none_for_missing_fields(path: str) -> None:
    assert evaluate_json_path(DOC, path) is None


def test_json_path_joins_non_string_matches_as_text() -> None:
    doc = {"items": [{"v": True}, {"v": 1.5}, {"v": {"k": 1}}, {"v": 1e6}]}
    assert evaluate_json_path(doc, ".items[*].v") == 'true,1.5,{"k":1},1e+06'


def test_json_path_wildcard_over_a_map_yields_its_values_in_key_order() -> None:
    assert evaluate_json_path({"m": {"b": "2", "a": "1"}}, ".m[*]") == "1,2"
    assert evaluate_json_path({"m": {"b": "2", "a": "1"}}, ".m.*") == "1,2"


def test_json_path_root_is_the_whole_object() -> None:
    assert evaluate_json_path({"a": 1}, ".") == {"a": 1}


@pytest.mark.parametrize("path", [".a[", ".a[x]", ".a[?(@.b==)]", ".a[?(b)]", ".a[::0]"])
def test_json_path_rejects_syntax_outside_the_subset(path: str) -> None:
    with pytest.raises(ValueError):
        evaluate_json_path({"a": []}, path)
