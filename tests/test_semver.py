"""fluxd.semver against the cases of Masterminds/semver v3.4.0's own test tables.

The tables below are the inputs and expected outputs of ``version_test.go`` and
``constraints_test.go`` (the library Flux resolves semver ranges with), carried over as data,
plus Flux's tag parsing (``fluxcd/pkg/version.ParseVersion``) and picking among Git tags.
"""

from __future__ import annotations

import contextlib
import functools
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxd.semver import (
    Constraints,
    InvalidConstraintError,
    InvalidVersionError,
    SemverError,
    Version,
    latest,
    parse,
    parse_constraints,
    parse_tag,
)

# --- parsing versions -----------------------------------------------------------------------

# TestNewVersion "With loose NewVersion": (text, is an error)
LOOSE_PARSE_CASES = [
    ("1.2.3", False),
    ("1.2.3-alpha.01", True),
    ("1.2.3+test.01", False),
    ("1.2.3-alpha.-1", False),
    ("v1.2.3", False),
    ("1.0", False),
    ("v1.0", False),
    ("1", False),
    ("v1", False),
    ("1.2.beta", True),
    ("v1.2.beta", True),
    ("foo", True),
    ("1.2-5", False),
    ("v1.2-5", False),
    ("1.2-beta.5", False),
    ("v1.2-beta.5", False),
    ("\n1.2", True),
    ("\nv1.2", True),
    ("1.2.0-x.Y.0+metadata", False),
    ("v1.2.0-x.Y.0+metadata", False),
    ("1.2.0-x.Y.0+metadata-width-hypen", False),
    ("v1.2.0-x.Y.0+metadata-width-hypen", False),
    ("1.2.3-rc1-with-hypen", False),
    ("v1.2.3-rc1-with-hypen", False),
    ("1.2.3.4", True),
    ("v1.2.3.4", True),
    ("1.2.2147483648", False),
    ("1.2147483648.3", False),
    ("2147483648.3.0", False),
    ("12.3.4.1234", True),
    ("12.23.4.1234", True),
    ("12.3.34.1234", True),
    ("20221209-update-renovatejson-v4", False),
    ("1.1.2+.123", True),
    ("1.0.0-alpha_beta", True),
    ("1.0.0-alpha..", True),
    ("1.0.0-alpha..1", True),
    ("9.8.7+meta+meta", True),
    ("1.2.31----RC-SNAPSHOT.12.09.1--.12+788", True),
    ("01.1.1", False),
    ("1.01.1", False),
    ("1.1.01", False),
]

# TestStrictNewVersion: (text, is an error)
STRICT_PARSE_CASES = [
    ("1.2.3", False),
    ("1.2.3-alpha.01", True),
    ("1.2.3+test.01", False),
    ("1.2.3-alpha.-1", False),
    ("v1.2.3", True),
    ("1.0", True),
    ("v1.0", True),
    ("1", True),
    ("v1", True),
    ("1.2", True),
    ("1.2.beta", True),
    ("v1.2.beta", True),
    ("foo", True),
    ("1.2-5", True),
    ("v1.2-5", True),
    ("1.2-beta.5", True),
    ("v1.2-beta.5", True),
    ("\n1.2", True),
    ("\nv1.2", True),
    ("1.2.0-x.Y.0+metadata", False),
    ("v1.2.0-x.Y.0+metadata", True),
    ("1.2.0-x.Y.0+metadata-width-hypen", False),
    ("v1.2.0-x.Y.0+metadata-width-hypen", True),
    ("1.2.3-rc1-with-hypen", False),
    ("v1.2.3-rc1-with-hypen", True),
    ("1.2.3.4", True),
    ("v1.2.3.4", True),
    ("1.2.2147483648", False),
    ("1.2147483648.3", False),
    ("2147483648.3.0", False),
    ("20221209-update-renovatejson-v4", True),
    ("1.1.2+.123", True),
    ("1.0.0-alpha_beta", True),
    ("1.0.0-alpha..", True),
    ("1.0.0-alpha..1", True),
    ("01.1.1", True),
    ("1.01.1", True),
    ("1.1.01", True),
    ("9.8.7+meta+meta", True),
    ("1.2.31----RC-SNAPSHOT.12.09.1--.12+788", True),
    ("1.2.3-0123", True),
    ("1.2.3-0123.0123", True),
    ("+invalid", True),
    ("-invalid", True),
    ("-invalid.01", True),
    ("alpha+beta", True),
    ("1.2.3-alpha_beta+foo", True),
]

# TestCoerceString: (text, canonical string)
COERCED_STRINGS = [
    ("1.2.3", "1.2.3"),
    ("v1.2.3", "1.2.3"),
    ("1.0", "1.0.0"),
    ("v1.0", "1.0.0"),
    ("1", "1.0.0"),
    ("v1", "1.0.0"),
    ("1.2-5", "1.2.0-5"),
    ("v1.2-5", "1.2.0-5"),
    ("1.2-beta.5", "1.2.0-beta.5"),
    ("v1.2-beta.5", "1.2.0-beta.5"),
    ("1.2.0-x.Y.0+metadata", "1.2.0-x.Y.0+metadata"),
    ("v1.2.0-x.Y.0+metadata", "1.2.0-x.Y.0+metadata"),
    ("1.2.0-x.Y.0+metadata-width-hypen", "1.2.0-x.Y.0+metadata-width-hypen"),
    ("v1.2.0-x.Y.0+metadata-width-hypen", "1.2.0-x.Y.0+metadata-width-hypen"),
    ("1.2.3-rc1-with-hypen", "1.2.3-rc1-with-hypen"),
    ("v1.2.3-rc1-with-hypen", "1.2.3-rc1-with-hypen"),
    ("01.02.03", "1.2.3"),
]

# Error texts: (text, strict, message)
PARSE_ERRORS = [
    ("foo", False, "invalid semantic version"),
    ("1.2.3-dev..1", False, "invalid semantic version"),
    ("1.2.3-dev.01", False, "version segment starts with 0"),
    ("1.2.3-023658", False, "version segment starts with 0"),
    (" 1.2.3", False, "invalid semantic version"),
    ("1.2.3\n", False, "invalid semantic version"),
    ("V1.2.3", False, "invalid semantic version"),
    (
        "18446744073709551616.0.0",
        False,
        'error parsing version segment: strconv.ParseUint: parsing "18446744073709551616": '
        "value out of range",
    ),
    ("", True, "version string empty"),
    ("1.2", True, "invalid semantic version"),
    ("v1.2.3", True, "invalid characters in version"),
    ("1.2-beta.5", True, "invalid characters in version"),
    ("01.2.3", True, "version segment starts with 0"),
    ("1.02.3", True, "version segment starts with 0"),
    ("1.2.03", True, "version segment starts with 0"),
    ("1.2.3-0123", True, "version segment starts with 0"),
    ("1.2.3-", True, "invalid prerelease string"),
    ("1.0.0-alpha_beta", True, "invalid prerelease string"),
    ("1.2.3+", True, "invalid build string"),
    ("1.1.2+.123", True, "invalid build string"),
    ("9.8.7+meta+meta", True, "invalid build string"),
    ("1..3", True, 'strconv.ParseUint: parsing "": invalid syntax'),
    (
        "1.2.18446744073709551616",
        True,
        'strconv.ParseUint: parsing "18446744073709551616": value out of range',
    ),
]


