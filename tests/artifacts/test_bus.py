"""The artifact bus: synchronous fan-out in publish order, and the latest event per source."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluxd.artifacts.bus import ArtifactBus, ArtifactEvent, SourceKey

GIT = SourceKey("GitRepository", "flux-system", "podinfo")
OCI = SourceKey("OCIRepository", "flux-system", "manifests")


def event(source: SourceKey, revision: str) -> ArtifactEvent:
    return ArtifactEvent(source=source, revision=revision, digest=f"sha256:{revision}",
                         path=Path(f"/data/{revision}.tar.gz"),
                         url=f"http://source/{revision}.tar.gz")


def test_subscribers_get_every_event_in_publish_order_before_publish_returns() -> None:
    bus = ArtifactBus()
    first: list[str] = []
    second: list[str] = []
    bus.subscribe(lambda e: first.append(e.revision))
    bus.subscribe(lambda e: second.append(e.revision))
    for revision in ("r1", "r2", "r3"):
        bus.publish(event(GIT, revision))
        assert first[-1] == second[-1] == revision
    assert first == second == ["r1", "r2", "r3"]


def test_subscribers_are_called_in_subscription_order() -> None:
    bus = ArtifactBus()
    calls: list[str] = []
    bus.subscribe(lambda e: calls.append("kustomize"))
    bus.subscribe(lambda e: calls.append("helm"))
    bus.publish(event(GIT, "r1"))
    assert calls == ["kustomize", "helm"]


def test_an_event_published_from_a_callback_reaches_everyone_after_the_current_one() -> None:
    bus = ArtifactBus()
    seen: list[tuple[str, str]] = []

    def chain(e: ArtifactEvent) -> None:
        seen.append(("a", e.revision))
        if e.revision == "r1":
            bus.publish(event(OCI, "r2"))

    bus.subscribe(chain)
    bus.subscribe(lambda e: seen.append(("b", e.revision)))
    bus.publish(event(GIT, "r1"))
    assert seen == [("a", "r1"), ("b", "r1"), ("a", "r2"), ("b", "r2")]


def test_a_failing_subscriber_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    bus = ArtifactBus()
    got: list[str] = []

    def broken(e: ArtifactEvent) -> None:
        raise RuntimeError("bug in a consumer")

    bus.subscribe(broken)
    bus.subscribe(lambda e: got.append(e.revision))
    bus.publish(event(GIT, "r1"))
    bus.publish(event(GIT, "r2"))
    assert got == ["r1", "r2"]
    assert "artifact subscriber failed" in caplog.text


def test_last_gives_the_latest_event_per_source_for_late_consumers() -> None:
    bus = ArtifactBus()
    assert bus.last(GIT) is None
    bus.publish(event(GIT, "r1"))
    bus.publish(event(OCI, "o1"))
    bus.publish(event(GIT, "r2"))
    late: list[str] = []
    bus.subscribe(lambda e: late.append(e.revision))
    assert late == []
    last = bus.last(GIT)
    assert last is not None and last.revision == "r2"
    assert bus.last(SourceKey("GitRepository", "other", "podinfo")) is None


def test_forget_drops_the_latest_event_of_a_deleted_source() -> None:
    bus = ArtifactBus()
    bus.publish(event(GIT, "r1"))
    bus.publish(event(OCI, "o1"))
    bus.forget(GIT)
    bus.forget(GIT)  # forgetting twice is harmless
    assert bus.last(GIT) is None
    assert bus.last(OCI) is not None


def test_unsubscribing_stops_delivery() -> None:
    bus = ArtifactBus()
    got: list[str] = []
    unsubscribe = bus.subscribe(lambda e: got.append(e.revision))
    bus.publish(event(GIT, "r1"))
    unsubscribe()
    unsubscribe()
    bus.publish(event(GIT, "r2"))
    assert got == ["r1"]


def test_two_buses_share_nothing() -> None:
    one, two = ArtifactBus(), ArtifactBus()
    one.publish(event(GIT, "r1"))
    assert two.last(GIT) is None
