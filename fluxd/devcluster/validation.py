"""Pruning, defaulting and validation of custom objects against a CRD's structural schema.

A real API server treats a custom object in three steps before storing it, each driven by
the CRD version's ``openAPIV3Schema``; this module does the same, as pure functions that
never mutate their inputs:

- ``prune(obj, schema)`` drops fields the schema does not declare (unless
  ``x-kubernetes-preserve-unknown-fields`` or ``additionalProperties`` keeps them), keeps
  ``apiVersion``/``kind``/``metadata`` of the object and of embedded resources, and reduces
  such ``metadata`` to the ObjectMeta fields.
- ``apply_defaults(obj, schema)`` fills absent properties from their ``default``, outside
  ``metadata``. As on a real server, a ``null`` in a non-nullable field is replaced by the
  default, or dropped when there is none.
- ``validate(obj, schema)`` returns ``FieldError``s whose ``type``/``field``/``message`` are
  the ``reason``/``field``/``message`` of a 422 Status cause, worded like the real server's.
  ``x-kubernetes-validations`` (CEL) rules are NOT evaluated: they are skipped silently.
  Patterns are run with Python's ``re`` (``search``, like Go's unanchored match); a pattern
  Python cannot compile is skipped. Of the string formats only ``date-time`` and
  ``int-or-string`` are checked; the rest are accepted, as the server does for unknown ones.
- ``invalid_message(kind, name, errors)`` is the 422 Status message.

Call them in that order: prune, apply_defaults, validate.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fluxd.devcluster import celrules
from fluxd.gotext import format_float, go_float, quote
from fluxd.jsonvalue import clone

Schema = dict[str, Any]


@dataclass(frozen=True)
class FieldError:
    """One cause of a 422 Invalid; ``str()`` gives the server's ``field: message`` text."""

    type: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


#: The fields ObjectMeta has; anything else under ``metadata`` is dropped on decode.
OBJECT_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "labels", "annotations", "finalizers",
    "ownerReferences", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink",
})

_TYPE_META = ("apiVersion", "kind")


def _props(schema: Schema) -> dict[str, Schema]:
    props = schema.get("properties")
    return props if isinstance(props, dict) else {}


def _items(schema: Schema) -> Schema:
    items = schema.get("items")
    return items if isinstance(items, dict) else {}


def _is_resource(schema: Schema, root: bool) -> bool:
    return root or schema.get("x-kubernetes-embedded-resource") is True


# --------------------------------------------------------------------------- pruning


