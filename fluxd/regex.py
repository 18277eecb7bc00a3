"""Regular expressions written by users, read as Go's ``regexp`` reads them: RE2.

Flux's objects carry Go regular expressions (an Alert's ``inclusionList`` and
``exclusionList``, a drift-ignore rule's target, an OCIRepository's ``semverFilter``). Go's
``regexp`` is RE2: matching takes time linear in the text, and its syntax is not Python's
(``$`` is the very end of the text, ``\\z``, ``\\Q…\\E`` and ``\\pL`` exist, backreferences
and lookaround do not). Python's ``re`` backtracks: ``.*succeeded.*`` over a 150 KB message
takes seconds. So every user pattern is compiled here, with RE2 (``google-re2``), never with
``re``:

- ``compile(pattern)`` returns a ``Regex`` or raises ``RegexError`` (a ``ValueError``) for
  what Go's ``regexp.Compile`` refuses; there is no fallback to ``re``. RE2's default
  options are Go's: leftmost-first, Perl classes and ``\\b`` (ASCII), ``.`` not matching
  ``\\n`` without ``(?s)``, ``^``/``$`` at the ends of the text without ``(?m)``, UTF-8.
  Go also refuses ``\\C`` (any byte), which RE2 takes: refused here too.
- ``Regex.search(text)`` is Go's ``MatchString`` (unanchored); ``Regex.fullmatch(text)``
  asks for the whole text; ``Regex.finditer(text)`` gives every match with its groups.
- Matching is linear in the text (times the pattern's size). A compiled pattern uses at
  most ``MAX_MEM`` bytes (program and DFA cache); a pattern whose program does not fit is
  refused ("pattern too large"), where Go would take it. RE2 releases the GIL while it
  matches: a caller matching a large text can do it in a worker thread while the event
  loop runs on.
- A lone surrogate in the text (input that was not UTF-8) is matched as U+FFFD, the rune
  Go reads in place of invalid UTF-8.
- ``AnyOf(patterns)`` searches a list of patterns in one pass (RE2's ``Set``): whether
  any matches, as a loop over ``search`` would say, at the cost of about one search.
- ``RegexCache`` holds one owner's compiled patterns (and refusals) and ``AnyOf`` sets,
  least recently used dropped beyond its size. (``google-re2`` also keeps its own
  128-entry LRU of compiled patterns: with ``MAX_MEM`` that bounds the memory both hold.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import re2

from fluxd.lru import LRU

__all__ = ["MAX_MEM", "AnyOf", "Regex", "RegexCache", "RegexError", "compile"]

#: memory one compiled pattern may use (RE2's default is 8 MiB): caches of compiled
#: patterns stay small even when every pattern's DFA cache is filled by hostile input
MAX_MEM = 1 << 20

_SURROGATE = re.compile("[\ud800-\udfff]")
#: a pattern that is nothing but ASCII text: no metacharacter, escape or flag
_LITERAL = re.compile(r"[ !\"#%&',\-/0-9:;<=>@A-Z_`a-z~]*")


class RegexError(ValueError):
    """A pattern Go's ``regexp.Compile`` would refuse (or too large for ``MAX_MEM``)."""


class Regex:
    """A compiled pattern; see the module docstring for its semantics."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: str, compiled: Any) -> None:
        self.pattern = pattern
        self._compiled = compiled

    def search(self, text: str) -> bool:
        """Whether the pattern matches somewhere in ``text`` (Go's ``MatchString``)."""
        return self._compiled.search(_utf8(text)) is not None

    def fullmatch(self, text: str) -> bool:
        """Whether the pattern matches all of ``text``."""
        return self._compiled.fullmatch(_utf8(text)) is not None

    def finditer(self, text: str) -> Iterator[tuple[str, tuple[str | None, ...]]]:
        """Each match in ``text``, left to right and not overlapping (Go's
        ``FindAllStringSubmatch``): its text and its groups' (None for a group that did
        not take part)."""
        for match in self._compiled.finditer(_utf8(text)):
            groups = tuple(None if g is None else g.decode(errors="surrogateescape")
                           for g in match.groups())
            yield match.group(0).decode(errors="surrogateescape"), groups

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r})"


