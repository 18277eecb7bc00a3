"""Helm's ``--set`` language (``helm.sh/helm/v4/pkg/strvals``), as Flux applies it to
``valuesFrom[].targetPath``.

``parse_into(expression, values)`` is Helm's ``ParseInto`` (``strings=True``:
``ParseIntoString``): comma-separated ``key=value`` pairs, dotted keys for nested maps,
``name[i]`` list indexes (nestable), ``{a,b}`` lists, a backslash taking the next character
verbatim, values typed as Helm's ``typedVal`` does (``true``/``false``/``null`` in any case,
base-10 integers that fit an int64 and do not start with ``0`` — ``0`` itself too —, anything
else a string). ``parse_literal_into`` is ``ParseLiteralInto`` (``--set-literal``): one pair,
the value to the end of the text verbatim, no escapes.

``values`` is changed in place exactly where Helm changes it: an existing nested map or list
is written into (so a tree shared with another one changes in both, which Flux's value
composition relies on), and a list grows by being replaced with a longer copy. Errors use
Helm's wording; after one, ``values`` may be partly changed, as with Helm.

Bounds: Helm's own (indexes up to ``MAX_INDEX``, ``MAX_NESTED_NAME_LEVEL`` dotted levels),
plus two of ours where Helm has none, both far past any real use: lists nested in lists at
most ``MAX_LIST_NESTING`` deep in one path, and at most ``MAX_LIST_ITEMS`` list items
allocated by one call (Helm's ``a[65536][65536]...`` or ``a[1]=x,a[2]=x,...`` allocate without
limit). Scanning is linear in the text.
"""

from __future__ import annotations

import re
from typing import Any, Final

from fluxd import gotext

__all__ = [
    "MAX_INDEX",
    "MAX_LIST_ITEMS",
    "MAX_LIST_NESTING",
    "MAX_NESTED_NAME_LEVEL",
    "StrvalsError",
    "escape",
    "parse_into",
    "parse_literal_into",
]

#: Helm's ``strvals.MaxIndex``
MAX_INDEX: Final = 65536
#: Helm's ``strvals.MaxNestedNameLevel``
MAX_NESTED_NAME_LEVEL: Final = 30
#: ours: lists nested directly in lists along one path
MAX_LIST_NESTING: Final = 30
#: ours: list items allocated (growing copies included) by one parse
MAX_LIST_ITEMS: Final = 1 << 22


class StrvalsError(ValueError):
    """An expression Helm refuses (Helm's message)."""


class _Panic(Exception):
    """What Go's runtime panics on (a failed type assertion); Helm recovers it in ``key``."""


_KEY_STOPS: Final = re.compile(r"[=\[,.\\]")
_ITEM_STOPS: Final = re.compile(r"[\[.=\\]")
_INDEX_STOPS: Final = re.compile(r"[\]\\]")
_VALUE_STOPS: Final = re.compile(r"[,\\]")
_LIST_STOPS: Final = re.compile(r"[,}\\]")
_LITERAL_KEY_STOPS: Final = re.compile(r"[=\[.]")
_LITERAL_ITEM_STOPS: Final = re.compile(r"[\[.=]")
_LITERAL_INDEX_STOPS: Final = re.compile(r"\]")
_ESCAPED: Final = re.compile(r"([\\,{}\[\]=.])")
_INT64: Final = re.compile(r"[+-]?[0-9]+")


def parse_into(expression: str, values: dict[str, Any], *, strings: bool = False) -> None:
    """Helm's ``ParseInto`` (``ParseIntoString`` with ``strings``) into ``values``."""
    _Parser(expression, strings=strings, literal=False).parse(values)


def parse_literal_into(expression: str, values: dict[str, Any]) -> None:
    """Helm's ``ParseLiteralInto`` (``--set-literal``) into ``values``."""
    _Parser(expression, strings=True, literal=True).parse(values)


def escape(text: str) -> str:
    """``text`` with every character the ``--set`` language gives a meaning escaped, so
    that as a value it reads back verbatim."""
    return _ESCAPED.sub(r"\\\1", text)