def prune(obj: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """A copy of ``obj`` without the fields ``schema`` does not declare."""
    out = clone(obj)
    _prune(out, schema, root=True)
    return out


def _reduce_meta(meta: Any) -> None:
    if isinstance(meta, dict):
        for key in [k for k in meta if k not in OBJECT_META_FIELDS]:
            del meta[key]


def _prune(value: Any, schema: Schema | None, *, root: bool = False) -> None:
    # A missing schema (no `items`, no `additionalProperties`) is the empty schema: it
    # declares no properties, so every field of an object under it is unknown.
    node: Schema = schema if schema is not None else {}
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if isinstance(value, dict):
        resource = _is_resource(node, root)
        props = _props(node)
        extra = node.get("additionalProperties")
        for key in list(value):
            if resource and key in _TYPE_META:
                continue
            if resource and key == "metadata":
                _reduce_meta(value[key])
                continue
            if key in props:
                _prune(value[key], props[key])
            elif isinstance(extra, dict):
                _prune(value[key], extra)
            elif not (preserve or extra is True):
                del value[key]
    elif isinstance(value, list):
        items = node.get("items")
        # Unknown content is kept whole under preserve-unknown-fields; declared item
        # schemas still prune their own unknown fields.
        if preserve and not isinstance(items, dict):
            return
        for item in value:
            _prune(item, items if isinstance(items, dict) else None)


# --------------------------------------------------------------------------- defaulting


def apply_defaults(obj: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """A copy of ``obj`` with the schema's ``default``s filled in where fields are absent."""
    out = clone(obj)
    _default(out, schema, root=True)
    return out


def _has_default(schema: Schema) -> bool:
    # `default: null` means "no default" on a real server.
    return schema.get("default") is not None


def _null_to_fill(value: Any, schema: Schema) -> bool:
    return value is None and schema.get("nullable") is not True


def _default(value: Any, schema: Schema, *, root: bool = False) -> None:
    if isinstance(value, dict):
        resource = _is_resource(schema, root)
        props = _props(schema)
        extra = schema.get("additionalProperties")
        for key, prop in props.items():
            if resource and key == "metadata":
                continue
            if _has_default(prop) and (key not in value or _null_to_fill(value[key], prop)):
                value[key] = clone(prop["default"])
        for key in list(value):
            if resource and key == "metadata":
                continue
            if key in props:
                sub = props[key]
            elif isinstance(extra, dict):
                sub = extra
            else:
                continue
            if _null_to_fill(value[key], sub):
                # The server prunes a non-nullable null it cannot default, so the field
                # reads as absent rather than failing validation as a null.
                if not _has_default(sub):
                    del value[key]
                    continue
                value[key] = clone(sub["default"])
            _default(value[key], sub)
    elif isinstance(value, list):
        items = _items(schema)
        for i, item in enumerate(value):
            if _null_to_fill(item, items) and _has_default(items):
                value[i] = clone(items["default"])
            _default(value[i], items)


# --------------------------------------------------------------------------- rendering
# The real server prints values with Go's fmt rules; these helpers reproduce the ones that
# show up in messages so the text matches byte for byte in the common cases.


def _go_json(value: Any) -> str:
    """Go's ``json.Marshal`` of a decoded JSON value (sorted keys, HTML-safe strings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        exponent = abs(value) < 1e-6 or abs(value) >= 1e21
        return format_float(value, exponent=exponent, min_exp_digits=1)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                        ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
            text = text.replace(ch, esc)
        return text
    if isinstance(value, list):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_go_json(str(k))}:{_go_json(value[k])}"
                              for k in sorted(value)) + "}"
    return quote(str(value))


def _render(value: Any) -> str:
    """A bad value as the server prints it after ``Invalid value:`` and friends."""
    if value is None:
        return '"null"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return quote(value)
    # Go prints composite values as Go syntax; JSON is what a reader of a JSON API expects.
    return _go_json(value)


def _bound(number: Any) -> str:
    """Schema bounds are float64 on the server, printed with ``%v``."""
    return go_float(float(number))


# --------------------------------------------------------------------------- JSON values


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    # The server accepts a float with an integral value (a JSON `3.0`) as an integer.
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


_TYPE_CHECKS = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": _is_integer,
    "number": _is_number,
}


def _numeric(schema: Schema, key: str) -> int | float | None:
    value = schema.get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _canonical(value: Any) -> str:
    """A text equal for JSON-equal values (1 == 1.0, key order ignored, true != 1)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 63:
        return str(int(value))
    if isinstance(value, list):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_canonical(value[k])}"
                              for k in sorted(value)) + "}"
    return _go_json(value)


@lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIME = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?(z|[+-][0-9]{2}:[0-9]{2})")


def _is_date_time(text: str) -> bool:
    """RFC 3339 date-time, as the server's ``date-time`` format checker reads it."""
    parts = text.lower().split("t")
    if len(parts) != 2 or not _DATE.fullmatch(parts[0]):
        return False
    try:
        datetime.date.fromisoformat(parts[0])
    except ValueError:
        return False
    match = _TIME.fullmatch(parts[1])
    return match is not None and match[1] <= "23" and match[2] <= "59" and match[3] <= "59"


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# --------------------------------------------------------------------------- validation


#: schema errors after which the server does not run the CEL rules (``hasBlockingErr``)
_BLOCKING = frozenset({"FieldValueNotSupported", "FieldValueRequired", "FieldValueTooLong",
                       "FieldValueTooMany", "FieldValueTypeInvalid"})
_RULES_SKIPPED = ("some validation rules were not checked because the object was invalid; "
                  "correct the existing errors to complete validation")


