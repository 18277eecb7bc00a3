"""A client rewriting ``metadata.managedFields`` itself, as Flux does to take fields over
from ``kubectl``: the server decodes the record into one entry per manager (the later of
two entries of a manager wins) and still tracks the write's own changes on it."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

from fluxd.devcluster import apply as ssa
from fluxd.schema import BuiltinSchema
from tests.conftest import Cluster

NOW = "2026-01-01T00:00:00Z"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def config_map(data: dict[str, str], annotations: dict[str, str] | None = None) -> Any:
    meta: dict[str, Any] = {"name": "cm"}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def owners(managed: list[dict[str, Any]]) -> list[tuple[str, str, set[tuple[str, ...]]]]:
    return [(m["manager"], m["operation"], ssa.from_fields_v1(m["fieldsV1"])) for m in managed]


def test_two_entries_of_one_manager_are_one_and_the_later_wins() -> None:
    entry = {"manager": "flux", "operation": "Apply", "apiVersion": "v1",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}}
    later = {**entry, "fieldsV1": {"f:data": {"f:c": {}}}}
    other = {**entry, "manager": "other", "fieldsV1": {"f:data": {"f:b": {}}}}
    managers = ssa.parse_managed_fields([entry, other, later])
    assert [(m.name, m.fields) for m in managers] == [
        ("flux", {("f:data", "f:c")}), ("other", {("f:data", "f:b")})]


def test_a_rewritten_record_still_loses_the_fields_the_write_removes() -> None:
    live = config_map({"a": "1"}, {LAST_APPLIED: "{}"})
    live["metadata"]["managedFields"] = [{
        "manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
        "time": NOW, "fieldsType": "FieldsV1",
        "fieldsV1": {"f:data": {"f:a": {}}, "f:metadata": {"f:annotations": {
            ".": {}, f"f:{LAST_APPLIED}": {}}}}}]
    # one JSON patch: hand kubectl's entry to "flux" and drop kubectl's annotation
    new = copy.deepcopy(live)
    new["metadata"]["annotations"] = {}
    new["metadata"]["managedFields"][0].update(manager="flux", operation="Apply")
    managed = ssa.record_update(live, new, manager="flux", schema=BuiltinSchema(),
                                subresource="", status_separate=False, api_version="v1",
                                now=NOW)
    [(name, operation, fields)] = owners(managed)
    assert (name, operation) == ("flux", "Apply")
    assert ("f:data", "f:a") in fields
    assert ("f:metadata", "f:annotations", f"f:{LAST_APPLIED}") not in fields


def test_kubectl_sees_one_entry_after_a_patch_that_duplicates_a_manager(
        cluster: Cluster, namespace: str) -> None:
    name = f"cm-{uuid.uuid4().hex[:6]}"
    body = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"},
            "metadata": {"name": name, "namespace": namespace}}
    cluster.kubectl("apply", "--server-side", "--field-manager=flux", "-f", "-",
                    input=json.dumps(body))
    got = cluster.kubectl_json("get", "configmap", name, "-n", namespace,
                               "--show-managed-fields")
    entry = got["metadata"]["managedFields"][0]
    twice = [entry, {**entry, "fieldsV1": {"f:data": {"f:a": {}, ".": {}}}}]
    cluster.kubectl("patch", "configmap", name, "-n", namespace, "--type=json", "-p",
                    json.dumps([{"op": "replace", "path": "/metadata/managedFields",
                                 "value": twice}]))
    got = cluster.kubectl_json("get", "configmap", name, "-n", namespace,
                               "--show-managed-fields")
    assert [(m["manager"], m["operation"]) for m in got["metadata"]["managedFields"]] == [
        ("flux", "Apply")]
