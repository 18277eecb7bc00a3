"""Semantic versions and version constraints, resolved exactly as Flux resolves them.

Flux picks ``GitRepository.spec.ref.semver``, ``HelmChart.spec.version`` and
``OCIRepository.spec.ref.semver`` with the Go library ``github.com/Masterminds/semver/v3``
(v3.4.0) and parses candidate tags with ``fluxcd/pkg/version.ParseVersion``. A user's existing
constraint must select the very same version here, so this module reproduces that library's
observable behaviour, quirks included, rather than any other reading of SemVer:

* ``parse(text)`` is ``NewVersion``: an optional leading ``v``, missing minor/patch read as 0
  (``1.2`` is ``1.2.0``), leading zeros in major/minor/patch accepted (``01.2.3``), but not in
  numeric prerelease identifiers. ``parse(text, strict=True)`` is ``StrictNewVersion``: exactly
  ``X.Y.Z[-pre][+build]``, no ``v``, no leading zeros.
* ``parse_tag(text)`` is Flux's ``ParseVersion``: strict, except that one leading ``v`` is
  allowed. Git tags, Helm index versions and OCI tags go through it; anything it refuses is
  skipped.
* ``parse_constraints(text)`` is ``NewConstraint``: ``||`` separates alternatives, spaces or a
  comma separate the comparators of one alternative, ``a - b`` (spaces required) is
  ``>= a, <= b``, and ``x``/``X``/``*`` or a missing part make a comparator a range whose exact
  meaning depends on the operator (see ``Comparator``).
* A prerelease version satisfies an alternative only when some comparator of that alternative
  carries a prerelease itself (of any major.minor.patch), or when ``include_prerelease`` is set.
* Precedence is SemVer 2.0.0's: build metadata is ignored (``1.0.0+a == 1.0.0+b``), a
  prerelease sorts below its release, numeric identifiers sort below alphanumeric ones and
  compare as numbers (but only up to 2**64-1: larger digit strings compare as text, as in Go).

``latest(candidates, constraints)`` picks the highest satisfying candidate; among candidates of
equal precedence (differing only in build metadata) the caller's ``key`` decides, then the
later candidate. Errors are ``SemverError`` carrying Masterminds' messages
(``improper constraint: <group>``, ``invalid semantic version``, ...).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from fluxd import regex

__all__ = [
    "Comparator",
    "Constraints",
    "InvalidConstraintError",
    "InvalidVersionError",
    "SemverError",
    "Version",
    "latest",
    "parse",
    "parse_constraints",
    "parse_tag",
]


class SemverError(ValueError):
    """A version or a constraint that cannot be parsed; the message is Masterminds'."""


class InvalidVersionError(SemverError):
    """A version string the parser refuses."""


class InvalidConstraintError(SemverError):
    """A constraint string the parser refuses."""


# Masterminds' error texts (v3.4.0 lower-cased them).
ERR_INVALID_SEMVER: Final = "invalid semantic version"
ERR_EMPTY_STRING: Final = "version string empty"
ERR_INVALID_CHARACTERS: Final = "invalid characters in version"
ERR_SEGMENT_STARTS_ZERO: Final = "version segment starts with 0"
ERR_INVALID_METADATA: Final = "invalid build string"
ERR_INVALID_PRERELEASE: Final = "invalid prerelease string"
ERR_CONSTRAINT_PARSER: Final = "constraint parser error"

_UINT64_MAX: Final = 2**64 - 1
_DIGITS: Final = frozenset(string.digits)
_IDENT_CHARS: Final = frozenset(string.ascii_letters + string.digits + "-")
# Go's regexp ``\s`` (ASCII only, no vertical tab); Python's ``\s`` would accept more.
_WS: Final = frozenset(" \t\n\f\r")
_WS_CLASS: Final = r"[ \t\n\f\r]"
# The characters of a constraint's version segment. ``|`` belongs here because the Go
# character class is written ``[0-9|x|X|\*]``; a lone ``|`` therefore scans as a segment and
# then fails to parse, exactly as in Go.
_SEGMENT_CHARS: Final = frozenset(string.digits + "|xX*")

_LOOSE_VERSION: Final = re.compile(
    r"v?([0-9]+)(?:\.([0-9]+))?(?:\.([0-9]+))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?",
    re.ASCII,
)

