"""Events: the in-process bus, and the recorder writing core/v1 Events to the cluster
fixture the way client-go's correlator and Flux's recorder do."""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fluxd import logging as fluxlog
from fluxd.clock import FakeClock, SystemClock
from fluxd.kube import KubeClient
from fluxd.runtime.events import (
    Event,
    EventBus,
    EventRecorder,
    ObjectReference,
    Subscription,
)
from tests.conftest import Cluster

pytestmark = pytest.mark.anyio

Obj = dict[str, Any]
START = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)




@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    # The API client keeps real time; the recorder under test runs on a FakeClock.
    async with await KubeClient.connect(clock=SystemClock(),
                                        kubeconfig=str(cluster.kubeconfig)) as client:
        yield client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def recorder(kube: KubeClient, bus: EventBus, clock: FakeClock) -> EventRecorder:
    return EventRecorder(kube, bus, controller="source-controller", instance="fluxd-0",
                         clock=clock)


def git_repository(namespace: str, name: str | None = None, **annotations: str) -> Obj:
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
        "metadata": {"name": name or f"repo-{uuid.uuid4().hex[:6]}", "namespace": namespace,
                     "uid": str(uuid.uuid4()), "resourceVersion": "42",
                     "annotations": annotations},
    }


def sample_event(n: int = 0, severity: str = "info") -> Event:
    return Event(involved_object=ObjectReference(kind="GitRepository", name=f"r{n}",
                                                 namespace="ns"),
                 severity=severity, timestamp=START, message=f"message {n}",
                 reason="NewArtifact", reporting_controller="source-controller")


async def events_about(kube: KubeClient, obj: Obj) -> list[Obj]:
    found = await kube.list_all("v1", "Event", obj["metadata"]["namespace"],
                                field_selector=f"involvedObject.name={obj['metadata']['name']}")
    return sorted(found.items, key=lambda e: str(e["metadata"]["name"]))


def drain(subscription: Subscription) -> list[Event]:
    """The events queued right now, without waiting."""
    out: list[Event] = []
    while (event := subscription.poll()) is not None:
        out.append(event)
    return out


# -- the bus ------------------------------------------------------------------------------


async def test_subscribers_get_events_in_the_order_they_were_published(bus: EventBus) -> None:
    first, second = bus.subscribe("notification"), bus.subscribe("audit")
    published = [sample_event(n) for n in range(5)]
    for event in published:
        bus.publish(event)
    bus.close()
    assert [e async for e in first] == published
    assert [e async for e in second] == published


async def test_a_full_subscription_drops_its_oldest_event_and_counts_it(bus: EventBus) -> None:
    slow = bus.subscribe("slow", maxsize=3)
    for n in range(5):
        bus.publish(sample_event(n))  # never waits, though nobody reads
    assert slow.dropped == 2
    assert slow.pending == 3
    bus.close()
    assert [e.message async for e in slow] == ["message 2", "message 3", "message 4"]


async def test_closing_the_bus_wakes_a_subscriber_waiting_for_events(bus: EventBus) -> None:
    subscription = bus.subscribe("notification")
    received: list[Event] = []

    async def consume() -> None:
        async for event in subscription:
            received.append(event)

    consumer = asyncio.create_task(consume())
    bus.publish(sample_event(1))
    await asyncio.sleep(0.01)
    bus.close()
    await asyncio.wait_for(consumer, 1)
    assert received == [sample_event(1)]
    assert [e async for e in subscription] == []  # stays ended


async def test_an_unsubscribed_subscriber_gets_no_more_events(bus: EventBus) -> None:
    kept, leaving = bus.subscribe("kept"), bus.subscribe("leaving")
    bus.publish(sample_event(1))
    leaving.close()
    bus.publish(sample_event(2))
    assert [e.message async for e in leaving] == ["message 1"]
    assert [s.name for s in bus.subscriptions] == ["kept"]
    assert [e.message for e in drain(kept)] == ["message 1", "message 2"]


async def test_subscribing_to_a_closed_bus_gives_an_ended_subscription(bus: EventBus) -> None:
    bus.close()
    late = bus.subscribe("late")
    bus.publish(sample_event())
    assert late.closed
    assert [e async for e in late] == []


async def test_subscriber_names_are_unique_and_queues_bounded(bus: EventBus) -> None:
    bus.subscribe("notification")
    with pytest.raises(ValueError, match="exists already"):
        bus.subscribe("notification")
    with pytest.raises(ValueError, match="at least 1"):
        bus.subscribe("empty", maxsize=0)


