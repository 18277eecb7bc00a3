""".sourceignore semantics: gitignore syntax as go-git v5 matches it, Flux's rule for defaults."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxd.artifacts.ignore import (
    Matcher,
    MatchResult,
    Pattern,
    load_ignore_patterns,
    read_patterns,
    source_ignore_matcher,
    source_matcher,
)
from tests.artifacts.trees import make_tree


def matcher(text: str) -> Matcher:
    return Matcher(read_patterns(text))


# -- the defaults ---------------------------------------------------------------------------


@pytest.mark.parametrize("path, is_dir", [
    (".git", True), (".git/HEAD", False), ("sub/.git/config", False), (".gitignore", False),
    (".gitmodules", False), ("deep/.gitattributes", False)])
def test_vcs_files_are_excluded_by_default(path: str, is_dir: bool) -> None:
    assert source_ignore_matcher([]).ignored(path, is_dir)


@pytest.mark.parametrize("path", ["logo.png", "img/a.jpg", "b.jpeg", "c.gif", "v.wmv",
                                  "v.flv", "charts/x-1.0.tar.gz", "bundle.zip"])
def test_binary_extensions_are_excluded_by_default(path: str) -> None:
    assert source_ignore_matcher([]).ignored(path, False)


@pytest.mark.parametrize("path, is_dir", [
    (".github", True), (".github/workflows/ci.yaml", False), (".circleci/config.yml", False),
    (".travis.yml", False), (".gitlab-ci.yml", False), ("appveyor.yml", False),
    (".drone.yml", False), ("cloudbuild.yaml", False), ("codeship-services.yml", False),
    ("codeship-steps.yml", False)])
def test_ci_files_are_excluded_by_default(path: str, is_dir: bool) -> None:
    assert source_ignore_matcher([]).ignored(path, is_dir)


@pytest.mark.parametrize("path", [".goreleaser.yml", "a/.sops.yaml", "a/b/.flux.yaml"])
def test_extra_tool_files_are_excluded_by_default_at_any_depth(path: str) -> None:
    assert source_ignore_matcher([]).ignored(path, False)


@pytest.mark.parametrize("path", ["kustomization.yaml", "apps/deploy.yaml", "README.md",
                                  ".sourceignore", "github/x.yaml"])
def test_ordinary_files_are_kept_by_default(path: str) -> None:
    assert not source_ignore_matcher([]).ignored(path, False)


def test_any_user_pattern_drops_the_defaults_but_keeps_the_vcs_exclusions() -> None:
    # Flux's code (SourceIgnoreFilter), not its docs: defaults vanish, VCS stays
    m = source_ignore_matcher(read_patterns("secrets/\n"))
    assert m.ignored("secrets/key.yaml", False)
    assert m.ignored(".git/HEAD", False)
    assert m.ignored(".gitignore", False)
    for kept in ("logo.png", ".github/workflows/ci.yaml", ".sops.yaml", "a.tar.gz"):
        assert not m.ignored(kept, False), kept


def test_a_sourceignore_file_alone_drops_the_defaults(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {".sourceignore": "# only a comment counts as nothing\n*.md\n"})
    m = source_matcher(root)
    assert m.ignored("README.md", False)
    assert not m.ignored("logo.png", False)


def test_a_sourceignore_with_only_comments_keeps_the_defaults(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {".sourceignore": "# nothing\n\n   \n"})
    assert source_matcher(root).ignored("logo.png", False)


# -- scoping and order ----------------------------------------------------------------------


def test_nested_sourceignore_patterns_apply_only_below_their_directory(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {"apps/.sourceignore": "*.txt\n/only-here.yaml\n"})
    m = source_matcher(root)
    assert m.ignored("apps/notes.txt", False)
    assert m.ignored("apps/deeper/notes.txt", False)
    assert not m.ignored("notes.txt", False)
    assert not m.ignored("other/notes.txt", False)
    assert m.ignored("apps/only-here.yaml", False)
    assert not m.ignored("apps/deeper/only-here.yaml", False)
    assert not m.ignored("only-here.yaml", False)


def test_sourceignore_files_inside_git_directories_are_not_read(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {".git/.sourceignore": "*.yaml\n", "a/.sourceignore": "x\n"})
    patterns = load_ignore_patterns(root)
    assert [(p.text, p.domain) for p in patterns] == [("x", ("a",))]


def test_spec_ignore_comes_after_the_files_and_so_wins(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {".sourceignore": "*.yaml\n"})
    m = source_matcher(root, spec_ignore="!keep.yaml\n")
    assert m.ignored("drop.yaml", False)
    assert not m.ignored("keep.yaml", False)


def test_a_deeper_sourceignore_overrides_a_shallower_one(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {".sourceignore": "*.yaml\n", "a/.sourceignore": "!*.yaml\n"})
    m = source_matcher(root)
    assert m.ignored("b.yaml", False)
    assert not m.ignored("a/b.yaml", False)


# -- pattern syntax (go-git v5) -------------------------------------------------------------

CASES = [
    # pattern text, path, is_dir, ignored
    ("*.yaml\n!keep.yaml", "keep.yaml", False, False),
    ("*.yaml\n!keep.yaml", "drop.yaml", False, True),
    ("!keep.yaml\n*.yaml", "keep.yaml", False, True),  # the last match decides
    ("vendor/\n!vendor/keep.go", "vendor/keep.go", False, False),  # go-git re-includes
    ("vendor/\n!vendor/keep.go", "vendor/other.go", False, True),
    ("build/", "build", True, True),
    ("build/", "build", False, False),  # dir-only never matches a file
    ("build/", "src/build/out.o", False, True),
    ("/root.txt", "root.txt", False, True),
    ("/root.txt", "sub/root.txt", False, False),
    ("docs/*.md", "docs/a.md", False, True),  # a middle slash anchors
    ("docs/*.md", "x/docs/a.md", False, False),
    ("a/b", "a/b/c", False, True),  # go-git: a glob matches a path prefix
    ("**/tmp", "tmp", True, True),
    ("**/tmp", "x/y/tmp", True, True),
    ("**/tmp", "x/tmp/file", False, True),
    ("a/**/b", "a/b", False, True),
    ("a/**/b", "a/x/y/b", False, True),
    ("a/**/b", "a/x/y/c", False, False),
    ("foo/**", "foo/bar/baz", False, True),
    ("foo/**", "foo", True, True),  # go-git: the trailing ** matches foo itself
    ("foo**", "foobar", False, True),  # ** inside a simple name is a plain wildcard
    ("a/foo**/b", "a/foox/b", False, False),  # ... but inside a glob segment it fails
    ("*.txt", "deep/down/x.txt", False, True),
    ("?.txt", "a.txt", False, True),
    ("?.txt", "ab.txt", False, False),
    ("[^a]x", "bx", False, True),  # Go negates classes with ^
    ("[^a]x", "ax", False, False),
    ("[!a]x", "!x", False, True),  # ... and ! is just a member
    ("[!a]x", "bx", False, False),
    ("[a-c].yaml", "b.yaml", False, True),
    ("[a-c].yaml", "d.yaml", False, False),
    ("[", "[", False, False),  # malformed: matches nothing
    ("a[", "a[", False, False),
    ("x\\", "x\\", False, False),
    ("\\#hash", "#hash", False, True),
    ("\\!bang", "!bang", False, True),
    ("trailing   ", "trailing", False, True),
    ("space\\ ", "space ", False, True),
    ("  lead", "  lead", False, True),  # leading spaces are part of the pattern
    ("  lead", "lead", False, False),
    ("# comment\n\n*.log", "# comment", False, False),
    ("crlf.txt\r\nother.txt\r\n", "crlf.txt", False, True),
    ("crlf.txt\r\nother.txt\r\n", "other.txt", False, True),
]


@pytest.mark.parametrize("patterns, path, is_dir, ignored", CASES)
def test_patterns_match_as_go_git_v5_does(patterns: str, path: str, is_dir: bool,
                                          ignored: bool) -> None:
    assert matcher(patterns).ignored(path, is_dir) is ignored


def test_the_root_itself_is_never_ignored() -> None:
    assert not matcher("*\n").ignored("", True)
    assert not matcher("*\n").ignored(".", True)


def test_pruning_is_allowed_only_without_negations() -> None:
    assert matcher("a/\nb").prunes()
    assert not matcher("a/\n!a/b").prunes()


_NAMES = ["a", "b", "x.yaml", "y.jpg", "[ab]", "*.yaml", "?", "*", "**", "x*", "a\\b", "[",
          ".git"]
_PATTERN_LINES = st.builds(
    lambda parts, lead, trail: ("/" if lead else "") + "/".join(parts) + ("/" if trail else ""),
    st.lists(st.sampled_from(_NAMES), min_size=1, max_size=3), st.booleans(), st.booleans())
_DOMAINS = st.lists(st.sampled_from(["a", "b", "x.yaml"]), max_size=2).map(tuple)


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.tuples(_PATTERN_LINES, _DOMAINS), min_size=1, max_size=8),
       path=st.lists(st.sampled_from(["a", "b", "x.yaml", "y.jpg", "ab", "c"]), min_size=1,
                     max_size=4),
       is_dir=st.booleans())
def test_the_walk_checker_agrees_with_the_full_matcher_below_kept_directories(
        lines: list[tuple[str, tuple[str, ...]]], path: list[str], is_dir: bool) -> None:
    """The tree walk asks ``walk_checker`` only about entries whose directories were kept;
    for those its shortcuts (one alternation for the root's name patterns, leaf-only name
    checks) must give the full matcher's answer."""
    m = Matcher(Pattern.parse(line, domain) for line, domain in lines)
    assert m.prunes()
    if any(m.match_parts(path[:i], True) for i in range(1, len(path))):
        return  # an ancestor is excluded: the walk never gets here
    assert m.walk_checker()(path, is_dir) is m.match_parts(path, is_dir)


