"""Bash-like ``${var}`` expansion, as Flux's post-build substitution does it.

This is the template language of ``github.com/fluxcd/pkg/envsubst`` (Flux's fork of
``drone/envsubst``), reproduced with its observable behaviour, quirks included, because a
user's manifests must expand to the very same text here as in Flux:

* Only ``${...}`` expands; ``$var`` stays as written and ``$$`` outside an expression is one
  ``$`` (so ``$${var}`` prints ``${var}``). A NUL character ends the text, as in Go.
* ``${var}``, ``${#var}`` (length in UTF-8 bytes), ``${var^}``, ``${var^^}``, ``${var,}``,
  ``${var,,}``, ``${var:n}``, ``${var:n:len}`` (byte offsets; a nested ``${...}`` may give a
  negative one), ``${var#glob}``, ``${var##glob}``, ``${var%glob}``, ``${var%%glob}``,
  ``${var/old/new}``, ``${var//old/new}``, ``${var/#old/new}``, ``${var/%old/new}`` (``old``
  is literal text, not a glob; ``\\/`` and ``\\\\`` escape a slash and a backslash there),
  ``${var=d}``, ``${var:=d}``, ``${var:-d}`` (``d`` may hold text and nested ``${...}``).
* Every default operator means "if empty": ``${var=d}`` and ``${var:=d}`` equal ``${var:-d}``;
  ``${var:+d}`` and ``${var:?d}`` parse and behave the same way too (no bash semantics), while
  ``${var-d}``, ``${var+d}`` and ``${var?d}`` fail with ``missing closing brace``.
* Strict mode: a variable absent from the mapping, referenced by any operator except the
  default ones, fails with ``variable not set (strict mode): "var"``. Otherwise it reads as "".

``expand(text, variables, strict=...)`` returns the expanded text or raises
``SubstitutionError`` whose message is upstream's (``bad substitution``, ``missing closing
brace``, ``unable to parse variable name``, ``unable to parse substitution within function``,
or the strict-mode one). Text is scanned once, left to right; globs are matched by a
set-of-states automaton, so no input can make matching exponential.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["SubstitutionError", "expand"]


class SubstitutionError(ValueError):
    """Text that cannot be expanded: a malformed expression or, in strict mode, an unset
    variable. The message is the one Flux reports."""


BAD_SUBSTITUTION: Final = "bad substitution"
MISSING_CLOSING_BRACE: Final = "missing closing brace"
BAD_VARIABLE_NAME: Final = "unable to parse variable name"
BAD_FUNCTION_ARGUMENT: Final = "unable to parse substitution within function"

#: operators that supply their own value for an unset variable, so strict mode lets them be
DEFAULT_OPERATORS: Final = frozenset({"-", "+", "=", "?", ":-", ":+", ":=", ":?"})


# --- the parse tree --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Expr:
    """``${param<op>args}``; ``op`` is "" for a plain ``${param}``."""

    param: str
    op: str
    args: tuple[_Node, ...]


_Node = str | _Expr


def _parse(text: str) -> list[_Node]:
    """Split ``text`` into literal runs and expressions (the top level of the grammar)."""
    nodes: list[_Node] = []
    literal: list[str] = []
    parser = _ExprParser(text)
    i = 0
    while (dollar := text.find("$", i)) >= 0:
        following = text[dollar + 1:dollar + 2]
        if following == "{":
            literal.append(text[i:dollar])
            nodes.append("".join(literal))
            literal = []
            expr, i = parser.expression(dollar + 2)
            nodes.append(expr)
        elif following == "$":
            # "$$" is one "$", and the second one never starts an expression
            literal.append(text[i:dollar + 1])
            i = dollar + 2
        else:
            literal.append(text[i:dollar + 1])
            i = dollar + 1
    literal.append(text[i:])
    nodes.append("".join(literal))
    return nodes


def _is_name_char(c: str) -> bool:
    # Go's unicode.IsLetter (L*) or unicode.IsDigit (Nd) or "_"
    return c == "_" or c.isalpha() or c.isdecimal()


class _ExprParser:
    """The grammar inside ``${...}``, position by position as upstream's scanner reads it:
    where an argument ends, which escapes apply, and which error each wrong turn gives."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def peek(self, i: int) -> str:
        return self.text[i:i + 1]

    def expression(self, i: int) -> tuple[_Expr, int]:
        """Parse from just after ``${``; returns the expression and the index after ``}``."""
        if self.peek(i) == "#":
            return self.length(i + 1)
        start = i
        while i < len(self.text) and _is_name_char(self.text[i]):
            i += 1
        if i == start:
            raise SubstitutionError(BAD_VARIABLE_NAME)
        name = self.text[start:i]
        c = self.peek(i)
        if c == "}":
            return _Expr(name, "", ()), i + 1
        if c == ":":
            return self.colon(name, i)
        if c == "=":
            return self.default(name, "=", i + 1)
        if c and c in ",^":
            return self.casing(name, i)
        if c == "/":
            return self.replace(name, i)
        if c and c in "#%":
            return self.remove(name, i)
        # "-", "+", "?" and anything else after a name
        raise SubstitutionError(MISSING_CLOSING_BRACE)

    def length(self, i: int) -> tuple[_Expr, int]:
        start = i
        while i < len(self.text) and _is_name_char(self.text[i]):
            i += 1
        if i == start:
            raise SubstitutionError(BAD_SUBSTITUTION)
        return _Expr(self.text[start:i], "#", ()), self.close(i)

    def colon(self, name: str, i: int) -> tuple[_Expr, int]:
        following = self.peek(i + 1)
        if following and following in "=-?+":
            return self.default(name, ":" + following, i + 2)
        if not following or not following.isascii():
            # Upstream steps back over ":" by the width of the character after it, so a
            # multi-byte character there (or the end of text) lands it on a non-colon.
            raise SubstitutionError(BAD_SUBSTITUTION)
        return self.substring(name, i + 1)

    def substring(self, name: str, i: int) -> tuple[_Expr, int]:
        offset, i = self.argument(i, stop=":}", escapes=False)
        c = self.peek(i)
        if c == "}":
            return _Expr(name, ":", (offset,)), i + 1
        if c != ":":
            raise SubstitutionError(BAD_SUBSTITUTION)
        while self.peek(i) == ":":  # the separator is a run of colons
            i += 1
        length, i = self.argument(i, stop="}", escapes=False)
        return _Expr(name, ":", (offset, length)), self.close(i)

    def remove(self, name: str, i: int) -> tuple[_Expr, int]:
        op = self.text[i]
        if self.peek(i + 1) == op:
            op += op
        pattern, i = self.argument(i + len(op), stop="}", escapes=False)
        return _Expr(name, op, (pattern,)), self.close(i)

    def replace(self, name: str, i: int) -> tuple[_Expr, int]:
        op = "/"
        i += 1
        c = self.peek(i)
        if c and c in "/#%":
            op += c
            i += 1
        old: _Node
        if self.peek(i) == "/":
            old = ""
        else:
            old, i = self.argument(i, stop="/", escapes=True)
        if self.peek(i) != "/":
            raise SubstitutionError(BAD_SUBSTITUTION)
        while self.peek(i) == "/":  # the separator is a run of slashes
            i += 1
        if self.peek(i) == "}":
            return _Expr(name, op, (old,)), i + 1
        new, i = self.argument(i, stop="}", escapes=True)
        return _Expr(name, op, (old, new)), self.close(i)

    def default(self, name: str, op: str, i: int) -> tuple[_Expr, int]:
        args: list[_Node] = []
        while self.peek(i) != "}":
            arg, i = self.argument(i, stop="}", escapes=False)
            args.append(arg)
        return _Expr(name, op, tuple(args)), i + 1

    def casing(self, name: str, i: int) -> tuple[_Expr, int]:
        op = self.text[i]
        c = self.peek(i + 1)
        if c and c in ",^":
            op += c
        return _Expr(name, op, ()), self.close(i + len(op))

    def close(self, i: int) -> int:
        if self.peek(i) != "}":
            raise SubstitutionError(BAD_SUBSTITUTION)
        return i + 1

    def argument(self, i: int, *, stop: str, escapes: bool) -> tuple[_Node, int]:
        """One argument: a nested ``${...}`` or a run of text ending before a character of
        ``stop``, before a nested ``${`` or at the end. With ``escapes``, ``$$`` is ``$``,
        ``\\/`` is ``/`` and ``\\\\`` is ``\\`` (the escaped character never ends the run)."""
        text = self.text
        if i >= len(text):
            raise SubstitutionError(BAD_FUNCTION_ARGUMENT)
        if text.startswith("${", i):
            return self.expression(i + 2)
        out: list[str] = []
        first = True
        while i < len(text):
            c = text[i]
            following = text[i + 1:i + 2]
            if c == "$" and following == "{":
                break
            if escapes and ((c == "$" and following == "$")
                            or (c == "\\" and following in ("/", "\\"))):
                out.append(following)
                i += 2
            elif c in stop:
                if first:
                    raise SubstitutionError(BAD_FUNCTION_ARGUMENT)
                break
            else:
                out.append(c)
                i += 1
            first = False
        return "".join(out), i