_CONSTRAINT_VERSION: Final = (
    r"v?[0-9|xX*]+(?:\.[0-9|xX*]+)?(?:\.[0-9|xX*]+)?"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)
# RE2, as Go: with Python's backtracking ``re``, runs of blanks or of ``1-1-…`` in a
# constraint (a spec field) cost quadratic time, seconds for 20 KB.
_HYPHEN_RANGE: Final = regex.compile(
    rf"{_WS_CLASS}*({_CONSTRAINT_VERSION}){_WS_CLASS}+-{_WS_CLASS}+"
    rf"({_CONSTRAINT_VERSION}){_WS_CLASS}*")

# The operator alternatives in the order the Go regex tries them; "" (no operator) is second.
_OPERATORS: Final = ("=", "", "!=", ">", "<", ">=", "=>", "<=", "=<", "~", "~>", "^")


# --- versions -------------------------------------------------------------------------------


def _parse_uint(text: str) -> int:
    """Go's ``strconv.ParseUint(text, 10, 64)`` for a string of ASCII digits (possibly empty)."""
    if not text or not all(ch in _DIGITS for ch in text):
        raise InvalidVersionError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    value = int(text)
    if value > _UINT64_MAX:
        raise InvalidVersionError(f'strconv.ParseUint: parsing "{text}": value out of range')
    return value


def _is_numeric(identifier: str) -> bool:
    return bool(identifier) and all(ch in _DIGITS for ch in identifier)


def _check_prerelease(prerelease: str) -> None:
    for identifier in prerelease.split("."):
        if identifier == "":
            raise InvalidVersionError(ERR_INVALID_PRERELEASE)
        if _is_numeric(identifier):
            if len(identifier) > 1 and identifier[0] == "0":
                raise InvalidVersionError(ERR_SEGMENT_STARTS_ZERO)
        elif not all(ch in _IDENT_CHARS for ch in identifier):
            raise InvalidVersionError(ERR_INVALID_PRERELEASE)


def _check_metadata(metadata: str) -> None:
    for identifier in metadata.split("."):
        if identifier == "" or not all(ch in _IDENT_CHARS for ch in identifier):
            raise InvalidVersionError(ERR_INVALID_METADATA)


_PreIdentifierKey = tuple[int, int, str]


def _identifier_key(identifier: str) -> _PreIdentifierKey:
    # Go decides "numeric" with ParseUint: digits that fit in 64 bits. Anything else,
    # including a digit string beyond 2**64-1, compares as text (byte order) and above numbers.
    if _is_numeric(identifier) and int(identifier) <= _UINT64_MAX:
        return (0, int(identifier), "")
    return (1, 0, identifier)


def _prerelease_key(prerelease: str) -> tuple[_PreIdentifierKey, ...]:
    if prerelease == "":
        return ()
    return tuple(_identifier_key(part) for part in prerelease.split("."))


def _compare_prerelease(left: str, right: str) -> int:
    a, b = _prerelease_key(left), _prerelease_key(right)
    return (a > b) - (a < b)


Precedence = tuple[int, int, int, int, tuple[_PreIdentifierKey, ...]]


