"""Kubernetes label selectors, read and matched as ``k8s.io/apimachinery`` does.

Three ways in, one ``Selector`` out:

- ``parse(text)`` is ``labels.Parse``: comma-separated requirements, each ``key``
  (exists), ``!key`` (does not exist), ``key=value``, ``key==value``, ``key!=value``,
  ``key in (a,b)``, ``key notin (a,b)``, ``key>3``, ``key<3`` (integers); blanks around
  tokens are ignored, ``in``/``notin`` are values where a value is expected, and ``()``
  or an empty value is the empty string. Keys must be label keys (an optional DNS
  subdomain prefix and ``/``, then at most 63 alphanumerics, ``-``, ``_`` or ``.``) and
  values label values. Anything else raises ``SelectorError`` worded as the API server's
  answer (``unable to parse requirement: found '', expected: '('``), character for
  character. The empty text selects everything.
- ``from_label_selector(obj)`` is ``metav1.LabelSelectorAsSelector`` over the JSON of a
  ``LabelSelector``: ``matchLabels`` are ``=`` requirements, ``matchExpressions`` take
  ``In``, ``NotIn``, ``Exists`` and ``DoesNotExist`` (another operator, a malformed entry,
  an invalid key or value: ``SelectorError``); None selects nothing, ``{}`` everything.
- ``from_set(labels)`` is ``SelectorFromSet``: ``=`` per label, not validated (what a
  client sends for ``matchLabels``; the server judges it).

``Selector.matches(labels)`` is true when every requirement holds: ``!=`` and ``notin``
hold for a missing key, ``>``/``<`` only for a present integer value. ``str(selector)``
is Go's ``String()``: requirements by key, the values of ``in``/``notin`` sorted — what
``kubectl`` shows and what goes into a ``labelSelector`` query. Iterating a selector
gives its ``Requirement`` s (``key``, ``op`` — Go's ``selection.Operator`` names —,
``values``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fluxd.gotext import quote

__all__ = [
    "DOES_NOT_EXIST", "DOUBLE_EQUALS", "EQUALS", "EXISTS", "GREATER_THAN", "IN", "LESS_THAN",
    "NOT_EQUALS", "NOT_IN", "Requirement", "Selector", "SelectorError", "from_label_selector",
    "from_set", "label_key_errors", "label_value_errors", "parse", "requirement",
]

# Go's selection.Operator values
DOES_NOT_EXIST = "!"
EQUALS = "="
DOUBLE_EQUALS = "=="
IN = "in"
NOT_EQUALS = "!="
NOT_IN = "notin"
EXISTS = "exists"
GREATER_THAN = "gt"
LESS_THAN = "lt"

_EXPRESSION_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS,
                         "DoesNotExist": DOES_NOT_EXIST}
_SHOWN = {EQUALS: "=", DOUBLE_EQUALS: "==", NOT_EQUALS: "!=", IN: " in ", NOT_IN: " notin ",
          GREATER_THAN: ">", LESS_THAN: "<"}


class SelectorError(ValueError):
    """A selector the API server would refuse; the message is the server's."""


# --------------------------------------------------------------------------- validation

_NAME_FORMAT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_NAME = re.compile(_NAME_FORMAT)
_NAME_MESSAGE = ("must consist of alphanumeric characters, '-', '_' or '.', and must start "
                 "and end with an alphanumeric character")
_VALUE_FORMAT = f"({_NAME_FORMAT})?"
_VALUE = re.compile(_VALUE_FORMAT)
_VALUE_MESSAGE = ("a valid label must be an empty string or consist of alphanumeric "
                  "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                  "character")
_DNS_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_FORMAT = _DNS_LABEL + "(\\." + _DNS_LABEL + ")*"
_SUBDOMAIN = re.compile(_SUBDOMAIN_FORMAT)
_SUBDOMAIN_MESSAGE = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                      "characters, '-' or '.', and must start and end with an alphanumeric "
                      "character")
_MAX_NAME = 63
_MAX_SUBDOMAIN = 253
_INT64 = re.compile(r"[+-]?[0-9]+")


def _regex_error(message: str, pattern: str, *examples: str) -> str:
    """Go's ``RegexError``, stray blanks included."""
    shown = "".join(f"{' or ' if i else ''}'{e}', " for i, e in enumerate(examples))
    return f"{message} (e.g. {shown}regex used for validation is '{pattern}')"


def _too_long(limit: int) -> str:
    return f"must be no more than {limit} bytes"


