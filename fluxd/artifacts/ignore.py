"""``.sourceignore`` rules, matched the way Flux's source-controller matches them.

Flux matches with go-git v5's ``plumbing/format/gitignore`` (through ``fluxcd/pkg``
``sourceignore``), not with git itself, and the two differ in ways that decide which files
end up in an artifact. This module reproduces go-git v5, not git:

* Every path is judged on its own; an excluded directory does not hide its contents from
  a later ``!`` rule (git refuses to re-include below an excluded parent; go-git does not).
* A pattern containing ``/`` (after removing a trailing ``/``) is anchored to its domain
  and matches a path *prefix*: ``a/b`` also matches ``a/b/c``. ``**`` is only special as
  a whole segment; ``foo/**`` matches ``foo`` itself too.
* Segments are matched with Go's ``filepath.Match``: ``*``, ``?``, ``[...]`` with ``^``
  (not ``!``) for negation, ``\\`` escapes. A malformed pattern matches nothing.
* Lines starting with ``#`` and blank lines are skipped; trailing spaces are trimmed unless
  escaped as ``\\ ``; leading spaces are kept.
* Patterns are tried from last to first; the first that matches decides.

A pattern's *domain* is the directory (as path components relative to the archived root)
of the ``.sourceignore`` file it came from; it only applies below that directory.

Which patterns apply follows Flux's code (``artifact/storage/archive.go``
``SourceIgnoreFilter``), not its docs: when the user gave any pattern at all (from
``.sourceignore`` files or ``spec.ignore``), only the VCS exclusions plus the user's
patterns apply; with none, the VCS exclusions plus the Ext, CI and Extra defaults apply.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "EXCLUDE_CI",
    "EXCLUDE_EXT",
    "EXCLUDE_EXTRA",
    "EXCLUDE_VCS",
    "IGNORE_FILE",
    "MatchResult",
    "Matcher",
    "Pattern",
    "default_matcher",
    "default_patterns",
    "load_ignore_patterns",
    "read_patterns",
    "source_ignore_matcher",
    "source_matcher",
    "vcs_patterns",
]

IGNORE_FILE = ".sourceignore"
EXCLUDE_VCS = ".git/,.gitignore,.gitmodules,.gitattributes"
EXCLUDE_EXT = "*.jpg,*.jpeg,*.gif,*.png,*.wmv,*.flv,*.tar.gz,*.zip"
EXCLUDE_CI = (".github/,.circleci/,.travis.yml,.gitlab-ci.yml,appveyor.yml,.drone.yml,"
              "cloudbuild.yaml,codeship-services.yml,codeship-steps.yml")
EXCLUDE_EXTRA = "**/.goreleaser.yml,**/.sops.yaml,**/.flux.yaml"

_ANY_DIRS = "**"


class MatchResult(enum.Enum):
    NO_MATCH = 0
    EXCLUDE = 1
    INCLUDE = 2


class _BadPattern(ValueError):
    pass


def _translate_segment(glob: str) -> re.Pattern[str] | None:
    """Go's ``filepath.Match`` syntax for one path segment as a regex; None if malformed.

    Segments never contain ``/``, so ``*`` and ``?`` simply match any characters here.
    """
    try:
        return re.compile(_segment_regex(glob), re.DOTALL)
    except _BadPattern:
        return None


def _segment_regex(glob: str) -> str:
    """The regex of one segment's glob, matched from the segment's start.

    Go's ``filepath.Match`` places each chunk after a ``*`` at the leftmost spot it fits
    and never reconsiders it; since every chunk has a fixed width, that finds a match
    whenever one exists. The regex does the same: a chunk after a star is an atomic
    ``(?>.*?chunk)``, only the last one floats (``.*chunk\\Z``). Each chunk then costs one
    pass over the name, where plain ``.*`` after ``.*`` backtracks exponentially in the
    number of stars (``*a*a*a*a*a*b`` over a long name takes minutes).
    """
    chunks: list[list[str]] = [[]]  # the pieces before the first star, then after each
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            if chunks[-1] or len(chunks) == 1:  # stars in a row are one star
                chunks.append([])
            i += 1
        elif c == "?":
            chunks[-1].append(".")
            i += 1
        elif c == "\\":
            if i + 1 >= n:
                raise _BadPattern("trailing backslash")
            chunks[-1].append(re.escape(glob[i + 1]))
            i += 2
        elif c == "[":
            cls, i = _class_regex(glob, i + 1)
            chunks[-1].append(cls)
        else:
            chunks[-1].append(re.escape(c))
            i += 1
    head, *floating = ("".join(chunk) for chunk in chunks)
    if not floating:
        return head + r"\Z"
    *middle, last = floating
    return head + "".join(f"(?>.*?{chunk})" for chunk in middle) + f".*{last}" + r"\Z"


def _class_char(glob: str, i: int) -> tuple[str, int]:
    """One (possibly escaped) class character, as Go's ``getEsc`` reads it."""
    n = len(glob)
    if i >= n or glob[i] in "-]":
        raise _BadPattern("bad character class")
    if glob[i] == "\\":
        i += 1
        if i >= n:
            raise _BadPattern("bad escape in class")
    if i + 1 >= n:  # the class must go on to a closing bracket
        raise _BadPattern("unterminated class")
    return glob[i], i + 1