@dataclass(frozen=True, eq=False, slots=True)
class Version:
    """A parsed version. Equality, hashing and ordering follow precedence only.

    ``original`` is the text it was parsed from (a Git tag keeps its ``v``); ``str()`` is the
    canonical form without ``v``, with every part and with the build metadata.
    """

    major: int
    minor: int
    patch: int
    prerelease: str = ""
    metadata: str = ""
    original: str = ""
    _precedence: Precedence = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for part in (self.major, self.minor, self.patch):
            if isinstance(part, bool) or not isinstance(part, int):
                raise TypeError(f"version numbers are integers, got {part!r}")
            if not 0 <= part <= _UINT64_MAX:
                raise InvalidVersionError(
                    f'strconv.ParseUint: parsing "{part}": value out of range'
                )
        if self.prerelease:
            _check_prerelease(self.prerelease)
        if self.metadata:
            _check_metadata(self.metadata)
        if not self.original:
            object.__setattr__(self, "original", self._canonical())
        release_rank = 0 if self.prerelease else 1
        precedence = (
            self.major,
            self.minor,
            self.patch,
            release_rank,
            _prerelease_key(self.prerelease),
        )
        object.__setattr__(self, "_precedence", precedence)

    def _canonical(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += f"-{self.prerelease}"
        if self.metadata:
            text += f"+{self.metadata}"
        return text

    def __str__(self) -> str:
        return self._canonical()

    @property
    def precedence(self) -> Precedence:
        """A sort key: equal for versions of equal precedence, ordered like the versions."""
        return self._precedence

    @property
    def is_prerelease(self) -> bool:
        return self.prerelease != ""

    def compare(self, other: Version) -> int:
        """-1, 0 or 1 as ``self`` has lower, equal or higher precedence than ``other``."""
        a, b = self._precedence, other._precedence
        return (a > b) - (a < b)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._precedence == other._precedence

    def __hash__(self) -> int:
        return hash(self._precedence)

    def __lt__(self, other: Version) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._precedence < other._precedence

    def __le__(self, other: Version) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._precedence <= other._precedence

    def __gt__(self, other: Version) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._precedence > other._precedence

    def __ge__(self, other: Version) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._precedence >= other._precedence


def _parse_loose(text: str) -> Version:
    match = _LOOSE_VERSION.fullmatch(text)
    if match is None:
        raise InvalidVersionError(ERR_INVALID_SEMVER)
    major_text, minor_text, patch_text, prerelease, metadata = match.groups()

    def segment(digits: str | None) -> int:
        if digits is None:
            return 0
        try:
            return _parse_uint(digits)
        except InvalidVersionError as err:
            raise InvalidVersionError(f"error parsing version segment: {err}") from None

    major, minor, patch = segment(major_text), segment(minor_text), segment(patch_text)
    if prerelease:
        _check_prerelease(prerelease)
    return Version(major, minor, patch, prerelease or "", metadata or "", text)


def _parse_strict(text: str) -> Version:
    if text == "":
        raise InvalidVersionError(ERR_EMPTY_STRING)
    parts = text.split(".", 2)
    if len(parts) != 3:
        raise InvalidVersionError(ERR_INVALID_SEMVER)
    metadata = prerelease = ""
    # Build metadata first (it is rightmost), then the prerelease, then the numbers.
    if "+" in parts[2]:
        parts[2], metadata = parts[2].split("+", 1)
        _check_metadata(metadata)
    if "-" in parts[2]:
        parts[2], prerelease = parts[2].split("-", 1)
        _check_prerelease(prerelease)
    for part in parts:
        if not all(ch in _DIGITS for ch in part):
            raise InvalidVersionError(ERR_INVALID_CHARACTERS)
        if len(part) > 1 and part[0] == "0":
            raise InvalidVersionError(ERR_SEGMENT_STARTS_ZERO)
    major, minor, patch = (_parse_uint(part) for part in parts)
    return Version(major, minor, patch, prerelease, metadata, text)


def parse(text: str, *, strict: bool = False) -> Version:
    """Parse a version: ``NewVersion`` (coercing) or, with ``strict``, ``StrictNewVersion``."""
    if not isinstance(text, str):
        raise TypeError(f"a version is text, got {type(text).__name__}")
    return _parse_strict(text) if strict else _parse_loose(text)


def parse_tag(text: str) -> Version:
    """Flux's ``version.ParseVersion``: strict SemVer, except that one leading ``v`` is allowed.

    ``original`` keeps the ``v``, so the tag can be found again by name.
    """
    if not isinstance(text, str):
        raise TypeError(f"a version is text, got {type(text).__name__}")
    _parse_strict(text.removeprefix("v"))
    return parse(text)


# --- constraints ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ScannedVersion:
    """A constraint's version as its regex would capture it."""

    text: str  # the whole version as written, ``v`` and build metadata included
    major: str  # without the ``v``
    minor: str  # with its leading ".", or ""
    patch: str  # with its leading ".", or ""
    prerelease: str  # with its leading "-", or ""


def _skip(text: str, pos: int, chars: frozenset[str]) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _skip_identifiers(text: str, pos: int) -> int:
    """Dot-separated identifiers starting at ``pos``; returns ``pos`` if there is none."""
    end = _skip(text, pos, _IDENT_CHARS)
    if end == pos:
        return pos
    while end + 1 < len(text) and text[end] == "." and text[end + 1] in _IDENT_CHARS:
        end = _skip(text, end + 1, _IDENT_CHARS)
    return end


def _scan_version(text: str, start: int) -> tuple[_ScannedVersion, int] | None:
    """Scan a constraint version at ``start``, taking every optional part that is there.

    The Go regexes are greedy here and anything that follows a version must be whitespace, a
    comma or the end, none of which a version can contain, so the longest scan is the only one
    that can be part of a valid constraint.
    """
    pos = start
    if pos < len(text) and text[pos] == "v":
        pos += 1
    major_end = _skip(text, pos, _SEGMENT_CHARS)
    if major_end == pos:
        return None
    major, pos = text[pos:major_end], major_end
    numbers = ["", ""]
    for index in range(2):
        if pos + 1 < len(text) and text[pos] == "." and text[pos + 1] in _SEGMENT_CHARS:
            end = _skip(text, pos + 1, _SEGMENT_CHARS)
            numbers[index], pos = text[pos:end], end
    prerelease = ""
    if pos < len(text) and text[pos] == "-":
        end = _skip_identifiers(text, pos + 1)
        if end > pos + 1:
            prerelease, pos = text[pos:end], end
    if pos < len(text) and text[pos] == "+":
        end = _skip_identifiers(text, pos + 1)
        if end > pos + 1:
            pos = end
    scanned = _ScannedVersion(text[start:pos], major, numbers[0], numbers[1], prerelease)
    return scanned, pos


def _scan_comparator(text: str, start: int) -> tuple[str, _ScannedVersion, int] | None:
    """An operator, optional whitespace and a version, the operators tried in Go's order."""
    for operator in _OPERATORS:
        if not text.startswith(operator, start):
            continue
        scanned = _scan_version(text, _skip(text, start + len(operator), _WS))
        if scanned is not None:
            return operator, scanned[0], scanned[1]
    return None


def _split_group(group: str) -> list[tuple[str, _ScannedVersion]] | None:
    """The comparators of one ``||`` alternative, or None if it is not well formed.

    A group is comparators separated by whitespace or by one comma (with whitespace around
    it), optionally surrounded by whitespace: Masterminds' validating regex, scanned by hand so
    that a long bad constraint cannot make the regex engine backtrack for ever.
    """
    first = _scan_comparator(group, _skip(group, 0, _WS))
    if first is None:
        return None
    comparators = [(first[0], first[1])]
    pos = first[2]
    while True:
        gap_end = _skip(group, pos, _WS)
        if gap_end == len(group):
            return comparators
        if group[gap_end] == ",":
            nxt = _scan_comparator(group, _skip(group, gap_end + 1, _WS))
        elif gap_end > pos:
            nxt = _scan_comparator(group, gap_end)
        else:
            return None
        if nxt is None:
            return None
        comparators.append((nxt[0], nxt[1]))
        pos = nxt[2]


def _is_wildcard(part: str) -> bool:
    return part in ("x", "X", "*")


def _rewrite_hyphen_ranges(text: str) -> str:
    """``a - b`` becomes ``>= a, <= b `` (trailing space included), one match at a time.

    Like Go's ``strings.Replace(o, match, t, 1)``, each match replaces the first occurrence of
    its text in the string rewritten so far.
    """
    rewritten = text
    for whole, (lower, upper) in list(_HYPHEN_RANGE.finditer(text)):
        rewritten = rewritten.replace(whole, f">= {lower}, <= {upper} ", 1)
    return rewritten


@dataclass(frozen=True, slots=True)
class Comparator:
    """One operator and version of a constraint.

    A version with a wildcard or a missing part is "dirty" and makes the comparator a range,
    read per operator as Masterminds does: ``2``/``2.x`` with ``=`` or no operator is ``~2``;
    ``>11`` means ``>=12.0.0`` and ``>11.1`` means ``>=11.2.0``; ``<=1.1`` admits all of
    ``1.1.z``; ``<1.x`` and ``>=1.x`` ignore the wildcard (``<1.0.0``, ``>=1.0.0``);
    ``!=4.x`` excludes all of ``4.y.z``.
    """

    operator: str  # as written: "", "=", "!=", ">", "<", ">=", "=>", "<=", "=<", "~", "~>", "^"
    orig: str  # the version as written (reported in reasons)
    version: Version  # the version compared with, wildcards and missing parts read as 0
    dirty: bool
    minor_dirty: bool
    patch_dirty: bool

    def __str__(self) -> str:
        return self.operator + self.orig

    def test(self, version: Version, include_prerelease: bool) -> str | None:
        """None when ``version`` satisfies this comparator, else the reason it does not."""
        if version.prerelease and not include_prerelease:
            return _prerelease_reason(version)
        return _PREDICATES[self.operator](self, version)


def _prerelease_reason(version: Version) -> str:
    return (
        f"{version} is a prerelease version and the constraint is only looking for release versions"
    )


def _not_equal(c: Comparator, v: Version) -> str | None:
    con = c.version
    if c.dirty:
        if con.major != v.major:
            return None
        if con.minor != v.minor and not c.minor_dirty:
            return None
        if c.minor_dirty:
            return f"{v} is equal to {c.orig}"
        if con.patch != v.patch and not c.patch_dirty:
            return None
        if c.patch_dirty:
            if (v.prerelease or con.prerelease) and _compare_prerelease(
                v.prerelease, con.prerelease
            ) != 0:
                return None
            return f"{v} is equal to {c.orig}"
    if v == con:
        return f"{v} is equal to {c.orig}"
    return None


def _greater_than(c: Comparator, v: Version) -> str | None:
    con = c.version
    reason = f"{v} is less than or equal to {c.orig}"
    if not c.dirty:
        return None if v > con else reason
    if v.major > con.major:
        return None
    if v.major < con.major or c.minor_dirty:
        return reason
    if c.patch_dirty:
        return None if v.minor > con.minor else reason
    return None if v > con else reason


def _less_than(c: Comparator, v: Version) -> str | None:
    return None if v < c.version else f"{v} is greater than or equal to {c.orig}"


def _greater_than_or_equal(c: Comparator, v: Version) -> str | None:
    return None if v >= c.version else f"{v} is less than {c.orig}"


def _less_than_or_equal(c: Comparator, v: Version) -> str | None:
    con = c.version
    reason = f"{v} is greater than {c.orig}"
    if not c.dirty:
        return None if v <= con else reason
    if v.major > con.major:
        return reason
    if v.major == con.major and v.minor > con.minor and not c.minor_dirty:
        return reason
    return None


def _tilde(c: Comparator, v: Version) -> str | None:
    con = c.version
    if v < con:
        return f"{v} is less than {c.orig}"
    # ~0.0.0 (and ~*) accepts everything from 0.0.0 up; ~0 and ~0.0 do not.
    if (con.major, con.minor, con.patch) == (0, 0, 0) and not (c.minor_dirty or c.patch_dirty):
        return None
    if v.major != con.major:
        return f"{v} does not have same major version as {c.orig}"
    if v.minor != con.minor and not c.minor_dirty:
        return f"{v} does not have same major and minor version as {c.orig}"
    return None


def _tilde_or_equal(c: Comparator, v: Version) -> str | None:
    if c.dirty:
        return _tilde(c, v)
    return None if v == c.version else f"{v} is not equal to {c.orig}"


def _caret(c: Comparator, v: Version) -> str | None:
    con = c.version
    if v < con:
        return f"{v} is less than {c.orig}"
    if con.major > 0 or c.minor_dirty:
        if v.major == con.major:
            return None
        return f"{v} does not have same major version as {c.orig}"
    if v.major > 0:
        return f"{v} does not have same major version as {c.orig}"
    if con.minor > 0 or c.patch_dirty:
        if v.minor == con.minor:
            return None
        return (
            f"{v} does not have same minor version as {c.orig}. Expected minor versions to "
            "match when constraint major version is 0"
        )
    if v.minor > 0:
        return f"{v} does not have same minor version as {c.orig}"
    if v.patch == con.patch:
        return None
    return (
        f"{v} does not equal {c.orig}. Expect version and constraint to equal when major and "
        "minor versions are 0"
    )


_PREDICATES: Final[dict[str, Callable[[Comparator, Version], str | None]]] = {
    "": _tilde_or_equal,
    "=": _tilde_or_equal,
    "!=": _not_equal,
    ">": _greater_than,
    "<": _less_than,
    ">=": _greater_than_or_equal,
    "=>": _greater_than_or_equal,
    "<=": _less_than_or_equal,
    "=<": _less_than_or_equal,
    "~": _tilde,
    "~>": _tilde,
    "^": _caret,
}


def _make_comparator(operator: str, scanned: _ScannedVersion) -> Comparator:
    minor, patch = scanned.minor[1:], scanned.patch[1:]
    minor_dirty = patch_dirty = False
    dirty = True
    if _is_wildcard(scanned.major) or scanned.major == "":
        text = f"0.0.0{scanned.prerelease}"
    elif _is_wildcard(minor) or scanned.minor == "":
        minor_dirty = True
        text = f"{scanned.major}.0.0{scanned.prerelease}"
    elif _is_wildcard(patch) or scanned.patch == "":
        patch_dirty = True
        text = f"{scanned.major}{scanned.minor}.0{scanned.prerelease}"
    else:
        dirty = False
        text = scanned.text
    try:
        version = parse(text)
    except SemverError:
        raise InvalidConstraintError(ERR_CONSTRAINT_PARSER) from None
    return Comparator(operator, scanned.text, version, dirty, minor_dirty, patch_dirty)


@dataclass(frozen=True, slots=True)
class Constraints:
    """Alternatives (``||``) of comparators that must all hold (spaces or commas)."""

    text: str
    groups: tuple[tuple[Comparator, ...], ...]
    include_prerelease: bool = False

    def _admits_prereleases(self, group: tuple[Comparator, ...]) -> bool:
        return self.include_prerelease or any(c.version.prerelease for c in group)

    def check(self, version: Version | str) -> bool:
        """Whether ``version`` (a ``Version``, or text for ``parse``) satisfies any alternative."""
        v = parse(version) if isinstance(version, str) else version
        for group in self.groups:
            include = self._admits_prereleases(group)
            if all(c.test(v, include) is None for c in group):
                return True
        return False

    def validate(self, version: Version | str) -> tuple[bool, list[str]]:
        """``check``, with the reasons every alternative fails (the prerelease one only once)."""
        v = parse(version) if isinstance(version, str) else version
        reasons: list[str] = []
        prerelease_reported = False
        for group in self.groups:
            include = self._admits_prereleases(group)
            satisfied = True
            for comparator in group:
                if v.prerelease and not include:
                    if not prerelease_reported:
                        reasons.append(_prerelease_reason(v))
                        prerelease_reported = True
                    satisfied = False
                    continue
                reason = comparator.test(v, include)
                if reason is not None:
                    reasons.append(reason)
                    satisfied = False
            if satisfied:
                return True, []
        return False, reasons

    def __str__(self) -> str:
        return " || ".join(" ".join(str(c) for c in group) for group in self.groups)


def parse_constraints(text: str, *, include_prerelease: bool = False) -> Constraints:
    """Parse a constraint as ``NewConstraint`` does (``include_prerelease`` is its field)."""
    if not isinstance(text, str):
        raise TypeError(f"a constraint is text, got {type(text).__name__}")
    groups: list[tuple[Comparator, ...]] = []
    for group in _rewrite_hyphen_ranges(text).split("||"):
        scanned = _split_group(group)
        if scanned is None:
            raise InvalidConstraintError(f"improper constraint: {group}")
        groups.append(tuple(_make_comparator(op, version) for op, version in scanned))
    return Constraints(text, tuple(groups), include_prerelease)


# --- picking --------------------------------------------------------------------------------


class _SupportsLessThan(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


T = TypeVar("T")


def latest(
    candidates: Iterable[tuple[str, T]],
    constraints: Constraints | str,
    *,
    key: Callable[[Version, T], _SupportsLessThan] | None = None,
    parser: Callable[[str], Version] = parse_tag,
) -> tuple[Version, T] | None:
    """The highest candidate whose text parses and satisfies ``constraints``, or None.

    Candidates are ``(text, item)`` pairs, e.g. ``(tag, commit)``; text that ``parser``
    (Flux's ``parse_tag`` by default) refuses is skipped. Among candidates of equal precedence
    (they differ only in build metadata) the greatest ``key(version, item)`` wins, e.g. the
    tagged commit's time for Git or ``created`` for a Helm chart, as Flux sorts them; after
    that, the later candidate.
    """
    wanted = parse_constraints(constraints) if isinstance(constraints, str) else constraints
    best: tuple[Version, T] | None = None
    for text, item in candidates:
        try:
            version = parser(text)
        except SemverError:
            continue
        if not wanted.check(version):
            continue
        if best is None or _replaces(version, item, best, key):
            best = (version, item)
    return best


def _replaces(
    version: Version,
    item: T,
    best: tuple[Version, T],
    key: Callable[[Version, T], _SupportsLessThan] | None,
) -> bool:
    if version != best[0]:
        return version > best[0]
    return key is None or not key(version, item) < key(*best)