def label_key_errors(key: str) -> list[str]:
    """What is wrong with ``key`` as a label key (Go's ``IsLabelKey``); empty when fine."""
    errors: list[str] = []
    parts = key.split("/")
    if len(parts) > 2:
        return ["a valid label key " + _regex_error(_NAME_MESSAGE, _NAME_FORMAT, "MyName",
                                                    "my.name", "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            if len(prefix.encode()) > _MAX_SUBDOMAIN:
                errors.append("prefix part " + _too_long(_MAX_SUBDOMAIN))
            if not _SUBDOMAIN.fullmatch(prefix):
                errors.append("prefix part " + _regex_error(_SUBDOMAIN_MESSAGE,
                                                            _SUBDOMAIN_FORMAT, "example.com"))
    if not name:
        errors.append("name part must be non-empty")
    elif len(name.encode()) > _MAX_NAME:
        errors.append("name part " + _too_long(_MAX_NAME))
    if not _NAME.fullmatch(name):
        errors.append("name part " + _regex_error(_NAME_MESSAGE, _NAME_FORMAT, "MyName",
                                                  "my.name", "123-abc"))
    return errors


def label_value_errors(value: str) -> list[str]:
    """What is wrong with ``value`` as a label value (Go's ``IsLabelValue``)."""
    errors: list[str] = []
    if len(value.encode()) > _MAX_NAME:
        errors.append(_too_long(_MAX_NAME))
    if not _VALUE.fullmatch(value):
        errors.append(_regex_error(_VALUE_MESSAGE, _VALUE_FORMAT, "MyValue", "my_value",
                                   "12345"))
    return errors


def _int64(text: str) -> int | None:
    """Go's ``strconv.ParseInt(text, 10, 64)``, or None where it fails."""
    if not _INT64.fullmatch(text):
        return None
    number = int(text)
    return number if -(1 << 63) <= number < (1 << 63) else None


def _invalid(field: str, shown: str, detail: str) -> str:
    """A ``field.Invalid`` error as Go prints it."""
    return f"{field}: Invalid value: {shown}: {detail}"


def _go_strings(values: tuple[str, ...]) -> str:
    """Go's ``%#v`` of a ``[]string`` (a nil one when empty, as the callers pass it)."""
    if not values:
        return "[]string(nil)"
    return "[]string{" + ", ".join(quote(v) for v in values) + "}"


def _aggregate(errors: list[str]) -> str:
    """``utilerrors.NewAggregate(...).Error()``: one message alone, several bracketed."""
    unique = list(dict.fromkeys(errors))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Requirement:
    """One ``key op values`` term; build it with ``requirement()`` to have it checked."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, Any]) -> bool:
        present = self.key in labels
        if self.op in (EQUALS, DOUBLE_EQUALS, IN):
            return present and labels[self.key] in self.values
        if self.op in (NOT_EQUALS, NOT_IN):
            return not present or labels[self.key] not in self.values
        if self.op == EXISTS:
            return present
        if self.op == DOES_NOT_EXIST:
            return not present
        if self.op in (GREATER_THAN, LESS_THAN) and present and len(self.values) == 1:
            found, bound = _int64(str(labels[self.key])), _int64(self.values[0])
            if found is None or bound is None:
                return False
            return found > bound if self.op == GREATER_THAN else found < bound
        return False

    def __str__(self) -> str:
        text = ("!" if self.op == DOES_NOT_EXIST else "") + self.key
        if self.op in (EXISTS, DOES_NOT_EXIST):
            return text
        shown = self.values[0] if len(self.values) == 1 else ",".join(sorted(self.values))
        if self.op in (IN, NOT_IN):
            shown = f"({shown})"
        return text + _SHOWN[self.op] + shown


def requirement(key: str, op: str, values: Iterable[str] = ()) -> Requirement:
    """A checked requirement (Go's ``NewRequirement``); ``SelectorError`` otherwise."""
    values = tuple(values)
    errors = []
    if key_errors := label_key_errors(key):
        errors.append(_invalid("key", quote(key), "; ".join(key_errors)))
    if op in (IN, NOT_IN):
        if not values:
            errors.append(_invalid("values", _go_strings(values),
                                   "for 'in', 'notin' operators, values set can't be empty"))
    elif op in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS):
        if len(values) != 1:
            errors.append(_invalid("values", _go_strings(values),
                                   "exact-match compatibility requires one single value"))
    elif op in (EXISTS, DOES_NOT_EXIST):
        if values:
            errors.append(_invalid("values", _go_strings(values),
                                   "values set must be empty for exists and does not exist"))
    elif op in (GREATER_THAN, LESS_THAN):
        if len(values) != 1:
            errors.append(_invalid("values", _go_strings(values),
                                   "for 'Gt', 'Lt' operators, exactly one value is required"))
        for i, value in enumerate(values):
            if _int64(value) is None:
                errors.append(_invalid(f"values[{i}]", quote(value), "for 'Gt', 'Lt' "
                                       "operators, the value must be an integer"))
    else:
        errors.append(f'operator: Unsupported value: {quote(op)}: supported values: "in", '
                      '"notin", "=", "==", "!=", "gt", "lt", "exists", "!"')
    for i, value in enumerate(values):
        if value_errors := label_value_errors(value):
            errors.append(_invalid(f"values[{i}][{key}]", quote(value),
                                   "; ".join(value_errors)))
    if errors:
        raise SelectorError(_aggregate(errors))
    return Requirement(key, op, values)


class Selector:
    """Requirements that must all hold (see the module docstring)."""

    __slots__ = ("_nothing", "requirements")

    def __init__(self, requirements: Iterable[Requirement] = (), *,
                 nothing: bool = False) -> None:
        # by key, as Go sorts them: a stable String() for equal selectors
        self.requirements = tuple(sorted(requirements, key=lambda r: r.key))
        self._nothing = nothing

    @classmethod
    def nothing(cls) -> Selector:
        """The selector of no object (Go's ``labels.Nothing()``)."""
        return cls(nothing=True)

    @property
    def empty(self) -> bool:
        """True when it selects every object."""
        return not self._nothing and not self.requirements

    def matches(self, labels: Mapping[str, Any] | None) -> bool:
        if self._nothing:
            return False
        found = labels or {}
        return all(r.matches(found) for r in self.requirements)

    def __iter__(self) -> Iterator[Requirement]:
        return iter(self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __repr__(self) -> str:
        return "Selector(<nothing>)" if self._nothing else f"Selector({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Selector) and other._nothing == self._nothing and \
            other.requirements == self.requirements

    def __hash__(self) -> int:
        return hash((self._nothing, self.requirements))


def from_set(labels: Mapping[str, str]) -> Selector:
    """``key=value`` for each label, unchecked (Go's ``SelectorFromSet``)."""
    return Selector(Requirement(str(k), EQUALS, (str(v),)) for k, v in labels.items())


def from_label_selector(obj: Mapping[str, Any] | None) -> Selector:
    """The selector of a ``metav1.LabelSelector``'s JSON (see the module docstring)."""
    if obj is None:
        return Selector.nothing()
    if not isinstance(obj, Mapping):
        raise SelectorError("a label selector must be an object")
    match_labels = obj.get("matchLabels") or {}
    expressions = obj.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping) or not isinstance(expressions, list):
        raise SelectorError("matchLabels must be an object and matchExpressions a list")
    requirements = [requirement(str(k), EQUALS, (str(v),)) for k, v in match_labels.items()]
    for expression in expressions:
        if not isinstance(expression, Mapping):
            raise SelectorError("a label selector requirement must be an object")
        operator = expression.get("operator")
        op = _EXPRESSION_OPERATORS.get(operator) if isinstance(operator, str) else None
        if op is None:
            raise SelectorError(f"{quote(str(operator or ''))} is not a valid label selector "
                                "operator")
        values = expression.get("values") or []
        if not isinstance(values, list):
            raise SelectorError("the values of a label selector requirement must be a list")
        requirements.append(requirement(str(expression.get("key") or ""), op,
                                        (str(v) for v in values)))
    return Selector(requirements)


# --------------------------------------------------------------------------- the parser

# tokens, as Go's lexer names them
_END, _CLOSE, _COMMA, _NOT, _DOUBLE_EQUALS, _EQUALS, _GREATER, _IDENTIFIER, _IN, _LESS, \
    _NOT_EQUALS, _NOT_IN, _OPEN, _ERROR = range(14)
_LITERALS = {")": _CLOSE, ",": _COMMA, "!": _NOT, "==": _DOUBLE_EQUALS, "=": _EQUALS,
             ">": _GREATER, "in": _IN, "<": _LESS, "!=": _NOT_EQUALS, "notin": _NOT_IN,
             "(": _OPEN}
_SPECIAL = frozenset("=!(),><")
_BLANK = frozenset(" \t\r\n")
_OPERATORS = {_IN: IN, _EQUALS: EQUALS, _DOUBLE_EQUALS: DOUBLE_EQUALS, _GREATER: GREATER_THAN,
              _LESS: LESS_THAN, _NOT_IN: NOT_IN, _NOT_EQUALS: NOT_EQUALS}


def _lex(text: str) -> list[tuple[int, str]]:
    # Go's lexer reads a NUL as the end of the text
    end = text.find("\0")
    if end >= 0:
        text = text[:end]
    items: list[tuple[int, str]] = []
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in _BLANK:
            pos += 1
        if pos == n:
            items.append((_END, ""))
            return items
        if text[pos] in _SPECIAL:
            # the longest run of symbols that is still an operator: "!=" rather than "!"
            buffer, last = "", None
            while pos < n and text[pos] in _SPECIAL:
                buffer += text[pos]
                token = _LITERALS.get(buffer)
                if token is not None:
                    last = (token, buffer)
                elif last is not None:
                    break
                pos += 1
            items.append(last or (_ERROR, f"error expected: keyword found '{buffer}'"))
            continue
        start = pos
        while pos < n and text[pos] not in _SPECIAL and text[pos] not in _BLANK:
            pos += 1
        word = text[start:pos]
        items.append((_LITERALS.get(word, _IDENTIFIER), word))


class _Fault(Exception):
    """A requirement that does not parse; ``parse`` words it."""


class _Parser:
    def __init__(self, text: str) -> None:
        self._items = _lex(text)
        self._pos = 0

    def _peek(self, values: bool) -> tuple[int, str]:
        token, literal = self._items[min(self._pos, len(self._items) - 1)]
        if values and token in (_IN, _NOT_IN):
            token = _IDENTIFIER  # "in" and "notin" are values where values go
        return token, literal

    def _next(self, values: bool) -> tuple[int, str]:
        item = self._peek(values)
        self._pos += 1
        return item

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            token, literal = self._peek(values=True)
            if token == _END:
                return requirements
            if token not in (_IDENTIFIER, _NOT):
                raise SelectorError(f"found '{literal}', expected: !, identifier, or "
                                    "'end of string'")
            try:
                requirements.append(self._requirement())
            except (_Fault, SelectorError) as exc:
                raise SelectorError(f"unable to parse requirement: {exc}") from None
            token, literal = self._next(values=True)
            if token == _END:
                return requirements
            if token != _COMMA:
                raise SelectorError(f"found '{literal}', expected: ',' or 'end of string'")
            token, literal = self._peek(values=True)
            if token not in (_IDENTIFIER, _NOT):
                raise SelectorError(f"found '{literal}', expected: identifier after ','")

    def _requirement(self) -> Requirement:
        key, op = self._key_and_inferred_operator()
        if op in (EXISTS, DOES_NOT_EXIST):
            return requirement(key, op)
        op = self._operator()
        values = self._values() if op in (IN, NOT_IN) else self._exact_value()
        return requirement(key, op, sorted(values))

    def _key_and_inferred_operator(self) -> tuple[str, str]:
        op = ""
        token, literal = self._next(values=True)
        if token == _NOT:
            op = DOES_NOT_EXIST
            token, literal = self._next(values=True)
        if token != _IDENTIFIER:
            raise _Fault(f"found '{literal}', expected: identifier")
        if errors := label_key_errors(literal):
            # Go's parser has no field path here: it prints as <nil>
            raise _Fault(_invalid("<nil>", quote(literal), "; ".join(errors)))
        if self._peek(values=True)[0] in (_END, _COMMA) and op != DOES_NOT_EXIST:
            op = EXISTS
        return literal, op

    def _operator(self) -> str:
        token, literal = self._next(values=False)
        op = _OPERATORS.get(token)
        if op is None:
            raise _Fault(f"found '{literal}', expected: in, notin, =, ==, !=, gt, lt")
        return op

    def _values(self) -> set[str]:
        token, literal = self._next(values=True)
        if token != _OPEN:
            raise _Fault(f"found '{literal}' expected: '('")
        token, literal = self._peek(values=True)
        if token in (_IDENTIFIER, _COMMA):
            values = self._identifiers()
            if self._next(values=True)[0] != _CLOSE:
                raise _Fault(f"found '{literal}', expected: ')'")
            return values
        if token == _CLOSE:
            self._next(values=True)
            return {""}
        raise _Fault(f"found '{literal}', expected: ',', ')' or identifier")

    def _identifiers(self) -> set[str]:
        """A list of (possibly empty) values up to, not including, the ``)``."""
        values: set[str] = set()
        while True:
            token, literal = self._next(values=True)
            if token == _IDENTIFIER:
                values.add(literal)
                after, shown = self._peek(values=True)
                if after == _CLOSE:
                    return values
                if after != _COMMA:
                    raise _Fault(f"found '{shown}', expected: ',' or ')'")
            elif token == _COMMA:
                after, _ = self._peek(values=True)
                if not values or after in (_CLOSE, _COMMA):
                    values.add("")  # "(,a", "a,)" and "a,,b" hold the empty value
                if after == _CLOSE:
                    return values
            else:
                raise _Fault(f"found '{literal}', expected: ',', or identifier")

    def _exact_value(self) -> set[str]:
        if self._peek(values=True)[0] in (_END, _COMMA):
            return {""}
        token, literal = self._next(values=True)
        if token != _IDENTIFIER:
            raise _Fault(f"found '{literal}', expected: identifier")
        return {literal}


def parse(text: str) -> Selector:
    """The selector written as ``text`` (see the module docstring)."""
    return Selector(_Parser(text).parse())
