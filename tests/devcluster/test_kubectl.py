"""Real kubectl against the cluster fixture: the commands users type every day."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid

import pytest
import yaml

from tests.conftest import Cluster, tool

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: nginx:1.27
        env:
        - {name: A, value: "1"}
        - {name: B, value: "2"}
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: web}
data:
  color: blue
"""


def crd_manifest(group: str) -> str:
    return f"""\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  names: {{kind: Widget, plural: widgets, singular: widget, shortNames: [wdg]}}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {{status: {{}}}}
    additionalPrinterColumns:
    - {{name: Size, type: integer, jsonPath: .spec.size}}
    - {{name: Age, type: date, jsonPath: .metadata.creationTimestamp}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {{type: integer, minimum: 1}}
              color: {{type: string, default: blue, enum: [blue, red]}}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"""


def test_version_reports_client_and_server(cluster: Cluster) -> None:
    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert out["clientVersion"]["gitVersion"].startswith("v1.35")
    assert out["serverVersion"]["major"] == "1"


def test_api_resources_lists_builtin_kinds(cluster: Cluster) -> None:
    out = cluster.kubectl("api-resources", "-o", "wide").stdout
    for name in ("deployments", "configmaps", "customresourcedefinitions", "leases",
                 "clusterrolebindings", "jobs", "ingresses", "events"):
        assert name in out


def test_create_namespace_and_get_it_as_a_table(cluster: Cluster) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "ns", name)
    try:
        table = cluster.kubectl("get", "ns", name).stdout.splitlines()
        assert table[0].split() == ["NAME", "STATUS", "AGE"]
        assert table[1].split()[:2] == [name, "Active"]
    finally:
        cluster.kubectl("delete", "ns", name, "--wait=false")


def test_client_side_apply_creates_then_updates_a_deployment(cluster: Cluster,
                                                            namespace: str) -> None:
    out = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT).stdout
    assert "deployment.apps/web created" in out
    assert "configmap/settings created" in out
    changed = DEPLOYMENT.replace("nginx:1.27", "nginx:1.28").replace(
        '        - {name: B, value: "2"}\n', "")
    out = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=changed).stdout
    assert "deployment.apps/web configured" in out
    assert "configmap/settings unchanged" in out
    dep = cluster.kubectl_json("get", "deploy", "web", "-n", namespace)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:1.28"
    assert container["env"] == [{"name": "A", "value": "1"}]
    assert dep["metadata"]["generation"] == 2


SECRET = """\
apiVersion: v1
kind: Secret
metadata:
  name: creds
data:
  user: b2xk
  host: ZGI=
stringData:
  user: admin
  token: s3cr3t
"""


@pytest.mark.parametrize("mode", [[], ["--server-side"]], ids=["client-side", "server-side"])
def test_secret_string_data_is_merged_into_data_and_never_stored(
        cluster: Cluster, namespace: str, mode: list[str]) -> None:
    cluster.kubectl("apply", *mode, "-n", namespace, "-f", "-", input=SECRET)
    secret = cluster.kubectl_json("get", "secret", "creds", "-n", namespace)
    assert "stringData" not in secret
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "user": "admin", "host": "db", "token": "s3cr3t"}
    assert secret["type"] == "Opaque"
    # applying the same manifest again changes nothing stored
    cluster.kubectl("apply", *mode, "-n", namespace, "-f", "-", input=SECRET)
    again = cluster.kubectl_json("get", "secret", "creds", "-n", namespace)
    assert again["data"] == secret["data"]
    assert again["metadata"]["resourceVersion"] == secret["metadata"]["resourceVersion"]