def test_a_sourceignore_that_is_a_directory_gives_no_patterns(tmp_path: Path) -> None:
    (tmp_path / ".sourceignore").mkdir()
    assert load_ignore_patterns(tmp_path) == []


# -- cost -----------------------------------------------------------------------------------


def go_glob_matches(glob: str, name: str) -> bool:
    """Go's ``filepath.Match`` over one segment, for globs of literals, ``?`` and ``*``:
    the plain recursive definition."""

    @functools.cache
    def at(g: int, n: int) -> bool:
        if g == len(glob):
            return n == len(name)
        if glob[g] == "*":
            return at(g + 1, n) or (n < len(name) and at(g, n + 1))
        return n < len(name) and glob[g] in ("?", name[n]) and at(g + 1, n + 1)

    return at(0, 0)


@settings(max_examples=500, deadline=None)
@given(st.text("ab*?", min_size=1, max_size=10), st.text("ab", min_size=1, max_size=12))
def test_stars_match_what_go_s_filepath_match_matches(glob: str, name: str) -> None:
    hit = Pattern.parse(glob).match([name], False) is not MatchResult.NO_MATCH
    assert hit is go_glob_matches(glob, name)


@pytest.mark.parametrize("glob, name, hit", [
    ("[ab]*[ab]*c", "abxbc", True), ("[ab]*[ab]*c", "abxbd", False),
    ("a\\**b", "a*xxb", True), ("a\\**b", "axxb", False), ("*[^a]", "aab", True),
    ("a**b", "ab", True), ("*.tar.gz", "x.tar.gz.tar.gz", True),
])
def test_stars_between_classes_and_escapes_match_as_in_go(glob: str, name: str,
                                                          hit: bool) -> None:
    assert (Pattern.parse(glob).match([name], False) is not MatchResult.NO_MATCH) is hit


def test_a_glob_with_many_stars_matches_a_long_name_in_linear_time() -> None:
    # a hostile .sourceignore line: backtracking `.*a.*a…` takes seconds at four stars
    # and minutes at five over a 255-byte name
    for stars in (4, 8, 32):
        glob = "*a" * stars + "*b"
        started = time.perf_counter()
        assert Pattern.parse(glob).match(["a" * 255], False) is MatchResult.NO_MATCH
        assert Pattern.parse(glob).match(["a" * 254 + "b"], False) is MatchResult.EXCLUDE
        excluded = matcher(f"{glob}\n{glob}c\n").walk_checker()
        assert not excluded(["dir", "a" * 255], False)
        assert time.perf_counter() - started < 0.25, f"{stars} stars"
