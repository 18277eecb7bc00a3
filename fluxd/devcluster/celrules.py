"""``x-kubernetes-validations``: the CEL rules of a CRD schema, checked as the API server
checks them after the structural schema (``apiextensions-apiserver`` ``pkg/apiserver/
schema/cel``).

Each rule is evaluated with ``self`` bound to the value at its schema node: through
``properties``, ``additionalProperties`` and array ``items`` (path ``spec.list[2]``); a
rule's ``oldSelf`` (read from the compiled expression, not the text) makes it a
transition rule, which runs only on update, when the old object has a non-null value at
the same place — reached through properties and map keys (the server also correlates the
items of ``x-kubernetes-list-type: map`` lists; here transition rules below arrays are
not evaluated). As on a current server, a failing rule whose value did not change in an
update is not an error (validation ratcheting, with Go's strict equality: ``true`` is not
``1``), unless it reads ``oldSelf``; a list item counts as unchanged when its list is.

The error is the server's: ``Invalid value`` with the rule's ``message`` (or
``messageExpression``, or ``failed rule: <rule>``), at the node's path plus the rule's
``fieldPath`` (normalised: ``.name`` for a property, ``[key]`` for a map key);
``reason`` turns it into ``Forbidden``, ``Required value`` or ``Duplicate value``.
Objects and arrays show no value (``Invalid value: <message>``), scalars show theirs. An
evaluation error reads ``<error> evaluating rule: <rule>`` (cel-go's wording for a type
mismatch). Not done: rules inside ``allOf``/``anyOf`` branches, the cost budget.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from fluxd.cel import CELError, Expression

__all__ = ["check", "has_rules"]

Schema = dict[str, Any]
#: (cause type, field path, message)
Cause = tuple[str, str, str]

_ABSENT = object()


def has_rules(schema: Schema) -> bool:
    """Whether any node of ``schema`` carries ``x-kubernetes-validations``."""
    # schemas are the registry's parsed CRD documents, the same dict for every write of
    # a kind: walk each once (the entry holds the schema, so its id is not reused)
    found = _seen.get(id(schema))
    if found is None or found[0] is not schema:
        found = (schema, any(True for _ in _rule_nodes(schema)))
        if len(_seen) > 65_536:
            _seen.clear()
        _seen[id(schema)] = found
    return found[1]


_seen: dict[int, tuple[Schema, bool]] = {}


def _rule_nodes(schema: Any) -> Iterator[Schema]:
    if not isinstance(schema, dict):
        return
    if schema.get("x-kubernetes-validations"):
        yield schema
    for child in (schema.get("properties") or {}).values():
        yield from _rule_nodes(child)
    for key in ("items", "additionalProperties"):
        yield from _rule_nodes(schema.get(key))


@functools.lru_cache(maxsize=1024)
def _compile(text: str) -> Expression:
    return Expression.compile(text)


def check(obj: dict[str, Any], schema: Schema, old: dict[str, Any] | None,
          render: Callable[[Any], str]) -> list[Cause]:
    """The causes ``obj`` (an update of ``old``, or a create) fails by the rules of
    ``schema``; ``render`` shows a scalar value as the server's messages do."""
    causes: list[Cause] = []
    before = old if old is not None else _ABSENT
    _walk(obj, before, _same(before, obj), schema, "", causes, render)
    return causes


def _same(old: Any, new: Any) -> bool:
    """Deep equality as Go's reflect.DeepEqual has it for JSON values: ``true`` is not
    ``1``, ``1`` is not ``1.0``."""
    if old is _ABSENT:
        return False
    return json.dumps(old, sort_keys=True) == json.dumps(new, sort_keys=True)


def _walk(value: Any, old: Any, unchanged: bool, schema: Any, path: str,
          causes: list[Cause], render: Callable[[Any], str]) -> None:
    """``old`` is the correlated old value (or absent); ``unchanged`` says the value, or
    the nearest correlated ancestor, is what it was (what ratcheting looks at)."""
    if not isinstance(schema, dict) or value is None or not has_rules(schema):
        return  # nothing below this node has a rule: the walk stays on the rules' paths
    rules = schema.get("x-kubernetes-validations")
    if rules:
        _rules(value, old, unchanged, schema, rules, path, causes, render)
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, child in value.items():
            sub = properties.get(key)
            child_path = f"{path}.{key}" if path else key
            if sub is None and isinstance(extra, dict):
                sub, child_path = extra, f"{path}[{key}]"
            if sub is not None:
                child_old = old.get(key) if isinstance(old, dict) else None
                child_old = _ABSENT if child_old is None else child_old
                _walk(child, child_old, unchanged or _same(child_old, child), sub,
                      child_path, causes, render)
    elif isinstance(value, list):
        items = schema.get("items")
        for i, item in enumerate(value):
            # items are not correlated (the server does so for listType=map only): an
            # item counts as unchanged when its whole list is
            _walk(item, _ABSENT, unchanged, items, f"{path}[{i}]", causes, render)