@pytest.mark.parametrize(("text", "is_error"), LOOSE_PARSE_CASES)
def test_a_coercing_parse_accepts_and_refuses_what_new_version_does(
    text: str, is_error: bool
) -> None:
    if is_error:
        with pytest.raises(InvalidVersionError):
            parse(text)
    else:
        assert parse(text).original == text


@pytest.mark.parametrize(("text", "is_error"), STRICT_PARSE_CASES)
def test_a_strict_parse_accepts_and_refuses_what_strict_new_version_does(
    text: str, is_error: bool
) -> None:
    if is_error:
        with pytest.raises(InvalidVersionError):
            parse(text, strict=True)
    else:
        assert str(parse(text, strict=True)) == text


@pytest.mark.parametrize(("text", "expected"), COERCED_STRINGS)
def test_a_coerced_version_prints_in_full_and_keeps_its_original_text(
    text: str, expected: str
) -> None:
    version = parse(text)
    assert str(version) == expected
    assert version.original == text


@pytest.mark.parametrize(("text", "strict", "message"), PARSE_ERRORS)
def test_a_refused_version_says_why_in_masterminds_words(
    text: str, strict: bool, message: str
) -> None:
    with pytest.raises(InvalidVersionError) as caught:
        parse(text, strict=strict)
    assert str(caught.value) == message


def test_a_version_exposes_its_parts() -> None:
    version = parse("1.2.3-beta.1+build.123")
    assert (version.major, version.minor, version.patch) == (1, 2, 3)
    assert version.prerelease == "beta.1"
    assert version.metadata == "build.123"
    assert version.is_prerelease


def test_a_version_built_from_parts_prints_them_and_is_its_own_original() -> None:
    assert str(Version(0, 1, 2)) == "0.1.2"
    built = Version(1, 2, 3, "alpha.1", "foo.bar")
    assert str(built) == built.original == "1.2.3-alpha.1+foo.bar"


@pytest.mark.parametrize(
    ("prerelease", "metadata", "message"),
    [
        ("alpha.01", "", "version segment starts with 0"),
        ("foo\u2603", "", "invalid prerelease string"),
        ("", "foo\u2603", "invalid build string"),
        ("", "a..b", "invalid build string"),
    ],
)
def test_a_version_built_from_bad_parts_is_refused(
    prerelease: str, metadata: str, message: str
) -> None:
    with pytest.raises(InvalidVersionError, match=message):
        Version(1, 2, 3, prerelease, metadata)


@pytest.mark.parametrize("good", ["foo", "alpha.1", "alpha.0-1", "-1", "0"])
def test_a_version_built_from_good_prerelease_identifiers_is_accepted(good: str) -> None:
    assert Version(1, 0, 0, good).prerelease == good


def test_build_metadata_may_have_leading_zeros() -> None:
    assert parse("1.2.3+alpha.01").metadata == "alpha.01"


def test_numbers_beyond_64_bits_are_refused_like_go_does() -> None:
    with pytest.raises(InvalidVersionError):
        Version(2**64, 0, 0)
    assert parse("18446744073709551615.0.0").major == 2**64 - 1


# --- Flux's tag parsing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "canonical"),
    [
        ("1.2.3", "1.2.3"),
        ("v1.2.3", "1.2.3"),
        ("v1.2.3-rc.1+build.5", "1.2.3-rc.1+build.5"),
        ("v0.0.0", "0.0.0"),
    ],
)
def test_a_tag_in_strict_semver_with_or_without_v_is_a_version(tag: str, canonical: str) -> None:
    version = parse_tag(tag)
    assert str(version) == canonical
    assert version.original == tag


@pytest.mark.parametrize(
    "tag",
    ["1.2", "v1", "01.2.3", "v1.02.3", "vv1.2.3", "V1.2.3", "1.2.3.4", "release-1.2.3", "latest"],
)
def test_a_tag_that_is_not_strict_semver_is_not_a_version(tag: str) -> None:
    with pytest.raises(SemverError):
        parse_tag(tag)


# --- ordering -------------------------------------------------------------------------------

# TestCompare: (left, right, expected)
COMPARISONS = [
    ("1.2.3", "1.5.1", -1),
    ("2.2.3", "1.5.1", 1),
    ("2.2.3", "2.2.2", 1),
    ("3.2-beta", "3.2-beta", 0),
    ("1.3", "1.1.4", 1),
    ("4.2", "4.2-beta", 1),
    ("4.2-beta", "4.2", -1),
    ("4.2-alpha", "4.2-beta", -1),
    ("4.2-alpha", "4.2-alpha", 0),
    ("4.2-beta.2", "4.2-beta.1", 1),
    ("4.2-beta2", "4.2-beta1", 1),
    ("4.2-beta", "4.2-beta.2", -1),
    ("4.2-beta", "4.2-beta.foo", -1),
    ("4.2-beta.2", "4.2-beta", 1),
    ("4.2-beta.foo", "4.2-beta", 1),
    ("1.2+bar", "1.2+baz", 0),
    ("1.0.0-beta.4", "1.0.0-beta.-2", -1),
    ("1.0.0-beta.-2", "1.0.0-beta.-3", -1),
    ("1.0.0-beta.-3", "1.0.0-beta.5", 1),
    # TestGreaterThan
    ("3.2.0-beta.1", "3.2.0-beta.5", -1),
    ("3.2-beta.4", "3.2-beta.2", 1),
    ("7.43.0-SNAPSHOT.99", "7.43.0-SNAPSHOT.103", -1),
    ("7.43.0-SNAPSHOT.FOO", "7.43.0-SNAPSHOT.103", 1),
    ("7.43.0-SNAPSHOT.99", "7.43.0-SNAPSHOT.BAR", -1),
    # TestEqual
    ("3.2-beta+foo", "3.2-beta+bar", 0),
    # Digits beyond 64 bits are not numeric to Go, so they compare as text, above numbers.
    ("1.0.0-18446744073709551616", "1.0.0-18446744073709551615", 1),
    ("1.0.0-18446744073709551616", "1.0.0-2", 1),
    ("1.0.0-100000000000000000000", "1.0.0-18446744073709551616", -1),
    ("1.0.0-18446744073709551616", "1.0.0--", 1),
]


