"""status.history upserts as Flux's meta.History: keyed by digest and status, newest
first, at most five."""

from __future__ import annotations

import datetime

from fluxd.clock import format_duration
from fluxd.runtime import history

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def at(minutes: int) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


def test_the_first_reconciliation_makes_one_snapshot() -> None:
    out = history.upsert(None, digest="sha256:a", now=at(0), duration=1.5,
                         status="ReconciliationSucceeded", metadata={"revision": "r1"})
    assert out == [{"digest": "sha256:a", "firstReconciled": "2026-01-01T00:00:00Z",
                    "lastReconciled": "2026-01-01T00:00:00Z",
                    "lastReconciledDuration": "1.5s",
                    "lastReconciledStatus": "ReconciliationSucceeded",
                    "totalReconciliations": 1, "metadata": {"revision": "r1"}}]


def test_the_same_digest_and_status_counts_up_and_moves_to_the_front() -> None:
    h = history.upsert(None, digest="sha256:a", now=at(0), duration=1, status="ok")
    h = history.upsert(h, digest="sha256:b", now=at(1), duration=1, status="ok")
    h = history.upsert(h, digest="sha256:a", now=at(2), duration=3, status="ok")
    assert [s["digest"] for s in h] == ["sha256:a", "sha256:b"]
    assert h[0]["totalReconciliations"] == 2
    assert h[0]["firstReconciled"] == "2026-01-01T00:00:00Z"
    assert h[0]["lastReconciled"] == "2026-01-01T00:02:00Z"
    assert h[0]["lastReconciledDuration"] == "3s"


def test_a_different_status_for_the_same_digest_is_a_new_snapshot() -> None:
    h = history.upsert(None, digest="sha256:a", now=at(0), duration=1, status="ok")
    h = history.upsert(h, digest="sha256:a", now=at(1), duration=1, status="failed")
    assert [(s["digest"], s["lastReconciledStatus"]) for s in h] == [
        ("sha256:a", "failed"), ("sha256:a", "ok")]
    assert h[0]["totalReconciliations"] == 1


def test_history_keeps_the_five_newest() -> None:
    h: list[dict[str, object]] = []
    for i in range(7):
        h = history.upsert(h, digest=f"sha256:{i}", now=at(i), duration=1, status="ok")
    assert [s["digest"] for s in h] == [f"sha256:{i}" for i in (6, 5, 4, 3, 2)]


def test_the_input_is_not_changed() -> None:
    h = history.upsert(None, digest="sha256:a", now=at(0), duration=1, status="ok")
    before = [dict(s) for s in h]
    history.upsert(h, digest="sha256:a", now=at(1), duration=1, status="ok")
    assert h == before


def test_durations_print_as_go_does() -> None:
    assert [format_duration(s) for s in (0, 0.25, 1.5, 90, 570, 7200)] == [
        "0s", "250ms", "1.5s", "1m30s", "9m30s", "2h0m0s"]
