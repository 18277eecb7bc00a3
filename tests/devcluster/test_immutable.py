"""Fields a real API server refuses to change on update, refused with its own messages."""

from __future__ import annotations

import json
import uuid

from fluxd.devcluster import immutable
from tests.conftest import Cluster

IMMUTABLE = "Forbidden: field is immutable when `immutable` is set"


def config_map(data: dict[str, str], *, immutable: bool | None = True) -> dict[str, object]:
    obj: dict[str, object] = {"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "cm"}, "data": data}
    if immutable is not None:
        obj["immutable"] = immutable
    return obj


def test_an_immutable_config_map_keeps_its_data_and_its_flag() -> None:
    old = config_map({"a": "1"})
    assert immutable.update_errors("", "ConfigMap", config_map({"a": "1"}), old) == []
    assert immutable.update_errors("", "ConfigMap", config_map({"a": "2"}), old) == [
        ("FieldValueForbidden", "data", IMMUTABLE)]
    assert immutable.update_errors("", "ConfigMap", config_map({"a": "1"}, immutable=None),
                                   old) == [("FieldValueForbidden", "immutable", IMMUTABLE)]


def test_a_mutable_config_map_changes_freely() -> None:
    old = config_map({"a": "1"}, immutable=None)
    assert immutable.update_errors("", "ConfigMap", config_map({"a": "2"}), old) == []


def test_a_secret_never_changes_type() -> None:
    old = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": {}}
    new = {**old, "type": "kubernetes.io/tls"}
    assert immutable.update_errors("", "Secret", new, old) == [
        ("FieldValueInvalid", "type", 'Invalid value: "kubernetes.io/tls": field is immutable')]


def test_a_binding_keeps_its_role_ref_printed_as_go_prints_it() -> None:
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}
    old = {"roleRef": ref}
    new = {"roleRef": {**ref, "name": "edit"}}
    assert immutable.update_errors("rbac.authorization.k8s.io", "RoleBinding", new, old) == [(
        "FieldValueInvalid", "roleRef",
        'Invalid value: rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", '
        'Kind:"ClusterRole", Name:"edit"}: cannot change roleRef')]


def test_a_deployment_keeps_its_selector_and_nil_equals_empty() -> None:
    old = {"spec": {"selector": {"matchLabels": {"app": "a"}}}}
    same = {"spec": {"selector": {"matchLabels": {"app": "a"}, "matchExpressions": []}}}
    assert immutable.update_errors("apps", "Deployment", same, old) == []
    new = {"spec": {"selector": {"matchLabels": {"b": "2", "app": "a"}}}}
    assert immutable.update_errors("apps", "Deployment", new, old) == [(
        "FieldValueInvalid", "spec.selector",
        'Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"a", "b":"2"}, '
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable")]


def test_kubectl_sees_the_servers_message_for_an_immutable_config_map(
        cluster: Cluster, namespace: str) -> None:
    name = f"cm-{uuid.uuid4().hex[:6]}"
    body = {"apiVersion": "v1", "kind": "ConfigMap", "immutable": True,
            "metadata": {"name": name, "namespace": namespace}, "data": {"a": "1"}}
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(body))
    changed = {**body, "data": {"a": "2"}}
    done = cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(changed),
                           check=False)
    assert done.returncode != 0
    assert (f'The ConfigMap "{name}" is invalid: data: Forbidden: field is immutable when '
            "`immutable` is set") in done.stderr
    # a dry-run is refused the same way, and deleting then creating is the way out
    dry = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-",
                          input=json.dumps(changed), check=False)
    assert dry.returncode != 0 and "field is immutable" in dry.stderr
    cluster.kubectl("delete", "configmap", name, "-n", namespace)
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(changed))
    got = cluster.kubectl_json("get", "configmap", name, "-n", namespace)
    assert got["data"] == {"a": "2"}