@pytest.mark.parametrize(("left", "right", "expected"), COMPARISONS)
def test_versions_compare_by_semver_precedence(left: str, right: str, expected: int) -> None:
    a, b = parse(left), parse(right)
    assert a.compare(b) == expected
    assert b.compare(a) == -expected
    assert (a < b, a == b, a > b) == (expected < 0, expected == 0, expected > 0)
    assert (a <= b, a >= b) == (expected <= 0, expected >= 0)


def test_the_semver_spec_example_sorts_in_its_own_order() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "2.0.0",
        "2.1.0",
        "2.1.1",
    ]
    shuffled = ordered[3:] + ordered[:3]
    assert [str(v) for v in sorted(parse(s) for s in reversed(shuffled))] == ordered


def test_versions_differing_only_in_build_metadata_are_equal_and_hash_alike() -> None:
    a, b = parse("1.0.0+a"), parse("1.0.0+b")
    assert a == b
    assert hash(a) == hash(b)
    assert a.precedence == b.precedence
    assert str(a) != str(b)


def test_a_version_is_never_equal_to_text() -> None:
    assert parse("1.0.0") != "1.0.0"


# --- constraints: single comparators --------------------------------------------------------

# TestParseConstraint: (constraint, operator, version compared with)
PARSED_COMPARATORS = [
    (">= 1.2", ">=", "1.2.0"),
    ("1.0", "", "1.0.0"),
    ("<= 1.2", "<=", "1.2.0"),
    ("=< 1.2", "=<", "1.2.0"),
    ("=> 1.2", "=>", "1.2.0"),
    ("v1.2", "", "1.2.0"),
    ("=1.5", "=", "1.5.0"),
    ("> 1.3", ">", "1.3.0"),
    ("< 1.4.1", "<", "1.4.1"),
    ("< 40.50.10", "<", "40.50.10"),
    ("~> 1.2", "~>", "1.2.0"),
    ("^1.x", "^", "1.0.0"),
    ("*", "", "0.0.0"),
    ("1.x.3", "", "1.0.0"),
    ("1.2.x-alpha", "", "1.2.0-alpha"),
    ("1.2+build", "", "1.2.0"),
    ("=1.2.3+build", "=", "1.2.3+build"),
]


@pytest.mark.parametrize(("text", "operator", "version"), PARSED_COMPARATORS)
def test_a_comparator_reads_its_operator_and_fills_its_version_with_zeros(
    text: str, operator: str, version: str
) -> None:
    ((comparator,),) = parse_constraints(text).groups
    assert comparator.operator == operator
    assert str(comparator.version) == version


# TestConstraintCheck (one comparator each): (constraint, version, satisfied)
COMPARATOR_CHECKS = [
    ("=2.0.0", "1.2.3", False),
    ("=2.0.0", "2.0.0", True),
    ("=2.0", "1.2.3", False),
    ("=2.0", "2.0.0", True),
    ("=2.0", "2.0.1", True),
    ("4.1", "4.1.0", True),
    ("!=4.1.0", "4.1.0", False),
    ("!=4.1.0", "4.1.1", True),
    ("!=4.1", "4.1.0", False),
    ("!=4.1", "4.1.1", False),
    ("!=4.1", "5.1.0-alpha.1", False),
    ("!=4.1.0", "5.1.0-alpha.1", False),
    ("!=4.1-alpha", "4.1.0", True),
    ("!=4.1", "5.1.0", True),
    ("<11", "0.1.0", True),
    ("<11", "11.1.0", False),
    ("<1.1", "0.1.0", True),
    ("<1.1", "1.1.0", False),
    ("<1.1", "1.1.1", False),
    ("<=11", "1.2.3", True),
    ("<=11", "12.2.3", False),
    ("<=11", "11.2.3", True),
    ("<=1.1", "1.2.3", False),
    ("<=1.1", "0.1.0", True),
    ("<=1.1", "1.1.0", True),
    ("<=1.1", "1.1.1", True),
    (">1.1", "4.1.0", True),
    (">1.1", "1.1.0", False),
    (">0", "0", False),
    (">0", "1", True),
    (">0", "0.0.1-alpha", False),
    (">0.0", "0.0.1-alpha", False),
    (">0-0", "0.0.1-alpha", False),
    (">0.0-0", "0.0.1-alpha", False),
    (">0", "0.0.0-alpha", False),
    (">0-0", "0.0.0-alpha", False),
    (">0.0.0-0", "0.0.0-alpha", True),
    (">1.2.3-alpha.1", "1.2.3-alpha.2", True),
    (">1.2.3-alpha.1", "1.3.3-alpha.2", True),
    (">11", "11.1.0", False),
    (">11.1", "11.1.0", False),
    (">11.1", "11.1.1", False),
    (">11.1", "11.2.1", True),
    (">=11", "11.1.2", True),
    (">=11.1", "11.1.2", True),
    (">=11.1", "11.0.2", False),
    (">=1.1", "4.1.0", True),
    (">=1.1", "1.1.0", True),
    (">=1.1", "0.0.9", False),
    (">=0", "0.0.1-alpha", False),
    (">=0.0", "0.0.1-alpha", False),
    (">=0-0", "0.0.1-alpha", True),
    (">=0.0-0", "0.0.1-alpha", True),
    (">=0", "0.0.0-alpha", False),
    (">=0-0", "0.0.0-alpha", True),
    (">=0.0.0-0", "0.0.0-alpha", True),
    (">=0.0.0-0", "1.2.3", True),
    (">=0.0.0-0", "3.4.5-beta.1", True),
    ("<0", "0.0.0-alpha", False),
    ("<0-z", "0.0.0-alpha", True),
    (">=0", "0", True),
    ("=0", "1", False),
    ("*", "1", True),
    ("*", "4.5.6", True),
    ("*", "1.2.3-alpha.1", False),
    ("*-0", "1.2.3-alpha.1", True),
    ("2.*", "1", False),
    ("2.*", "3.4.5", False),
    ("2.*", "2.1.1", True),
    ("2.1.*", "2.1.1", True),
    ("2.1.*", "2.2.1", False),
    ("2", "1", False),
    ("2", "3.4.5", False),
    ("2", "2.1.1", True),
    ("2.1", "2.1.1", True),
    ("2.1", "2.2.1", False),
    ("~1.2.3", "1.2.4", True),
    ("~1.2.3", "1.3.4", False),
    ("~1.2", "1.2.4", True),
    ("~1.2", "1.3.4", False),
    ("~1", "1.2.4", True),
    ("~1", "2.3.4", False),
    ("~0.2.3", "0.2.5", True),
    ("~0.2.3", "0.3.5", False),
    ("~1.2.3-beta.2", "1.2.3-beta.4", True),
    ("~1.2.3-beta.2", "1.2.4-beta.2", True),
    ("~1.2.3-beta.2", "1.3.4-beta.2", False),
    ("^1.2.3", "1.8.9", True),
    ("^1.2.3", "2.8.9", False),
    ("^1.2.3", "1.2.1", False),
    ("^1.1.0", "2.1.0", False),
    ("^1.2.0", "2.2.1", False),
    ("^1.2.0", "1.2.1-alpha.1", False),
    ("^1.2.0-alpha.0", "1.2.1-alpha.1", True),
    ("^1.2.0-alpha.0", "1.2.1-alpha.0", True),
    ("^1.2.0-alpha.2", "1.2.0-alpha.1", False),
    ("^1.2", "1.8.9", True),
    ("^1.2", "2.8.9", False),
    ("^1", "1.8.9", True),
    ("^1", "2.8.9", False),
    ("^0.2.3", "0.2.5", True),
    ("^0.2.3", "0.5.6", False),
    ("^0.2", "0.2.5", True),
    ("^0.2", "0.5.6", False),
    ("^0.0.3", "0.0.3", True),
    ("^0.0.3", "0.0.4", False),
    ("^0.0", "0.0.3", True),
    ("^0.0", "0.1.4", False),
    ("^0.0", "1.0.4", False),
    ("^0", "0.2.3", True),
    ("^0", "1.1.4", False),
    ("^0.2.3-beta.2", "0.2.3-beta.4", True),
    ("^0.2.3-beta.2", "0.2.4-beta.2", True),
    ("^0.2.3-beta.2", "0.3.4-beta.2", False),
    ("^0.2.3-beta.2", "0.2.3-beta.2", True),
]