def test_server_side_apply_of_crd_and_custom_object(cluster: Cluster, namespace: str) -> None:
    group = f"{namespace}.example.com"
    cluster.kubectl("apply", "--server-side", "-f", "-", input=crd_manifest(group))
    try:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}",
                        "--timeout=30s")
        widget = (f"apiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: w1}}\n"
                  "spec: {size: 3}\n")
        cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=widget)
        obj = cluster.kubectl_json("get", f"widgets.{group}", "w1", "-n", namespace)
        assert obj["spec"] == {"size": 3, "color": "blue"}  # schema default applied
        table = cluster.kubectl("get", f"widgets.{group}", "-n", namespace).stdout.splitlines()
        assert table[0].split() == ["NAME", "SIZE", "AGE"]
        assert table[1].split()[:2] == ["w1", "3"]
        bad = widget.replace("size: 3", "size: 0")
        done = cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=bad,
                               check=False)
        assert done.returncode != 0
        assert "spec.size" in done.stderr and "greater than or equal to 1" in done.stderr
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false")


def test_server_side_apply_conflict_and_force(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=DEPLOYMENT)
    changed = DEPLOYMENT.replace("replicas: 2", "replicas: 5")
    done = cluster.kubectl("apply", "--server-side", "--field-manager=rival", "-n", namespace,
                           "-f", "-", input=changed, check=False)
    assert done.returncode != 0
    assert 'conflict with "kubectl"' in done.stderr and ".spec.replicas" in done.stderr
    cluster.kubectl("apply", "--server-side", "--field-manager=rival", "--force-conflicts",
                    "-n", namespace, "-f", "-", input=changed)
    dep = cluster.kubectl_json("get", "deploy", "web", "-n", namespace,
                               "--show-managed-fields")
    assert dep["spec"]["replicas"] == 5
    managers = {m["manager"] for m in dep["metadata"]["managedFields"]}
    assert {"kubectl", "rival"} <= managers


def test_server_side_apply_removes_fields_the_manager_stops_applying(
        cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=DEPLOYMENT)
    without_b = DEPLOYMENT.replace('        - {name: B, value: "2"}\n', "")
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=without_b)
    dep = cluster.kubectl_json("get", "deploy", "web", "-n", namespace)
    assert dep["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "A", "value": "1"}]
    # a label another manager added stays when kubectl stops applying its own labels
    cluster.kubectl("label", "deploy", "web", "-n", namespace, "team=blue")
    no_labels = without_b.replace("  labels: {app: web}\nspec:", "spec:", 1)
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=no_labels)
    labels = cluster.kubectl_json("get", "deploy", "web", "-n", namespace)["metadata"]["labels"]
    assert labels == {"team": "blue"}


def test_get_outputs_json_yaml_and_tables(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)
    as_json = cluster.kubectl_json("get", "cm", "settings", "-n", namespace)
    as_yaml = yaml.safe_load(cluster.kubectl("get", "cm", "settings", "-n", namespace,
                                             "-o", "yaml").stdout)
    assert as_json == as_yaml
    assert as_json["data"] == {"color": "blue"}
    # -l: a cluster keeps a ConfigMap of its own (kube-root-ca.crt) in every namespace
    listing = cluster.kubectl_json("get", "cm", "-n", namespace, "-l", "app=web")
    assert listing["kind"] == "List" and [i["kind"] for i in listing["items"]] == ["ConfigMap"]
    header = cluster.kubectl("get", "deploy", "-n", namespace).stdout.splitlines()[0]
    assert header.split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    wide = cluster.kubectl("get", "deploy", "-n", namespace, "-o", "wide").stdout
    assert "nginx:1.27" in wide and "app=web" in wide