async def test_event_json_uses_flux_field_names_and_omits_empty_fields() -> None:
    ref = ObjectReference(kind="Kustomization", name="apps", namespace="flux-system",
                          uid="u-1", api_version="kustomize.toolkit.fluxcd.io/v1")
    event = Event(involved_object=ref, severity="info", timestamp=START,
                  message="Reconciliation finished", reason="ReconciliationSucceeded",
                  reporting_controller="kustomize-controller",
                  metadata={"kustomize.toolkit.fluxcd.io/revision": "main@sha1:abc"},
                  reporting_instance="fluxd-0")
    assert event.to_json() == {
        "involvedObject": {"kind": "Kustomization", "namespace": "flux-system", "name": "apps",
                           "uid": "u-1", "apiVersion": "kustomize.toolkit.fluxcd.io/v1"},
        "severity": "info", "timestamp": "2026-03-01T12:00:00Z",
        "message": "Reconciliation finished", "reason": "ReconciliationSucceeded",
        "metadata": {"kustomize.toolkit.fluxcd.io/revision": "main@sha1:abc"},
        "reportingController": "kustomize-controller", "reportingInstance": "fluxd-0",
    }
    assert Event.from_json(event.to_json()) == event
    bare = sample_event().to_json()
    assert "metadata" not in bare and "reportingInstance" not in bare
    with pytest.raises(ValueError, match="invalid event"):
        Event.from_json({"severity": "info"})


# -- the recorder -------------------------------------------------------------------------


async def test_an_event_creates_a_kubernetes_event_with_flux_fields(
        kube: KubeClient, recorder: EventRecorder, namespace: str) -> None:
    repo = git_repository(namespace)
    await recorder.event(repo, reason="NewArtifact", message="stored artifact for commit 'x'",
                         metadata={"revision": "main@sha1:abc"})
    [event] = await events_about(kube, repo)
    name = repo["metadata"]["name"]
    nanos = int(START.timestamp()) * 1_000_000_000
    assert event["metadata"]["name"] == f"{name}.{nanos:x}"
    assert event["metadata"]["namespace"] == namespace
    assert event["metadata"]["annotations"] == {
        "source.toolkit.fluxcd.io/revision": "main@sha1:abc"}
    assert event["involvedObject"] == {
        "kind": "GitRepository", "namespace": namespace, "name": name,
        "uid": repo["metadata"]["uid"], "apiVersion": "source.toolkit.fluxcd.io/v1",
        "resourceVersion": "42"}
    assert (event["type"], event["reason"]) == ("Normal", "NewArtifact")
    assert event["message"] == "stored artifact for commit 'x'"
    assert event["source"] == {"component": "source-controller"}
    assert event["reportingComponent"] == "source-controller"
    assert event["reportingInstance"] == "fluxd-0"
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-03-01T12:00:00Z"
    assert event["count"] == 1
    assert not event.get("eventTime")  # core/v1 style: no 1024-byte note limit


async def test_a_long_message_is_kept_whole(kube: KubeClient, recorder: EventRecorder,
                                            namespace: str) -> None:
    repo = git_repository(namespace)
    message = "x" * 5000
    await recorder.event(repo, type="Warning", reason="BuildFailed", message=message)
    [event] = await events_about(kube, repo)
    assert event["message"] == message


async def test_a_repeated_event_increments_count_and_last_timestamp(
        kube: KubeClient, recorder: EventRecorder, clock: FakeClock, namespace: str) -> None:
    repo = git_repository(namespace)
    for _ in range(3):
        await recorder.event(repo, type="Warning", reason="GitOperationFailed",
                             message="failed to checkout")
        clock.advance(30)
    [event] = await events_about(kube, repo)
    assert event["count"] == 3
    assert event["firstTimestamp"] == "2026-03-01T12:00:00Z"
    assert event["lastTimestamp"] == "2026-03-01T12:01:00Z"


async def test_a_repeat_long_after_still_counts_on_the_first_event(
        kube: KubeClient, recorder: EventRecorder, clock: FakeClock, namespace: str) -> None:
    # As client-go: counting has no window (the ten minutes are aggregation's).
    repo = git_repository(namespace)
    await recorder.event(repo, reason="Progressing", message="building artifact")
    clock.advance(3 * 3600)
    await recorder.event(repo, reason="Progressing", message="building artifact")
    [event] = await events_about(kube, repo)
    assert event["count"] == 2
    assert event["lastTimestamp"] == "2026-03-01T15:00:00Z"


async def test_a_different_message_is_a_new_event(kube: KubeClient, recorder: EventRecorder,
                                                  namespace: str) -> None:
    repo = git_repository(namespace)
    await recorder.event(repo, reason="NewArtifact", message="stored artifact for commit 'a'")
    await recorder.event(repo, reason="NewArtifact", message="stored artifact for commit 'b'")
    events = await events_about(kube, repo)
    assert [(e["message"], e["count"]) for e in events] == [
        ("stored artifact for commit 'a'", 1), ("stored artifact for commit 'b'", 1)]