class _Parser:
    """One expression read once, left to right (Helm's ``parser``/``literalParser``)."""

    def __init__(self, text: str, *, strings: bool, literal: bool) -> None:
        self.text = text
        self.pos = 0
        self.strings = strings
        self.literal = literal
        self.items_left = MAX_LIST_ITEMS
        self.key_stops = _LITERAL_KEY_STOPS if literal else _KEY_STOPS
        self.item_stops = _LITERAL_ITEM_STOPS if literal else _ITEM_STOPS
        self.index_stops = _LITERAL_INDEX_STOPS if literal else _INDEX_STOPS

    def parse(self, data: dict[str, Any]) -> None:
        while self.key(data, 0, 0):
            pass

    # -- scanning ------------------------------------------------------------------------

    def until(self, stops: re.Pattern[str]) -> tuple[str, str | None]:
        """The text up to the next stop character (consumed and returned; None at the
        end), backslash escapes resolved (Helm's ``runesUntil``)."""
        parts: list[str] = []
        text = self.text
        while True:
            found = stops.search(text, self.pos)
            if found is None:
                parts.append(text[self.pos:])
                self.pos = len(text)
                return "".join(parts), None
            start = found.start()
            parts.append(text[self.pos:start])
            char = text[start]
            if char == "\\":
                if start + 1 >= len(text):  # a trailing backslash ends the text
                    self.pos = len(text)
                    return "".join(parts), None
                parts.append(text[start + 1])
                self.pos = start + 2
                continue
            self.pos = start + 1
            return "".join(parts), char

    def typed(self, raw: str) -> Any:
        return raw if self.strings else _typed_value(raw)

    # -- grammar: each returns False at the end of the text (Go's io.EOF), True to go on --

    def key(self, data: dict[str, Any], level: int, lists: int) -> bool:
        try:
            return self._key(data, level, lists)
        except _Panic as exc:
            raise StrvalsError(f"unable to parse key: {exc}") from None

    def _key(self, data: dict[str, Any], level: int, lists: int) -> bool:
        name, last = self.until(self.key_stops)
        if last is None:
            if not name:
                return False
            raise StrvalsError(f"key {_go_quote(name)} has no value")
        if last == "[":
            index = self.index()
            current: list[Any] = []
            if name in data:
                current = _as_list(data[name])
            current, more = self.list_item(current, index, level, lists + 1)
            _set(data, name, current)
            return more
        if last == "=":
            if self.literal:
                _set(data, name, self.text[self.pos:])
                self.pos = len(self.text)
                return True  # the next key() finds the end
            return self.value(data, name)
        if last == ",":
            raise StrvalsError(f"key {_go_quote(name)} has no value (cannot end with ,)")
        # last == ".": a nested map
        level += 1
        if level > MAX_NESTED_NAME_LEVEL:
            raise StrvalsError("value name nested level is greater than maximum supported "
                               f"nested level of {MAX_NESTED_NAME_LEVEL}")
        inner: dict[str, Any] = {}
        if name in data:
            inner = _as_map(data[name])
        more = self.key(inner, level, lists)
        if more and not inner:
            raise StrvalsError(f"key map {_go_quote(name)} has no value")
        if inner:
            _set(data, name, inner)
        return more

    def value(self, data: dict[str, Any], name: str) -> bool:
        """After ``name=``: a ``{...}`` list or a scalar up to the next comma."""
        if self.pos >= len(self.text):
            _set(data, name, "")
            return False
        if self.text[self.pos] == "{":
            self.pos += 1
            _set(data, name, self.list_value())
            return True
        raw, last = self.until(_VALUE_STOPS)
        _set(data, name, self.typed(raw))
        return last is not None

    def list_value(self) -> list[Any]:
        """The items of ``{a,b}`` (after the brace), and a comma right after it."""
        items: list[Any] = []
        while True:
            raw, last = self.until(_LIST_STOPS)
            if last is None:
                raise StrvalsError("list must terminate with '}'")
            items.append(self.typed(raw))
            if last == "}":
                if self.text.startswith(",", self.pos):
                    self.pos += 1
                return items

    def index(self) -> int:
        raw, last = self.until(self.index_stops)
        if last is None:
            raise StrvalsError("error parsing index: EOF")
        return _atoi(raw)

    def list_item(self, items: list[Any], index: int, level: int,
                  lists: int) -> tuple[list[Any], bool]:
        """After ``name[index]``: what is set at ``index`` of ``items``; the list to keep
        (``items`` itself, or a longer copy)."""
        if index < 0:
            raise StrvalsError(f"negative {index} index not allowed")
        if lists > MAX_LIST_NESTING:
            raise StrvalsError(f"lists nested deeper than {MAX_LIST_NESTING} levels")
        rest, last = self.until(self.item_stops)
        if rest:
            runes = " ".join(_go_quote_rune(char) for char in rest)
            raise StrvalsError(f"unexpected data at end of array index: [{runes}]")
        if last is None:
            return items, False
        if last == "=":
            if self.literal:
                value: Any = self.text[self.pos:]
                self.pos = len(self.text)
            elif self.pos >= len(self.text):
                value = ""
            elif self.text[self.pos] == "{":
                self.pos += 1
                value = self.list_value()
            else:
                raw, _ = self.until(_VALUE_STOPS)
                value = self.typed(raw)
            return self.set_index(items, index, value), True
        if last == "[":
            nested_index = self.index()
            nested: list[Any] = []
            if len(items) > index and items[index] is not None:
                nested = _as_list(items[index])
            nested, more = self.list_item(nested, nested_index, level, lists + 1)
            if not more:
                return items, False
            return self.set_index(items, index, nested), True
        # last == ".": a map in the list
        inner: dict[str, Any] = {}
        if len(items) > index:
            found = items[index]
            if isinstance(found, dict):
                inner = found
            else:  # Helm replaces what is there in place, before reading on
                items[index] = inner
        if not self.key(inner, level, 0):
            return items, False
        return self.set_index(items, index, inner), True

    def set_index(self, items: list[Any], index: int, value: Any) -> list[Any]:
        if index > MAX_INDEX:
            raise StrvalsError(f"index of {index} is greater than maximum supported index "
                               f"of {MAX_INDEX}")
        if len(items) <= index:
            self.items_left -= index + 1
            if self.items_left < 0:
                raise StrvalsError(f"list indexes allocate more than {MAX_LIST_ITEMS} items")
            # a new, longer list, as Go's make+copy: whoever shared the old one keeps it
            items = [*items, *([None] * (index + 1 - len(items)))]
        items[index] = value
        return items


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    if key:  # Helm never sets an empty key
        data[key] = value


