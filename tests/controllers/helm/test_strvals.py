"""Helm's --set language: fluxd's parser against the real helm binary and Helm's rules."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from fluxd.controllers.helm.strvals import (
    MAX_INDEX,
    MAX_LIST_ITEMS,
    MAX_NESTED_NAME_LEVEL,
    StrvalsError,
    escape,
    parse_into,
    parse_literal_into,
)
from tests.conftest import tool


def parsed(expression: str, into: dict[str, Any] | None = None, *,
           strings: bool = False) -> dict[str, Any]:
    values = {} if into is None else into
    parse_into(expression, values, strings=strings)
    return values


def test_dotted_keys_make_nested_maps_and_commas_separate_pairs() -> None:
    assert parsed("a.b.c=x,a.d=y,e=z") == {"a": {"b": {"c": "x"}, "d": "y"}, "e": "z"}


def test_values_are_typed_as_helm_types_them() -> None:
    assert parsed("a=true,b=FALSE,c=Null,d=0,e=42,f=-7,g=+5,h=007,i=1.5,j=9223372036854775808,"
                  "k=-007,l=") == {
        "a": True, "b": False, "c": None, "d": 0, "e": 42, "f": -7, "g": 5, "h": "007",
        "i": "1.5", "j": "9223372036854775808", "k": -7, "l": ""}


def test_set_string_keeps_every_value_a_string_but_still_reads_lists() -> None:
    assert parsed("a=1,b=true,c={1,x}", strings=True) == {"a": "1", "b": "true",
                                                         "c": ["1", "x"]}


def test_list_indexes_grow_lists_with_nulls_and_nest() -> None:
    assert parsed("a[2]=x,b[1][0]=y,c[0].d=1,c[0].e=2") == {
        "a": [None, None, "x"], "b": [None, ["y"]], "c": [{"d": 1, "e": 2}]}


def test_a_backslash_escapes_dots_commas_and_equals() -> None:
    assert parsed(r"node\.kubernetes\.io/role=a\,b\=c") == {"node.kubernetes.io/role": "a,b=c"}


def test_braces_make_a_list_and_the_next_pair_may_follow_without_a_comma() -> None:
    assert parsed("a={x,1,true},b={}c=3") == {"a": ["x", 1, True], "b": [""], "c": 3}


def test_an_index_within_the_list_writes_into_the_same_list_and_growth_copies_it() -> None:
    shared = ["a", "b"]
    values = {"x": shared}
    parse_into("x[1]=B", values)
    assert values["x"] is shared and shared == ["a", "B"]
    parse_into("x[3]=D", values)
    assert values["x"] is not shared and values["x"] == ["a", "B", None, "D"]


def test_an_existing_nested_map_is_written_in_place() -> None:
    inner = {"keep": 1}
    values = {"a": inner}
    parse_into("a.b=2", values)
    assert values["a"] is inner and inner == {"keep": 1, "b": 2}


def test_set_literal_keeps_the_rest_of_the_text_verbatim() -> None:
    values: dict[str, Any] = {}
    parse_literal_into("a.b[1]=x,y={z}\\n", values)
    assert values == {"a": {"b": [None, "x,y={z}\\n"]}}


def test_an_escaped_value_reads_back_verbatim() -> None:
    text = r"a,b={c}[d]=e.f\g"
    assert parsed(f"k={escape(text)}", strings=True) == {"k": text}


@pytest.mark.parametrize(("expression", "message"), [
    ("a", 'key "a" has no value'),
    ("a,b=1", 'key "a" has no value (cannot end with ,)'),
    ("a[x]=1", 'error parsing index: strconv.Atoi: parsing "x": invalid syntax'),
    ("a[1", "error parsing index: EOF"),
    ("a[-1]=1", "negative -1 index not allowed"),
    (f"a[{MAX_INDEX + 1}]=1",
     f"index of {MAX_INDEX + 1} is greater than maximum supported index of {MAX_INDEX}"),
    ("a[0]x=1", "unexpected data at end of array index: ['x']"),
    ("a={1,2", "list must terminate with '}'"),
    ("a=1,a.b=2", "unable to parse key: interface conversion: interface {} is int64, "
                  "not map[string]interface {}"),
    ("a=x,a[0]=1", "unable to parse key: interface conversion: interface {} is string, "
                   "not []interface {}"),
    (".".join(f"n{i}" for i in range(MAX_NESTED_NAME_LEVEL + 2)) + "=v",
     "value name nested level is greater than maximum supported nested level of 30"),
])
def test_helm_refuses_malformed_expressions_with_its_own_words(expression: str,
                                                                message: str) -> None:
    with pytest.raises(StrvalsError) as caught:
        parse_into(expression, {})
    assert str(caught.value) == message


def test_hostile_index_sequences_stop_at_a_bound_instead_of_eating_memory() -> None:
    many = ",".join(f"a{i}[{MAX_INDEX}]=1" for i in range(MAX_LIST_ITEMS // MAX_INDEX + 1))
    with pytest.raises(StrvalsError, match="allocate more than"):
        parse_into(many, {})
    with pytest.raises(StrvalsError, match="nested deeper"):
        parse_into("a" + "[0]" * 100_000 + "=1", {})


def test_a_long_expression_is_read_in_linear_time() -> None:
    expression = ",".join(f"k{i}=v{i}" for i in range(100_000)) + ",s=" + "x\\," * 100_000
    values = parsed(expression)
    assert len(values) == 100_001 and values["s"] == "x," * 100_000


# ------------------------------------------------------------------ against the real helm

SAME_AS_HELM = [
    ("--set", "a=1,b=true,c=TRUE,d=null,e=0,f=007,g=-007,h=+5,i=9223372036854775808,j=1.5"),
    ("--set", "a.b.c=x,a.d=y,l[2]=x,m[1][2]=y,n[0].b=1,n[0].c=2"),
    ("--set", r"a\.b=c\,d,e={x,1,true},f={},g="),
    ("--set", "a={1,2}b=3"),
    ("--set", "a[0]"),
    ("--set", "b=1,a."),
    ("--set", "a=b=c,x=y\\"),
    ("--set-string", "a=1,b=true,c={1,2}"),
    ("--set-literal", "a.b=1,2,{x}\\y"),
    ("--set-literal", "a[1]=x,y"),
]


@pytest.fixture(scope="module")
def echo_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chart = tmp_path_factory.mktemp("echo")
    (chart / "templates").mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: echo\nversion: 0.1.0\n")
    (chart / "templates" / "values.yaml").write_text(
        "values: {{ toJson .Values | quote }}\n")
    return chart


@pytest.mark.slow
@pytest.mark.parametrize(("flag", "expression"), SAME_AS_HELM)
def test_expressions_parse_as_the_real_helm_parses_them(echo_chart: Path, flag: str,
                                                        expression: str) -> None:
    done = subprocess.run([tool("helm"), "template", str(echo_chart), flag, expression],
                          capture_output=True, text=True, timeout=60, check=True)
    helm = json.loads(yaml.safe_load(done.stdout)["values"])
    ours: dict[str, Any] = {}
    if flag == "--set-literal":
        parse_literal_into(expression, ours)
    else:
        parse_into(expression, ours, strings=flag == "--set-string")
    assert ours == helm