@pytest.mark.parametrize(("constraint", "version", "satisfied"), COMPARATOR_CHECKS)
def test_each_operator_admits_what_its_masterminds_counterpart_admits(
    constraint: str, version: str, satisfied: bool
) -> None:
    assert parse_constraints(constraint).check(parse(version)) is satisfied


# --- constraints: groups, alternatives, ranges ----------------------------------------------

# TestConstraintsCheck: (constraint, version, satisfied)
CONSTRAINT_CHECKS = [
    ("*", "1.2.3", True),
    ("~0.0.0", "1.2.3", True),
    ("0.x.x", "1.2.3", False),
    ("0.0.x", "1.2.3", False),
    ("0.0.0", "1.2.3", False),
    ("^0.0.0", "1.2.3", False),
    ("= 2.0", "1.2.3", False),
    ("= 2.0", "2.0.0", True),
    ("4.1", "4.1.0", True),
    ("4.1.x", "4.1.3", True),
    ("1.x", "1.4", True),
    ("!=4.1", "4.1.0", False),
    ("!=4.1-alpha", "4.1.0-alpha", False),
    ("!=4.1-alpha", "4.1.1-alpha", False),
    ("!=4.1-alpha", "4.1.0", True),
    ("!=4.1", "5.1.0", True),
    ("!=4.x", "5.1.0", True),
    ("!=4.x", "4.1.0", False),
    ("!=4.1.x", "4.2.0", True),
    ("!=4.2.x", "4.2.3", False),
    (">1.1", "4.1.0", True),
    (">1.1", "1.1.0", False),
    ("<1.1", "0.1.0", True),
    ("<1.1", "1.1.0", False),
    ("<1.1", "1.1.1", False),
    ("<1.x", "1.1.1", False),
    ("<1.x", "0.1.1", True),
    ("<1.x", "2.0.0", False),
    ("<1.1.x", "1.2.1", False),
    ("<1.1.x", "1.1.500", False),
    ("<1.1.x", "1.0.500", True),
    ("<1.2.x", "1.1.1", True),
    (">=1.1", "4.1.0", True),
    (">=1.1", "4.1.0-beta", False),
    (">=1.1", "1.1.0", True),
    (">=1.1", "0.0.9", False),
    ("<=1.1", "0.1.0", True),
    ("<=1.1", "0.1.0-alpha", False),
    ("<=1.1-a", "0.1.0-alpha", True),
    ("<=1.1", "1.1.0", True),
    ("<=1.x", "1.1.0", True),
    ("<=2.x", "3.0.0", False),
    ("<=1.1", "1.1.1", True),
    ("<=1.1.x", "1.2.500", False),
    ("<=4.5", "3.4.0", True),
    ("<=4.5", "3.7.0", True),
    ("<=4.5", "4.6.3", False),
    (">1.1, <2", "1.1.1", False),
    (">1.1, <2", "1.2.1", True),
    (">1.1, <3", "4.3.2", False),
    (">=1.1, <2, !=1.2.3", "1.2.3", False),
    (">1.1 <2", "1.1.1", False),
    (">1.1 <2", "1.2.1", True),
    (">1.1    <3", "4.3.2", False),
    (">=1.1    <2    !=1.2.3", "1.2.3", False),
    (">=1.1, <2, !=1.2.3 || > 3", "4.1.2", True),
    (">=1.1, <2, !=1.2.3 || > 3", "3.1.2", False),
    (">=1.1, <2, !=1.2.3 || >= 3", "3.0.0", True),
    (">=1.1, <2, !=1.2.3 || > 3", "3.0.0", False),
    (">=1.1, <2, !=1.2.3 || > 3", "1.2.3", False),
    (">=1.1 <2 !=1.2.3", "1.2.3", False),
    (">=1.1 <2 !=1.2.3 || > 3", "4.1.2", True),
    (">=1.1 <2 !=1.2.3 || > 3", "3.1.2", False),
    (">=1.1 <2 !=1.2.3 || >= 3", "3.0.0", True),
    (">=1.1 <2 !=1.2.3 || > 3", "3.0.0", False),
    (">=1.1 <2 !=1.2.3 || > 3", "1.2.3", False),
    ("> 1.1, <     2", "1.1.1", False),
    (">   1.1, <2", "1.2.1", True),
    (">1.1, <  3", "4.3.2", False),
    (">= 1.1, <     2, !=1.2.3", "1.2.3", False),
    ("> 1.1 < 2", "1.1.1", False),
    (">1.1 < 2", "1.2.1", True),
    ("> 1.1    <3", "4.3.2", False),
    (">=1.1    < 2    != 1.2.3", "1.2.3", False),
    (">= 1.1, <2, !=1.2.3 || > 3", "4.1.2", True),
    (">= 1.1, <2, != 1.2.3 || > 3", "3.1.2", False),
    (">= 1.1, <2, != 1.2.3 || >= 3", "3.0.0", True),
    (">= 1.1, <2, !=1.2.3 || > 3", "3.0.0", False),
    (">= 1.1, <2, !=1.2.3 || > 3", "1.2.3", False),
    (">= 1.1 <2 != 1.2.3", "1.2.3", False),
    (">= 1.1 <2 != 1.2.3 || > 3", "4.1.2", True),
    (">= 1.1 <2 != 1.2.3 || > 3", "3.1.2", False),
    (">= 1.1 <2 != 1.2.3 || >= 3", "3.0.0", True),
    (">= 1.1 < 2 !=1.2.3 || > 3", "3.0.0", False),
    (">=1.1 < 2 !=1.2.3 || > 3", "1.2.3", False),
    (">= 1.0.0  <= 2.0.0-beta", "1.0.1-beta", True),
    (">= 1.0.0  <= 2.0.0-beta", "1.0.1", True),
    (">= 1.0.0  <= 2.0.0-beta", "3.0.0", False),
    (">= 1.0.0  <= 2.0.0-beta || > 3", "1.0.1-beta", True),
    (">= 1.0.0  <= 2.0.0-beta || > 3", "3.0.1-beta", False),
    (">= 1.0.0  <= 2.0.0-beta != 1.0.1 || > 3", "1.0.1-beta", True),
    (">= 1.0.0  <= 2.0.0-beta != 1.0.1-beta || > 3", "1.0.1-beta", False),
    (">= 1.0.0-0  <= 2.0.0", "1.0.1-beta", True),
    ("1.1 - 2", "1.1.1", True),
    ("1.5.0 - 4.5", "3.7.0", True),
    ("1.1-3", "4.3.2", False),
    ("^1.1", "1.1.1", True),
    ("^1.1", "4.3.2", False),
    ("^1.x", "1.1.1", True),
    ("^2.x", "1.1.1", False),
    ("^1.x", "2.1.1", False),
    ("^1.x", "1.1.1-beta1", False),
    ("^1.1.2-alpha", "1.2.1-beta1", True),
    ("^1.2.x-alpha", "1.1.1-beta1", False),
    ("^0.0.1", "0.0.1", True),
    ("^0.0.1", "0.3.1", False),
    ("~*", "2.1.1", True),
    ("~1", "2.1.1", False),
    ("~1", "1.3.5", True),
    ("~1", "1.4", True),
    ("~1.x", "2.1.1", False),
    ("~1.x", "1.3.5", True),
    ("~1.x", "1.4", True),
    ("~1.1", "1.1.1", True),
    ("~1.1", "1.1.1-alpha", False),
    ("~1.1-alpha", "1.1.1-beta", True),
    ("~1.1.1-beta", "1.1.1-alpha", False),
    ("~1.1.1-beta", "1.1.1", True),
    ("~1.2.3", "1.2.5", True),
    ("~1.2.3", "1.2.2", False),
    ("~1.2.3", "1.3.2", False),
    ("~1.1", "1.2.3", False),
    ("~1.3", "2.4.5", False),
    ("1.0.0 - 2.0.0 <=2.0.0", "1.5.0", True),
    ("1.0.0 - 2.0.0, <=2.0.0", "1.5.0", True),
]


