"""Tests for fluxd.devcluster.validation: pruning, defaulting and validating custom objects."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxd.devcluster.validation import (
    FieldError,
    apply_defaults,
    invalid_message,
    prune,
    validate,
)

Schema = dict[str, Any]


def obj_schema(properties: dict[str, Any] | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties or {}}
    schema.update(extra)
    return schema


def spec_schema(spec: Schema) -> Schema:
    """A resource schema whose ``spec`` is ``spec``."""
    return obj_schema({"spec": spec})


def resource(spec: Any, **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "example.com/v1", "kind": "Thing",
                           "metadata": {"name": "t", "namespace": "default"}, "spec": spec}
    obj.update(extra)
    return obj


def errors_for(spec_field: Schema, value: Any) -> list[FieldError]:
    """Errors for ``spec.f = value`` where ``spec.f`` has schema ``spec_field``."""
    return validate(resource({"f": value}), spec_schema(obj_schema({"f": spec_field})))


def texts(errors: list[FieldError]) -> list[str]:
    return [str(e) for e in errors]


# --------------------------------------------------------------------------- prune


def test_prune_drops_fields_the_schema_does_not_declare() -> None:
    schema = spec_schema(obj_schema({"url": {"type": "string"}}))
    out = prune(resource({"url": "https://x", "bogus": 1}, extra="field"), schema)
    assert out["spec"] == {"url": "https://x"}
    assert "extra" not in out


def test_prune_never_drops_api_version_kind_or_metadata_at_the_root() -> None:
    out = prune(resource({}), obj_schema({}))
    assert out["apiVersion"] == "example.com/v1"
    assert out["kind"] == "Thing"
    assert out["metadata"] == {"name": "t", "namespace": "default"}


def test_prune_reduces_metadata_to_the_object_meta_fields() -> None:
    meta = {"name": "t", "labels": {"a": "b"}, "annotations": {"x": "y"}, "uid": "u",
            "finalizers": ["f"], "resourceVersion": "1", "generation": 2, "bogus": True,
            "managedFields": [{"manager": "m"}], "ownerReferences": []}
    out = prune(resource({}, metadata=meta), obj_schema({}))
    assert "bogus" not in out["metadata"]
    assert out["metadata"] == {k: v for k, v in meta.items() if k != "bogus"}


def test_prune_keeps_values_inside_metadata_untouched() -> None:
    meta = {"name": "t", "labels": {"any": "label"}, "annotations": {"k": "v"}}
    assert prune(resource({}, metadata=meta), obj_schema({}))["metadata"] == meta


def test_prune_keeps_unknown_fields_under_preserve_unknown_fields() -> None:
    schema = spec_schema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    spec = {"anything": {"deep": [1, {"x": 2}]}}
    assert prune(resource(spec), schema)["spec"] == spec


def test_prune_still_prunes_declared_properties_under_preserve_unknown_fields() -> None:
    schema = spec_schema({
        "type": "object", "x-kubernetes-preserve-unknown-fields": True,
        "properties": {"known": obj_schema({"a": {"type": "string"}})},
    })
    out = prune(resource({"free": 1, "known": {"a": "x", "b": "y"}}), schema)
    assert out["spec"] == {"free": 1, "known": {"a": "x"}}


def test_prune_prunes_map_values_with_the_additional_properties_schema() -> None:
    schema = spec_schema(obj_schema(additionalProperties=obj_schema({"a": {"type": "string"}})))
    out = prune(resource({"k1": {"a": "x", "b": 1}, "k2": {"c": 2}}), schema)
    assert out["spec"] == {"k1": {"a": "x"}, "k2": {}}


def test_prune_keeps_map_values_when_additional_properties_is_true() -> None:
    schema = spec_schema({"type": "object", "additionalProperties": True})
    spec = {"k": {"nested": {"x": 1}}}
    assert prune(resource(spec), schema)["spec"] == spec


def test_prune_drops_unknown_fields_when_additional_properties_is_false() -> None:
    schema = spec_schema(obj_schema({"a": {"type": "string"}}, additionalProperties=False))
    assert prune(resource({"a": "x", "b": "y"}), schema)["spec"] == {"a": "x"}


def test_prune_prunes_each_array_item_with_the_items_schema() -> None:
    schema = spec_schema(obj_schema({
        "items": {"type": "array", "items": obj_schema({"name": {"type": "string"}})},
    }))
    out = prune(resource({"items": [{"name": "a", "x": 1}, {"name": "b"}]}), schema)
    assert out["spec"] == {"items": [{"name": "a"}, {"name": "b"}]}


def test_prune_empties_an_object_whose_schema_declares_no_properties() -> None:
    schema = spec_schema(obj_schema({"opaque": {"type": "object"}}))
    assert prune(resource({"opaque": {"a": 1}}), schema)["spec"] == {"opaque": {}}


def test_prune_keeps_type_meta_and_reduced_metadata_of_an_embedded_resource() -> None:
    schema = spec_schema(obj_schema({
        "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                     "properties": {"spec": obj_schema({"replicas": {"type": "integer"}})}},
    }))
    template = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "d", "labels": {"a": "b"}, "junk": 1},
                "spec": {"replicas": 2, "junk": 3}, "junk": 4}
    out = prune(resource({"template": template}), schema)
    assert out["spec"]["template"] == {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "labels": {"a": "b"}}, "spec": {"replicas": 2},
    }


def test_prune_does_not_mutate_its_input() -> None:
    obj = resource({"a": 1, "b": {"c": 2}})
    before = copy.deepcopy(obj)
    prune(obj, spec_schema(obj_schema({"a": {"type": "integer"}})))
    assert obj == before


# --------------------------------------------------------------------------- defaults


def test_defaults_fill_a_missing_property() -> None:
    schema = spec_schema(obj_schema({"timeout": {"type": "string", "default": "60s"}}))
    assert apply_defaults(resource({}), schema)["spec"] == {"timeout": "60s"}


def test_defaults_never_overwrite_a_present_value() -> None:
    schema = spec_schema(obj_schema({"timeout": {"type": "string", "default": "60s"}}))
    assert apply_defaults(resource({"timeout": "5s"}), schema)["spec"] == {"timeout": "5s"}


def test_defaults_keep_falsy_present_values() -> None:
    schema = spec_schema(obj_schema({
        "n": {"type": "integer", "default": 5}, "b": {"type": "boolean", "default": True},
        "s": {"type": "string", "default": "x"}, "a": {"type": "array", "default": [1]},
    }))
    spec = {"n": 0, "b": False, "s": "", "a": []}
    assert apply_defaults(resource(spec), schema)["spec"] == spec


def test_defaults_are_deep_copied_so_objects_do_not_share_them() -> None:
    schema = spec_schema(obj_schema({"tags": {"type": "array", "default": ["a"]}}))
    first = apply_defaults(resource({}), schema)
    first["spec"]["tags"].append("mutated")
    assert apply_defaults(resource({}), schema)["spec"]["tags"] == ["a"]
    assert schema["properties"]["spec"]["properties"]["tags"]["default"] == ["a"]


def test_nested_defaults_apply_only_when_the_parent_object_exists() -> None:
    schema = spec_schema(obj_schema({
        "ref": obj_schema({"branch": {"type": "string", "default": "main"}}),
    }))
    assert apply_defaults(resource({}), schema)["spec"] == {}
    assert apply_defaults(resource({"ref": {}}), schema)["spec"] == {"ref": {"branch": "main"}}


def test_nested_defaults_apply_inside_a_defaulted_parent() -> None:
    schema = spec_schema(obj_schema({
        "ref": obj_schema({"branch": {"type": "string", "default": "main"}}, default={}),
    }))
    assert apply_defaults(resource({}), schema)["spec"] == {"ref": {"branch": "main"}}


def test_a_missing_spec_with_defaults_inside_stays_missing() -> None:
    schema = spec_schema(obj_schema({"a": {"type": "string", "default": "x"}}))
    obj = resource({})
    del obj["spec"]
    assert "spec" not in apply_defaults(obj, schema)


def test_defaults_apply_inside_every_array_item() -> None:
    schema = spec_schema(obj_schema({"items": {"type": "array", "items": obj_schema({
        "name": {"type": "string"}, "weight": {"type": "integer", "default": 1},
    })}}))
    out = apply_defaults(resource({"items": [{"name": "a"}, {"name": "b", "weight": 3}]}), schema)
    assert out["spec"]["items"] == [{"name": "a", "weight": 1}, {"name": "b", "weight": 3}]


def test_defaults_apply_inside_every_map_value() -> None:
    schema = spec_schema(obj_schema({"byName": obj_schema(
        additionalProperties=obj_schema({"port": {"type": "integer", "default": 80}}))}))
    out = apply_defaults(resource({"byName": {"a": {}, "b": {"port": 8080}}}), schema)
    assert out["spec"]["byName"] == {"a": {"port": 80}, "b": {"port": 8080}}


def test_defaults_are_never_applied_inside_metadata() -> None:
    schema = obj_schema({"metadata": obj_schema({
        "name": {"type": "string", "default": "dflt"},
        "labels": {"type": "object", "default": {"a": "b"}},
    })})
    obj = resource({})
    obj["metadata"] = {}
    assert apply_defaults(obj, schema)["metadata"] == {}


def test_a_null_in_a_non_nullable_field_is_replaced_by_its_default() -> None:
    schema = spec_schema(obj_schema({"timeout": {"type": "string", "default": "60s"}}))
    assert apply_defaults(resource({"timeout": None}), schema)["spec"] == {"timeout": "60s"}


def test_a_null_in_a_non_nullable_field_without_default_is_dropped() -> None:
    schema = spec_schema(obj_schema({"url": {"type": "string"}}))
    assert apply_defaults(resource({"url": None}), schema)["spec"] == {}


def test_a_null_in_a_nullable_field_is_kept_and_not_defaulted() -> None:
    schema = spec_schema(obj_schema({"t": {"type": "string", "nullable": True, "default": "x"}}))
    assert apply_defaults(resource({"t": None}), schema)["spec"] == {"t": None}


def test_apply_defaults_does_not_mutate_its_input() -> None:
    obj = resource({"ref": {}})
    before = copy.deepcopy(obj)
    apply_defaults(obj, spec_schema(obj_schema({
        "ref": obj_schema({"branch": {"type": "string", "default": "main"}}),
        "timeout": {"type": "string", "default": "60s"},
    })))
    assert obj == before


# --------------------------------------------------------------------------- types


def test_a_valid_object_has_no_errors() -> None:
    assert errors_for({"type": "string"}, "fine") == []


def test_a_string_where_an_integer_is_expected_is_a_type_error() -> None:
    assert errors_for({"type": "integer"}, "string") == [FieldError(
        "FieldValueTypeInvalid", "spec.f",
        'Invalid value: "string": spec.f in body must be of type integer: "string"')]


def test_the_type_error_names_the_type_of_the_bad_value() -> None:
    cases = [({"type": "string"}, 5, "integer"), ({"type": "string"}, 1.5, "number"),
             ({"type": "string"}, True, "boolean"), ({"type": "string"}, [], "array"),
             ({"type": "string"}, {}, "object"), ({"type": "object"}, "x", "string")]
    for schema, value, name in cases:
        [error] = errors_for(schema, value)
        assert error.message == (f'Invalid value: "{name}": spec.f in body must be of type '
                                 f'{schema["type"]}: "{name}"')


def test_an_integer_rejects_booleans_and_fractions_but_accepts_whole_floats() -> None:
    assert errors_for({"type": "integer"}, True)[0].type == "FieldValueTypeInvalid"
    assert errors_for({"type": "integer"}, 1.5)[0].type == "FieldValueTypeInvalid"
    assert errors_for({"type": "integer"}, 3.0) == []
    assert errors_for({"type": "integer"}, 3) == []


def test_a_number_accepts_integers_and_floats_but_not_booleans() -> None:
    assert errors_for({"type": "number"}, 3) == []
    assert errors_for({"type": "number"}, 3.5) == []
    assert texts(errors_for({"type": "number"}, False)) == [
        'spec.f: Invalid value: "boolean": spec.f in body must be of type number: "boolean"']


def test_a_boolean_rejects_strings() -> None:
    assert errors_for({"type": "boolean"}, "true")[0].type == "FieldValueTypeInvalid"
    assert errors_for({"type": "boolean"}, True) == []


def test_a_null_in_a_non_nullable_field_is_a_type_error() -> None:
    assert texts(errors_for({"type": "string"}, None)) == [
        'spec.f: Invalid value: "null": spec.f in body must be of type string: "null"']


def test_a_null_in_a_nullable_field_is_valid() -> None:
    assert errors_for({"type": "string", "nullable": True, "minLength": 3}, None) == []


def test_a_type_mismatch_stops_the_other_checks_of_that_value() -> None:
    schema = {"type": "string", "enum": ["a"], "pattern": "^a$"}
    assert len(errors_for(schema, 7)) == 1


def test_a_schema_without_type_accepts_any_value() -> None:
    for value in (1, "x", [1], {"a": 1}, None, True):
        assert errors_for({"x-kubernetes-preserve-unknown-fields": True}, value) == []


def test_int_or_string_accepts_integers_and_strings_only() -> None:
    schema = {"x-kubernetes-int-or-string": True}
    assert errors_for(schema, 8080) == []
    assert errors_for(schema, "http") == []
    assert texts(errors_for(schema, 1.5)) == [
        'spec.f: Invalid value: "number": spec.f in body must be of type integer,string: '
        '"number"']
    assert errors_for(schema, True)[0].type == "FieldValueTypeInvalid"


def test_int_or_string_format_without_type_behaves_like_the_extension() -> None:
    assert errors_for({"format": "int-or-string"}, "25%") == []
    assert errors_for({"format": "int-or-string"}, 25) == []
    assert errors_for({"format": "int-or-string"}, [])[0].type == "FieldValueTypeInvalid"


def test_int_or_string_values_get_the_checks_of_their_own_type() -> None:
    schema = {"x-kubernetes-int-or-string": True, "pattern": "^[0-9]+%$", "maximum": 10}
    assert errors_for(schema, "50%") == []
    assert errors_for(schema, 5) == []
    assert errors_for(schema, "50")[0].message.endswith("should match '^[0-9]+%$'")
    assert errors_for(schema, 11)[0].message.endswith("should be less than or equal to 10")


# --------------------------------------------------------------------------- required, enum


def test_a_missing_required_field_is_a_required_value() -> None:
    schema = spec_schema(obj_schema({"url": {"type": "string"}}, required=["url"]))
    assert validate(resource({}), schema) == [
        FieldError("FieldValueRequired", "spec.url", "Required value")]


def test_a_required_field_present_as_null_is_a_type_error_not_a_missing_one() -> None:
    schema = spec_schema(obj_schema({"url": {"type": "string"}}, required=["url"]))
    assert [e.type for e in validate(resource({"url": None}), schema)] == [
        "FieldValueTypeInvalid"]


def test_required_is_only_checked_on_objects_that_are_present() -> None:
    schema = spec_schema(obj_schema({
        "ref": obj_schema({"branch": {"type": "string"}}, required=["branch"]),
    }))
    assert validate(resource({}), schema) == []
    assert texts(validate(resource({"ref": {}}), schema)) == ["spec.ref.branch: Required value"]


def test_a_required_top_level_spec_is_reported_at_spec() -> None:
    schema = obj_schema({"spec": obj_schema({})}, required=["spec"])
    obj = resource({})
    del obj["spec"]
    assert texts(validate(obj, schema)) == ["spec: Required value"]


def test_a_value_outside_the_enum_is_unsupported_with_the_supported_values_listed() -> None:
    assert errors_for({"type": "string", "enum": ["a", "b"]}, "foo") == [FieldError(
        "FieldValueNotSupported", "spec.f",
        'Unsupported value: "foo": supported values: "a", "b"')]


def test_non_string_enum_options_are_listed_as_quoted_json() -> None:
    [error] = errors_for({"type": "integer", "enum": [1, 2]}, 3)
    assert error.message == 'Unsupported value: 3: supported values: "1", "2"'


def test_enum_membership_uses_json_equality() -> None:
    assert errors_for({"type": "number", "enum": [1, 2]}, 1.0) == []
    assert errors_for({"enum": [1]}, True)[0].type == "FieldValueNotSupported"
    assert errors_for({"type": "object", "enum": [{"a": 1, "b": 2}]}, {"b": 2, "a": 1}) == []


# --------------------------------------------------------------------------- strings


def test_a_string_not_matching_the_pattern_is_invalid_with_the_pattern_quoted() -> None:
    [error] = errors_for({"type": "string", "pattern": "^[a-z]+$"}, "ABC")
    assert error == FieldError(
        "FieldValueInvalid", "spec.f",
        "Invalid value: \"ABC\": spec.f in body should match '^[a-z]+$'")


def test_a_pattern_matches_anywhere_unless_anchored() -> None:
    assert errors_for({"type": "string", "pattern": "[0-9]"}, "abc1def") == []


def test_a_pattern_python_cannot_compile_is_skipped() -> None:
    assert errors_for({"type": "string", "pattern": "\\p{L}+("}, "anything") == []


def test_a_string_longer_than_max_length_is_too_long() -> None:
    assert errors_for({"type": "string", "maxLength": 10}, "x" * 11) == [FieldError(
        "FieldValueTooLong", "spec.f", "Too long: may not be more than 10 bytes")]


def test_max_length_of_one_says_byte() -> None:
    assert errors_for({"type": "string", "maxLength": 1}, "ab")[0].message == (
        "Too long: may not be more than 1 byte")


def test_lengths_count_characters_not_bytes() -> None:
    assert errors_for({"type": "string", "maxLength": 3}, "äöü") == []
    assert errors_for({"type": "string", "minLength": 3}, "äö")[0].message == (
        'Invalid value: "äö": spec.f in body should be at least 3 chars long')


def test_a_string_shorter_than_min_length_is_invalid() -> None:
    assert texts(errors_for({"type": "string", "minLength": 1}, "")) == [
        'spec.f: Invalid value: "": spec.f in body should be at least 1 chars long']


def test_a_date_time_must_be_rfc3339() -> None:
    schema = {"type": "string", "format": "date-time"}
    for good in ("2024-01-31T12:00:00Z", "2024-01-31T12:00:00.123+02:00", "2024-01-31t23:59:59z"):
        assert errors_for(schema, good) == [], good
    for bad in ("yesterday", "2024-13-01T00:00:00Z", "2024-01-31T25:00:00Z", "2024-01-31"):
        [error] = errors_for(schema, bad)
        assert error.type == "FieldValueTypeInvalid"
        assert error.message == (f'Invalid value: "{bad}": spec.f in body must be of type '
                                 f'date-time: "{bad}"')


def test_other_formats_are_accepted_unchecked() -> None:
    assert errors_for({"type": "string", "format": "hostname"}, "not a host!") == []


def test_strings_in_messages_are_quoted_like_go() -> None:
    [error] = errors_for({"type": "string", "enum": ["a"]}, 'say "hi"\n')
    assert error.message.startswith('Unsupported value: "say \\"hi\\"\\n": ')


# --------------------------------------------------------------------------- numbers


def test_a_number_above_maximum_is_invalid() -> None:
    assert texts(errors_for({"type": "integer", "maximum": 10}, 11)) == [
        "spec.f: Invalid value: 11: spec.f in body should be less than or equal to 10"]
    assert errors_for({"type": "integer", "maximum": 10}, 10) == []


def test_a_number_below_minimum_is_invalid() -> None:
    assert texts(errors_for({"type": "number", "minimum": 0.5}, 0.25)) == [
        "spec.f: Invalid value: 0.25: spec.f in body should be greater than or equal to 0.5"]


def test_exclusive_bounds_reject_the_bound_itself() -> None:
    schema = {"type": "integer", "minimum": 0, "exclusiveMinimum": True,
              "maximum": 5, "exclusiveMaximum": True}
    assert texts(errors_for(schema, 0)) == [
        "spec.f: Invalid value: 0: spec.f in body should be greater than 0"]
    assert texts(errors_for(schema, 5)) == [
        "spec.f: Invalid value: 5: spec.f in body should be less than 5"]
    assert errors_for(schema, 3) == []


def test_a_number_must_be_a_multiple_of_multiple_of() -> None:
    assert errors_for({"type": "integer", "multipleOf": 5}, 7)[0].message == (
        "Invalid value: 7: spec.f in body should be a multiple of 5")
    assert errors_for({"type": "number", "multipleOf": 0.5}, 1.5) == []


def test_large_bounds_print_like_go_floats() -> None:
    [error] = errors_for({"type": "integer", "maximum": 1000000}, 2000000)
    assert error.message.endswith("should be less than or equal to 1e+06")


# --------------------------------------------------------------------------- arrays


def test_array_items_are_validated_with_indexed_paths() -> None:
    schema = spec_schema(obj_schema({"items": {"type": "array", "items": obj_schema(
        {"name": {"type": "string", "maxLength": 3}}, required=["name"])}}))
    errors = validate(resource({"items": [{"name": "ok"}, {}, {"name": "toolong"}]}), schema)
    assert texts(errors) == ["spec.items[1].name: Required value",
                             "spec.items[2].name: Too long: may not be more than 3 bytes"]


def test_too_many_items_is_too_many() -> None:
    assert errors_for({"type": "array", "maxItems": 2}, [1, 2, 3]) == [FieldError(
        "FieldValueTooMany", "spec.f", "Too many: 3: must have at most 2 items")]
    assert errors_for({"type": "array", "maxItems": 1}, [1, 2])[0].message == (
        "Too many: 2: must have at most 1 item")


def test_too_few_items_is_invalid() -> None:
    assert texts(errors_for({"type": "array", "minItems": 2}, [1])) == [
        "spec.f: Invalid value: 1: spec.f in body should have at least 2 items"]


def test_unique_items_rejects_json_equal_duplicates() -> None:
    schema = {"type": "array", "uniqueItems": True}
    assert errors_for(schema, [1, 2]) == []
    assert texts(errors_for(schema, [{"a": 1}, {"a": 1}])) == [
        'spec.f: Invalid value: [{"a":1},{"a":1}]: spec.f in body shouldn\'t contain duplicates']


def test_a_list_type_map_rejects_items_with_the_same_keys() -> None:
    schema = {"type": "array", "x-kubernetes-list-type": "map",
              "x-kubernetes-list-map-keys": ["type"],
              "items": obj_schema({"type": {"type": "string"}, "status": {"type": "string"}})}
    value = [{"type": "Ready", "status": "True"}, {"type": "Ready", "status": "False"}]
    assert errors_for(schema, value) == [FieldError(
        "FieldValueDuplicate", "spec.f[1]", 'Duplicate value: {"type":"Ready"}')]


def test_a_list_type_map_with_several_keys_compares_all_of_them() -> None:
    schema = {"type": "array", "x-kubernetes-list-type": "map",
              "x-kubernetes-list-map-keys": ["port", "protocol"],
              "items": obj_schema({"port": {"type": "integer"}, "protocol": {"type": "string"}})}
    assert errors_for(schema, [{"port": 80, "protocol": "TCP"},
                               {"port": 80, "protocol": "UDP"}]) == []
    assert texts(errors_for(schema, [{"port": 80, "protocol": "TCP"},
                                     {"protocol": "TCP", "port": 80}])) == [
        'spec.f[1]: Duplicate value: {"port":80,"protocol":"TCP"}']


def test_a_list_type_set_rejects_repeated_values() -> None:
    schema = {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}
    assert texts(errors_for(schema, ["a", "b", "a"])) == ['spec.f[2]: Duplicate value: "a"']


def test_an_atomic_list_allows_duplicates() -> None:
    schema = {"type": "array", "x-kubernetes-list-type": "atomic", "items": {"type": "string"}}
    assert errors_for(schema, ["a", "a"]) == []


def test_list_type_duplicates_are_reported_after_schema_errors() -> None:
    schema = spec_schema(obj_schema({
        "s": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "n": {"type": "integer"},
    }))
    errors = validate(resource({"s": ["a", "a"], "n": "x"}), schema)
    assert [e.type for e in errors] == ["FieldValueTypeInvalid", "FieldValueDuplicate"]


# --------------------------------------------------------------------------- objects


def test_map_values_are_validated_with_bracketed_keys() -> None:
    schema = {"type": "object", "additionalProperties": {"type": "string", "maxLength": 2}}
    assert texts(errors_for(schema, {"ok": "ab", "bad": "abc"})) == [
        "spec.f[bad]: Too long: may not be more than 2 bytes"]


def test_too_many_properties_is_too_many() -> None:
    schema = {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}}
    assert texts(errors_for(schema, {"a": "1", "b": "2"})) == [
        "spec.f: Too many: 2: must have at most 1 item"]


def test_too_few_properties_is_invalid() -> None:
    schema = {"type": "object", "minProperties": 1}
    assert texts(errors_for(schema, {})) == [
        "spec.f: Invalid value: 0: spec.f in body should have at least 1 properties"]


def test_unknown_fields_are_ignored_by_validation() -> None:
    assert errors_for(obj_schema({"a": {"type": "string"}}), {"a": "x", "zzz": 1}) == []


def test_metadata_is_checked_only_against_name_restrictions() -> None:
    schema = obj_schema({"metadata": obj_schema({
        "name": {"type": "string", "maxLength": 5},
        "labels": {"type": "string"},
    }, required=["namespace"])})
    obj = resource({}, metadata={"name": "too-long-name", "labels": {"a": "b"}})
    assert texts(validate(obj, schema)) == [
        "metadata.name: Too long: may not be more than 5 bytes"]


def test_metadata_that_is_not_an_object_is_a_type_error() -> None:
    assert texts(validate(resource({}, metadata="x"), obj_schema({}))) == [
        'metadata: Invalid value: "string": metadata in body must be of type object: "string"']


def test_an_embedded_resource_needs_api_version_and_kind() -> None:
    schema = {"type": "object", "x-kubernetes-embedded-resource": True,
              "x-kubernetes-preserve-unknown-fields": True}
    assert texts(errors_for(schema, {"metadata": {"name": "x"}})) == [
        "spec.f.apiVersion: Required value: must not be empty",
        "spec.f.kind: Required value: must not be empty"]
    assert errors_for(schema, {"apiVersion": "v1", "kind": "ConfigMap"}) == []
    assert texts(errors_for(schema, {"apiVersion": "a/b/c", "kind": ""})) == [
        'spec.f.apiVersion: Invalid value: "a/b/c": unexpected GroupVersion string: a/b/c',
        'spec.f.kind: Invalid value: "": must not be empty']


# --------------------------------------------------------------------------- combinators


def test_any_of_passes_when_one_branch_does() -> None:
    schema = {"type": "object", "anyOf": [{"required": ["a"]}, {"required": ["b"]}],
              "properties": {"a": {"type": "string"}, "b": {"type": "string"}}}
    assert errors_for(schema, {"b": "x"}) == []
    assert texts(errors_for(schema, {})) == [
        'spec.f: Invalid value: {}: "spec.f" must validate at least one schema (anyOf)']


def test_one_of_needs_exactly_one_branch() -> None:
    schema = {"type": "object", "oneOf": [{"required": ["a"]}, {"required": ["b"]}]}
    assert errors_for(schema, {"a": 1}) == []
    assert errors_for(schema, {})[0].message.endswith(
        '"spec.f" must validate one and only one schema (oneOf). Found none valid')
    assert errors_for(schema, {"a": 1, "b": 2})[0].message.endswith(
        '"spec.f" must validate one and only one schema (oneOf). Found 2 valid alternatives')


def test_all_of_reports_the_failing_branch_and_the_composite() -> None:
    schema = {"type": "string", "allOf": [{"minLength": 2}, {"pattern": "^a"}]}
    assert errors_for(schema, "ab") == []
    assert texts(errors_for(schema, "b")) == [
        'spec.f: Invalid value: "b": spec.f in body should be at least 2 chars long',
        "spec.f: Invalid value: \"b\": spec.f in body should match '^a'",
        'spec.f: Invalid value: "b": "spec.f" must validate all the schemas (allOf). '
        "None validated"]


def test_not_rejects_values_matching_its_schema() -> None:
    schema = {"type": "string", "not": {"enum": ["forbidden"]}}
    assert errors_for(schema, "fine") == []
    assert texts(errors_for(schema, "forbidden")) == [
        'spec.f: Invalid value: "forbidden": "spec.f" must not validate the schema (not)']


def test_cel_validation_rules_are_checked_too() -> None:
    """The rules themselves are tested in test_celrules.py."""
    schema = {"type": "string", "x-kubernetes-validations": [
        {"rule": "self == 'never'", "message": "must be never"}]}
    assert texts(errors_for(schema, "anything")) == [
        'spec.f: Invalid value: "anything": must be never']


# --------------------------------------------------------------------------- messages


def test_a_single_error_message_has_no_brackets() -> None:
    errors = [FieldError("FieldValueInvalid", "spec.url", 'Invalid value: "x": bad')]
    assert invalid_message("GitRepository.source.toolkit.fluxcd.io", "x", errors) == (
        'GitRepository.source.toolkit.fluxcd.io "x" is invalid: spec.url: Invalid value: "x": bad')


def test_several_errors_are_bracketed_and_comma_separated() -> None:
    errors = [FieldError("FieldValueRequired", "spec.a", "Required value"),
              FieldError("FieldValueNotSupported", "spec.b",
                         'Unsupported value: "c": supported values: "a", "b"')]
    assert invalid_message("Thing.example.com", "n", errors) == (
        'Thing.example.com "n" is invalid: [spec.a: Required value, '
        'spec.b: Unsupported value: "c": supported values: "a", "b"]')


def test_repeated_errors_are_reported_once() -> None:
    error = FieldError("FieldValueRequired", "spec.a", "Required value")
    assert invalid_message("Thing.example.com", "n", [error, error]) == (
        'Thing.example.com "n" is invalid: spec.a: Required value')


def test_a_field_error_reads_as_field_colon_message() -> None:
    assert str(FieldError("FieldValueRequired", "spec.a", "Required value")) == (
        "spec.a: Required value")


# --------------------------------------------------------------------------- GitRepository

CONDITION = obj_schema({
    "type": {"type": "string", "maxLength": 316},
    "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
    "reason": {"type": "string"},
    "message": {"type": "string", "maxLength": 32768},
    "lastTransitionTime": {"type": "string", "format": "date-time"},
    "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
}, required=["lastTransitionTime", "message", "reason", "status", "type"])

GIT_REPOSITORY: Schema = obj_schema({
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object"},
    "spec": obj_schema({
        "url": {"type": "string", "pattern": "^(http|https|ssh)://.*$"},
        "interval": {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"},
        "timeout": {"type": "string", "default": "60s",
                    "pattern": "^([0-9]+(\\.[0-9]+)?(ms|s|m))+$"},
        "ref": obj_schema({"branch": {"type": "string"}, "tag": {"type": "string"},
                           "semver": {"type": "string"}, "commit": {"type": "string"}}),
        "provider": {"type": "string", "enum": ["generic", "azure", "github"],
                     "default": "generic"},
        "suspend": {"type": "boolean"},
        "ignore": {"type": "string"},
    }, required=["interval", "url"], **{"x-kubernetes-validations": [
        {"rule": "!has(self.ref) || !has(self.ref.commit) || !has(self.ref.semver)",
         "message": "commit and semver are exclusive"}]}),
    "status": obj_schema({
        "observedGeneration": {"type": "integer", "format": "int64"},
        "conditions": {"type": "array", "items": CONDITION,
                       "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    }, default={"observedGeneration": -1}),
})


#: what the server adds after an error that keeps it from running a schema's CEL rules
RULES_SKIPPED = ('<nil>: Invalid value: "null": some validation rules were not checked because '
                 "the object was invalid; correct the existing errors to complete validation")


def git_repository(spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "podinfo", "namespace": "flux-system"}, "spec": spec,
    }
    obj.update(extra)
    return obj


def admit(obj: dict[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """What a real server does on create: prune, default, validate."""
    stored = apply_defaults(prune(obj, GIT_REPOSITORY), GIT_REPOSITORY)
    return stored, validate(stored, GIT_REPOSITORY)


def test_a_good_git_repository_is_pruned_and_defaulted_and_valid() -> None:
    obj = git_repository({
        "url": "https://github.com/stefanprodan/podinfo", "interval": "1m30s",
        "ref": {"branch": "master", "unknownRef": "x"}, "bogus": True,
    }, metadata={"name": "podinfo", "namespace": "flux-system", "labels": {"a": "b"},
                 "notMeta": 1})
    stored, errors = admit(obj)
    assert errors == []
    assert stored == {
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": "podinfo", "namespace": "flux-system", "labels": {"a": "b"}},
        "spec": {"url": "https://github.com/stefanprodan/podinfo", "interval": "1m30s",
                 "timeout": "60s", "provider": "generic", "ref": {"branch": "master"}},
        "status": {"observedGeneration": -1},
    }


def test_a_bad_git_repository_gets_the_errors_a_real_server_gives() -> None:
    _, errors = admit(git_repository({
        "url": "ftp://example.com/repo", "interval": "often", "provider": "gitlab",
        "suspend": "yes",
    }))
    assert texts(errors) == [
        "spec.url: Invalid value: \"ftp://example.com/repo\": spec.url in body should match "
        "'^(http|https|ssh)://.*$'",
        "spec.interval: Invalid value: \"often\": spec.interval in body should match "
        "'^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$'",
        'spec.provider: Unsupported value: "gitlab": supported values: '
        '"generic", "azure", "github"',
        'spec.suspend: Invalid value: "string": spec.suspend in body must be of type boolean: '
        '"string"',
        RULES_SKIPPED,
    ]
    assert invalid_message("GitRepository.source.toolkit.fluxcd.io", "podinfo", errors) == (
        'GitRepository.source.toolkit.fluxcd.io "podinfo" is invalid: [' + ", ".join(texts(errors))
        + "]")


def test_a_git_repository_without_url_and_interval_gets_required_values() -> None:
    _, errors = admit(git_repository({"ref": {"tag": "v1"}}))
    assert errors[:2] == [FieldError("FieldValueRequired", "spec.interval", "Required value"),
                          FieldError("FieldValueRequired", "spec.url", "Required value")]
    assert invalid_message("GitRepository.source.toolkit.fluxcd.io", "podinfo", errors) == (
        'GitRepository.source.toolkit.fluxcd.io "podinfo" is invalid: '
        f"[spec.interval: Required value, spec.url: Required value, {RULES_SKIPPED}]")


def test_git_repository_status_conditions_are_a_map_keyed_by_type() -> None:
    condition = {"type": "Ready", "status": "True", "reason": "Succeeded", "message": "ok",
                 "lastTransitionTime": "2024-05-01T10:00:00Z"}
    _, errors = admit(git_repository(
        {"url": "ssh://git@github.com/x/y", "interval": "5m"},
        status={"observedGeneration": 1, "conditions": [
            condition, {**condition, "status": "Maybe", "lastTransitionTime": "now"}]}))
    assert texts(errors) == [
        'status.conditions[1].status: Unsupported value: "Maybe": supported values: '
        '"True", "False", "Unknown"',
        'status.conditions[1].lastTransitionTime: Invalid value: "now": '
        'status.conditions[1].lastTransitionTime in body must be of type date-time: "now"',
        'status.conditions[1]: Duplicate value: {"type":"Ready"}',
        RULES_SKIPPED,
    ]


def test_the_rules_run_when_no_error_blocks_them() -> None:
    _, errors = admit(git_repository({"url": "https://x/y", "interval": "1h",
                                      "ref": {"commit": "abc", "semver": "1.x"}}))
    assert texts(errors) == ["spec: Invalid value: commit and semver are exclusive"]


def test_a_null_timeout_is_defaulted_and_a_null_ref_dropped() -> None:
    stored, errors = admit(git_repository(
        {"url": "https://x/y", "interval": "1h", "timeout": None, "ref": None}))
    assert errors == []
    assert stored["spec"]["timeout"] == "60s"
    assert "ref" not in stored["spec"]


# --------------------------------------------------------------------------- properties

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.floats(-5, 5) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(spec=JSON, status=JSON)
def test_admission_never_raises_and_never_mutates_the_input(spec: Any, status: Any) -> None:
    obj = git_repository(spec, status=status)
    before = copy.deepcopy(obj)
    stored, errors = admit(obj)
    assert obj == before
    assert all(isinstance(e, FieldError) and e.field and e.message for e in errors)
    assert admit(stored)[0] == stored  # pruning and defaulting are idempotent