def _rules(value: Any, old: Any, unchanged: bool, schema: Schema, rules: list[Any],
           path: str, causes: list[Cause], render: Callable[[Any], str]) -> None:
    node_type = str(schema.get("type") or "")
    for rule in rules:
        if not isinstance(rule, dict) or not rule.get("rule"):
            continue
        text = str(rule["rule"])
        shown = text.strip() if not rule.get("message") else str(rule["message"]).strip()
        try:
            expression = _compile(text)
        except CELError as err:
            causes.append(("FieldValueInvalid", path or "<nil>",
                           f"Invalid value: {render(node_type)}: rule compile error: "
                           f"{_engine_error(err)}"))
            continue
        transition = "oldSelf" in expression.names
        if transition and old is _ABSENT:
            continue
        variables = {"self": value, **({"oldSelf": old} if transition else {})}
        try:
            passed = expression.evaluate(variables)
        except CELError as err:
            detail = _engine_error(err)
            if detail.lower().startswith("no such overload"):
                detail = ("'no such overload': call arguments did not match a supported "
                          f"operator, function or macro signature for rule: {shown}")
            else:
                detail = f"{detail} evaluating rule: {shown}"
            causes.append(("FieldValueInvalid", path or "<nil>",
                           f"Invalid value: {render(node_type)}: {detail}"))
            continue
        if passed is True:
            continue
        if not transition and unchanged:
            continue  # ratcheting: an unchanged value keeps passing
        causes.append(_failure(value, node_type, schema, path, rule, variables, render))


def _engine_error(err: CELError) -> str:
    text = str(err)
    marker = "': "
    return text.split(marker, 1)[1] if marker in text else text


def _field_path(path: str, schema: Schema, field_path: str) -> str:
    """The node's path extended by a rule's ``fieldPath`` (``.a.b``, ``['a.b']``), as the
    server normalises it: a property is ``.name``, a map key ``[key]``."""
    tokens = re.findall(r"\.([^.\[\]]+)|\['((?:[^'\\]|\\.)*)'\]", field_path)
    node: Any = schema
    for plain, quoted in tokens:
        name = plain or re.sub(r"\\(.)", r"\1", quoted)
        if isinstance(node, dict) and name in (node.get("properties") or {}):
            path = f"{path}.{name}" if path else name
            node = node["properties"][name]
        elif isinstance(node, dict) and isinstance(node.get("additionalProperties"), dict):
            path = f"{path}[{name}]"
            node = node["additionalProperties"]
        else:
            path = f"{path}.{name}" if path else name
            node = None
    return path


def _failure(value: Any, node_type: str, schema: Schema, path: str, rule: Schema,
             variables: dict[str, Any], render: Callable[[Any], str]) -> Cause:
    field_path = str(rule.get("fieldPath") or "")
    where = _field_path(path, schema, field_path) if field_path else path
    where = where or "<nil>"
    detail = _message(rule, variables)
    reason = rule.get("reason")
    if reason == "FieldValueForbidden":
        return ("FieldValueForbidden", where, f"Forbidden: {detail}")
    if reason == "FieldValueRequired":
        return ("FieldValueRequired", where, f"Required value: {detail}")
    complex_value = isinstance(value, dict | list) or node_type in ("object", "array")
    shown = "" if complex_value else f"{render(value)}: "
    if reason == "FieldValueDuplicate":
        return ("FieldValueDuplicate", where, f"Duplicate value: {shown.rstrip(': ')}"
                if shown else "Duplicate value")
    return ("FieldValueInvalid", where, f"Invalid value: {shown}{detail}")


def _message(rule: Schema, variables: dict[str, Any]) -> str:
    expression = rule.get("messageExpression")
    if expression:
        try:
            text = _compile(str(expression)).evaluate(variables)
        except CELError:
            text = None
        if isinstance(text, str) and text.strip() and "\n" not in text.strip():
            return text.strip()
    if rule.get("message"):
        return str(rule["message"]).strip()
    return f"failed rule: {str(rule['rule']).strip()}"