def _typed_value(raw: str) -> Any:
    """Helm's ``typedVal``."""
    if _fold_equal(raw, "true"):
        return True
    if _fold_equal(raw, "false"):
        return False
    if _fold_equal(raw, "null"):
        return None
    if raw == "0":
        return 0
    if raw and raw[0] != "0" and _INT64.fullmatch(raw):
        number = int(raw)
        if -(1 << 63) <= number < (1 << 63):
            return number
    return raw


def _fold_equal(text: str, word: str) -> bool:
    """Go's ``strings.EqualFold`` against a lower-case ASCII word (simple case folding, so
    the long s and the Kelvin sign count as ``s`` and ``k``)."""
    return len(text) == len(word) and all(
        char == want or char.lower() == want or char.casefold() == want
        for char, want in zip(text, word, strict=True))


def _atoi(raw: str) -> int:
    """Go's ``strconv.Atoi``, with Helm's wrapping of its errors."""
    if not _INT64.fullmatch(raw):
        raise StrvalsError(
            f"error parsing index: strconv.Atoi: parsing {_go_quote(raw)}: invalid syntax")
    number = int(raw)
    if not -(1 << 63) <= number < (1 << 63):
        raise StrvalsError(
            f"error parsing index: strconv.Atoi: parsing {_go_quote(raw)}: value out of range")
    return number


def _go_type(value: object) -> str:
    """The type a Go runtime panic names: ``nil`` for a nil interface, else ``%T``."""
    return "nil" if value is None else gotext.go_type(value)


def _as_list(value: object) -> list[Any]:
    if isinstance(value, list):
        return value
    raise _Panic(f"interface conversion: interface {{}} is {_go_type(value)}, "
                 "not []interface {}")


def _as_map(value: object) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise _Panic(f"interface conversion: interface {{}} is {_go_type(value)}, "
                 "not map[string]interface {}")


_GO_ESCAPES: Final = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                      "\t": "\\t", "\v": "\\v", "\\": "\\\\"}


def _go_escape(char: str, quote: str) -> str:
    if char == quote:
        return "\\" + char
    if char in _GO_ESCAPES:
        return _GO_ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _go_quote(text: str) -> str:
    """Go's ``%q`` of a string."""
    return '"' + "".join(_go_escape(char, '"') for char in text) + '"'


def _go_quote_rune(char: str) -> str:
    """Go's ``%q`` of a rune."""
    return "'" + _go_escape(char, "'") + "'"
