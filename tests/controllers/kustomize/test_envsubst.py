"""The ``${var}`` template engine: upstream's cases (fluxcd/pkg envsubst tests) and the
quirks of its parser that a manifest may run into."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxd.controllers.kustomize.envsubst import SubstitutionError, expand

PATH = "/home/bozo/ideas/thoughts.for.today"
MIXED = "abcdEFGH28ij"
Z = "abcABC123ABCabc"

# (template, variables, expected), expanded without strict mode
EXPANSIONS = [
    # text and escapes
    ("abcdEFGH28ij", {}, "abcdEFGH28ij"),
    ("}text", {}, "}text"),
    ("http://github.com", {}, "http://github.com"),
    (r"\\.\pipe\pipename", {}, r"\\.\pipe\pipename"),
    ("$${string}", {}, "${string}"),
    ("$$string", {}, "$string"),
    ("$var and $ and a$", {"var": "x"}, "$var and $ and a$"),
    ("$$$", {}, "$$"),
    ("$$${v}", {"v": "x"}, "$x"),
    ("$${var01}", {"var01": MIXED}, "${var01}"),
    ("some text ${var01}$${var$${var01}$var01${var01}", {"var01": MIXED},
     f"some text {MIXED}${{var${{var01}}$var01{MIXED}"),
    ("something $${var=${default_var}}", {"default_var": "foo"}, "something ${var=foo}"),
    ("\\\\something ${var=${default_var}}", {"default_var": "foo"}, "\\\\something foo"),
    # length and case
    ("${#var01}", {"var01": MIXED}, "12"),
    ("${var01^}", {"var01": MIXED}, "AbcdEFGH28ij"),
    ("${var01^^}", {"var01": MIXED}, "ABCDEFGH28IJ"),
    ("${var01,}", {"var01": "ABCDEFGH28IJ"}, "aBCDEFGH28IJ"),
    ("${var01,,}", {"var01": "ABCDEFGH28IJ"}, "abcdefgh28ij"),
    ("${v^}${v,}", {"v": ""}, ""),
    ("${v,^}${v^,}", {"v": "aBc"}, "aBcaBc"),  # unknown casing ops return the value
    # substrings
    ("${path_name:11}", {"path_name": PATH}, "ideas/thoughts.for.today"),
    ("${path_name:11:5}", {"path_name": PATH}, "ideas"),
    ("${v:1::2}", {"v": "abcdef"}, "bc"),  # the separator is a run of colons
    ("${v:x}", {"v": "abc"}, "abc"),  # an offset that is no number keeps the value
    ("${v: 1}", {"v": "abc"}, "abc"),
    ("${v:1:x}", {"v": "abc"}, "abc"),
    ("${v:${o}}", {"v": "abcdef", "o": "-2"}, "ef"),
    # defaults
    ("${var=xyz}", {"var": "abc"}, "abc"),
    ("${var=xyz}", {}, "xyz"),
    ("${var:=xyz}", {}, "xyz"),
    ("${var:-xyz}", {"var": ""}, "xyz"),
    ("${var:-}", {}, ""),
    ("something ${var=${default_var}}", {"default_var": "foo"}, "something foo"),
    ("foo: ${var=${default_var}-suffix}", {"default_var": "foo1"}, "foo: foo1-suffix"),
    ("foo: ${var=prefix${default_var}-suffix}", {"default_var": "foo1"},
     "foo: prefixfoo1-suffix"),
    ("${string=prefix${var} suffix}", {"var": "X"}, "prefixX suffix"),
    ("${var=${var01^^}}", {"var01": MIXED}, "ABCDEFGH28IJ"),
    ("${var:-Hola Mundo${a}-Halló heimur}", {"a": "-Bonjour le monde"},
     "Hola Mundo-Bonjour le monde-Halló heimur"),
    ("${v:-$$}", {}, "$$"),  # no escapes inside defaults
    ("${v:-a$${x}}", {"x": "X"}, "a$X"),
    ("${v:-{a}}", {}, "{a}"),  # a default ends at the first "}"
    ("${v==x}", {}, "=x"),
    # every default operator means "if empty", whatever bash says
    ("${var=xyz}", {"var": ""}, "xyz"),
    ("${var:+alt}", {"var": "set"}, "set"),
    ("${var:+alt}", {}, "alt"),
    ("${var:?msg}", {}, "msg"),
    # prefix and suffix removal with globs, in which * and ? also match "/"
    ("${filename#*.}", {"filename": "bash.string.txt"}, "string.txt"),
    ("${filename#*/}", {"filename": "path/to/file"}, "to/file"),
    ("${filename#*/}", {"filename": "/path/to/file"}, "path/to/file"),
    ("${filename##*.}", {"filename": "bash.string.txt"}, "txt"),
    ("${filename##*/}", {"filename": "path/to/file"}, "file"),
    ("${filename##*/}", {"filename": "/path/to/file"}, "file"),
    ("${filename%.*}", {"filename": "bash.string.txt"}, "bash.string"),
    ("${filename%%.*}", {"filename": "bash.string.txt"}, "bash"),
    ("${v#[0-9]}", {"v": "1abc"}, "abc"),
    ("${v#[^0-9]}", {"v": "1abc"}, "1abc"),
    ("${v#?}", {"v": "xyz"}, "yz"),
    (r"${v#\*}", {"v": "*a"}, "a"),
    ("${v#*}", {"v": "abc"}, "bc"),  # the shortest match is never empty upstream
    ("${v%*}", {"v": "abc"}, "ab"),
    ("${v##*}", {"v": "abc"}, ""),
    ("${v#x}", {"v": "abc"}, "abc"),
    ("${v%[0-9]}", {"v": "abc1"}, "abc1"),  # the reversed pattern "]9-0[" is malformed
    ("${v#[}", {"v": "[abc"}, "[abc"),  # malformed patterns match nothing
    ("${v#[]a]}", {"v": "]abc"}, "]abc"),
    ("${string#$%:*{}", {"string": "$%:x{y"}, "y"),
    ("${v#${p}}", {"v": "prefix-rest", "p": "prefix-"}, "rest"),
    # replacement with literal text
    ("${stringZ/%abc/XYZ}", {"stringZ": Z}, "abcABC123ABCXYZ"),
    ("${stringZ/#abc/XYZ}", {"stringZ": Z}, "XYZABC123ABCabc"),
    ("${stringZ/#/prefix-}", {"stringZ": "somevalue"}, "prefix-somevalue"),
    ("${stringZ/%/-suffix}", {"stringZ": "somevalue"}, "somevalue-suffix"),
    ("${stringZ//abc/xyz}", {"stringZ": Z}, "xyzABC123ABCxyz"),
    ("${stringZ/abc/xyz}", {"stringZ": Z}, "xyzABC123ABCabc"),
    ("${stringZ/./}", {"stringZ": "foo.bar"}, "foobar"),
    ("${v//a/}", {"v": "banana"}, "bnn"),
    ("${v/#b/}", {"v": "banana"}, "banana"),  # prefix/suffix need a replacement
    ("${v/%a/}", {"v": "banana"}, "banana"),
    ("${v/*/x}", {"v": "a*b"}, "axb"),  # the pattern is not a glob
    ("${v///-}", {"v": "abc"}, "-a-b-c-"),
    ("${v/a//b}", {"v": "xa"}, "xb"),  # the separator is a run of slashes
    (r"${stringZ/\//-}", {"stringZ": "foo/bar"}, "foo-bar"),
    (r"${stringZ//\//-}", {"stringZ": "foo/bar/baz"}, "foo-bar-baz"),
    (r"${v/\\/x}", {"v": "a\\b"}, "axb"),
    ("${v/a/$$}", {"v": "a"}, "$"),
    ("${string//${stringy}/${stringz}}", {"string": "a-b-c", "stringy": "-",
                                         "stringz": "+"}, "a+b+c"),
    # unset variables outside strict mode
    ("[${missing}]", {}, "[]"),
    ("[${#missing}]", {}, "[0]"),
    ("${1abc}", {"1abc": "digits may lead"}, "digits may lead"),
    # unicode: names, values, byte lengths and offsets, Go's one-rune case mappings
    ("${ünï_cödé}", {"ünï_cödé": "ok"}, "ok"),
    ("${v}", {"v": "日本語 ✓"}, "日本語 ✓"),
    ("${#v}", {"v": "héllo"}, "6"),
    ("${v:1:2}", {"v": "héllo"}, "é"),
    ("${v:3}", {"v": "héllo"}, "llo"),
    ("${v^^}", {"v": "straße"}, "STRAßE"),
    ("${v,,}", {"v": "ΟΔΟΣ"}, "οδοσ"),
    ("${v^}", {"v": "ébène"}, "Ébène"),
    ("${v#é}", {"v": "école"}, "cole"),
    # Go's scanner reads NUL as the end of the text
    ("a\x00${x}", {"x": "y"}, "a"),
]


@pytest.mark.parametrize(("template", "variables", "expected"), EXPANSIONS,
                         ids=[case[0] for case in EXPANSIONS])
def test_each_form_expands_as_upstream(template: str, variables: dict[str, str],
                                       expected: str) -> None:
    assert expand(template, variables, strict=False) == expected


SUBSTRINGS = [  # upstream's toSubstr cases: value, offset, length (or None), expected
    ("123456789123456789", "0", "8", "12345678"),
    ("123456789123456789", "1", "8", "23456789"),
    ("123456789123456789", "9", None, "123456789"),
    ("123456789123456789", "9", "50", "123456789"),
    ("123456789123456789", "-3", "2", "78"),
    ("123456789123456789", "-300", "3", "123"),
    ("12345678", "9", "1", ""),
    ("hello world", "2", "-1", "llo worl"),
    ("hello world", "0", "-3", "hello wo"),
    ("hello world", "8", "-8", ""),
    ("hello world", "-4", "-1", "orl"),
]


@pytest.mark.parametrize(("value", "offset", "length", "expected"), SUBSTRINGS)
def test_substrings_count_offsets_and_lengths_as_upstream(
        value: str, offset: str, length: str | None, expected: str) -> None:
    template = "${v:${o}}" if length is None else "${v:${o}:${l}}"
    variables = {"v": value, "o": offset, "l": length or ""}
    assert expand(template, variables, strict=False) == expected


def test_a_substring_cutting_a_character_keeps_its_bytes_as_go_does() -> None:
    out = expand("${v:1:1}", {"v": "é"}, strict=False)
    assert out.encode("utf-8", "surrogateescape") == b"\xa9"


STRICT_FAILURES = ["${missing}", "${#missing}", "${missing^}", "${missing^^}",
                   "${missing,}", "${missing,,}", "${missing:0}", "${missing:0:10}",
                   "${missing/pattern/replacement}", "${missing//pattern/replacement}",
                   "${missing/#pattern/replacement}", "${missing/%pattern/replacement}",
                   "${missing#pattern}", "${missing##pattern}", "${missing%pattern}",
                   "${missing%%pattern}", "text ${set} ${missing}"]


@pytest.mark.parametrize("template", STRICT_FAILURES)
def test_unset_variable_fails_in_strict_mode(template: str) -> None:
    with pytest.raises(SubstitutionError) as caught:
        expand(template, {"set": "x"}, strict=True)
    assert str(caught.value) == 'variable not set (strict mode): "missing"'


STRICT_DEFAULTS = [("${missing:=default}", "default"), ("${missing:-fallback}", "fallback"),
                   ("${missing:=assigned}", "assigned"), ("${missing=assigned}", "assigned"),
                   ("${missing:+alt}", "alt"), ("${missing:?msg}", "msg"),
                   ("${missing:-}", "")]


@pytest.mark.parametrize(("template", "expected"), STRICT_DEFAULTS)
def test_default_operators_supply_unset_variables_in_strict_mode(template: str,
                                                                 expected: str) -> None:
    assert expand(template, {"foo": "bar"}, strict=True) == expected


def test_a_variable_set_to_the_empty_string_is_set_in_strict_mode() -> None:
    assert expand("[${foo}]", {"foo": ""}, strict=True) == "[]"


def test_an_unset_variable_inside_an_unused_default_still_fails_in_strict_mode() -> None:
    with pytest.raises(SubstitutionError, match='"inner"'):
        expand("${outer:-${inner}}", {"outer": "set"}, strict=True)


PARSE_ERRORS = [
    ("${var-default}", "missing closing brace"),
    ("${var+default}", "missing closing brace"),
    ("${var?default}", "missing closing brace"),
    ("${var", "missing closing brace"),
    ("${var x}", "missing closing brace"),
    ("${}", "unable to parse variable name"),
    ("${", "unable to parse variable name"),
    ("${-x}", "unable to parse variable name"),
    ("${#}", "bad substitution"),
    ("${#var", "bad substitution"),
    ("${var^^^}", "bad substitution"),
    ("${var:", "bad substitution"),
    ("${var:é}", "bad substitution"),
    ("${var:1${x}}", "bad substitution"),
    ("${var:1:2", "bad substitution"),
    ("${var#x${y}}", "bad substitution"),
    ("${var/a}", "bad substitution"),
    ("${var//}", "bad substitution"),
    ("${var:}", "unable to parse substitution within function"),
    ("${var::1}", "unable to parse substitution within function"),
    ("${var:1:}", "unable to parse substitution within function"),
    ("${var#}", "unable to parse substitution within function"),
    ("${var:-abc", "unable to parse substitution within function"),
    ("${var/a/b", "bad substitution"),
    ("${var/a/", "unable to parse substitution within function"),
]


@pytest.mark.parametrize(("template", "message"), PARSE_ERRORS,
                         ids=[case[0] for case in PARSE_ERRORS])
def test_malformed_expressions_fail_with_upstreams_message(template: str,
                                                           message: str) -> None:
    with pytest.raises(SubstitutionError) as caught:
        expand(template, {"var": "value", "x": "1", "y": "2"}, strict=False)
    assert str(caught.value) == message


def test_a_malformed_expression_fails_even_in_text_without_variables() -> None:
    with pytest.raises(SubstitutionError):
        expand("key: ${", {}, strict=False)


def test_a_replace_pattern_runs_on_to_the_next_slash_across_lines() -> None:
    # upstream's pattern accepts anything but "/", so "}" does not end it
    assert expand("${v/a}\nb/c}", {"v": "xa}\nb"}, strict=False) == "xc"


def test_absurdly_deep_nesting_is_a_substitution_error() -> None:
    depth = 5000
    with pytest.raises(SubstitutionError):
        expand("${a:-" * depth + "}" * depth, {}, strict=False)


def test_a_long_document_expands_in_linear_time() -> None:
    line = "  image: ghcr.io/org/app:${tag}  # $not ${tag:-x} $${kept}\n"
    text = line * 20_000
    out = expand(text, {"tag": "1.2.3"}, strict=True)
    assert out.count("ghcr.io/org/app:1.2.3") == 20_000
    assert out.count("${kept}") == 20_000


def test_a_glob_with_many_stars_does_not_backtrack() -> None:
    value = "a" * 3000
    pattern = "*a" * 30 + "*b"
    assert expand("${v#" + pattern + "}", {"v": value}, strict=False) == value


# --- properties ------------------------------------------------------------------------

TEMPLATE_CHARS = st.sampled_from(list("${}:#%/=-+?^,\\*[]ab_é \n"))


@given(st.text().filter(lambda t: "$" not in t and "\x00" not in t))
def test_text_without_a_dollar_is_unchanged(text: str) -> None:
    assert expand(text, {"a": "b"}, strict=True) == text


@given(st.text().filter(lambda t: "\x00" not in t))
def test_doubling_every_dollar_escapes_any_text(text: str) -> None:
    assert expand(text.replace("$", "$$"), {}, strict=True) == text


@given(st.text())
def test_a_value_is_inserted_verbatim_and_never_expanded_again(value: str) -> None:
    assert expand("<${v}>", {"v": value}, strict=True) == f"<{value}>"
    assert expand("${#v}", {"v": value}, strict=True) == \
        str(len(value.encode("utf-8", "surrogatepass")))


@settings(max_examples=300)
@given(st.lists(TEMPLATE_CHARS, max_size=40).map("".join),
       st.dictionaries(st.sampled_from(["a", "b", "é"]), st.text(max_size=5)))
def test_any_text_expands_or_fails_with_a_substitution_error(
        text: str, variables: dict[str, str]) -> None:
    for strict in (True, False):
        with contextlib.suppress(SubstitutionError):
            assert isinstance(expand(text, variables, strict=strict), str)


def _reference_prefixes(pattern: str, value: str) -> list[int]:
    translated = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                         for c in pattern)
    return [k for k in range(1, len(value) + 1)
            if re.fullmatch(translated, value[:k], re.DOTALL)]


@settings(max_examples=300)
@given(st.text(alphabet="ab*?", max_size=6), st.text(alphabet="ab/", max_size=8))
def test_glob_prefix_removal_agrees_with_a_brute_force_matcher(pattern: str,
                                                               value: str) -> None:
    lengths = _reference_prefixes(pattern, value)
    shortest = value[lengths[0]:] if lengths else value
    longest = value[lengths[-1]:] if lengths else value
    if not pattern:
        return  # "${v#}" is a parse error
    assert expand("${v#" + pattern + "}", {"v": value}, strict=True) == shortest
    assert expand("${v##" + pattern + "}", {"v": value}, strict=True) == longest


@given(st.text(alphabet="abc", max_size=10), st.integers(-12, 12), st.integers(0, 12))
def test_ascii_substrings_match_python_slicing(value: str, offset: int, length: int) -> None:
    start = max(len(value) + offset, 0) if offset < 0 else offset
    expected = value[start:start + length]
    variables = {"v": value, "o": str(offset), "l": str(length)}
    assert expand("${v:${o}:${l}}", variables, strict=True) == expected
