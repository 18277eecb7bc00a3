"""fluxd.gotext: values printed as Go prints them."""

from __future__ import annotations

from fluxd.gotext import quote


def test_quote_is_gos_percent_q() -> None:
    assert quote("plain") == '"plain"'
    assert quote('say "hi"\\') == '"say \\"hi\\"\\\\"'
    assert quote("tab\tnew\nline") == '"tab\\tnew\\nline"'
    assert quote("\x00\x7f") == '"\\x00\\x7f"'
    assert quote("café ✓") == '"café ✓"'
    assert quote("\u200b") == '"\\u200b"'
