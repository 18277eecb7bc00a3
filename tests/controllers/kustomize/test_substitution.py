"""Post-build substitution over built objects, as Flux's kustomize_varsub.go does it."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxd.controllers.kustomize.substitution import (
    SubstituteSource,
    SubstitutionError,
    collect_variables,
    substitute,
)

Obj = dict[str, Any]


def configmap(name: str, **data: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "apps"}, "data": data}


def deployment(**spec: Any) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "apps"}, "spec": spec}


def secret_source(name: str, optional: bool = False, **data: str) -> SubstituteSource:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return SubstituteSource("Secret", name, optional,
                            {"apiVersion": "v1", "kind": "Secret", "data": encoded})


def configmap_source(name: str, optional: bool = False, **data: str) -> SubstituteSource:
    return SubstituteSource("ConfigMap", name, optional, configmap(name, **data))


# --- collect_variables -----------------------------------------------------------------

def test_later_sources_win_and_inline_values_win_last() -> None:
    variables = collect_variables(
        [configmap_source("a", x="cm-a", y="cm-a", z="cm-a"),
         secret_source("b", y="secret-b", z="secret-b")],
        {"z": "inline"})
    assert variables == {"x": "cm-a", "y": "secret-b", "z": "inline"}


def test_secret_values_are_decoded_from_base64() -> None:
    assert collect_variables([secret_source("s", token="s3cr3t/é")], None) == \
        {"token": "s3cr3t/é"}


def test_newlines_are_removed_from_every_value() -> None:
    variables = collect_variables([configmap_source("c", a="one\ntwo\n"),
                                   secret_source("s", b="-----BEGIN\nKEY\n")],
                                  {"c": "x\ny"})
    assert variables == {"a": "onetwo", "b": "-----BEGINKEY", "c": "xy"}


def test_empty_values_are_variables_too() -> None:
    assert collect_variables([configmap_source("c", empty="")], {"also": ""}) == \
        {"empty": "", "also": ""}


def test_an_optional_missing_source_is_skipped() -> None:
    sources = [SubstituteSource("ConfigMap", "gone", True, None),
               SubstituteSource("Secret", "gone-too", True, None)]
    assert collect_variables(sources, {"a": "1"}) == {"a": "1"}


@pytest.mark.parametrize(("kind", "plural"), [("ConfigMap", "configmaps"),
                                              ("Secret", "secrets")])
def test_a_missing_source_that_is_not_optional_fails_with_upstreams_message(
        kind: str, plural: str) -> None:
    with pytest.raises(SubstitutionError) as caught:
        collect_variables([SubstituteSource(kind, "vars", False, None)], None,
                          namespace="apps")
    assert str(caught.value) == f"substitute from '{kind}/vars' error: {plural} \"vars\" not found"


def test_binary_data_and_sources_without_data_give_no_variables() -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "binaryData": {"b": "AAE="}}
    assert collect_variables([SubstituteSource("ConfigMap", "c", False, cm)], None) == {}


def test_undecodable_secret_data_fails() -> None:
    broken = SubstituteSource("Secret", "s", False, {"data": {"k": "not*base64"}})
    with pytest.raises(SubstitutionError, match="substitute from 'Secret/s' error"):
        collect_variables([broken], None)


# --- substitute ------------------------------------------------------------------------

def test_objects_are_left_alone_without_variables() -> None:
    objects = [configmap("c", a="${a}")]
    out = substitute(objects, {}, strict=True)
    assert out == objects and out[0] is objects[0]


def test_the_always_strategy_expands_defaults_without_variables() -> None:
    out = substitute([configmap("c", env="${env:=dev}", region="${region:-eu}")], {},
                     strategy="Always")
    assert out[0]["data"] == {"env": "dev", "region": "eu"}


def test_the_always_strategy_fails_on_unset_variables_in_strict_mode() -> None:
    with pytest.raises(SubstitutionError, match='"env"'):
        substitute([configmap("c", env="${env}")], {}, strategy="Always", strict=True)


def test_values_from_variables_are_read_as_yaml_types() -> None:
    obj = deployment(replicas="${n}", paused="${flag}", ratio="${ratio}",
                     image="ghcr.io/org/app:${tag}", quoted="3", when="${date}",
                     ports="${ports}", also="${octal}", big="${float_int}")
    variables = {"n": "3", "flag": "y", "ratio": "0.5", "tag": "1.2.3", "date": "2024-01-01",
                 "ports": "22:22", "octal": "0755", "float_int": "1e3"}
    spec = substitute([obj], variables)[0]["spec"]
    assert spec == {"replicas": 3, "paused": True, "ratio": 0.5,
                    "image": "ghcr.io/org/app:1.2.3", "quoted": "3", "when": "2024-01-01",
                    "ports": "22:22", "also": 493, "big": 1000}
    assert isinstance(spec["big"], int)


@pytest.mark.parametrize(("word", "value"), [
    ("yes", True), ("on", True), ("True", True), ("Y", True),
    ("no", False), ("off", False), ("n", False), ("FALSE", False),
    ("null", None), ("~", None), ("", None), ("08", 8), ("1.0", 1), ("0x1F", 31),
    ("1_000", 1000), (".5", 0.5), ("1:30", "1:30"), ("yes please", "yes please"),
])
def test_plain_words_are_typed_as_go_yaml_v2_types_them(word: str, value: object) -> None:
    out = substitute([configmap("c", v="${w}")], {"w": word})
    assert out[0]["data"]["v"] == value
    assert type(out[0]["data"]["v"]) is type(value)


def test_a_value_can_inject_yaml_structure() -> None:
    out = substitute([deployment(args="${args}", labels="${labels}")],
                     {"args": "[--a, --b]", "labels": "{app: web}"})
    assert out[0]["spec"] == {"args": ["--a", "--b"], "labels": {"app": "web"}}


def test_multi_line_strings_take_values_verbatim() -> None:
    script = "#!/bin/sh\ncd ${dir}\necho \"${greeting}\" # ${greeting}\n"
    out = substitute([configmap("c", script=script)],
                     {"dir": "C:\\Program Files\\app", "greeting": "it's \"quoted\""})
    assert out[0]["data"]["script"] == \
        "#!/bin/sh\ncd C:\\Program Files\\app\necho \"it's \"quoted\"\" # it's \"quoted\"\n"


def test_an_escaped_expression_is_kept_literally() -> None:
    out = substitute([configmap("c", a="$${kept}", b="${x}")], {"x": "1"})
    assert out[0]["data"] == {"a": "${kept}", "b": 1}


def test_keys_are_substituted_too() -> None:
    out = substitute([{"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "c", "labels": {"${team}/owner": "x"}},
                       "data": {"${k}": "v"}}],
                     {"team": "example.com", "k": "1"})
    assert out[0]["metadata"]["labels"] == {"example.com/owner": "x"}
    assert out[0]["data"] == {"1": "v"}


def test_unset_variables_read_as_empty_outside_strict_mode() -> None:
    out = substitute([configmap("c", a="${nope}", b="x-${nope}-y")], {"other": "1"},
                     strict=False)
    assert out[0]["data"] == {"a": None, "b": "x--y"}


def test_unset_variable_fails_in_strict_mode_naming_the_object() -> None:
    with pytest.raises(SubstitutionError) as caught:
        substitute([configmap("settings", a="${nope}")], {"other": "x"}, strict=True)
    assert str(caught.value) == (
        "post build failed for 'ConfigMap.v1.[noGrp]/settings': envsubst error: "
        'variable substitution failed: variable not set (strict mode): "nope"')


def test_a_malformed_expression_fails_naming_the_object() -> None:
    with pytest.raises(SubstitutionError) as caught:
        substitute([deployment(image="app:${tag")], {"tag": "1"})
    assert str(caught.value) == (
        "post build failed for 'Deployment.v1.apps/web': envsubst error: "
        "variable substitution failed: missing closing brace")


def test_a_value_breaking_the_yaml_fails_naming_the_object() -> None:
    with pytest.raises(SubstitutionError) as caught:
        substitute([configmap("c", a="${v}")], {"v": "a: b: c"})
    assert str(caught.value).startswith(
        "post build failed for 'ConfigMap.v1.[noGrp]/c': envsubst error: YAMLToJSON: yaml: ")


def test_an_invalid_variable_name_fails_with_upstreams_message() -> None:
    with pytest.raises(SubstitutionError) as caught:
        substitute([configmap("c", a="x")], {"ok": "1", "not-ok": "2"})
    assert str(caught.value) == (
        "post build failed for 'ConfigMap.v1.[noGrp]/c': envsubst error: 'not-ok' var name "
        "is invalid, must match '^[_[:alpha:]][_[:alpha:][:digit:]]*$'")


@pytest.mark.parametrize("name", ["1abc", "é", "a.b", "", "a b"])
def test_variable_names_must_be_ascii_identifiers(name: str) -> None:
    with pytest.raises(SubstitutionError, match="var name is invalid"):
        substitute([configmap("c")], {name: "v"})


def test_variable_names_are_not_checked_when_nothing_is_substituted() -> None:
    disabled = configmap("c", a="${x}")
    disabled["metadata"]["labels"] = {"kustomize.toolkit.fluxcd.io/substitute": "disabled"}
    assert substitute([disabled], {"not-ok": "1"}) == [disabled]


@pytest.mark.parametrize("field", ["labels", "annotations"])
def test_objects_opted_out_are_not_substituted(field: str) -> None:
    skipped = configmap("skipped", a="${x}")
    skipped["metadata"][field] = {"kustomize.toolkit.fluxcd.io/substitute": "disabled"}
    out = substitute([skipped, configmap("done", a="${x}")], {"x": "value"})
    assert out[0] is skipped
    assert out[1]["data"] == {"a": "value"}


def test_the_opt_out_value_must_be_exactly_disabled_as_upstream() -> None:
    obj = configmap("c", a="${x}")
    obj["metadata"]["annotations"] = {"kustomize.toolkit.fluxcd.io/substitute": "Disabled"}
    assert substitute([obj], {"x": "value"})[0]["data"] == {"a": "value"}


def test_the_input_objects_are_never_modified() -> None:
    objects = [deployment(replicas="${n}", template={"x": ["${n}"]})]
    before = copy.deepcopy(objects)
    substitute(objects, {"n": "2"})
    assert objects == before


def test_key_order_is_kept() -> None:
    obj = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c"},
           "data": {"z": "${v}", "a": "1", "m": "2"}}
    out = substitute([obj], {"v": "x"})[0]
    assert list(out) == ["kind", "apiVersion", "metadata", "data"]
    assert list(out["data"]) == ["z", "a", "m"]


def test_unicode_survives_substitution() -> None:
    out = substitute([configmap("c", greeting="${hello} — ${name}", emoji="✓ ${e}")],
                     {"hello": "こんにちは", "name": "Zoë", "e": "🚀"})
    assert out[0]["data"] == {"greeting": "こんにちは — Zoë", "emoji": "✓ 🚀"}


def test_long_lines_are_not_folded_inside_expressions() -> None:
    long = "word " * 40 + "${var:=a default with spaces}" + " tail" * 40
    out = substitute([configmap("c", text=long)], {"other": "1"})
    assert out[0]["data"]["text"] == long.replace("${var:=a default with spaces}",
                                                  "a default with spaces")


def test_a_nan_or_infinite_number_cannot_pass_through_json() -> None:
    with pytest.raises(SubstitutionError, match="json: unsupported value: NaN"):
        substitute([configmap("c", v="${x}")], {"x": ".nan"})


# --- properties ------------------------------------------------------------------------

JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                | st.floats(allow_nan=False, allow_infinity=False)
                | st.text().filter(lambda t: "$" not in t))
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text().filter(lambda t: "$" not in t), inner, max_size=4),
    max_leaves=12)


def _as_go_json(value: object) -> object:
    if isinstance(value, dict):
        return {k: _as_go_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_go_json(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES)
def test_any_json_value_survives_the_yaml_round_trip(value: object) -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
           "payload": value, "marker": "${x}"}
    out = substitute([obj], {"x": "done"})[0]
    assert out["marker"] == "done"
    assert out["payload"] == _as_go_json(value)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcXYZ019._/-@+ ", min_size=1).map(lambda t: t.strip() or "a"))
def test_a_plain_value_inside_a_string_lands_unchanged(value: str) -> None:
    out = substitute([configmap("c", image="registry/app:${v}-suffix")], {"v": value})
    assert out[0]["data"]["image"] == f"registry/app:{value}-suffix"
