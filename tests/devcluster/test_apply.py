"""Server-side apply and managedFields, on plain objects."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from fluxd.devcluster import apply as ssa
from fluxd.schema import BuiltinSchema, OpenAPISchema
from tests.conftest import Cluster

NOW = "2026-01-01T00:00:00Z"


def do_apply(live: dict[str, Any] | None, config: dict[str, Any], manager: str,
             force: bool = False, schema: Any = None) -> dict[str, Any]:
    return ssa.apply(live, config, manager=manager, force=force,
                     schema=schema or BuiltinSchema(), subresource="", status_separate=True,
                     api_version="apps/v1", now=NOW)


def deployment(env: list[dict[str, str]], replicas: int = 1, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "web"}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "app", "image": "app:1", "env": env}]}}}}


def managers(obj: dict[str, Any]) -> dict[str, set[tuple[str, ...]]]:
    return {m.name: m.fields for m in ssa.parse_managed_fields(obj["metadata"]["managedFields"])}


def test_fields_v1_round_trips_and_marks_members_with_a_dot() -> None:
    fields = {("f:metadata", "f:labels", "f:app"),
              ("f:spec", "f:containers", 'k:{"name":"app"}'),
              ("f:spec", "f:containers", 'k:{"name":"app"}', "f:image")}
    tree = ssa.to_fields_v1(fields)
    assert tree == {"f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {'k:{"name":"app"}': {".": {}, "f:image": {}}}}}
    assert ssa.from_fields_v1(tree) == fields


def test_apply_owns_leaves_and_keyed_items() -> None:
    obj = do_apply(None, deployment([{"name": "A", "value": "1"}], app="web"), "ci")
    owned = managers(obj)["ci"]
    item = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"app"}')
    assert ("f:spec", "f:replicas") in owned
    assert ("f:metadata", "f:labels", "f:app") in owned
    assert item in owned and item + ("f:image",) in owned
    assert item + ("f:env", 'k:{"name":"A"}', "f:value") in owned
    assert ("f:metadata", "f:name") not in owned  # server-managed metadata is not tracked


def test_changing_a_field_owned_by_another_manager_conflicts() -> None:
    live = do_apply(None, deployment([], replicas=1), "ci")
    with pytest.raises(ssa.ConflictError) as err:
        do_apply(live, deployment([], replicas=3), "hpa")
    assert [(c.manager, ssa.path_text(c.path)) for c in err.value.conflicts] == [
        ("ci", ".spec.replicas")]
    # an applier is named without a version: its version may change between applies
    assert str(err.value) == 'Apply failed with 1 conflict: conflict with "ci": .spec.replicas'


def test_a_conflict_with_an_update_manager_names_its_version() -> None:
    created = deployment([], replicas=1)
    created["metadata"]["managedFields"] = ssa.record_update(
        None, created, manager="kubectl-create", schema=BuiltinSchema(), subresource="",
        status_separate=True, api_version="apps/v1", now=NOW)
    with pytest.raises(ssa.ConflictError) as err:
        do_apply(created, deployment([], replicas=3), "ci")
    assert str(err.value) == ('Apply failed with 1 conflict: conflict with "kubectl-create" '
                              "using apps/v1: .spec.replicas")


def test_a_conflict_with_a_subresource_manager_names_the_subresource() -> None:
    scaled = deployment([], replicas=3)
    scaled["metadata"]["managedFields"] = [{
        "manager": "hpa", "operation": "Update", "subresource": "scale", "apiVersion": "apps/v1",
        "time": NOW, "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
    with pytest.raises(ssa.ConflictError) as err:
        do_apply(scaled, deployment([], replicas=1), "ci")
    assert str(err.value) == (
        'Apply failed with 1 conflict: conflict with "hpa" with subresource "scale" '
        "using apps/v1: .spec.replicas")
    applier = ssa.Conflict("ci", "Apply", "status", "apps/v1", ("f:status", "f:x"))
    assert applier.owner_text == '"ci" with subresource "status"'


def test_several_conflicts_are_grouped_by_owner_in_the_owners_order() -> None:
    live = do_apply(None, {**deployment([], replicas=1), "metadata": {
        "name": "web", "labels": {"a": "1"}}}, "zeta")
    live["metadata"]["managedFields"] += ssa.record_update(
        live, {**live, "metadata": {**live["metadata"], "annotations": {"n": "1"}}},
        manager="alpha", schema=BuiltinSchema(), subresource="", status_separate=True,
        api_version="apps/v1", now=NOW)[1:]
    live["metadata"]["annotations"] = {"n": "1"}
    changed = {**deployment([], replicas=2), "metadata": {
        "name": "web", "labels": {"a": "2"}, "annotations": {"n": "2"}}}
    with pytest.raises(ssa.ConflictError) as err:
        do_apply(live, changed, "ci")
    assert str(err.value) == (
        'Apply failed with 3 conflicts: conflicts with "alpha" using apps/v1:\n'
        "- .metadata.annotations.n\n"
        'conflicts with "zeta":\n'
        "- .metadata.labels.a\n"
        "- .spec.replicas")


def test_applying_the_same_value_shares_ownership() -> None:
    live = do_apply(None, deployment([], replicas=1), "ci")
    shared = do_apply(live, deployment([], replicas=1), "other")
    owners = managers(shared)
    assert ("f:spec", "f:replicas") in owners["ci"] and ("f:spec", "f:replicas") in owners["other"]


def test_force_takes_the_field_over() -> None:
    live = do_apply(None, deployment([], replicas=1), "ci")
    taken = do_apply(live, deployment([], replicas=3), "hpa", force=True)
    assert taken["spec"]["replicas"] == 3
    owners = managers(taken)
    assert ("f:spec", "f:replicas") in owners["hpa"]
    assert ("f:spec", "f:replicas") not in owners["ci"]


def test_fields_a_manager_stops_applying_are_removed_with_their_children() -> None:
    live = do_apply(None, deployment([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]),
                    "ci")
    after = do_apply(live, deployment([{"name": "A", "value": "1"}]), "ci")
    assert after["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "A", "value": "1"}]


def test_a_field_still_owned_by_another_manager_is_not_removed() -> None:
    live = do_apply(None, deployment([], app="web", team="a"), "ci")
    live = do_apply(live, deployment([], team="a"), "labeler")
    after = do_apply(live, deployment([]), "ci")
    assert after["metadata"]["labels"] == {"team": "a"}


def test_record_update_gives_changed_fields_to_the_writer() -> None:
    live = do_apply(None, deployment([], replicas=1), "ci")
    edited = {**live, "spec": {**live["spec"], "replicas": 5}}
    managed = ssa.record_update(live, edited, manager="kubectl-edit", schema=BuiltinSchema(),
                                subresource="", status_separate=True, api_version="apps/v1",
                                now=NOW)
    owners = {m["manager"]: ssa.from_fields_v1(m["fieldsV1"]) for m in managed}
    assert owners["kubectl-edit"] == {("f:spec", "f:replicas")}
    assert ("f:spec", "f:replicas") not in owners["ci"]


def test_record_update_honours_a_rewritten_managed_fields_list() -> None:
    live = do_apply(None, deployment([]), "kubectl-client-side-apply")
    rewritten = dict(live)
    entry = dict(live["metadata"]["managedFields"][0], manager="kustomize-controller")
    rewritten["metadata"] = {**live["metadata"], "managedFields": [entry]}
    managed = ssa.record_update(live, rewritten, manager="flux", schema=BuiltinSchema(),
                                subresource="", status_separate=True, api_version="apps/v1",
                                now=NOW)
    assert [m["manager"] for m in managed] == ["kustomize-controller"]


def test_custom_resource_lists_are_atomic_unless_the_schema_says_map() -> None:
    schema = OpenAPISchema({"type": "object", "properties": {"spec": {
        "type": "object", "properties": {
            "tags": {"type": "array", "items": {"type": "string"}},
            "ports": {"type": "array", "x-kubernetes-list-type": "map",
                      "x-kubernetes-list-map-keys": ["name"],
                      "items": {"type": "object"}}}}}})
    config = {"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "x"},
              "spec": {"tags": ["a"], "ports": [{"name": "http", "port": 80}]}}
    obj = do_apply(None, config, "ci", schema=schema)
    owned = managers(obj)["ci"]
    assert ("f:spec", "f:tags") in owned
    assert ("f:spec", "f:ports", 'k:{"name":"http"}', "f:port") in owned


def test_an_item_without_its_key_is_an_apply_error() -> None:
    with pytest.raises(ssa.ApplyError, match='omits key field "name"'):
        do_apply(None, deployment([{"value": "1"}]), "ci")


def test_an_atomic_list_is_owned_whole_and_removed_when_dropped() -> None:
    with_args = deployment([])
    with_args["spec"]["template"]["spec"]["containers"][0]["args"] = ["--a", "--b"]
    live = do_apply(None, with_args, "ci")
    container = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"app"}')
    assert container + ("f:args",) in managers(live)["ci"]
    after = do_apply(live, deployment([]), "ci")
    assert "args" not in after["spec"]["template"]["spec"]["containers"][0]


# --- the types of an applied custom resource ------------------------------------------

WIDGET_SCHEMA = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
    "size": {"type": "integer"}, "ratio": {"type": "number"}, "name": {"type": "string"},
    "on": {"type": "boolean"}, "port": {"x-kubernetes-int-or-string": True},
    "tags": {"type": "array", "items": {"type": "string"}},
    "ports": {"type": "array", "x-kubernetes-list-type": "map",
              "x-kubernetes-list-map-keys": ["name"],
              "items": {"type": "object", "properties": {
                  "name": {"type": "string"}, "number": {"type": "integer"}}}},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}


def widget_with(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"},
            "spec": spec}


def type_error(**spec: Any) -> str:
    with pytest.raises(ssa.TypedPatchError) as err:
        ssa.check_types(widget_with(**spec), OpenAPISchema(WIDGET_SCHEMA))
    return str(err.value)


def test_values_of_the_declared_types_and_nulls_pass_the_type_check() -> None:
    ssa.check_types(widget_with(size=3, ratio=0.5, name="a", on=False, port="http",
                                tags=["a"], ports=[{"name": "web", "number": 80}],
                                labels={"a": "b"}, free={"any": [1, {"x": True}]}),
                    OpenAPISchema(WIDGET_SCHEMA))
    ssa.check_types(widget_with(size=None, name=None, tags=None, labels=None),
                    OpenAPISchema(WIDGET_SCHEMA))
    # a float where an integer is declared is numeric: validation (422) judges it later
    ssa.check_types(widget_with(size=1.5, port=8080), OpenAPISchema(WIDGET_SCHEMA))
    # built-in kinds' schemas carry no types here
    ssa.check_types(deployment([], replicas="lots"), BuiltinSchema())


def test_a_wrong_scalar_is_worded_as_structured_merge_diff_words_it() -> None:
    assert type_error(size="big") == ".spec.size: expected numeric (int or float), got string"
    assert type_error(ratio=True) == ".spec.ratio: expected numeric (int or float), got bool"
    assert type_error(size={"a": 1}) == (
        ".spec.size: expected numeric (int or float), got map[string]interface {}")
    assert type_error(name=5) == (
        ".spec.name: expected string, got &value.valueUnstructured{Value:5}")
    assert type_error(name=[1, "a"]) == (
        '.spec.name: expected string, got &value.valueUnstructured{Value:[]interface {}{1, "a"}}')
    assert type_error(on="yes") == ".spec.on: expected boolean, got &{yes}"
    assert type_error(on=1.5) == ".spec.on: expected boolean, got &{1.5}"


def test_a_wrong_map_or_list_is_worded_with_its_value() -> None:
    assert type_error(tags="a") == ".spec.tags: expected list, got &{a}"
    assert type_error(labels=["a", 1]) == ".spec.labels: expected map, got &{[a 1]}"
    assert type_error(ports={"b": 2, "a": "x"}) == ".spec.ports: expected list, got &{map[a:x b:2]}"


def test_items_are_named_by_key_or_index_and_several_problems_are_listed() -> None:
    assert type_error(ports=[{"name": "web", "number": "80"}]) == (
        '.spec.ports[name="web"].number: expected numeric (int or float), got string')
    assert type_error(tags=["a", 2], labels={"k": False}) == (
        "errors:\n"
        "  .spec.tags[1]: expected string, got &value.valueUnstructured{Value:2}\n"
        "  .spec.labels.k: expected string, got &value.valueUnstructured{Value:false}")


def test_the_type_check_comes_before_conflicts() -> None:
    schema = OpenAPISchema(WIDGET_SCHEMA)
    live = ssa.apply(None, widget_with(size=1), manager="ci", force=False, schema=schema,
                     subresource="", status_separate=True, api_version="example.com/v1",
                     now=NOW)
    with pytest.raises(ssa.TypedPatchError):
        ssa.apply(live, widget_with(size="2"), manager="other", force=False, schema=schema,
                  subresource="", status_separate=True, api_version="example.com/v1", now=NOW)


def test_a_server_side_apply_of_a_wrongly_typed_custom_resource_fails_untyped(
        cluster: Cluster, namespace: str) -> None:
    group = f"w{uuid.uuid4().hex[:8]}.example.com"
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": f"widgets.{group}"},
           "spec": {"group": group, "scope": "Namespaced",
                    "names": {"kind": "Widget", "plural": "widgets", "singular": "widget",
                              "listKind": "WidgetList"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": WIDGET_SCHEMA}}]}}
    bad = {**widget_with(size="big"), "apiVersion": f"{group}/v1"}
    bad["metadata"] = {"name": "w1", "namespace": namespace}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(crd))
    try:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}",
                        "--timeout=30s")
        # discovery serves a new kind a moment after its CRD is established
        for _ in range(100):
            if cluster.kubectl("get", f"widgets.{group}", "-n", namespace,
                               check=False).returncode == 0:
                break
        applied = cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(bad),
                                  check=False)
        assert applied.returncode != 0
        assert applied.stderr.strip() == (
            f"Error from server: failed to create typed patch object ({namespace}/w1; "
            f"{group}/v1, Kind=Widget): .spec.size: expected numeric (int or float), "
            "got string")
        # a create is judged by validation, which answers 422 Invalid with causes
        created = cluster.kubectl("create", "-f", "-", input=json.dumps(bad), check=False)
        assert created.returncode != 0
        assert 'The Widget "w1" is invalid' in created.stderr
        assert "spec.size: Invalid value" in created.stderr
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false", check=False)
