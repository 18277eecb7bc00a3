"""Values printed as Go prints them in messages (the API server's, client-go's)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
            "\v": "\\v", '"': '\\"', "\\": "\\\\"}


def quote(text: str) -> str:
    """Go's ``%q`` of a string: double-quoted, escaping quotes, backslashes and
    unprintable characters."""
    out = ['"']
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def _digits(number: float) -> tuple[str, int]:
    """Shortest round-trip digits of ``|number|`` and the decimal exponent of the first."""
    parts = Decimal(repr(abs(number))).normalize().as_tuple()
    digits = "".join(str(d) for d in parts.digits)
    assert isinstance(parts.exponent, int)
    return digits, len(digits) + parts.exponent - 1


def format_float(number: float, *, exponent: bool, min_exp_digits: int) -> str:
    """``number``'s shortest round-trip digits, in exponent form (with at least
    ``min_exp_digits`` exponent digits) or plain."""
    sign = "-" if number < 0 else ""
    digits, exp = _digits(number)
    if exponent:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'+' if exp >= 0 else '-'}{abs(exp):0{min_exp_digits}d}"
    if exp < 0:
        return sign + "0." + "0" * (-exp - 1) + digits
    if exp + 1 >= len(digits):
        return sign + digits + "0" * (exp + 1 - len(digits))
    return sign + digits[: exp + 1] + "." + digits[exp + 1:]


def go_float(number: float) -> str:
    """Go's ``%v`` of a float64 (``%g`` with the shortest precision)."""
    if number != number:
        return "NaN"
    if number in (float("inf"), float("-inf")):
        return "+Inf" if number > 0 else "-Inf"
    if number == 0:
        return "0"
    _, exp = _digits(number)
    # %g switches to an exponent outside [1e-4, 1e6) when printing the shortest digits.
    return format_float(number, exponent=exp < -4 or exp >= 6, min_exp_digits=2)


def go_value(value: Any, *, syntax: bool = False) -> str:
    """Go's ``%v`` (or, with ``syntax``, ``%#v``) of a decoded JSON value held in an
    ``interface{}``: how structured-merge-diff shows a value of the wrong type."""
    if value is None:
        return "interface {}(nil)" if syntax else "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return quote(value) if syntax else value
    if isinstance(value, list):
        if syntax:
            return "[]interface {}{" + ", ".join(go_value(v, syntax=True) for v in value) + "}"
        return "[" + " ".join(go_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if syntax:
            return "map[string]interface {}{" + ", ".join(
                f"{quote(str(k))}:{go_value(value[k], syntax=True)}" for k in sorted(value)) + "}"
        return "map[" + " ".join(f"{k}:{go_value(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def go_type(value: Any) -> str:
    """Go's ``%T`` of a decoded JSON value held in an ``interface{}``."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    return "map[string]interface {}"