async def test_a_repeat_of_a_deleted_event_creates_it_again(
        kube: KubeClient, recorder: EventRecorder, namespace: str) -> None:
    repo = git_repository(namespace)
    await recorder.event(repo, reason="Progressing", message="building artifact")
    [first] = await events_about(kube, repo)
    await kube.delete("v1", "Event", first["metadata"]["name"], namespace)  # as the TTL does
    await recorder.event(repo, reason="Progressing", message="building artifact")
    [again] = await events_about(kube, repo)
    assert again["metadata"]["name"] == first["metadata"]["name"]
    assert again["count"] == 2


async def test_ten_messages_with_one_reason_in_ten_minutes_are_combined(
        kube: KubeClient, recorder: EventRecorder, clock: FakeClock, namespace: str) -> None:
    repo = git_repository(namespace)
    for n in range(12):
        await recorder.event(repo, reason="Progressing", message=f"step {n}")
        clock.advance(10)
    events = await events_about(kube, repo)
    plain = [e for e in events if not e["message"].startswith("(combined")]
    combined = [e for e in events if e["message"].startswith("(combined")]
    assert len(plain) == 9
    assert len(combined) == 1
    assert combined[0]["message"] == "(combined from similar events): step 11"
    assert combined[0]["count"] == 3


async def test_the_spam_filter_drops_kubernetes_events_beyond_the_burst(
        kube: KubeClient, recorder: EventRecorder, bus: EventBus, clock: FakeClock,
        namespace: str) -> None:
    subscription = bus.subscribe("notification", maxsize=100)
    repo = git_repository(namespace)
    for n in range(30):  # a different reason each: no aggregation, no counting
        await recorder.event(repo, reason=f"Reason{n}", message="something happened")
    assert len(await events_about(kube, repo)) == 25
    clock.advance(299)
    await recorder.event(repo, reason="Late", message="too soon")
    assert len(await events_about(kube, repo)) == 25
    clock.advance(2)  # past five minutes: one token back
    await recorder.event(repo, reason="Later", message="one more")
    await recorder.event(repo, reason="Latest", message="and no more")
    events = await events_about(kube, repo)
    assert len(events) == 26
    assert "Later" in {e["reason"] for e in events}
    # notification-controller does its own rate limiting: the bus saw everything
    assert len(drain(subscription)) == 33


async def test_the_spam_filter_counts_per_object(
        kube: KubeClient, recorder: EventRecorder, namespace: str) -> None:
    noisy, quiet = git_repository(namespace), git_repository(namespace)
    for n in range(26):
        await recorder.event(noisy, reason=f"Reason{n}", message="noise")
    await recorder.event(quiet, reason="NewArtifact", message="stored artifact")
    assert len(await events_about(kube, noisy)) == 25
    assert len(await events_about(kube, quiet)) == 1


async def test_metadata_keys_are_prefixed_with_the_object_api_group(
        kube: KubeClient, recorder: EventRecorder, bus: EventBus, namespace: str) -> None:
    subscription = bus.subscribe("notification")
    repo = git_repository(namespace, **{
        "event.toolkit.fluxcd.io/env": "production",
        "event.toolkit.fluxcd.io/revision": "from-annotation",
        "kustomize.toolkit.fluxcd.io/prune": "disabled",  # not an event annotation
    })
    await recorder.event(repo, reason="NewArtifact", message="stored", metadata={
        "revision": "main@sha1:abc", "digest": "sha256:123",
        "event.toolkit.fluxcd.io/revision": "from-caller",
        "source.toolkit.fluxcd.io/commit_status": "update",
    })
    expected = {
        "source.toolkit.fluxcd.io/revision": "main@sha1:abc",
        "source.toolkit.fluxcd.io/digest": "sha256:123",
        "source.toolkit.fluxcd.io/commit_status": "update",
        "event.toolkit.fluxcd.io/env": "production",
        "event.toolkit.fluxcd.io/revision": "from-annotation",  # the object's annotation wins
    }
    [published] = drain(subscription)
    assert published.metadata == expected
    [event] = await events_about(kube, repo)
    assert event["metadata"]["annotations"] == expected