@pytest.mark.parametrize(("constraint", "version", "satisfied"), CONSTRAINT_CHECKS)
def test_a_constraint_admits_what_masterminds_admits(
    constraint: str, version: str, satisfied: bool
) -> None:
    constraints = parse_constraints(constraint)
    assert constraints.check(parse(version)) is satisfied
    ok, reasons = constraints.validate(parse(version))
    assert ok is satisfied
    assert (reasons == []) is satisfied


# TestConstraintsCheckIncludePrerelease, the cases that differ once prereleases are included
INCLUDING_PRERELEASES = [
    (">=1.1", "4.1.0-beta", True),
    (">1.1", "4.1.0-beta", True),
    ("<=1.1", "0.1.0-alpha", True),
    ("<1.1", "0.1.0-alpha", True),
    ("^1.x", "1.1.1-beta1", True),
    ("~1.1", "1.1.1-alpha", True),
    ("*", "1.2.3-alpha", True),
    ("= 2.0", "2.0.1-beta", True),
    ("^1.1", "1.1.1-alpha", True),
    ("~1", "1.3.5-beta", True),
    ("~1.x", "1.3.5-beta", True),
    ("~1.1.1-beta", "1.1.1-alpha", False),
    ("^1.1.1-beta", "1.1.1-alpha", False),
    ("~1.3.6-alpha", "1.3.5-beta", False),
    ("= 2.0", "1.2.3", False),
]


@pytest.mark.parametrize(("constraint", "version", "satisfied"), INCLUDING_PRERELEASES)
def test_including_prereleases_lets_ranges_admit_them_by_precedence(
    constraint: str, version: str, satisfied: bool
) -> None:
    constraints = parse_constraints(constraint, include_prerelease=True)
    assert constraints.check(parse(version)) is satisfied
    assert constraints.validate(version)[0] is satisfied


@pytest.mark.parametrize(("constraint", "version", "satisfied"), CONSTRAINT_CHECKS)
def test_including_prereleases_changes_nothing_for_release_versions(
    constraint: str, version: str, satisfied: bool
) -> None:
    if parse(version).is_prerelease:
        return
    assert parse_constraints(constraint, include_prerelease=True).check(version) is satisfied


# TestNewConstraint: (text, alternatives, comparators in the first)
CONSTRAINT_SHAPES = [
    (">= 1.1", 1, 1),
    (">40.50.60, < 50.70", 1, 2),
    ("2.0", 1, 1),
    ("v2.3.5-20161202202307-sha.e8fc5e5", 1, 1),
    (">= 1.2.3 < 2.0", 1, 2),
    (">= 1.2.3 < 2.0 || => 3.0 < 4", 2, 2),
    (">= 1.2.3, < 2.0", 1, 2),
    (">= 1.2.3, < 2.0 || => 3.0, < 4", 2, 2),
    ("3 - 4 || => 3.0, < 4", 2, 2),
    ("12.3.34 ~1.2.3", 1, 2),
    ("1.0.0 - 2.0.0, <=2.0.0", 1, 3),
    ("  >=1  ,  <2  ", 1, 2),
]


@pytest.mark.parametrize(("text", "alternatives", "comparators"), CONSTRAINT_SHAPES)
def test_a_constraint_splits_into_alternatives_of_comparators(
    text: str, alternatives: int, comparators: int
) -> None:
    constraints = parse_constraints(text)
    assert len(constraints.groups) == alternatives
    assert len(constraints.groups[0]) == comparators
    assert constraints.text == text