def test_get_watch_sees_an_update(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "watched", "-n", namespace, "--from-literal=a=1")
    watch = subprocess.Popen(
        [tool("kubectl"), "get", "cm", "watched", "-n", namespace, "-w", "-o",
         "jsonpath={.data.a}{\"\\n\"}", "--request-timeout=20s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env())
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline().strip() == "1"
        cluster.kubectl("patch", "cm", "watched", "-n", namespace, "--type", "merge",
                        "-p", '{"data":{"a":"2"}}')
        assert watch.stdout.readline().strip() == "2"
    finally:
        watch.kill()
        watch.communicate(timeout=10)


def test_label_annotate_scale_and_patch(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)
    cluster.kubectl("label", "deploy", "web", "-n", namespace, "tier=frontend")
    dep = cluster.kubectl_json("get", "deploy", "web", "-n", namespace)
    assert dep["metadata"]["labels"]["tier"] == "frontend"
    assert dep["metadata"]["generation"] == 1  # labels never bump generation
    cluster.kubectl("annotate", "deploy", "web", "-n", namespace, "note=hello")
    dep = cluster.kubectl_json("get", "deploy", "web", "-n", namespace)
    assert dep["metadata"]["annotations"]["note"] == "hello"
    # a Deployment's annotations do: its controller copies them to the ReplicaSets
    assert dep["metadata"]["generation"] == 2
    cluster.kubectl("scale", "deploy", "web", "-n", namespace, "--replicas=4")
    assert cluster.kubectl_json("get", "deploy", "web", "-n", namespace)["spec"]["replicas"] == 4
    cluster.kubectl("patch", "deploy", "web", "-n", namespace, "--type", "merge",
                    "-p", '{"spec":{"minReadySeconds":3}}')
    cluster.kubectl("patch", "deploy", "web", "-n", namespace, "--type", "json",
                    "-p", '[{"op":"replace","path":"/spec/replicas","value":1}]')
    dep = cluster.kubectl_json("get", "deploy", "web", "-n", namespace)
    assert (dep["spec"]["replicas"], dep["spec"]["minReadySeconds"]) == (1, 3)
    assert dep["metadata"]["generation"] == 5
    done = cluster.kubectl("patch", "deploy", "web", "-n", namespace, "--type", "json",
                           "-p", '[{"op":"test","path":"/spec/replicas","value":9}]', check=False)
    assert done.returncode != 0


def test_wait_for_available_and_delete(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT)
    cluster.kubectl("wait", "--for=condition=Available", "deploy/web", "-n", namespace,
                    "--timeout=60s")
    status = cluster.kubectl_json("get", "deploy", "web", "-n", namespace)["status"]
    assert status["availableReplicas"] == 2
    cluster.kubectl("delete", "deploy", "web", "-n", namespace)
    done = cluster.kubectl("get", "deploy", "web", "-n", namespace, check=False)
    assert done.returncode != 0 and "NotFound" in done.stderr


def test_auth_can_i_as_service_account_follows_rbac(cluster: Cluster, namespace: str) -> None:
    sa = f"system:serviceaccount:{namespace}:robot"
    cluster.kubectl("create", "serviceaccount", "robot", "-n", namespace)

    def can(verb: str, resource: str) -> str:
        done = cluster.kubectl("auth", "can-i", verb, resource, "-n", namespace, "--as", sa,
                               check=False)
        return done.stdout.strip()

    assert can("list", "configmaps") == "no"
    role = f"""\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: reader, namespace: {namespace}}}
rules:
- {{apiGroups: [""], resources: [configmaps], verbs: [get, list]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}}
subjects:
- {{kind: ServiceAccount, name: robot, namespace: {namespace}}}
"""
    cluster.kubectl("apply", "-f", "-", input=role)
    assert can("list", "configmaps") == "yes"
    assert can("delete", "configmaps") == "no"
    done = cluster.kubectl("get", "secrets", "-n", namespace, "--as", sa, check=False)
    assert done.returncode != 0
    assert (f'secrets is forbidden: User "{sa}" cannot list resource "secrets" in API group "" '
            f'in the namespace "{namespace}"') in done.stderr


def test_delete_namespace_removes_its_objects(cluster: Cluster) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "ns", name)
    cluster.kubectl("create", "configmap", "c", "-n", name, "--from-literal=a=b")
    cluster.kubectl("delete", "ns", name, "--timeout=60s")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if cluster.kubectl("get", "ns", name, check=False).returncode != 0:
            break
        time.sleep(0.2)
    assert cluster.kubectl("get", "ns", name, check=False).returncode != 0
    assert "NotFound" in cluster.kubectl("get", "cm", "c", "-n", name, check=False).stderr