async def test_events_are_published_with_flux_severities(
        recorder: EventRecorder, bus: EventBus, namespace: str) -> None:
    subscription = bus.subscribe("notification")
    repo = git_repository(namespace)
    await recorder.event(repo, type="Warning", reason="BuildFailed", message="broken")
    await recorder.event(repo, reason="Succeeded", message="fixed")
    warning, normal = drain(subscription)
    assert (warning.severity, warning.reason, warning.message) == ("error", "BuildFailed",
                                                                   "broken")
    assert normal.severity == "info"
    assert normal.involved_object == ObjectReference.from_object(repo)
    assert normal.reporting_controller == "source-controller"
    assert normal.reporting_instance == "fluxd-0"
    assert normal.timestamp == START


async def test_a_trace_event_is_a_normal_kubernetes_event_and_is_not_published(
        kube: KubeClient, recorder: EventRecorder, bus: EventBus, namespace: str) -> None:
    subscription = bus.subscribe("notification")
    repo = git_repository(namespace)
    await recorder.event(repo, reason="ArtifactUpToDate", message="artifact up-to-date",
                         trace=True)
    assert drain(subscription) == []
    [event] = await events_about(kube, repo)
    assert (event["type"], event["reason"]) == ("Normal", "ArtifactUpToDate")


async def test_a_failing_write_is_logged_and_not_raised(
        recorder: EventRecorder, bus: EventBus, caplog: pytest.LogCaptureFixture) -> None:
    subscription = bus.subscribe("notification")
    repo = git_repository(f"missing-{uuid.uuid4().hex[:6]}")
    with caplog.at_level(logging.ERROR, logger="fluxd.events"):
        await recorder.event(repo, type="Warning", reason="BuildFailed", message="broken")
    [record] = [r for r in caplog.records if r.name == "fluxd.events"]
    assert record.getMessage() == "server rejected event (will not retry)"
    assert len(drain(subscription)) == 1  # the bus does not depend on the API


class _Broken:
    """A client whose every write fails with something unexpected, or never finishes."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls = 0

    async def create(self, obj: Obj) -> Obj:
        self.calls += 1
        if self.error is None:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")
        raise self.error

    async def merge_patch(self, api_version: str, kind: str, name: str, patch: Obj,
                          namespace: str | None = None) -> Obj:
        return await self.create(patch)


async def test_an_unexpected_client_error_is_logged_and_not_raised(
        bus: EventBus, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    client = _Broken(RuntimeError("boom"))
    recorder = EventRecorder(client, bus, controller="helm-controller", instance="i",
                             clock=clock)
    with caplog.at_level(logging.ERROR, logger="fluxd.events"):
        await recorder.event(git_repository("apps"), reason="InstallFailed", message="x")
    assert client.calls == 1
    assert any(r.exc_info and str(r.exc_info[1]) == "boom" for r in caplog.records)


async def test_a_cancelled_caller_is_cancelled(bus: EventBus, clock: FakeClock) -> None:
    recorder = EventRecorder(_Broken(), bus, controller="helm-controller", instance="i",
                             clock=clock)
    writing = asyncio.create_task(
        recorder.event(git_repository("apps"), reason="InstallFailed", message="x"))
    await asyncio.sleep(0.01)
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing


async def test_credentials_stay_out_of_messages_and_logged_metadata(
        kube: KubeClient, recorder: EventRecorder, bus: EventBus, namespace: str,
        caplog: pytest.LogCaptureFixture) -> None:
    subscription = bus.subscribe("notification")
    repo = git_repository(namespace)
    with caplog.at_level(fluxlog.TRACE, logger="fluxd.events"):
        await recorder.event(
            repo, type="Warning", reason="GitOperationFailed",
            message="failed to clone https://bot:s3cret@git.example.com/org/repo",
            metadata={"token": "s3cret-token"})
    [published] = drain(subscription)
    assert published.message == "failed to clone https://git.example.com/org/repo"
    [event] = await events_about(kube, repo)
    assert "s3cret@" not in event["message"]
    logged = [fluxlog.JSONFormatter().format(r) for r in caplog.records]
    assert logged, "trace level logs the event"
    assert all("s3cret" not in line for line in logged)


async def test_an_event_about_a_cluster_scoped_object_is_not_published(
        kube: KubeClient, recorder: EventRecorder, bus: EventBus) -> None:
    subscription = bus.subscribe("notification")
    name = f"cluster-scoped-{uuid.uuid4().hex[:6]}"
    node = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    await recorder.event(node, reason="Checked", message="looked at it")
    assert drain(subscription) == []  # as Flux: notifications need a namespace
    found = await kube.list_all("v1", "Event", "default",
                                field_selector=f"involvedObject.name={name}")
    [event] = found.items  # the Kubernetes Event goes to "default", as client-go puts it
    await kube.delete("v1", "Event", event["metadata"]["name"], "default")
    assert event["involvedObject"] == {"kind": "Namespace", "apiVersion": "v1", "name": name}