# TestConstraintString, TestTextMarshalConstraints and hyphen rewriting: (text, printed)
PRINTED_CONSTRAINTS = [
    ("*", "*"),
    (">=1.2.3", ">=1.2.3"),
    (">= 1.2.3", ">=1.2.3"),
    ("2.x,   >=1.2.3 || >4.5.6, < 5.7", "2.x >=1.2.3 || >4.5.6 <5.7"),
    (
        "2.x,   >=1.2.3 || >4.5.6, < 5.7 || >40.50.60, < 50.70",
        "2.x >=1.2.3 || >4.5.6 <5.7 || >40.50.60 <50.70",
    ),
    ("1.2", "1.2"),
    ("1 <=1.2.3", "1 <=1.2.3"),
    ("1, <=1.2.3", "1 <=1.2.3"),
    (">1, <=1.2.3", ">1 <=1.2.3"),
    ("> 1 , <=1.2.3", ">1 <=1.2.3"),
    ("2 - 3", ">=2 <=3"),
    ("2 - 3, 2 - 3", ">=2 <=3 >=2 <=3"),
    ("2 - 3, 4.0.0 - 5.1", ">=2 <=3 >=4.0.0 <=5.1"),
    ("2 - 3 4.0.0 - 5.1", ">=2 <=3 >=4.0.0 <=5.1"),
    ("1.0.0 - 2.0.0 <=2.0.0", ">=1.0.0 <=2.0.0 <=2.0.0"),
    ("1 - 2 || 3 - 4", ">=1 <=2 || >=3 <=4"),
    ("v1.2 - v1.4.5", ">=v1.2 <=v1.4.5"),
    ("~> 1.2", "~>1.2"),
]


@pytest.mark.parametrize(("text", "printed"), PRINTED_CONSTRAINTS)
def test_a_constraint_prints_its_comparators_as_written_and_reparses(
    text: str, printed: str
) -> None:
    assert str(parse_constraints(text)) == printed
    assert str(parse_constraints(printed)) == printed


# --- constraints: prerelease inclusion (the rule Flux users meet) ---------------------------


@pytest.mark.parametrize(
    ("constraint", "version", "satisfied"),
    [
        ("^1.0.0", "1.1.0-rc.1", False),
        (">=1.0.0", "1.1.0-rc.1", False),
        (">=1.0.0-0", "1.1.0-rc.1", True),
        (">=1.0.0-0 <2.0.0", "1.5.0-rc.1", True),
        (">=1.0.0-0 <2.0.0", "2.0.0-rc.1", True),
        (">=1.0.0 <2.0.0-0", "1.5.0-rc.1", True),
        ("^1.0.0 || >=1.2.0-0", "1.5.0-rc.1", True),
        ("^1.0.0 || >=2.0.0-0", "1.5.0-rc.1", False),
        ("^1.0.0 || >=3.0.0-0", "1.5.0-rc.1", False),
        ("~1.2.3-0", "1.2.9-beta", True),
        ("1.2.3-rc.1", "1.2.3-rc.1", True),
        ("1.2.3-rc.1", "1.2.3-rc.2", False),
    ],
)
def test_a_prerelease_is_admitted_only_by_an_alternative_that_names_one(
    constraint: str, version: str, satisfied: bool
) -> None:
    assert parse_constraints(constraint).check(version) is satisfied


# --- constraints: quirks kept for parity ----------------------------------------------------


@pytest.mark.parametrize(
    ("constraint", "version", "satisfied"),
    [
        # ^ with a wildcard major behaves like ^0.0.0: only 0.0.0 passes.
        ("^*", "0.0.0", True),
        ("^*", "0.0.1", False),
        ("^x", "1.2.3", False),
        # <= with a wildcard major admits 0.0.z only.
        ("<=*", "0.0.7", True),
        ("<=*", "0.1.0", False),
        # != with a wildcard major excludes only 0.0.0.
        ("!=*", "0.0.0", False),
        ("!=*", "0.0.1", True),
        # > with a wildcard major excludes only 0.0.0.
        (">*", "0.0.0", False),
        (">*", "0.0.1", True),
        # ~0 and ~0.0 are ranges, ~0.0.0 is anything.
        ("~0", "1.0.0", False),
        ("~0.0", "0.1.0", False),
        ("~0.0.0", "5.0.0", True),
        # Leading zeros are coerced in constraints, and build metadata is ignored.
        (">=01.02", "1.2.0", True),
        ("=1.2.3+a", "1.2.3+b", True),
        ("x.2.3", "7.0.0", True),
    ],
)
def test_wildcards_and_partial_versions_keep_masterminds_quirks(
    constraint: str, version: str, satisfied: bool
) -> None:
    assert parse_constraints(constraint).check(version) is satisfied


def test_a_hyphen_without_spaces_is_a_prerelease_not_a_range() -> None:
    ((comparator,),) = parse_constraints("1.1-3").groups
    assert str(comparator.version) == "1.1.0-3"
    assert parse_constraints("1.1 - 3").check("2.5.0")


@pytest.mark.parametrize("text", [" " * 20_000 + "1", "1" + " " * 20_000 + "1", "1-" * 10_000,
                                  "1 - " * 5_000])
def test_a_long_hostile_constraint_is_read_in_linear_time(text: str) -> None:
    # a spec field: with a backtracking regular expression these took seconds each
    started = time.perf_counter()
    with contextlib.suppress(SemverError):
        parse_constraints(text)
    assert time.perf_counter() - started < 0.5


# --- constraints: refused -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo", "improper constraint: foo"),
        (">= bar", "improper constraint: >= bar"),
        ("BAR >= 1.2.3", "improper constraint: BAR >= 1.2.3"),
        ("12.3.4.1234", "improper constraint: 12.3.4.1234"),
        ("12.23.4.1234", "improper constraint: 12.23.4.1234"),
        ("12.3.34.1234", "improper constraint: 12.3.34.1234"),
        ("12.3.34~ 1.2.3", "improper constraint: 12.3.34~ 1.2.3"),
        ("", "improper constraint: "),
        ("   ", "improper constraint:    "),
        (">=1.0 || ", "improper constraint:  "),
        (">=1.0,", "improper constraint: >=1.0,"),
        (">=1.0,, <2", "improper constraint: >=1.0,, <2"),
        (", >=1.0", "improper constraint: , >=1.0"),
        (">=1.0<2", "improper constraint: >=1.0<2"),
        ("V1.2", "improper constraint: V1.2"),
        (">=1.2.3\v", "improper constraint: >=1.2.3\v"),
        ("1 - foo", "improper constraint: 1 - foo"),
        ("1.2.3-alpha..1", "improper constraint: 1.2.3-alpha..1"),
        ("1|2", "constraint parser error"),
        (">=1.2.3-01", "constraint parser error"),
        ("xx", "constraint parser error"),
        (">=18446744073709551616", "constraint parser error"),
    ],
)
def test_a_malformed_constraint_is_refused_with_masterminds_message(
    text: str, message: str
) -> None:
    with pytest.raises(InvalidConstraintError) as caught:
        parse_constraints(text)
    assert str(caught.value) == message


