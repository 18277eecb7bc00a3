"""CRD ``x-kubernetes-validations`` rules in the dev server: the causes a current
kube-apiserver gives, through ``validate`` and through real kubectl with Flux's CRDs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fluxd.devcluster.validation import FieldError, validate
from tests.conftest import Cluster

Schema = dict[str, Any]
CRDS = Path(__file__).parents[2] / "deploy" / "crds"


def resource(spec: Schema, **root: Any) -> Schema:
    return {"type": "object", "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
        "metadata": {"type": "object"}, "spec": spec}, **root}


def obj(spec: Any) -> dict[str, Any]:
    return {"apiVersion": "x/v1", "kind": "Thing", "metadata": {"name": "a"}, "spec": spec}


def causes(errors: list[FieldError]) -> list[tuple[str, str, str]]:
    return [(e.type, e.field, e.message) for e in errors]


EXCLUSIVE = resource({
    "type": "object",
    "properties": {"a": {"type": "string"}, "b": {"type": "string"},
                   "replicas": {"type": "integer",
                                "x-kubernetes-validations": [{"rule": "self <= 10"}]}},
    "x-kubernetes-validations": [
        {"rule": "has(self.a) || has(self.b)", "message": "one of a or b is required"},
        {"rule": "!(has(self.a) && has(self.b))", "message": "a and b are exclusive",
         "fieldPath": ".b", "reason": "FieldValueForbidden"},
    ],
})


def test_object_rules_fail_with_their_message_and_no_value() -> None:
    assert causes(validate(obj({}), EXCLUSIVE)) == [
        ("FieldValueInvalid", "spec", "Invalid value: one of a or b is required")]
    assert causes(validate(obj({"a": "x", "b": "y"}), EXCLUSIVE)) == [
        ("FieldValueForbidden", "spec.b", "Forbidden: a and b are exclusive")]
    assert validate(obj({"a": "x"}), EXCLUSIVE) == []


def test_a_scalar_rule_without_message_shows_the_value_and_the_rule() -> None:
    assert causes(validate(obj({"a": "x", "replicas": 11}), EXCLUSIVE)) == [
        ("FieldValueInvalid", "spec.replicas", "Invalid value: 11: failed rule: self <= 10")]


def test_rules_apply_to_each_item_and_map_value_with_their_paths() -> None:
    schema = resource({"type": "object", "properties": {
        "list": {"type": "array", "items": {
            "type": "string", "x-kubernetes-validations": [
                {"rule": "self.startsWith('v')", "messageExpression": "'bad ' + self"}]}},
        "map": {"type": "object", "additionalProperties": {
            "type": "integer", "x-kubernetes-validations": [
                {"rule": "self > 0", "message": "must be positive",
                 "reason": "FieldValueRequired"}]}}}})
    got = causes(validate(obj({"list": ["v1", "x2"], "map": {"ok": 1, "no": 0}}), schema))
    assert got == [("FieldValueInvalid", "spec.list[1]", 'Invalid value: "x2": bad x2'),
                   ("FieldValueRequired", "spec.map[no]", "Required value: must be positive")]


def test_an_evaluation_error_names_the_rule() -> None:
    schema = resource({"type": "object", "x-kubernetes-validations": [
        {"rule": "self.missing == 'x'"}]})
    (error,) = validate(obj({}), schema)
    assert error.field == "spec"
    assert error.message.startswith('Invalid value: "object": ')
    assert error.message.endswith(" evaluating rule: self.missing == 'x'")
    assert "missing" in error.message


def test_transition_rules_run_on_update_only() -> None:
    schema = resource({"type": "object", "properties": {"size": {
        "type": "integer", "x-kubernetes-validations": [
            {"rule": "self >= oldSelf", "message": "size may not shrink"}]}}})
    assert validate(obj({"size": 1}), schema) == []  # a create has no oldSelf
    assert validate(obj({"size": 5}), schema, old=obj({"size": 3})) == []
    assert causes(validate(obj({"size": 2}), schema, old=obj({"size": 3}))) == [
        ("FieldValueInvalid", "spec.size", "Invalid value: 2: size may not shrink")]
    assert validate(obj({"size": 2}), schema, old=obj({})) == []  # nothing to compare with


def test_an_unchanged_failing_value_is_ratcheted_on_update() -> None:
    old = obj({"a": "x", "replicas": 11})
    assert validate(obj({"a": "x", "replicas": 11}), EXCLUSIVE, old=old) == []
    assert causes(validate(obj({"a": "x", "replicas": 12}), EXCLUSIVE, old=old)) == [
        ("FieldValueInvalid", "spec.replicas", "Invalid value: 12: failed rule: self <= 10")]


def test_a_blocking_schema_error_skips_the_rules_with_the_servers_notice() -> None:
    schema = resource({**EXCLUSIVE["properties"]["spec"], "required": ["a"]})
    got = causes(validate(obj({"b": "y"}), schema))
    assert got == [
        ("FieldValueRequired", "spec.a", "Required value"),
        ("FieldValueInvalid", "<nil>", 'Invalid value: "null": some validation rules were '
         "not checked because the object was invalid; correct the existing errors to "
         "complete validation")]


def test_flux_crd_rules_are_enforced_through_kubectl(cluster: Cluster, namespace: str) -> None:
    for name in ("notification.toolkit.fluxcd.io_receivers.yaml",
                 "source.toolkit.fluxcd.io_helmcharts.yaml"):
        cluster.kubectl("apply", "--server-side", "-f", str(CRDS / name))
    for crd in ("receivers.notification.toolkit.fluxcd.io",
                "helmcharts.source.toolkit.fluxcd.io"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")
    receiver = """\
