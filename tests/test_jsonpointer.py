"""fluxd.jsonpointer: RFC 6901 pointers, read and written."""

from __future__ import annotations

import pytest

from fluxd import jsonpointer


@pytest.mark.parametrize(("pointer", "tokens"), [
    ("", []),
    ("/", [""]),
    ("/a/b", ["a", "b"]),
    ("/a~1b", ["a/b"]),
    ("/m~0n", ["m~n"]),
    ("/~01", ["~1"]),  # one pass, left to right: never "/"
    ("/~10", ["/0"]),
    ("/a//b", ["a", "", "b"]),
    ("/metadata/annotations/example.com~1name", ["metadata", "annotations", "example.com/name"]),
])
def test_a_pointer_reads_as_its_unescaped_tokens(pointer: str, tokens: list[str]) -> None:
    assert jsonpointer.parse(pointer) == tokens
    assert jsonpointer.join(tokens) == pointer


@pytest.mark.parametrize(("pointer", "message"), [
    ("a/b", "pointer must be empty or start with '/'"),
    ("/a~2", "invalid escape in pointer token 'a~2'"),
    ("/a~", "invalid escape in pointer token 'a~'"),
    ("/ok/~x~1", "invalid escape in pointer token '~x~1'"),
])
def test_a_malformed_pointer_is_refused(pointer: str, message: str) -> None:
    with pytest.raises(jsonpointer.PointerError, match="^" + message.replace("(", r"\(")):
        jsonpointer.parse(pointer)


def test_tokens_are_escaped_tilde_first() -> None:
    assert jsonpointer.escape("~/") == "~0~1"
    assert jsonpointer.parse("/" + jsonpointer.escape("~1")) == ["~1"]


@pytest.mark.parametrize(("token", "index"), [
    ("0", 0), ("7", 7), ("10", 10),
    ("01", None), ("-", None), ("-1", None), ("+1", None), ("1.0", None), ("", None),
    ("\u0662", None),  # a digit, but not an ASCII one
])
def test_array_indexes_are_decimal_without_leading_zeros(token: str, index: int | None) -> None:
    assert jsonpointer.array_index(token) == index