def test_a_very_long_malformed_constraint_is_refused_quickly() -> None:
    with pytest.raises(InvalidConstraintError):
        parse_constraints("1  " * 5000 + "!")


# --- validate: the reasons ------------------------------------------------------------------

# TestConstraintsValidate's messages: (constraint, version, first reason)
FIRST_REASONS = [
    ("2.x", "1.2.3", "1.2.3 is less than 2.x"),
    ("2", "1.2.3", "1.2.3 is less than 2"),
    ("= 2.0", "1.2.3", "1.2.3 is less than 2.0"),
    ("!=4.1", "4.1.0", "4.1.0 is equal to 4.1"),
    ("!=4.x", "4.1.0", "4.1.0 is equal to 4.x"),
    ("!=4.2.x", "4.2.3", "4.2.3 is equal to 4.2.x"),
    (">1.1", "1.1.0", "1.1.0 is less than or equal to 1.1"),
    ("<1.1", "1.1.0", "1.1.0 is greater than or equal to 1.1"),
    ("<1.1", "1.1.1", "1.1.1 is greater than or equal to 1.1"),
    ("<1.x", "2.1.1", "2.1.1 is greater than or equal to 1.x"),
    ("<1.1.x", "1.2.1", "1.2.1 is greater than or equal to 1.1.x"),
    (">=1.1", "0.0.9", "0.0.9 is less than 1.1"),
    ("<=2.x", "3.1.0", "3.1.0 is greater than 2.x"),
    ("<=1.1", "1.2.1", "1.2.1 is greater than 1.1"),
    ("<=1.1.x", "1.2.500", "1.2.500 is greater than 1.1.x"),
    (">1.1, <3", "4.3.2", "4.3.2 is greater than or equal to 3"),
    (">=1.1, <2, !=1.2.3", "1.2.3", "1.2.3 is equal to 1.2.3"),
    (">=1.1, <2, !=1.2.3 || > 3", "3.0.0", "3.0.0 is greater than or equal to 2"),
    (">=1.1, <2, !=1.2.3 || > 3", "1.2.3", "1.2.3 is equal to 1.2.3"),
    ("1.1 - 3", "4.3.2", "4.3.2 is greater than 3"),
    ("^1.1", "4.3.2", "4.3.2 does not have same major version as 1.1"),
    ("^1.12.7", "1.6.6", "1.6.6 is less than 1.12.7"),
    ("^2.x", "1.1.1", "1.1.1 is less than 2.x"),
    ("^1.x", "2.1.1", "2.1.1 does not have same major version as 1.x"),
    (
        "^0.2",
        "0.3.0",
        "0.3.0 does not have same minor version as 0.2. Expected minor versions to match "
        "when constraint major version is 0",
    ),
    ("^0.2", "0.1.1", "0.1.1 is less than 0.2"),
    ("^0.0.3", "0.1.1", "0.1.1 does not have same minor version as 0.0.3"),
    (
        "^0.0.3",
        "0.0.4",
        "0.0.4 does not equal 0.0.3. Expect version and constraint to equal when major and "
        "minor versions are 0",
    ),
    ("^0.0.3", "0.0.2", "0.0.2 is less than 0.0.3"),
    ("~1", "2.1.2", "2.1.2 does not have same major version as 1"),
    ("~1.x", "2.1.1", "2.1.1 does not have same major version as 1.x"),
    ("~1.2.3", "1.2.2", "1.2.2 is less than 1.2.3"),
    ("~1.2.3", "1.3.2", "1.3.2 does not have same major and minor version as 1.2.3"),
    ("~1.1", "1.2.3", "1.2.3 does not have same major and minor version as 1.1"),
    ("~1.3", "2.4.5", "2.4.5 does not have same major version as 1.3"),
    (
        "> 1.2.3",
        "1.2.3-beta.1",
        "1.2.3-beta.1 is a prerelease version and the constraint is only looking for release "
        "versions",
    ),
    ("=1.2.3", "1.2.4", "1.2.4 is not equal to 1.2.3"),
]


@pytest.mark.parametrize(("constraint", "version", "reason"), FIRST_REASONS)
def test_a_failed_validation_gives_masterminds_reason_first(
    constraint: str, version: str, reason: str
) -> None:
    ok, reasons = parse_constraints(constraint).validate(parse(version, strict=True))
    assert not ok
    assert reasons[0] == reason


# TestConstraintsValidateIncludePrerelease's messages for prereleases
PRERELEASE_REASONS = [
    ("> 1.2.3", "1.2.3-beta.1", "1.2.3-beta.1 is less than or equal to 1.2.3"),
    ("< 1.2.3", "1.2.4-beta.1", "1.2.4-beta.1 is greater than or equal to 1.2.3"),
    (">= 1.2.3", "1.2.3-beta.1", "1.2.3-beta.1 is less than 1.2.3"),
    ("<= 1.2.3", "1.2.4-beta.1", "1.2.4-beta.1 is greater than 1.2.3"),
]


@pytest.mark.parametrize(("constraint", "version", "reason"), PRERELEASE_REASONS)
def test_with_prereleases_included_a_prerelease_fails_on_its_precedence(
    constraint: str, version: str, reason: str
) -> None:
    constraints = parse_constraints(constraint, include_prerelease=True)
    assert constraints.validate(version) == (False, [reason])


def test_validation_lists_every_failing_comparator_of_the_alternative() -> None:
    constraints = parse_constraints("!= 1.2.5, ^2, <= 1.1.x")
    assert constraints.validate(parse("1.2.3")) == (
        False,
        ["1.2.3 is less than 2", "1.2.3 is greater than 1.1.x"],
    )


def test_validation_reports_a_refused_prerelease_only_once() -> None:
    ok, reasons = parse_constraints(">=1.0 <2.0 || ^1.5").validate("1.6.0-rc.1")
    assert not ok
    assert reasons == [
        "1.6.0-rc.1 is a prerelease version and the constraint is only looking for release versions"
    ]


def test_a_satisfied_validation_gives_no_reasons() -> None:
    assert parse_constraints("<1 || >=2").validate("2.0.0") == (True, [])


# --- latest: picking among tags -------------------------------------------------------------

GIT_TAGS = [
    ("v1.0.0", "c1"),
    ("v1.1.0-rc.1", "c2"),
    ("v1.1.0", "c3"),
    ("not-a-version", "c4"),
    ("2.0.0+build", "c5"),
]