apiVersion: notification.toolkit.fluxcd.io/v1
kind: Receiver
metadata: {name: hook}
spec:
  type: generic-oidc
  resources: [{kind: GitRepository, name: app}]
"""
    done = cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-",
                           input=receiver, check=False)
    assert done.returncode != 0
    assert 'The Receiver "hook" is invalid' in done.stderr
    assert ("spec: Invalid value: generic-oidc receivers must define at least one "
            "oidcProvider") in done.stderr
    chart = """\
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmChart
metadata: {name: app}
spec:
  chart: ./charts/app
  interval: 10m
  sourceRef: {kind: GitRepository, name: app}
  verify: {provider: cosign}
"""
    done = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=chart, check=False)
    assert done.returncode != 0
    assert "spec.verify is only supported when spec.sourceRef.kind is 'HelmRepository'" \
        in done.stderr
    fixed = chart.replace("  verify: {provider: cosign}\n", "")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=fixed)


def test_field_paths_are_normalised_as_the_server_does() -> None:
    schema = resource({"type": "object", "properties": {
        "b": {"type": "string"},
        "m": {"type": "object", "additionalProperties": {"type": "string"}}},
        "x-kubernetes-validations": [
            {"rule": "false", "message": "one", "fieldPath": "['b']"},
            {"rule": "false", "message": "two", "fieldPath": ".m['k.x']"},
            {"rule": "false", "message": "three", "fieldPath": ".m.k"}]})
    assert [e.field for e in validate(obj({"b": "x"}), schema)] == [
        "spec.b", "spec.m[k.x]", "spec.m[k]"]


def test_ratcheting_follows_go_equality_and_unchanged_lists() -> None:
    schema = resource({"type": "object", "properties": {
        "list": {"type": "array", "items": {"type": "string", "x-kubernetes-validations": [
            {"rule": "self.startsWith('v')"}]}},
        "other": {"type": "integer"},
        "flag": {"x-kubernetes-preserve-unknown-fields": True, "x-kubernetes-validations": [
            {"rule": "type(self) == int", "message": "flag must be an int"}]}}})
    old = obj({"list": ["x1"], "other": 1})
    assert validate(obj({"list": ["x1"], "other": 2}), schema, old=old) == []
    assert [e.field for e in validate(obj({"list": ["x1", "x2"]}), schema, old=old)] == [
        "spec.list[0]", "spec.list[1]"]
    # 1 == true in Python, not in Go: a changed value is checked
    assert [e.message for e in validate(obj({"flag": True}), schema, old=obj({"flag": 1}))] \
        == ["Invalid value: true: flag must be an int"]


def test_oldself_is_read_from_the_expression_and_a_null_old_value_is_absent() -> None:
    literal = resource({"type": "object", "properties": {"a": {"type": "string"}},
                        "x-kubernetes-validations": [{"rule": "self.a != 'oldSelf'"}]})
    assert [e.field for e in validate(obj({"a": "oldSelf"}), literal)] == ["spec"]
    shrink = resource({"type": "object", "properties": {"size": {
        "type": "integer", "nullable": True, "x-kubernetes-validations": [
            {"rule": "self >= oldSelf", "message": "no shrink"}]}}})
    assert validate(obj({"size": 2}), shrink, old=obj({"size": None})) == []


def test_a_type_mismatch_reads_as_cel_gos_overload_error() -> None:
    schema = resource({"type": "object", "properties": {"port": {
        "x-kubernetes-int-or-string": True, "x-kubernetes-validations": [
            {"rule": "self > 0"}]}}})
    (error,) = validate(obj({"port": "http"}), schema)
    assert error.message == (
        "Invalid value: \"\": 'no such overload': call arguments did not match a supported "
        "operator, function or macro signature for rule: self > 0")