# --- evaluation ------------------------------------------------------------------------

def _go_upper(c: str) -> str:
    # Go maps one rune to one rune (simple case mapping); Python's full mapping may give
    # several ("ß" -> "SS"), in which case the titlecase form or the rune itself stands.
    u = c.upper()
    if len(u) == 1:
        return u
    t = c.title()
    return t if len(t) == 1 else c


def _go_lower(c: str) -> str:
    lowered = c.lower()
    return lowered[0]  # only "İ" lowers to two runes; its simple mapping is "i"


def _upper(s: str) -> str:
    return s.upper() if s.isascii() else "".join(map(_go_upper, s))


def _lower(s: str) -> str:
    return s.lower() if s.isascii() else "".join(map(_go_lower, s))


def _upper_first(s: str) -> str:
    return _go_upper(s[0]) + s[1:] if s else s


def _lower_first(s: str) -> str:
    return _go_lower(s[0]) + s[1:] if s else s


_INT64 = 1 << 63
_DECIMAL = re.compile(r"[+-]?[0-9]+")


def _atoi(text: str) -> int | None:
    """Go's ``strconv.Atoi``: an optional sign and ASCII digits that fit in an int64."""
    if not _DECIMAL.fullmatch(text):
        return None
    value = int(text)
    return value if -_INT64 <= value < _INT64 else None


