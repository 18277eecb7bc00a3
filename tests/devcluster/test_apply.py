"""Server-side apply and managedFields, on plain objects."""

from __future__ import annotations

from typing import Any

import pytest

from fluxd.devcluster import apply as ssa
from fluxd.devcluster.schema import BuiltinSchema, OpenAPISchema

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
    assert str(err.value) == ('Apply failed with 1 conflict: conflict with "ci" using apps/v1: '
                              ".spec.replicas")


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