def compile(pattern: str) -> Regex:
    """``pattern`` compiled with RE2 as Go reads it; ``RegexError`` when Go would refuse it."""
    _refuse_any_byte(pattern)
    try:
        compiled = re2.compile(_utf8(pattern), _options())
    except re2.error as exc:
        raise RegexError(f"error parsing regexp: {_text(exc)}") from None
    return Regex(pattern, compiled)


class AnyOf:
    """A list of patterns searched together, one pass over the text (RE2's ``Set``):
    whether any of them matches somewhere. ``refused`` holds (pattern, message) for those
    Go would not compile; they match nothing, so a list of only refused patterns matches
    nothing."""

    __slots__ = ("_each", "_literals", "_set", "refused")

    def __init__(self, patterns: Sequence[str]) -> None:
        self.refused: list[tuple[str, str]] = []
        self._each: list[Regex] = []
        for pattern in patterns:
            try:
                self._each.append(compile(pattern))
            except RegexError as exc:
                self.refused.append((pattern, str(exc)))
        self._set: Any = None
        if len(self._each) > 1:
            self._set = _set_of(self._each)
        #: when every pattern is plain ASCII text (most users' lists are), a search is a
        #: substring test: the same answer without a call into RE2
        self._literals: tuple[str, ...] | None = None
        if all(_LITERAL.fullmatch(p.pattern) for p in self._each):
            self._literals = tuple(p.pattern for p in self._each)

    def search(self, text: str) -> bool:
        if self._literals is not None and text.isascii():
            return any(literal in text for literal in self._literals)
        if self._set is not None:
            return self._set.Match(_utf8(text)) is not None
        return any(p.search(text) for p in self._each)


def _set_of(patterns: Sequence[Regex]) -> Any:
    """One RE2 set of ``patterns``, or None when together they do not fit in ``MAX_MEM``
    (they are then searched one after the other)."""
    together = re2.Set.SearchSet(_options())
    try:
        for pattern in patterns:
            together.Add(_utf8(pattern.pattern))
        together.Compile()
    except re2.error:
        return None
    return together


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would write every refusal to stderr
    options.max_mem = MAX_MEM
    return options


class RegexCache:
    """Compiled patterns by pattern text, and ``AnyOf`` sets by their patterns, at most
    ``size`` of each; a refused pattern is remembered too, and ``get`` raises its
    ``RegexError`` again."""

    def __init__(self, size: int = 256) -> None:
        #: a refusal is kept as its message: a stored exception would grow a traceback
        #: each time it is raised again
        self._entries: LRU[str, Regex | str] = LRU(max(1, size))
        self._sets: LRU[tuple[str, ...], AnyOf] = LRU(max(1, size))

    def any_of(self, patterns: Sequence[str]) -> AnyOf:
        key = tuple(patterns)
        found = self._sets.get(key)
        if found is None:
            found = AnyOf(key)
            self._sets.put(key, found)
        return found

    def get(self, pattern: str) -> Regex:
        entry = self._entries.get(pattern)
        if entry is None:
            try:
                entry = compile(pattern)
            except RegexError as exc:
                entry = str(exc)
            self._entries.put(pattern, entry)
        if isinstance(entry, str):
            raise RegexError(entry)
        return entry

    def __len__(self) -> int:
        return len(self._entries)


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode()


def _text(exc: BaseException) -> str:
    detail = exc.args[0] if exc.args else exc
    if isinstance(detail, bytes):
        return detail.decode(errors="replace")
    return str(detail)


def _refuse_any_byte(pattern: str) -> None:
    """Go has no ``\\C``; RE2 reads it as any byte. Text in ``\\Q…\\E`` is literal."""
    i, n = 0, len(pattern)
    while i < n - 1:
        if pattern[i] != "\\":
            i += 1
            continue
        escaped = pattern[i + 1]
        if escaped == "C":
            raise RegexError(r"error parsing regexp: invalid escape sequence: \C")
        if escaped == "Q":
            end = pattern.find(r"\E", i + 2)
            if end < 0:
                return
            i = end + 2
            continue
        i += 2
