"""User regular expressions read as Go reads them (RE2), in linear time."""

from __future__ import annotations

import random
import threading
import time

import pytest

from fluxd import regex


@pytest.mark.parametrize("pattern, text, found", [
    # Go's $ (without (?m)) is the very end of the text; Python's also matches before a
    # final newline
    ("succeeded$", "upgrade succeeded\n", False),
    ("succeeded$", "upgrade succeeded", True),
    ("(?m)succeeded$", "upgrade succeeded\nnext", True),
    # syntax Go has and Python's re has not
    (r"\pL+ed\z", "succeeded", True),
    (r"\Qv1.0\E", "v1.0.3", True),
    (r"\Qv1.0\E", "v1x0", False),
    (r"(?P<verb>appl)ied", "applied", True),
    (r"(?<verb>appl)ied", "applied", True),
    (r"(?i)HEALTH", "health check failed", True),
    (r"\x{263a}", "smile ☺", True),
    # . is not \n without (?s); \d is ASCII only, as in Go
    ("a.b", "a\nb", False),
    ("(?s)a.b", "a\nb", True),
    (r"\d", "٣", False),
    # leftmost-first, as Go's (non-POSIX) regexp
    ("a|ab", "ab", True),
])
def test_patterns_mean_what_they_mean_in_go(pattern: str, text: str, found: bool) -> None:
    assert regex.compile(pattern).search(text) is found


@pytest.mark.parametrize("pattern", [
    r"(a)\1",          # backreference
    r"(?=succeeded)",  # lookahead
    r"(?<!x)y",        # lookbehind
    r"a\Z",            # Python's end of text; Go has \z
    r"\C",             # any byte: RE2 has it, Go does not
    r"x{1001}",        # Go's repetition limit
    "[unclosed",
    "a**",
])
def test_patterns_go_refuses_are_refused(pattern: str) -> None:
    with pytest.raises(regex.RegexError, match="error parsing regexp"):
        regex.compile(pattern)


def test_an_any_byte_escape_inside_a_quote_is_plain_text() -> None:
    assert regex.compile(r"\Q\C\E").search(r"a\Cb")
    assert regex.compile(r"\\C").search(r"a\Cb")  # an escaped backslash, then C


def test_search_is_unanchored_and_fullmatch_takes_the_whole_text() -> None:
    pattern = regex.compile("web-[0-9]+")
    assert pattern.search("apps/web-12/x")
    assert not pattern.fullmatch("apps/web-12/x")
    assert pattern.fullmatch("web-12")


def test_a_lone_surrogate_is_matched_as_the_replacement_character() -> None:
    assert regex.compile("^a.b$").search("a\udcffb")
    assert regex.compile("\ufffd").search("x\ud800y")


def test_a_pattern_too_large_for_the_memory_bound_is_refused() -> None:
    with pytest.raises(regex.RegexError, match="pattern too large"):
        regex.compile(r"[\p{L}\p{N}]{1,1000}")


def test_a_long_message_is_matched_in_linear_time() -> None:
    # Python's re takes seconds for this (quadratic backtracking); RE2 a pass over it
    message = "x" * 150_000
    pattern = regex.compile(".*succeeded.*")
    started = time.perf_counter()
    for _ in range(10):
        assert not pattern.search(message)
    assert time.perf_counter() - started < 0.5
    nested = regex.compile("(a+)+b")
    started = time.perf_counter()
    assert not nested.search("a" * 100_000)
    assert time.perf_counter() - started < 0.5


def test_matching_lets_other_threads_run() -> None:
    # a slow (large) pattern over a long text: matched in a worker thread, it must leave
    # the interpreter to the others, as an event loop needs
    pattern = regex.compile("(a|b)*a(a|b){200}c")
    rng = random.Random(1)
    text = "".join(rng.choice("ab") for _ in range(200_000))
    done = threading.Event()
    result: list[bool] = []

    def match() -> None:
        result.append(pattern.search(text))
        done.set()

    worker = threading.Thread(target=match)
    ticks = 0
    worker.start()
    deadline = time.perf_counter() + 60
    while not done.is_set() and time.perf_counter() < deadline:
        ticks += 1
        time.sleep(0.001)
    worker.join(60)
    assert result == [False]
    assert ticks > 10  # this thread kept running while the other matched


def test_the_cache_is_bounded_and_remembers_refusals() -> None:
    cache = regex.RegexCache(size=3)
    first = cache.get("a+")
    assert cache.get("a+") is first
    for pattern in ("b", "c", "d"):
        cache.get(pattern)
    assert len(cache) == 3
    assert cache.get("a+") is not first  # dropped, compiled again
    for _ in range(2):
        with pytest.raises(regex.RegexError, match="missing"):
            cache.get("[x")
    assert len(cache) == 3


_POOL = ["succeeded$", "(?m)succeeded$", r"\pL+ed\z", r"\Qv1.0\E", "(?i)HEALTH", "a.b",
         "(?s)a.b", r"\d", "a|ab", "^Applied", "timed out", "", "x*"]
_TEXTS = ["upgrade succeeded\n", "upgrade succeeded", "v1.0.3", "health check failed",
          "a\nb", "٣", "Applied revision: main@sha1:0", "", "Health check timed out"]


def test_a_list_searched_together_matches_when_one_of_its_patterns_does() -> None:
    rng = random.Random(7)
    for _ in range(300):
        patterns = rng.sample(_POOL, rng.randint(0, 4))
        together = regex.AnyOf(patterns)
        for text in _TEXTS:
            expected = any(regex.compile(p).search(text) for p in patterns)
            assert together.search(text) is expected, (patterns, text)


def test_a_flag_in_one_pattern_of_a_list_does_not_reach_the_others() -> None:
    together = regex.AnyOf(["(?i)abc", "XYZ"])
    assert together.search("ABC")
    assert not together.search("xyz")


def test_refused_patterns_of_a_list_are_named_and_match_nothing() -> None:
    together = regex.AnyOf(["(?=ok)", "ok$", r"(a)\1"])
    assert [p for p, _ in together.refused] == ["(?=ok)", r"(a)\1"]
    assert all("error parsing regexp" in message for _, message in together.refused)
    assert together.search("it is ok")
    assert not regex.AnyOf(["(?=ok)"]).search("ok")


def test_the_cache_keeps_one_set_per_list() -> None:
    cache = regex.RegexCache(size=2)
    first = cache.any_of(["a", "b"])
    assert cache.any_of(("a", "b")) is first
    cache.any_of(["c"])
    cache.any_of(["d"])
    assert cache.any_of(["a", "b"]) is not first  # dropped, built again


def test_a_list_of_plain_text_is_searched_as_the_patterns_would_be() -> None:
    plain = regex.AnyOf(["timed out", "Dependency-Not/Ready: 'x'", ""])
    metachars = regex.AnyOf(["timed.out", "(timed) out"])
    for text in ("Health check timed out", "timedXout", "Dependency-Not/Ready: 'x'",
                 "smile ☺ timed out", ""):
        assert plain.search(text) is any(regex.compile(p).search(text) for p in
                                         ["timed out", "Dependency-Not/Ready: 'x'", ""])
        assert metachars.search(text) is any(regex.compile(p).search(text) for p in
                                             ["timed.out", "(timed) out"])
    assert not regex.AnyOf(["timed out"]).search("timedXout")
    assert regex.AnyOf(["timed.out"]).search("timedXout")
