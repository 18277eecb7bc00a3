"""JSON pointers (RFC 6901): the text form of a path into a JSON document.

- ``parse(pointer)`` gives the reference tokens: ``""`` is the whole document (no
  tokens); anything else starts with ``/`` and each ``/``-separated token is unescaped,
  ``~1`` to ``/`` and ``~0`` to ``~``, in one left-to-right pass (``~01`` is ``~1``, never
  ``/``). A ``~`` followed by anything but ``0`` or ``1`` is malformed, as is a pointer
  not starting with ``/``: ``PointerError`` (a ``ValueError``).
- ``escape(token)`` and ``join(tokens)`` are the inverse: ``parse(join(t)) == t``.
- ``array_index(token)`` reads a token as an array index the RFC's way: ``0`` or
  decimal digits without a leading zero (ASCII only, no sign); None for anything else,
  including ``-`` (the element past the end, which only some operations accept).

What a token addresses, and what a missing member means, is the caller's business: a
JSON patch fails where a drift-ignore rule just finds nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["PointerError", "array_index", "escape", "join", "parse"]

_ESCAPE = re.compile(r"~[01]")
_BAD_TILDE = re.compile(r"~(?![01])")
_INDEX = re.compile(r"0|[1-9][0-9]*")


class PointerError(ValueError):
    """A malformed JSON pointer."""


def parse(pointer: str) -> list[str]:
    """The reference tokens of ``pointer`` (see the module docstring)."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PointerError("pointer must be empty or start with '/'")
    tokens = []
    for raw in pointer[1:].split("/"):
        if _BAD_TILDE.search(raw):
            raise PointerError(f"invalid escape in pointer token {raw!r}")
        tokens.append(_ESCAPE.sub(_unescape, raw) if "~" in raw else raw)
    return tokens


def escape(token: str) -> str:
    """``token`` as it is written inside a pointer."""
    return token.replace("~", "~0").replace("/", "~1")


def join(tokens: Iterable[str]) -> str:
    """The pointer to ``tokens``."""
    return "".join("/" + escape(token) for token in tokens)


def array_index(token: str) -> int | None:
    """``token`` as an array index, or None when it is not one."""
    return int(token) if _INDEX.fullmatch(token) else None


def _unescape(match: re.Match[str]) -> str:
    return "/" if match.group(0) == "~1" else "~"