@pytest.mark.parametrize(
    ("constraint", "tag", "commit"),
    [
        ("*", "2.0.0+build", "c5"),
        (">=1.0.0", "2.0.0+build", "c5"),
        ("<2.0.0", "v1.1.0", "c3"),
        ("^1", "v1.1.0", "c3"),
        ("~1.0", "v1.0.0", "c1"),
        ("1.0.0", "v1.0.0", "c1"),
        (">=1.1.0-0 <1.1.0", "v1.1.0-rc.1", "c2"),
        (">=1.0.0-0 <2.0.0", "v1.1.0", "c3"),
        ("2.0.0+other", "2.0.0+build", "c5"),
    ],
)
def test_latest_picks_the_highest_tag_the_constraint_admits(
    constraint: str, tag: str, commit: str
) -> None:
    picked = latest(GIT_TAGS, constraint)
    assert picked is not None
    version, item = picked
    assert (version.original, item) == (tag, commit)


def test_latest_finds_nothing_when_no_tag_satisfies() -> None:
    assert latest(GIT_TAGS, ">=3") is None
    assert latest([], "*") is None


def test_latest_accepts_parsed_constraints_and_skips_what_the_parser_refuses() -> None:
    tags = [("1.5", "loose"), ("v1.4.0", "strict")]
    assert latest(tags, parse_constraints("^1")) == (parse("1.4.0"), "strict")
    picked = latest(tags, "^1", parser=parse)
    assert picked is not None
    assert picked[1] == "loose"


def test_latest_breaks_a_metadata_tie_with_the_callers_key() -> None:
    committed = {"v2.0.0+a": 20, "v2.0.0+b": 10, "v1.0.0": 30}
    tags = [(tag, tag) for tag in committed]
    picked = latest(tags, "*", key=lambda version, tag: committed[tag])
    assert picked is not None
    assert picked[0].original == "v2.0.0+a"
    newest_first = list(reversed(tags))
    picked = latest(newest_first, "*", key=lambda version, tag: committed[tag])
    assert picked is not None
    assert picked[0].original == "v2.0.0+a"


def test_latest_without_a_key_breaks_a_tie_in_favour_of_the_later_candidate() -> None:
    picked = latest([("1.0.0+first", 1), ("1.0.0+second", 2), ("0.9.0", 3)], "*")
    assert picked is not None
    assert picked[1] == 2


def test_latest_with_a_key_tie_still_prefers_the_later_candidate() -> None:
    picked = latest([("1.0.0+a", 1), ("1.0.0+b", 2)], "*", key=lambda version, item: 0)
    assert picked is not None
    assert picked[1] == 2


def test_the_precedence_key_sorts_tags_the_way_flux_does_with_a_tie_breaker() -> None:
    created = {"1.0.0+b": 2, "1.0.0+a": 1, "0.1.0": 3}
    ordered = sorted(created, key=lambda tag: (parse_tag(tag).precedence, created[tag]))
    assert ordered == ["0.1.0", "1.0.0+a", "1.0.0+b"]


def test_a_constraints_object_is_reusable_and_frozen() -> None:
    constraints = parse_constraints("^1.2")
    assert isinstance(constraints, Constraints)
    assert constraints.check("1.9.0") and not constraints.check("2.0.0")
    with pytest.raises(AttributeError):
        constraints.include_prerelease = True  # type: ignore[misc]


# --- properties -----------------------------------------------------------------------------

_numbers = st.integers(0, 30) | st.integers(0, 2**64 - 1)
_numeric_identifiers = st.integers(0, 2**64 - 1).map(str)
_alphanumeric_identifiers = st.from_regex(
    r"[0-9A-Za-z-]{0,4}[A-Za-z-][0-9A-Za-z-]{0,4}", fullmatch=True
)
_prereleases = st.lists(_numeric_identifiers | _alphanumeric_identifiers, max_size=4).map(".".join)
_metadata = st.lists(st.from_regex(r"[0-9A-Za-z-]{1,6}", fullmatch=True), max_size=3).map(".".join)
versions = st.builds(Version, _numbers, _numbers, _numbers, _prereleases, _metadata)


def _spec_compare(a: Version, b: Version) -> int:
    """SemVer 2.0.0 rule 11, written out independently of the module under test."""

    def sign(x: int) -> int:
        return (x > 0) - (x < 0)

    for x, y in ((a.major, b.major), (a.minor, b.minor), (a.patch, b.patch)):
        if x != y:
            return sign(x - y)
    if not a.prerelease or not b.prerelease:
        return sign(bool(a.prerelease) - bool(b.prerelease)) * -1
    left, right = a.prerelease.split("."), b.prerelease.split(".")
    for p, q in zip(left, right, strict=False):
        if p == q:
            continue
        if p.isdigit() and q.isdigit():
            return sign(int(p) - int(q))
        if p.isdigit() or q.isdigit():
            return -1 if p.isdigit() else 1
        return -1 if p < q else 1
    return sign(len(left) - len(right))


@given(versions)
def test_printing_a_version_and_parsing_it_back_gives_the_same_version(version: Version) -> None:
    for again in (parse(str(version)), parse(str(version), strict=True), parse_tag(f"v{version}")):
        assert again == version
        assert str(again) == str(version)
        assert again.metadata == version.metadata


@given(versions, versions, versions)
def test_versions_are_totally_ordered(a: Version, b: Version, c: Version) -> None:
    assert [a < b, a == b, a > b].count(True) == 1
    assert a.compare(b) == -b.compare(a)
    if a == b:
        assert hash(a) == hash(b)
    if a <= b and b <= c:
        assert a <= c
    if a == b:
        assert a.compare(c) == b.compare(c)
    assert sorted([a, b, c]) == sorted([c, b, a], key=functools.cmp_to_key(Version.compare))


@given(versions, versions)
def test_ordering_follows_the_semver_precedence_rules(a: Version, b: Version) -> None:
    assert a.compare(b) == _spec_compare(a, b)
    assert parse(str(a)).compare(parse(str(b))) == _spec_compare(a, b)


@given(st.text(alphabet="0123456789.v-+abx", max_size=14))
def test_whatever_strict_parsing_accepts_coercing_parsing_reads_the_same(text: str) -> None:
    try:
        strict = parse(text, strict=True)
    except SemverError:
        return
    loose = parse(text)
    assert str(loose) == str(strict) == text
    assert loose == strict


@given(st.text(alphabet=" ,|-<>=!~^*xXv0123.a+", max_size=24))
def test_any_constraint_text_either_parses_or_raises_a_semver_error(text: str) -> None:
    try:
        constraints = parse_constraints(text)
    except SemverError:
        return
    assert isinstance(constraints.check(Version(1, 2, 3)), bool)
    assert str(parse_constraints(str(constraints))) == str(constraints)