def _class_regex(glob: str, i: int) -> tuple[str, int]:
    negated = i < len(glob) and glob[i] == "^"
    if negated:
        i += 1
    ranges: list[str] = []
    while True:
        if i < len(glob) and glob[i] == "]" and ranges:
            i += 1
            break
        lo, i = _class_char(glob, i)
        hi = lo
        if glob[i] == "-":
            hi, i = _class_char(glob, i + 1)
        if ord(lo) <= ord(hi):
            ranges.append(f"{re.escape(lo)}-{re.escape(hi)}")
        else:  # an empty range matches nothing but is legal in Go
            ranges.append("")
    body = "".join(ranges)
    if not body:
        return ("[\\s\\S]" if negated else "(?!)"), i
    return f"[{'^' if negated else ''}{body}]", i


_NAME_CACHE_SIZE = 65_536


@dataclass(frozen=True)
class Pattern:
    """One parsed gitignore line, scoped to ``domain`` (go-git v5 ``pattern``)."""

    text: str
    domain: tuple[str, ...]
    segments: tuple[str, ...]
    inclusion: bool
    dir_only: bool
    is_glob: bool
    _compiled: tuple[re.Pattern[str] | None, ...] = field(repr=False, compare=False)
    #: name → whether the (non-glob) pattern matches it: directory names recur on every
    #: path below them, so a tree walk asks about the same names over and over
    _names: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, line: str, domain: Sequence[str] = ()) -> Pattern:
        p = line
        inclusion = p.startswith("!")
        if inclusion:
            p = p[1:]
        if not p.endswith("\\ "):
            p = p.rstrip(" ")
        dir_only = p.endswith("/")
        if dir_only:
            p = p[:-1]
        is_glob = "/" in p
        segments = tuple(p.split("/"))
        if is_glob:
            compiled = tuple(None if s in ("", _ANY_DIRS) else _translate_segment(s)
                             for s in segments)
        else:
            compiled = (_translate_segment(segments[0].replace("\r", "")),)
        return cls(text=line, domain=tuple(domain), segments=segments, inclusion=inclusion,
                   dir_only=dir_only, is_glob=is_glob, _compiled=compiled)

    def match(self, path: Sequence[str], is_dir: bool) -> MatchResult:
        if len(path) <= len(self.domain):
            return MatchResult.NO_MATCH
        if tuple(path[: len(self.domain)]) != self.domain:
            return MatchResult.NO_MATCH
        rest = path[len(self.domain):]
        ok = self._glob_match(rest, is_dir) if self.is_glob else self._name_match(rest, is_dir)
        if not ok:
            return MatchResult.NO_MATCH
        return MatchResult.INCLUDE if self.inclusion else MatchResult.EXCLUDE

    def name_hit(self, name: str) -> bool:
        """Whether this (non-glob) pattern's name matches ``name``."""
        hit = self._names.get(name)
        if hit is None:
            regex = self._compiled[0]
            hit = regex is not None and regex.match(name) is not None
            if len(self._names) < _NAME_CACHE_SIZE:
                self._names[name] = hit
        return hit

    def _name_match(self, path: Sequence[str], is_dir: bool) -> bool:
        regex = self._compiled[0]
        if regex is None:
            return False
        last = len(path) - 1
        names = self._names
        for i, name in enumerate(path):
            hit = names.get(name)
            if hit is None:
                hit = regex.match(name) is not None
                if len(names) < _NAME_CACHE_SIZE:
                    names[name] = hit
            if not hit:
                continue
            # a dir-only rule never matches a file, but does match below a matching dir
            return not (self.dir_only and not is_dir and i == last)
        return False

    def _glob_match(self, path: Sequence[str], is_dir: bool) -> bool:
        matched = False
        can_traverse = False
        rest = list(path)
        last_index = len(self.segments) - 1
        for index, (segment, regex) in enumerate(zip(self.segments, self._compiled,
                                                     strict=True)):
            if segment == "":
                can_traverse = False
                continue
            if segment == _ANY_DIRS:
                if index == last_index:
                    break
                can_traverse = True
                continue
            if _ANY_DIRS in segment or regex is None:
                return False
            if not rest:
                return False
            if can_traverse:
                can_traverse = False
                while rest:
                    name = rest.pop(0)
                    if regex.match(name):
                        matched = True
                        break
                    if not rest:
                        matched = False
            else:
                if not regex.match(rest[0]):
                    return False
                matched = True
                rest.pop(0)
        if matched and self.dir_only and not is_dir and not rest:
            matched = False
        return matched