def validate(obj: dict[str, Any], schema: Schema,
             old: dict[str, Any] | None = None) -> list[FieldError]:
    """Every way ``obj`` (an update of ``old``, or a create) breaks ``schema``, as the
    server's 422 causes, in a stable order.

    After a type mismatch nothing else is checked for that value. List-type (map/set)
    duplicates come after all schema errors, as on a real server. ``anyOf``/``oneOf``/
    ``not`` report one composite error; ``allOf`` reports its branches' errors plus the
    composite. Then the ``x-kubernetes-validations`` (CEL) rules (``celrules``), unless a
    blocking schema error came first: that adds the server's fieldless "some validation
    rules were not checked" cause instead.
    """
    checker = _Validator()
    checker.node(obj, schema, "", root=True)
    errors = checker.errors + checker.list_errors
    if celrules.has_rules(schema):
        if any(e.type in _BLOCKING for e in errors):
            errors.append(FieldError("FieldValueInvalid", "<nil>",
                                     f"Invalid value: {_render(None)}: {_RULES_SKIPPED}"))
        else:
            errors += [FieldError(*cause) for cause in celrules.check(obj, schema, old,
                                                                      _render)]
    return errors


class _Validator:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        # Kept apart so they can be reported after the schema errors, like the server.
        self.list_errors: list[FieldError] = []

    # ---- error constructors, one per Kubernetes error type

    def required(self, path: str, detail: str = "") -> None:
        message = "Required value" + (f": {detail}" if detail else "")
        self.errors.append(FieldError("FieldValueRequired", path, message))

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self.errors.append(
            FieldError("FieldValueInvalid", path, f"Invalid value: {_render(value)}: {detail}"))

    def type_invalid(self, path: str, shown: str, expected: str) -> None:
        # The server shows the *type name* of the bad value (or the bad string, for a
        # format), both as the value and at the end of the detail.
        quoted = quote(shown)
        self.errors.append(FieldError(
            "FieldValueTypeInvalid", path,
            f"Invalid value: {quoted}: {path} in body must be of type {expected}: {quoted}"))

    def too_many(self, path: str, count: int, limit: int) -> None:
        noun = "item" if limit == 1 else "items"
        self.errors.append(FieldError(
            "FieldValueTooMany", path, f"Too many: {count}: must have at most {limit} {noun}"))

    # ---- walking

    def node(self, value: Any, schema: Schema, path: str, *, root: bool = False) -> None:
        expected = self.expected_type(schema)
        if value is None:
            if schema.get("nullable") is not True and expected is not None:
                self.type_invalid(path, "null", expected)
            return
        if expected is not None and not self.has_type(value, schema):
            self.type_invalid(path, _type_name(value), expected)
            return
        self.combinators(value, schema, path)
        if isinstance(value, str):
            self.string(value, schema, path)
        if _is_number(value):
            self.number(value, schema, path)
        if isinstance(value, list):
            self.array(value, schema, path)
        self.enum(value, schema, path)
        if isinstance(value, dict):
            self.object(value, schema, path, root=root)

    @staticmethod
    def expected_type(schema: Schema) -> str | None:
        if (schema.get("x-kubernetes-int-or-string") is True
                or (not schema.get("type") and schema.get("format") == "int-or-string")):
            return "integer,string"
        kind = schema.get("type")
        return kind if isinstance(kind, str) and kind in _TYPE_CHECKS else None

    @staticmethod
    def has_type(value: Any, schema: Schema) -> bool:
        expected = _Validator.expected_type(schema)
        if expected == "integer,string":
            return isinstance(value, str) or _is_integer(value)
        return expected is None or bool(_TYPE_CHECKS[expected](value))

    def combinators(self, value: Any, schema: Schema, path: str) -> None:
        # Branches only restrict values (structural schemas forbid types, defaults and
        # list types in them), so a branch is "valid" when it yields no errors.
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and all_of:
            failed = 0
            for branch in all_of:
                errors = _branch_errors(value, branch, path)
                failed += bool(errors)
                self.errors.extend(errors)
            if failed:
                none = ". None validated" if failed == len(all_of) else ""
                self.invalid(path, value,
                             f"{quote(path)} must validate all the schemas (allOf){none}")
        any_of = schema.get("anyOf")
        if isinstance(any_of, list) and any_of and all(
                _branch_errors(value, branch, path) for branch in any_of):
            self.invalid(path, value, f"{quote(path)} must validate at least one schema (anyOf)")
        one_of = schema.get("oneOf")
        if isinstance(one_of, list) and one_of:
            valid = sum(not _branch_errors(value, branch, path) for branch in one_of)
            if valid != 1:
                found = "Found none valid" if valid == 0 else f"Found {valid} valid alternatives"
                self.invalid(path, value, f"{quote(path)} must validate one and only one "
                                          f"schema (oneOf). {found}")
        not_ = schema.get("not")
        if isinstance(not_, dict) and not _branch_errors(value, not_, path):
            self.invalid(path, value, f"{quote(path)} must not validate the schema (not)")

    def string(self, value: str, schema: Schema, path: str) -> None:
        length = len(value)  # characters (code points), as the server counts runes
        max_length = schema.get("maxLength")
        if isinstance(max_length, int) and length > max_length:
            unit = "byte" if max_length == 1 else "bytes"
            self.errors.append(FieldError(
                "FieldValueTooLong", path, f"Too long: may not be more than {max_length} {unit}"))
        min_length = schema.get("minLength")
        if isinstance(min_length, int) and length < min_length:
            self.invalid(path, value, f"{path} in body should be at least {min_length} chars long")
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            compiled = _compile(pattern)
            if compiled is not None and not compiled.search(value):
                self.invalid(path, value, f"{path} in body should match '{pattern}'")
        if schema.get("format") == "date-time" and not _is_date_time(value):
            self.type_invalid(path, value, "date-time")

    def number(self, value: float, schema: Schema, path: str) -> None:
        factor = _numeric(schema, "multipleOf")
        if factor is not None and factor > 0:
            if isinstance(value, int) and isinstance(factor, int):
                multiple = value % factor == 0
            else:
                multiple = float(value / factor).is_integer()
            if not multiple:
                detail = f"{path} in body should be a multiple of {_bound(factor)}"
                self.invalid(path, value, detail)
        maximum = _numeric(schema, "maximum")
        if maximum is not None:
            exclusive = schema.get("exclusiveMaximum") is True
            if value > maximum or (exclusive and value == maximum):
                relation = "less than" if exclusive else "less than or equal to"
                self.invalid(path, value, f"{path} in body should be {relation} {_bound(maximum)}")
        minimum = _numeric(schema, "minimum")
        if minimum is not None:
            exclusive = schema.get("exclusiveMinimum") is True
            if value < minimum or (exclusive and value == minimum):
                relation = "greater than" if exclusive else "greater than or equal to"
                self.invalid(path, value, f"{path} in body should be {relation} {_bound(minimum)}")

    def enum(self, value: Any, schema: Schema, path: str) -> None:
        allowed = schema.get("enum")
        if not isinstance(allowed, list) or not allowed:
            return
        key = _canonical(value)
        if any(_canonical(option) == key for option in allowed):
            return
        # Non-string options are listed as their JSON text, every option quoted.
        names = ", ".join(quote(o if isinstance(o, str) else _go_json(o)) for o in allowed)
        self.errors.append(FieldError(
            "FieldValueNotSupported", path,
            f"Unsupported value: {_render(value)}: supported values: {names}"))

    def array(self, value: list[Any], schema: Schema, path: str) -> None:
        items = _items(schema)
        for i, item in enumerate(value):
            self.node(item, items, f"{path}[{i}]")
        min_items = schema.get("minItems")
        if isinstance(min_items, int) and len(value) < min_items:
            self.invalid(path, len(value), f"{path} in body should have at least {min_items} items")
        max_items = schema.get("maxItems")
        if isinstance(max_items, int) and len(value) > max_items:
            self.too_many(path, len(value), max_items)
        unique = schema.get("uniqueItems") is True
        if unique and len({_canonical(v) for v in value}) != len(value):
            self.invalid(path, value, f"{path} in body shouldn't contain duplicates")
        self.list_type(value, schema, path)

    def list_type(self, value: list[Any], schema: Schema, path: str) -> None:
        kind = schema.get("x-kubernetes-list-type")
        seen: set[str] = set()
        if kind == "set":
            for i, item in enumerate(value):
                key = _canonical(item)
                if key in seen:
                    self.list_errors.append(FieldError(
                        "FieldValueDuplicate", f"{path}[{i}]", f"Duplicate value: {_render(item)}"))
                seen.add(key)
        elif kind == "map":
            keys = schema.get("x-kubernetes-list-map-keys")
            if not isinstance(keys, list) or not keys:
                return
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    continue  # reported as a type error of the item
                key_fields = {k: item[k] for k in keys if k in item}
                key = _canonical(key_fields)
                if key in seen:
                    self.list_errors.append(FieldError(
                        "FieldValueDuplicate", f"{path}[{i}]",
                        f"Duplicate value: {_go_json(key_fields)}"))
                seen.add(key)

    def object(self, value: dict[str, Any], schema: Schema, path: str, *, root: bool) -> None:
        count = len(value)
        min_props = schema.get("minProperties")
        if isinstance(min_props, int) and count < min_props:
            self.invalid(path, count, f"{path} in body should have at least {min_props} properties")
        max_props = schema.get("maxProperties")
        if isinstance(max_props, int) and count > max_props:
            self.too_many(path, count, max_props)
        required = schema.get("required")
        if isinstance(required, list):
            for name in required:
                if isinstance(name, str) and name not in value:
                    self.required(_child(path, name))
        resource = _is_resource(schema, root)
        if resource and not root:
            self.embedded_type_meta(value, path)
        props = _props(schema)
        extra = schema.get("additionalProperties")
        for key, child in value.items():
            if resource and key == "metadata":
                self.metadata(child, props.get("metadata"), _child(path, key))
            elif key in props:
                self.node(child, props[key], _child(path, key))
            elif isinstance(extra, dict):
                self.node(child, extra, f"{path}[{key}]")

    def embedded_type_meta(self, value: dict[str, Any], path: str) -> None:
        """apiVersion and kind an x-kubernetes-embedded-resource must carry."""
        for name in _TYPE_META:
            field = _child(path, name)
            if name not in value:
                self.required(field, "must not be empty")
                continue
            given = value[name]
            if not isinstance(given, str):
                self.invalid(field, given, "must be a string")
            elif not given:
                self.invalid(field, given, "must not be empty")
            elif name == "apiVersion" and given.count("/") > 1:
                self.invalid(field, given, f"unexpected GroupVersion string: {given}")

    def metadata(self, meta: Any, schema: Any, path: str) -> None:
        """Only ``name``/``generateName`` restrictions of a schema apply to ObjectMeta."""
        if not isinstance(meta, dict):
            self.type_invalid(path, _type_name(meta), "object")
            return
        props = _props(schema) if isinstance(schema, dict) else {}
        for name in ("name", "generateName"):
            if name in meta and isinstance(props.get(name), dict):
                self.node(meta[name], props[name], _child(path, name))


def _branch_errors(value: Any, branch: Any, path: str) -> list[FieldError]:
    if not isinstance(branch, dict):
        return []
    checker = _Validator()
    checker.node(value, branch, path)
    return checker.errors + checker.list_errors


# --------------------------------------------------------------------------- messages


def invalid_message(kind: str, name: str, errors: list[FieldError]) -> str:
    """The 422 Status message: ``<Kind>.<group> "name" is invalid: ...``.

    ``kind`` is already qualified (``GitRepository.source.toolkit.fluxcd.io``). Repeated
    texts are reported once; several are bracketed and comma-separated, one is bare.
    """
    texts: list[str] = []
    for error in errors:
        text = str(error)
        if text not in texts:
            texts.append(text)
    if not texts:
        body = "<nil>"  # what the server prints for an empty error list
    elif len(texts) == 1:
        body = texts[0]
    else:
        body = "[" + ", ".join(texts) + "]"
    return f"{kind} {quote(name)} is invalid: {body}"
