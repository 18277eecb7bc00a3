"""Tests for fluxd.jsonpatch (JSON merge patch, JSON patch) and fluxd.devcluster.patch
(strategic merge patch)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxd.devcluster.patch import strategic_merge_patch
from fluxd.jsonpatch import PatchError, json_merge_patch, json_patch
from fluxd.schema import BuiltinSchema, OpenAPISchema

ROOT = BuiltinSchema()


def deployment(**overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"owner": "team-a"},
            "finalizers": ["a.example/one", "b.example/two"],
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "web:1",
                            "args": ["--a", "--b"],
                            "env": [
                                {"name": "A", "value": "1"},
                                {"name": "B", "value": "2"},
                            ],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        },
                        {"name": "sidecar", "image": "proxy:1"},
                    ],
                    "nodeSelector": {"disk": "ssd", "zone": "a"},
                },
            },
        },
    }
    obj.update(overrides)
    return obj


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def smp_pod_spec(patch: dict[str, Any], original: dict[str, Any] | None = None) -> dict[str, Any]:
    """Apply ``patch`` at spec.template.spec of a deployment; return the resulting pod spec."""
    wrapped = {"spec": {"template": {"spec": patch}}}
    return pod_spec(strategic_merge_patch(original or deployment(), wrapped, ROOT))


def assert_no_directives(value: Any) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            assert not (key == "$patch" or key == "$retainKeys" or key.startswith("$set")), key
            assert not key.startswith("$deleteFromPrimitiveList"), key
            assert_no_directives(child)
    elif isinstance(value, list):
        for child in value:
            assert_no_directives(child)


# ------------------------------------------------------------------ JSON merge patch


def test_merge_patch_null_deletes_key() -> None:
    assert json_merge_patch({"a": 1, "b": 2}, {"a": None}) == {"b": 2}


def test_merge_patch_null_for_missing_key_is_a_no_op() -> None:
    assert json_merge_patch({"a": 1}, {"z": None}) == {"a": 1}


def test_merge_patch_merges_nested_dicts() -> None:
    target = {"metadata": {"labels": {"a": "1", "b": "2"}, "name": "x"}}
    patch = {"metadata": {"labels": {"b": "3", "c": "4"}}}
    assert json_merge_patch(target, patch) == {
        "metadata": {"labels": {"a": "1", "b": "3", "c": "4"}, "name": "x"}
    }


def test_merge_patch_replaces_lists_whole() -> None:
    assert json_merge_patch({"l": [1, 2, 3]}, {"l": [4]}) == {"l": [4]}


def test_merge_patch_non_dict_patch_replaces_target() -> None:
    assert json_merge_patch({"a": 1}, ["x"]) == ["x"]
    assert json_merge_patch({"a": 1}, "s") == "s"
    assert json_merge_patch({"a": 1}, None) is None


def test_merge_patch_dict_patch_over_non_dict_target_starts_from_empty() -> None:
    assert json_merge_patch(["x"], {"a": 1, "b": None}) == {"a": 1}
    assert json_merge_patch({"a": "scalar"}, {"a": {"b": 1}}) == {"a": {"b": 1}}


def test_merge_patch_strips_nulls_from_newly_added_objects() -> None:
    assert json_merge_patch({}, {"a": {"b": None, "c": 1}}) == {"a": {"c": 1}}


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_matches_rfc7386_appendix_a(target: Any, patch: Any, expected: Any) -> None:
    assert json_merge_patch(target, patch) == expected


def test_merge_patch_does_not_mutate_inputs() -> None:
    target = {"a": {"b": [1, 2]}, "c": 1}
    patch = {"a": {"d": {"e": 1}}, "c": None}
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    result = json_merge_patch(target, patch)
    result["a"]["b"].append(3)
    result["a"]["d"]["e"] = 2
    assert target == target_before
    assert patch == patch_before


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=3)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from("abcd"), children, max_size=3),
    max_leaves=12,
)
json_dicts = st.dictionaries(st.sampled_from("abcd"), json_values, max_size=4)
# The tree is shared with other test runs; don't fail on a slow machine, only on a wrong answer.
tolerant = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


@tolerant
@given(json_dicts, json_dicts)
def test_merge_patch_applied_twice_equals_applied_once(a: Any, b: Any) -> None:
    once = json_merge_patch(a, b)
    assert json_merge_patch(once, b) == once


@tolerant
@given(json_dicts, json_dicts)
def test_merge_patch_never_mutates_its_arguments(a: Any, b: Any) -> None:
    a_before, b_before = copy.deepcopy(a), copy.deepcopy(b)
    json_merge_patch(a, b)
    assert a == a_before
    assert b == b_before


# ------------------------------------------------------------------ JSON patch (RFC 6902)


def test_json_patch_appendix_a1_adds_an_object_member() -> None:
    result = json_patch({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}])
    assert result == {"baz": "qux", "foo": "bar"}


def test_json_patch_appendix_a2_adds_an_array_element() -> None:
    result = json_patch({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}])
    assert result == {"foo": ["bar", "qux", "baz"]}


def test_json_patch_appendix_a3_removes_an_object_member() -> None:
    result = json_patch({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}])
    assert result == {"foo": "bar"}


def test_json_patch_appendix_a4_removes_an_array_element() -> None:
    result = json_patch({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}])
    assert result == {"foo": ["bar", "baz"]}


def test_json_patch_appendix_a5_replaces_a_value() -> None:
    result = json_patch(
        {"baz": "qux", "foo": "bar"}, [{"op": "replace", "path": "/baz", "value": "boo"}]
    )
    assert result == {"baz": "boo", "foo": "bar"}


def test_json_patch_appendix_a6_moves_a_value() -> None:
    target = {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}
    ops = [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}]
    assert json_patch(target, ops) == {
        "foo": {"bar": "baz"},
        "qux": {"corge": "grault", "thud": "fred"},
    }


def test_json_patch_appendix_a7_moves_an_array_element() -> None:
    target = {"foo": ["all", "grass", "cows", "eat"]}
    ops = [{"op": "move", "from": "/foo/1", "path": "/foo/3"}]
    assert json_patch(target, ops) == {"foo": ["all", "cows", "eat", "grass"]}


def test_json_patch_appendix_a8_passing_test_leaves_document_unchanged() -> None:
    target = {"baz": "qux", "foo": ["a", 2, "c"]}
    ops = [
        {"op": "test", "path": "/baz", "value": "qux"},
        {"op": "test", "path": "/foo/1", "value": 2},
    ]
    assert json_patch(target, ops) == target


def test_json_patch_appendix_a9_failing_test_raises() -> None:
    with pytest.raises(PatchError, match=r"operation 0 \(test /baz\): test failed"):
        json_patch({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}])


def test_json_patch_appendix_a10_adds_a_nested_member_object() -> None:
    result = json_patch(
        {"foo": "bar"}, [{"op": "add", "path": "/child", "value": {"grandchild": {}}}]
    )
    assert result == {"foo": "bar", "child": {"grandchild": {}}}


def test_json_patch_appendix_a11_ignores_unrecognized_members() -> None:
    result = json_patch(
        {"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}]
    )
    assert result == {"foo": "bar", "baz": "qux"}


def test_json_patch_appendix_a12_adding_to_a_nonexistent_target_raises() -> None:
    with pytest.raises(PatchError, match=r"operation 0 \(add /baz/bat\): path not found"):
        json_patch({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}])


def test_json_patch_appendix_a14_unescapes_tilde_sequences() -> None:
    target = {"/": 9, "~1": 10}
    ops = [{"op": "test", "path": "/~01", "value": 10}]
    assert json_patch(target, ops) == target
    assert json_patch(target, [{"op": "remove", "path": "/~1"}]) == {"~1": 10}


def test_json_patch_appendix_a15_test_distinguishes_strings_from_numbers() -> None:
    with pytest.raises(PatchError, match="test failed"):
        json_patch({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}])


def test_json_patch_appendix_a16_adds_an_array_value() -> None:
    result = json_patch(
        {"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}]
    )
    assert result == {"foo": ["bar", ["abc", "def"]]}


def test_json_patch_add_may_insert_at_index_equal_to_length() -> None:
    assert json_patch([1, 2], [{"op": "add", "path": "/2", "value": 3}]) == [1, 2, 3]


def test_json_patch_add_past_the_end_raises_out_of_range() -> None:
    with pytest.raises(PatchError, match=r"operation 0 \(add /3\): array index 3 out of range"):
        json_patch([1, 2], [{"op": "add", "path": "/3", "value": 3}])


def test_json_patch_replace_at_index_equal_to_length_raises() -> None:
    with pytest.raises(PatchError, match="out of range"):
        json_patch([1, 2], [{"op": "replace", "path": "/2", "value": 3}])


def test_json_patch_rejects_leading_zero_and_negative_indexes() -> None:
    for path in ("/01", "/-1", "/x"):
        with pytest.raises(PatchError, match="invalid array index"):
            json_patch([1, 2], [{"op": "replace", "path": path, "value": 0}])


def test_json_patch_dash_index_is_only_valid_for_add() -> None:
    with pytest.raises(PatchError, match="invalid array index"):
        json_patch([1], [{"op": "remove", "path": "/-"}])


def test_json_patch_error_names_operation_index_and_path() -> None:
    ops = [
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 2},
        {"op": "remove", "path": "/spec/x"},
    ]
    with pytest.raises(PatchError) as excinfo:
        json_patch({"spec": {"replicas": 1}}, ops)
    assert str(excinfo.value) == "json patch operation 2 (remove /spec/x): path not found"


def test_json_patch_rejects_operations_that_are_not_a_list() -> None:
    with pytest.raises(PatchError, match="must be a list"):
        json_patch({}, {"op": "add", "path": "/a", "value": 1})


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        ("not an object", "operation 0: must be an object"),
        ({"path": "/a"}, "operation 0: missing or non-string 'op'"),
        ({"op": "add", "value": 1}, r"operation 0 \(add\): missing or non-string 'path'"),
        ({"op": "add", "path": "/a"}, r"operation 0 \(add /a\): missing 'value'"),
        ({"op": "replace", "path": "/a"}, "missing 'value'"),
        ({"op": "test", "path": "/a"}, "missing 'value'"),
        ({"op": "move", "path": "/a"}, "missing 'from'"),
        ({"op": "copy", "path": "/a"}, "missing 'from'"),
        ({"op": "frobnicate", "path": "/a"}, "unknown op 'frobnicate'"),
        ({"op": "add", "path": "a", "value": 1}, "pointer must be empty or start with '/'"),
        ({"op": "add", "path": "/a~2", "value": 1}, "invalid escape"),
    ],
)
def test_json_patch_rejects_malformed_operations(operation: Any, message: str) -> None:
    with pytest.raises(PatchError, match=message):
        json_patch({"a": 1}, [operation])


def test_json_patch_value_may_be_null() -> None:
    assert json_patch({"a": 1}, [{"op": "replace", "path": "/a", "value": None}]) == {"a": None}
    assert json_patch({"a": None}, [{"op": "test", "path": "/a", "value": None}]) == {"a": None}


def test_json_patch_remove_of_missing_key_raises_path_not_found() -> None:
    with pytest.raises(PatchError, match=r"\(remove /b\): path not found"):
        json_patch({"a": 1}, [{"op": "remove", "path": "/b"}])


def test_json_patch_replace_of_missing_key_raises_path_not_found() -> None:
    with pytest.raises(PatchError, match="path not found"):
        json_patch({"a": 1}, [{"op": "replace", "path": "/b", "value": 2}])


def test_json_patch_traversing_through_a_scalar_raises_path_not_found() -> None:
    with pytest.raises(PatchError, match="path not found"):
        json_patch({"a": 1}, [{"op": "add", "path": "/a/b", "value": 2}])


def test_json_patch_empty_path_addresses_the_whole_document() -> None:
    assert json_patch({"a": 1}, [{"op": "replace", "path": "", "value": [1]}]) == [1]
    assert json_patch({"a": 1}, [{"op": "add", "path": "", "value": {"b": 2}}]) == {"b": 2}
    with pytest.raises(PatchError, match="cannot remove the whole document"):
        json_patch({"a": 1}, [{"op": "remove", "path": ""}])


def test_json_patch_copy_duplicates_a_value_independently() -> None:
    result = json_patch({"a": {"b": [1]}}, [{"op": "copy", "from": "/a", "path": "/c"}])
    assert result == {"a": {"b": [1]}, "c": {"b": [1]}}
    result["c"]["b"].append(2)
    assert result["a"] == {"b": [1]}


def test_json_patch_copy_from_missing_path_raises() -> None:
    with pytest.raises(PatchError, match=r"\(copy /c\): path not found"):
        json_patch({"a": 1}, [{"op": "copy", "from": "/missing", "path": "/c"}])


def test_json_patch_move_into_own_child_raises() -> None:
    with pytest.raises(PatchError, match="own children"):
        json_patch({"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/a/b/c"}])


def test_json_patch_move_to_the_same_path_is_a_no_op() -> None:
    assert json_patch({"a": 1}, [{"op": "move", "from": "/a", "path": "/a"}]) == {"a": 1}


def test_json_patch_test_compares_booleans_and_numbers_strictly() -> None:
    with pytest.raises(PatchError, match="test failed"):
        json_patch({"a": True}, [{"op": "test", "path": "/a", "value": 1}])
    assert json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 1.0}]) == {"a": 1}
    with pytest.raises(PatchError, match="test failed"):
        json_patch({"a": [1, {"b": 0}]}, [{"op": "test", "path": "/a", "value": [1, {"b": False}]}])


def test_json_patch_failure_leaves_the_target_unchanged() -> None:
    target = {"a": [1, 2], "b": {"c": 1}}
    before = copy.deepcopy(target)
    ops = [
        {"op": "add", "path": "/a/-", "value": 3},
        {"op": "remove", "path": "/b/c"},
        {"op": "test", "path": "/a/0", "value": 99},
    ]
    with pytest.raises(PatchError):
        json_patch(target, ops)
    assert target == before


def test_json_patch_does_not_mutate_inputs() -> None:
    target = {"a": [1, 2], "b": {"c": 1}}
    value = {"d": [1]}
    ops = [{"op": "add", "path": "/b/e", "value": value}, {"op": "remove", "path": "/a/0"}]
    target_before, ops_before = copy.deepcopy(target), copy.deepcopy(ops)
    result = json_patch(target, ops)
    assert result == {"a": [2], "b": {"c": 1, "e": {"d": [1]}}}
    result["b"]["e"]["d"].append(2)
    assert target == target_before
    assert ops == ops_before


def test_json_patch_is_an_error_class_of_value_error() -> None:
    assert issubclass(PatchError, ValueError)


# ------------------------------------------------------------------ strategic merge patch


def test_strategic_merge_merges_maps_recursively() -> None:
    result = strategic_merge_patch(deployment(), {"metadata": {"labels": {"env": "prod"}}}, ROOT)
    assert result["metadata"]["labels"] == {"app": "web", "tier": "front", "env": "prod"}
    assert result["metadata"]["name"] == "web"


def test_strategic_merge_null_deletes_key() -> None:
    result = strategic_merge_patch(deployment(), {"metadata": {"labels": {"tier": None}}}, ROOT)
    assert result["metadata"]["labels"] == {"app": "web"}


def test_strategic_merge_like_kubectl_scale_sets_replicas() -> None:
    result = strategic_merge_patch(deployment(), {"spec": {"replicas": 3}}, ROOT)
    assert result["spec"]["replicas"] == 3
    assert pod_spec(result) == pod_spec(deployment())


def test_strategic_merge_like_kubectl_annotate_adds_and_removes_annotations() -> None:
    patch = {"metadata": {"annotations": {"owner": None, "note": "hello"}}}
    result = strategic_merge_patch(deployment(), patch, ROOT)
    assert result["metadata"]["annotations"] == {"note": "hello"}


def test_strategic_merge_like_kubectl_label_overwrites_a_label() -> None:
    result = strategic_merge_patch(deployment(), {"metadata": {"labels": {"tier": "back"}}}, ROOT)
    assert result["metadata"]["labels"] == {"app": "web", "tier": "back"}


def test_strategic_merge_adds_missing_maps() -> None:
    original = {"metadata": {"name": "x"}}
    result = strategic_merge_patch(original, {"metadata": {"annotations": {"a": "b"}}}, ROOT)
    assert result == {"metadata": {"name": "x", "annotations": {"a": "b"}}}


def test_strategic_merge_merges_containers_by_name() -> None:
    result = smp_pod_spec({"containers": [{"name": "app", "image": "web:2"}]})
    assert result["containers"][0]["image"] == "web:2"
    assert result["containers"][0]["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "2"},
    ]
    assert result["containers"][1] == {"name": "sidecar", "image": "proxy:1"}


def test_strategic_merge_appends_new_items_of_a_keyed_list() -> None:
    result = smp_pod_spec({"containers": [{"name": "logger", "image": "log:1"}]})
    assert [c["name"] for c in result["containers"]] == ["app", "sidecar", "logger"]


def test_strategic_merge_merges_nested_keyed_lists() -> None:
    patch = {"containers": [{"name": "app", "env": [{"name": "B", "value": "two"}]}]}
    result = smp_pod_spec(patch)
    assert result["containers"][0]["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "two"},
    ]


def test_strategic_merge_merges_container_ports_by_container_port() -> None:
    patch = {"containers": [{"name": "app", "ports": [{"containerPort": 80, "name": "http"}]}]}
    result = smp_pod_spec(patch)
    assert result["containers"][0]["ports"] == [
        {"containerPort": 80, "protocol": "TCP", "name": "http"}
    ]


def test_strategic_merge_null_inside_a_keyed_item_deletes_its_field() -> None:
    result = smp_pod_spec({"containers": [{"name": "app", "args": None}]})
    assert "args" not in result["containers"][0]


def test_strategic_merge_patch_delete_item_removes_it_from_keyed_list() -> None:
    result = smp_pod_spec({"containers": [{"$patch": "delete", "name": "sidecar"}]})
    assert [c["name"] for c in result["containers"]] == ["app"]


def test_strategic_merge_patch_delete_of_an_absent_item_is_a_no_op() -> None:
    result = smp_pod_spec({"containers": [{"$patch": "delete", "name": "nope"}]})
    assert [c["name"] for c in result["containers"]] == ["app", "sidecar"]


def test_strategic_merge_keyed_item_without_merge_key_raises() -> None:
    with pytest.raises(PatchError, match="lacks merge key 'name'"):
        smp_pod_spec({"containers": [{"image": "x"}]})


def test_strategic_merge_keyed_list_of_non_objects_raises() -> None:
    with pytest.raises(PatchError, match="must be objects"):
        smp_pod_spec({"containers": ["app"]})


def test_strategic_merge_replace_directive_in_list_replaces_the_whole_list() -> None:
    patch = {"containers": [{"$patch": "replace"}, {"name": "only", "image": "only:1"}]}
    result = smp_pod_spec(patch)
    assert result["containers"] == [{"name": "only", "image": "only:1"}]


def test_strategic_merge_replace_directive_works_for_set_lists_too() -> None:
    patch = {"metadata": {"finalizers": [{"$patch": "replace"}, "c.example/three"]}}
    result = strategic_merge_patch(deployment(), patch, ROOT)
    assert result["metadata"]["finalizers"] == ["c.example/three"]


def test_strategic_merge_unions_set_lists_keeping_original_order() -> None:
    patch = {"metadata": {"finalizers": ["c.example/three", "a.example/one"]}}
    result = strategic_merge_patch(deployment(), patch, ROOT)
    assert result["metadata"]["finalizers"] == [
        "a.example/one",
        "b.example/two",
        "c.example/three",
    ]


def test_strategic_merge_replaces_atomic_lists() -> None:
    result = smp_pod_spec({"containers": [{"name": "app", "args": ["--c"]}]})
    assert result["containers"][0]["args"] == ["--c"]


def test_strategic_merge_list_over_missing_field_is_added() -> None:
    result = smp_pod_spec({"volumes": [{"name": "data", "emptyDir": {}}]})
    assert result["volumes"] == [{"name": "data", "emptyDir": {}}]


def test_strategic_merge_null_deletes_a_list_field() -> None:
    result = strategic_merge_patch(deployment(), {"metadata": {"finalizers": None}}, ROOT)
    assert "finalizers" not in result["metadata"]


def test_strategic_merge_replaces_atomic_maps() -> None:
    patch = {"spec": {"selector": {"matchLabels": {"app": "web2"}}}}
    result = strategic_merge_patch(deployment(), patch, ROOT)
    assert result["spec"]["selector"] == {"matchLabels": {"app": "web2"}}

    result = smp_pod_spec({"nodeSelector": {"gpu": "yes"}})
    assert result["nodeSelector"] == {"gpu": "yes"}


def test_strategic_merge_patch_replace_in_a_map_replaces_the_map() -> None:
    patch = {"metadata": {"labels": {"$patch": "replace", "only": "this"}}}
    result = strategic_merge_patch(deployment(), patch, ROOT)
    assert result["metadata"]["labels"] == {"only": "this"}


def test_strategic_merge_patch_delete_in_a_map_deletes_the_map() -> None:
    patch = {"metadata": {"labels": {"$patch": "delete"}}}
    result = strategic_merge_patch(deployment(), patch, ROOT)
    assert "labels" not in result["metadata"]


def test_strategic_merge_patch_merge_in_a_map_is_an_ordinary_merge() -> None:
    patch = {"metadata": {"labels": {"$patch": "merge", "env": "prod"}}}
    result = strategic_merge_patch(deployment(), patch, ROOT)
    assert result["metadata"]["labels"] == {"app": "web", "tier": "front", "env": "prod"}


def test_strategic_merge_patch_delete_at_the_root_yields_an_empty_object() -> None:
    assert strategic_merge_patch(deployment(), {"$patch": "delete"}, ROOT) == {}


def test_strategic_merge_unknown_patch_directive_raises() -> None:
    with pytest.raises(PatchError, match="unknown \\$patch value 'explode'"):
        strategic_merge_patch(deployment(), {"metadata": {"$patch": "explode"}}, ROOT)
    with pytest.raises(PatchError, match="unknown \\$patch value 'explode'"):
        smp_pod_spec({"containers": [{"$patch": "explode", "name": "app"}]})


def test_strategic_merge_retain_keys_drops_unlisted_keys() -> None:
    original = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    result = strategic_merge_patch(original, patch, ROOT)
    assert result == {"spec": {"strategy": {"type": "Recreate"}}}


def test_strategic_merge_delete_from_primitive_list_removes_values() -> None:
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example/one"]}}
    result = strategic_merge_patch(deployment(), patch, ROOT)
    assert result["metadata"]["finalizers"] == ["b.example/two"]


def test_strategic_merge_delete_from_primitive_list_combines_with_additions() -> None:
    patch = {
        "metadata": {
            "$deleteFromPrimitiveList/finalizers": ["a.example/one"],
            "finalizers": ["c.example/three"],
        }
    }
    result = strategic_merge_patch(deployment(), patch, ROOT)
    assert result["metadata"]["finalizers"] == ["b.example/two", "c.example/three"]


def test_strategic_merge_set_element_order_reorders_a_keyed_list() -> None:
    patch = {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}
    result = smp_pod_spec(patch)
    assert [c["name"] for c in result["containers"]] == ["sidecar", "app"]


def test_strategic_merge_set_element_order_keeps_unlisted_items_after_listed_ones() -> None:
    patch = {
        "$setElementOrder/containers": [{"name": "new"}, {"name": "app"}],
        "containers": [{"name": "new", "image": "new:1"}],
    }
    result = smp_pod_spec(patch)
    assert [c["name"] for c in result["containers"]] == ["new", "app", "sidecar"]


def test_strategic_merge_set_element_order_reorders_a_primitive_list() -> None:
    patch = {
        "metadata": {
            "$setElementOrder/finalizers": ["c.example/three", "b.example/two", "a.example/one"],
            "finalizers": ["c.example/three"],
        }
    }
    result = strategic_merge_patch(deployment(), patch, ROOT)
    assert result["metadata"]["finalizers"] == [
        "c.example/three",
        "b.example/two",
        "a.example/one",
    ]


def test_strategic_merge_set_element_order_entry_without_merge_key_raises() -> None:
    with pytest.raises(PatchError, match="lacks merge key"):
        smp_pod_spec({"$setElementOrder/containers": [{"image": "x"}]})


def test_strategic_merge_like_kubectl_apply_changes_image_and_removes_env_var() -> None:
    # What kubectl apply (client-side) sends when the manifest changes the app image and
    # drops env var B: the three-way diff plus the element order of the edited lists.
    patch = {
        "metadata": {
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": '{"kind":"Deployment"}\n'
            }
        },
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                    "containers": [
                        {
                            "$setElementOrder/env": [{"name": "A"}],
                            "env": [{"$patch": "delete", "name": "B"}],
                            "image": "web:2",
                            "name": "app",
                        }
                    ],
                }
            }
        },
    }
    original = deployment()
    result = strategic_merge_patch(original, patch, ROOT)

    app, sidecar = pod_spec(result)["containers"]
    assert app == {
        "name": "app",
        "image": "web:2",
        "args": ["--a", "--b"],
        "env": [{"name": "A", "value": "1"}],
        "ports": [{"containerPort": 80, "protocol": "TCP"}],
    }
    assert sidecar == {"name": "sidecar", "image": "proxy:1"}
    assert result["metadata"]["annotations"] == {
        "owner": "team-a",
        "kubectl.kubernetes.io/last-applied-configuration": '{"kind":"Deployment"}\n',
    }
    assert_no_directives(result)


def test_strategic_merge_never_leaves_directives_in_new_values() -> None:
    patch = {
        "containers": [
            {
                "name": "new",
                "$setElementOrder/env": [{"name": "X"}],
                "env": [{"name": "X", "value": "1"}, {"$patch": "delete", "name": "Y"}],
                "resources": {"$patch": "replace", "limits": {"cpu": "1"}},
            }
        ],
        "securityContext": {"$retainKeys": ["runAsUser"], "runAsUser": 1},
        "affinity": {"$patch": "delete"},
    }
    result = smp_pod_spec(patch)
    assert result["containers"][-1] == {
        "name": "new",
        "env": [{"name": "X", "value": "1"}],
        "resources": {"limits": {"cpu": "1"}},
    }
    assert result["securityContext"] == {"runAsUser": 1}
    assert "affinity" not in result
    assert_no_directives(result)


def test_strategic_merge_treats_unknown_dollar_keys_as_data() -> None:
    # A CRD's JSONSchemaProps has genuine "$ref"/"$schema" fields.
    result = strategic_merge_patch({"a": 1}, {"$ref": "#/x"}, ROOT)
    assert result == {"a": 1, "$ref": "#/x"}


def test_strategic_merge_merges_custom_resource_lists_declared_as_maps() -> None:
    schema = OpenAPISchema(
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "routes": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["host"],
                            "items": {"type": "object"},
                        },
                        "tags": {"type": "array", "x-kubernetes-list-type": "set"},
                        "hosts": {"type": "array"},
                        "config": {"type": "object", "x-kubernetes-map-type": "atomic"},
                    },
                }
            },
        }
    )
    original = {
        "spec": {
            "routes": [{"host": "a", "port": 1}, {"host": "b", "port": 2}],
            "tags": ["x"],
            "hosts": ["h1"],
            "config": {"k": "v"},
        }
    }
    patch = {
        "spec": {
            "routes": [{"host": "b", "port": 3}, {"host": "c", "port": 4}],
            "tags": ["y", "x"],
            "hosts": ["h2"],
            "config": {"k2": "v2"},
        }
    }
    assert strategic_merge_patch(original, patch, schema) == {
        "spec": {
            "routes": [
                {"host": "a", "port": 1},
                {"host": "b", "port": 3},
                {"host": "c", "port": 4},
            ],
            "tags": ["x", "y"],
            "hosts": ["h2"],
            "config": {"k2": "v2"},
        }
    }


def test_strategic_merge_rejects_malformed_directive_values() -> None:
    for directive in ("$retainKeys", "$setElementOrder/containers"):
        with pytest.raises(PatchError, match="must be a list"):
            smp_pod_spec({directive: "nope"})
    with pytest.raises(PatchError, match="must be a list"):
        strategic_merge_patch(
            deployment(), {"metadata": {"$deleteFromPrimitiveList/finalizers": "x"}}, ROOT
        )


def test_strategic_merge_rejects_non_object_patch() -> None:
    with pytest.raises(PatchError, match="must be a JSON object"):
        strategic_merge_patch(deployment(), ["x"], ROOT)  # type: ignore[arg-type]


def test_strategic_merge_does_not_mutate_inputs() -> None:
    original = deployment()
    patch = {
        "metadata": {"labels": {"tier": None}, "$deleteFromPrimitiveList/finalizers": ["a"]},
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                    "containers": [{"name": "app", "env": [{"$patch": "delete", "name": "A"}]}],
                }
            }
        },
    }
    original_before, patch_before = copy.deepcopy(original), copy.deepcopy(patch)
    result = strategic_merge_patch(original, patch, ROOT)
    pod_spec(result)["containers"][0]["image"] = "mutated"
    result["metadata"]["finalizers"].append("mutated")
    assert original == original_before
    assert patch == patch_before