class Matcher:
    """Patterns in increasing priority; ``ignored`` asks the last matching one."""

    def __init__(self, patterns: Iterable[Pattern]) -> None:
        self.patterns: tuple[Pattern, ...] = tuple(patterns)
        self.has_inclusions = any(p.inclusion for p in self.patterns)

    def match_parts(self, parts: Sequence[str], is_dir: bool) -> bool:
        for pattern in reversed(self.patterns):
            result = pattern.match(parts, is_dir)
            if result is not MatchResult.NO_MATCH:
                return result is MatchResult.EXCLUDE
        return False

    def walk_checker(self) -> Callable[[Sequence[str], bool], bool]:
        """``match_parts`` for a walk that visits directories before their contents and
        skips excluded directories (``prunes()``): a name pattern can then only match the
        last name, since a match on an ancestor would have excluded it. Same answers,
        far fewer pattern checks. Without pruning it is ``match_parts`` itself."""
        if not self.prunes():
            return self.match_parts
        names = [p for p in self.patterns if not p.is_glob and p.domain]
        globs = [p for p in reversed(self.patterns) if p.is_glob]
        # name patterns of the root (Flux's defaults, spec.ignore, the top .sourceignore)
        # apply at every depth: one alternation each for files and directories
        root = [p for p in self.patterns if not p.is_glob and not p.domain
                and p._compiled[0] is not None]
        for_files = _alternation([p for p in root if not p.dir_only])
        for_dirs = _alternation(root)

        def excluded(parts: Sequence[str], is_dir: bool) -> bool:
            leaf = parts[-1]
            depth = len(parts)
            if (for_dirs if is_dir else for_files).match(leaf) is not None:
                return True
            for pattern in names:
                domain = pattern.domain
                if domain and (depth <= len(domain) or tuple(parts[:len(domain)]) != domain):
                    continue
                if pattern.dir_only and not is_dir:
                    continue
                if pattern.name_hit(leaf):
                    return True
            return any(g.match(parts, is_dir) is MatchResult.EXCLUDE for g in globs)

        return excluded

    def ignored(self, rel_path: str, is_dir: bool) -> bool:
        """Whether ``rel_path`` (``/``-separated, relative to the archived root) is excluded."""
        parts = [p for p in rel_path.split("/") if p not in ("", ".")]
        if not parts:
            return False
        return self.match_parts(parts, is_dir)

    def prunes(self) -> bool:
        """Whether an excluded directory's contents are all excluded too.

        True when no ``!`` rule exists: a go-git pattern matching a directory matches every
        path below it, so only an inclusion could bring a descendant back.
        """
        return not self.has_inclusions

    def __repr__(self) -> str:
        return f"Matcher({[p.text for p in self.patterns]!r})"