def _to_bytes(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _from_bytes(b: bytes) -> str:
    # a cut inside a multi-byte character survives as a surrogate, as Go keeps the bytes
    return b.decode("utf-8", "surrogateescape")


def _substring(s: str, args: tuple[str, ...]) -> str:
    """``${var:offset[:length]}`` over UTF-8 bytes, as Go slices strings."""
    offset = _atoi(args[0])
    if offset is None:
        return s
    data = _to_bytes(s)
    size = len(data)
    if offset < 0:
        offset = max(size + offset, 0)
    if len(args) == 1:
        return _from_bytes(data[offset:]) if offset < size else ""
    length = _atoi(args[1])
    if length is None:
        return s
    if length < 0:  # counts back from the end
        stop = size + length
        return "" if stop < offset else _from_bytes(data[offset:stop])
    if offset + length >= size:
        return _from_bytes(data[offset:]) if offset < size else ""
    return _from_bytes(data[offset:offset + length])


# A glob is a tuple of elements: _STAR, _ANY, a one-character literal, or a character class
# (negated, ((lo, hi), ...)). Upstream matches with a copy of Go's path.Match in which "*"
# and "?" also match "/".

@dataclass(frozen=True, slots=True)
class _Class:
    negated: bool
    ranges: tuple[tuple[str, str], ...]

    def matches(self, c: str) -> bool:
        return any(lo <= c <= hi for lo, hi in self.ranges) != self.negated


_STAR: Final = object()
_ANY: Final = object()
_Glob = tuple[object, ...]


@functools.lru_cache(maxsize=512)
def _compile_glob(pattern: str) -> _Glob | None:
    """The elements of ``pattern``, or None when Go would call it malformed (a malformed
    pattern never matches, so it leaves the value unchanged)."""
    out: list[object] = []
    i, end = 0, len(pattern)

    def class_char(j: int) -> tuple[str, int] | None:
        if j >= end or pattern[j] in "-]":
            return None
        if pattern[j] == "\\":
            j += 1
            if j >= end:
                return None
        if j + 1 >= end:  # a class must still be closed
            return None
        return pattern[j], j + 1

    while i < end:
        c = pattern[i]
        if c == "*":
            if not out or out[-1] is not _STAR:
                out.append(_STAR)
            i += 1
        elif c == "?":
            out.append(_ANY)
            i += 1
        elif c == "\\":
            if i + 1 >= end:
                return None
            out.append(pattern[i + 1])
            i += 2
        elif c == "[":
            i += 1
            negated = i < end and pattern[i] == "^"
            if negated:
                i += 1
            ranges: list[tuple[str, str]] = []
            while not (i < end and pattern[i] == "]" and ranges):
                lo = class_char(i)
                if lo is None:
                    return None
                low, i = lo
                high = low
                if pattern[i] == "-":
                    hi = class_char(i + 1)
                    if hi is None:
                        return None
                    high, i = hi
                ranges.append((low, high))
            out.append(_Class(negated, tuple(ranges)))
            i += 1
        else:
            out.append(c)
            i += 1
    return tuple(out)


def _matching_prefixes(glob: _Glob, s: str) -> list[int]:
    """Every length k >= 1 for which ``s[:k]`` matches the whole glob, ascending."""
    size = len(glob)

    def closure(states: set[int]) -> set[int]:
        # a star may match nothing; stars never follow each other, so one step suffices
        return states | {j + 1 for j in states if j < size and glob[j] is _STAR}

    states = closure({0})
    found: list[int] = []
    for k, c in enumerate(s, start=1):
        following: set[int] = set()
        for j in states:
            if j == size:
                continue
            element = glob[j]
            if element is _STAR:
                following.add(j)
            elif element is _ANY or element == c or (
                    isinstance(element, _Class) and element.matches(c)):
                following.add(j + 1)
        if not following:
            break
        states = closure(following)
        if size in states:
            found.append(k)
    return found


def _trim_prefix(s: str, pattern: str, *, longest: bool) -> str:
    glob = _compile_glob(pattern)
    if glob is None:
        return s
    lengths = _matching_prefixes(glob, s)
    if not lengths:
        return s
    return s[lengths[-1] if longest else lengths[0]:]


def _trim_suffix(s: str, pattern: str, *, longest: bool) -> str:
    # upstream reverses the value and the pattern text alike, so "[0-9]" turns into the
    # malformed "]9-0[" and "%"/"%%" leave the value alone
    return _trim_prefix(s[::-1], pattern[::-1], longest=longest)[::-1]


def _default(s: str, args: tuple[str, ...]) -> str:
    return "".join(args) if not s and args else s


def _replace_first(s: str, args: tuple[str, ...]) -> str:
    return s.replace(args[0], args[1] if len(args) > 1 else "", 1)


def _replace_all(s: str, args: tuple[str, ...]) -> str:
    return s.replace(args[0], args[1] if len(args) > 1 else "")


def _replace_prefix(s: str, args: tuple[str, ...]) -> str:
    # with an empty replacement upstream leaves the value unchanged
    if len(args) == 2 and s.startswith(args[0]):
        return args[1] + s[len(args[0]):]
    return s


def _replace_suffix(s: str, args: tuple[str, ...]) -> str:
    if len(args) == 2 and s.endswith(args[0]):
        return s[:len(s) - len(args[0])] + args[1]
    return s


_Function = Callable[[str, tuple[str, ...]], str]

_FUNCTIONS: Final[dict[str, _Function]] = {
    ",": lambda s, _: _lower_first(s),
    ",,": lambda s, _: _lower(s),
    "^": lambda s, _: _upper_first(s),
    "^^": lambda s, _: _upper(s),
    "#": lambda s, a: _trim_prefix(s, a[0], longest=False) if a else str(len(_to_bytes(s))),
    "##": lambda s, a: _trim_prefix(s, a[0], longest=True),
    "%": lambda s, a: _trim_suffix(s, a[0], longest=False),
    "%%": lambda s, a: _trim_suffix(s, a[0], longest=True),
    ":": _substring,
    "/": _replace_first,
    "//": _replace_all,
    "/#": _replace_prefix,
    "/%": _replace_suffix,
}


def _evaluate(node: _Node, lookup: Callable[[str], str | None]) -> str:
    if isinstance(node, str):
        return node
    # arguments are expanded first, even when the value makes them unnecessary, so an
    # unset variable in a default fails strict mode as upstream does
    args = tuple(_evaluate(arg, lookup) for arg in node.args)
    value = lookup(node.param)
    if value is None:
        if node.op not in DEFAULT_OPERATORS:
            raise SubstitutionError(f'variable not set (strict mode): "{node.param}"')
        value = ""
    # "" (plain), the default operators and odd casing ops such as ",^" return the value
    return _FUNCTIONS.get(node.op, _default)(value, args)


def expand(text: str, variables: Mapping[str, str], *, strict: bool) -> str:
    """``text`` with every ``${...}`` expression replaced, as Flux's envsubst does.

    In strict mode a variable missing from ``variables`` is an error unless a default
    operator supplies the value; otherwise it reads as the empty string."""
    nul = text.find("\x00")
    if nul >= 0:  # Go's scanner reads NUL as the end of input
        text = text[:nul]
    if "$" not in text:
        return text

    def lookup(name: str) -> str | None:
        value = variables.get(name)
        return value if value is not None or strict else ""

    try:
        return "".join(_evaluate(node, lookup) for node in _parse(text))
    except RecursionError:
        raise SubstitutionError(f"{BAD_SUBSTITUTION}: expressions nested too deeply") from None
