"""fluxd.selector: Kubernetes label selectors, with the API server's words for mistakes."""

from __future__ import annotations

from typing import Any

import pytest

from fluxd import selector
from fluxd.selector import SelectorError, from_label_selector, from_set, parse

_KEY_RULE = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must "
             "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  "
             "or '123-abc', regex used for validation is "
             "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
_VALUE_RULE = ("a valid label must be an empty string or consist of alphanumeric characters, "
               "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
               "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
               "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


@pytest.mark.parametrize(("text", "terms"), [
    ("", []),
    ("  ", []),
    ("a=b", [("a", "=", ("b",))]),
    ("a==b", [("a", "==", ("b",))]),
    ("a!=b", [("a", "!=", ("b",))]),
    ("a", [("a", "exists", ())]),
    ("!a", [("a", "!", ())]),
    ("a in (x, y)", [("a", "in", ("x", "y"))]),
    ("a notin (y,x,y)", [("a", "notin", ("x", "y"))]),
    ("a>3,b<12", [("a", "gt", ("3",)), ("b", "lt", ("12",))]),
    ("a=", [("a", "=", ("",))]),
    ("a in ()", [("a", "in", ("",))]),
    ("a in (,x)", [("a", "in", ("", "x"))]),
    ("a in (x,,y)", [("a", "in", ("", "x", "y"))]),
    ("value in (in,notin)", [("value", "in", ("in", "notin"))]),
    ("z=1, example.com/a = b ,\tm", [("example.com/a", "=", ("b",)), ("m", "exists", ()),
                                    ("z", "=", ("1",))]),
])
def test_the_whole_grammar_parses_into_requirements_sorted_by_key(
        text: str, terms: list[tuple[str, str, tuple[str, ...]]]) -> None:
    assert [(r.key, r.op, r.values) for r in parse(text)] == terms


@pytest.mark.parametrize(("text", "message"), [
    ("a in", "unable to parse requirement: found '' expected: '('"),
    ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
    ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
    ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
    ("a in b", "unable to parse requirement: found 'b' expected: '('"),
    ("a=(b)", "unable to parse requirement: found '(', expected: identifier"),
    ("!", "unable to parse requirement: found '', expected: identifier"),
    ("a,", "found '', expected: identifier after ','"),
    (",a", "found ',', expected: !, identifier, or 'end of string'"),
    ("a=b=c", "found '=', expected: ',' or 'end of string'"),
    ("!a=b", "found '=', expected: ',' or 'end of string'"),
    ("a>x", "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' "
            "operators, the value must be an integer"),
    ("-a=b", f'unable to parse requirement: <nil>: Invalid value: "-a": {_KEY_RULE}'),
    ("a=-b", f'unable to parse requirement: values[0][a]: Invalid value: "-b": {_VALUE_RULE}'),
    ("a=" + "v" * 64, "unable to parse requirement: values[0][a]: Invalid value: "
                      f'"{"v" * 64}": must be no more than 63 bytes'),
    ("Example.com/a", 'unable to parse requirement: <nil>: Invalid value: "Example.com/a": '
                      "prefix part a lowercase RFC 1123 subdomain must consist of lower case "
                      "alphanumeric characters, '-' or '.', and must start and end with an "
                      "alphanumeric character (e.g. 'example.com', regex used for validation "
                      r"is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
    ("/a", 'unable to parse requirement: <nil>: Invalid value: "/a": prefix part must be '
           "non-empty"),
])
def test_mistakes_are_worded_as_the_api_server_words_them(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse(text)
    assert str(caught.value) == message


def test_requirements_match_as_kubernetes_matches_them() -> None:
    labels = {"tier": "web", "env": "prod", "replicas": "3", "odd": "x"}
    cases = {
        "tier=web": True, "tier==db": False, "tier!=db": True, "tier!=web": False,
        "tier in (db,web)": True, "tier notin (web)": False, "env": True, "!env": False,
        "missing!=x": True, "missing notin (x)": True, "missing in (x)": False,
        "missing": False, "!missing": True, "missing=": False,
        "replicas>2": True, "replicas<3": False, "missing>0": False, "odd>0": False,
        "tier=web,env=prod": True, "tier=web,env=dev": False, "": True,
    }
    for text, expected in cases.items():
        assert parse(text).matches(labels) is expected, text
    assert parse("!a").matches(None)


def test_a_selector_prints_as_go_prints_it() -> None:
    assert str(parse("z=1,a notin (y,x),b,!c,d>4,e==f")) == \
        "a notin (x,y),b,!c,d>4,e==f,z=1"
    assert str(from_set({"b": "2", "a": "1"})) == "a=1,b=2"
    assert str(from_set({})) == ""
    assert repr(selector.Selector.nothing()) == "Selector(<nothing>)"


def test_label_selector_objects_become_selectors() -> None:
    sel = from_label_selector({
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]},
                             {"key": "legacy", "operator": "DoesNotExist"},
                             {"key": "env", "operator": "Exists"},
                             {"key": "zone", "operator": "NotIn", "values": ["x"]}]})
    assert str(sel) == "app=web,env,!legacy,tier in (a,b),zone notin (x)"
    assert sel.matches({"app": "web", "tier": "a", "env": ""})
    assert not sel.matches({"app": "web", "tier": "a", "env": "", "legacy": "y"})
    # no selector selects nothing; an empty one everything
    assert not from_label_selector(None).matches({})
    assert from_label_selector({}).matches({}) and from_label_selector({}).empty
    assert parse("") == from_label_selector({"matchLabels": {}})


@pytest.mark.parametrize(("obj", "message"), [
    ({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]},
     '"Gt" is not a valid label selector operator'),
    ({"matchExpressions": [{"key": "a"}]}, '"" is not a valid label selector operator'),
    ({"matchExpressions": [{"key": "a", "operator": "In"}]},
     "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be "
     "empty"),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
     "values: Invalid value: []string{\"x\"}: values set must be empty for exists and does "
     "not exist"),
    ({"matchLabels": {"-a": "-b"}},
     f'[key: Invalid value: "-a": {_KEY_RULE}, values[0][-a]: Invalid value: "-b": '
     f"{_VALUE_RULE}]"),
])
def test_invalid_label_selector_objects_are_refused(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        from_label_selector(obj)
    assert str(caught.value) == message


def test_a_checked_requirement_needs_a_known_operator() -> None:
    with pytest.raises(SelectorError, match="operator: Unsupported value"):
        selector.requirement("a", "~", ["b"])