def _alternation(patterns: Sequence[Pattern]) -> re.Pattern[str]:
    """One regex matching a name when any of the (non-glob) ``patterns`` does."""
    if not patterns:
        return _NEVER
    return re.compile("|".join(f"(?:{p._compiled[0].pattern})" for p in patterns
                               if p._compiled[0] is not None), re.DOTALL)


_NEVER = re.compile(r"(?!)")


def read_patterns(text: str, domain: Sequence[str] = ()) -> list[Pattern]:
    """The patterns of one ignore file (or of ``spec.ignore``), scoped to ``domain``."""
    patterns = []
    for raw in text.split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        if line.startswith("#") or not line.strip():
            continue
        patterns.append(Pattern.parse(line, domain))
    return patterns


def _split(csv: str, domain: Sequence[str]) -> list[Pattern]:
    return [Pattern.parse(p, domain) for p in csv.split(",")]


def vcs_patterns(domain: Sequence[str] = ()) -> list[Pattern]:
    return _split(EXCLUDE_VCS, domain)


def default_patterns(domain: Sequence[str] = ()) -> list[Pattern]:
    """The Ext, CI and Extra exclusions (not VCS)."""
    return _split(",".join([EXCLUDE_EXT, EXCLUDE_CI, EXCLUDE_EXTRA]), domain)


def load_ignore_patterns(root: Path, domain: Sequence[str] = ()) -> list[Pattern]:
    """``.sourceignore`` files under ``root``, recursively, each scoped to its directory.

    Parents come before children and siblings in name order; ``.git`` directories and
    symlinked directories are not entered (``os.ReadDir``'s ``IsDir`` does not follow links).
    """
    patterns: list[Pattern] = []
    try:
        text = (root / IGNORE_FILE).read_bytes().decode("utf-8", "surrogateescape")
    except (FileNotFoundError, IsADirectoryError):
        pass
    else:
        patterns.extend(read_patterns(text, domain))
    with os.scandir(root) as entries:
        subdirs = sorted((e.name for e in entries
                          if e.is_dir(follow_symlinks=False) and e.name != ".git"),
                         key=os.fsencode)
    for name in subdirs:
        patterns.extend(load_ignore_patterns(root / name, [*domain, name]))
    return patterns


def default_matcher(patterns: Sequence[Pattern] = (), domain: Sequence[str] = ()) -> Matcher:
    """VCS and default exclusions first (lowest priority), then ``patterns``."""
    return Matcher([*vcs_patterns(domain), *default_patterns(domain), *patterns])


def source_ignore_matcher(patterns: Sequence[Pattern],
                          domain: Sequence[str] = ()) -> Matcher:
    """Flux's ``SourceIgnoreFilter``: any user pattern drops the Ext/CI/Extra defaults."""
    if patterns:
        return Matcher([*vcs_patterns(domain), *patterns])
    return default_matcher((), domain)


def source_matcher(root: Path, spec_ignore: str | None = None) -> Matcher:
    """The matcher a GitRepository uses for ``root``: its ``.sourceignore`` files, then
    ``spec.ignore``, under Flux's rule for defaults."""
    patterns = load_ignore_patterns(root)
    if spec_ignore is not None:
        patterns.extend(read_patterns(spec_ignore))
    return source_ignore_matcher(patterns)
