"""The status patcher against the cluster fixture, on a Flux-like custom kind."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest

from fluxd.clock import SystemClock
from fluxd.kube import Conflict, KubeClient, NotFound
from fluxd.kube.errors import ServerError
from fluxd.runtime import conditions as conds
from fluxd.runtime.conditions import Outcome
from fluxd.runtime.status import StatusPatcher
from tests.conftest import Cluster

pytestmark = pytest.mark.anyio

Obj = dict[str, Any]

OWNED = ["Ready", "Reconciling", "Stalled", "ArtifactInStorage"]
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"




@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    async with await KubeClient.connect(clock=SystemClock(),
                                        kubeconfig=str(cluster.kubeconfig)) as client:
        yield client


class Widgets:
    """A Flux-like kind of its own (status subresource) in the test's namespace."""

    def __init__(self, kube: KubeClient, group: str, namespace: str) -> None:
        self.kube = kube
        self.api_version = f"{group}/v1"
        self.namespace = namespace

    def body(self, name: str, annotations: dict[str, str] | None = None) -> Obj:
        meta: Obj = {"name": name, "namespace": self.namespace}
        if annotations:
            meta["annotations"] = annotations
        return {"apiVersion": self.api_version, "kind": "Widget", "metadata": meta,
                "spec": {"interval": "1m"}}

    async def create(self, name: str, status: Obj | None = None,
                     annotations: dict[str, str] | None = None) -> Obj:
        """Create the widget, give it ``status``, and read it as a reconcile would."""
        await self.kube.create(self.body(name, annotations))
        if status is not None:
            await self.write_status(name, status)
        return await self.get(name)

    async def get(self, name: str) -> Obj:
        return await self.kube.get(self.api_version, "Widget", name, self.namespace)

    async def write_status(self, name: str, status: Obj) -> Obj:
        """A write by another writer (a merge patch, no precondition)."""
        return await self.kube.patch_status(self.api_version, "Widget", name,
                                            {"status": status}, self.namespace)

    async def change_spec(self, name: str, interval: str) -> Obj:
        return await self.kube.merge_patch(self.api_version, "Widget", name,
                                           {"spec": {"interval": interval}}, self.namespace)

    async def delete(self, name: str) -> None:
        await self.kube.delete(self.api_version, "Widget", name, self.namespace)


@pytest.fixture
async def widgets(kube: KubeClient, namespace: str) -> AsyncIterator[Widgets]:
    group = f"w{uuid.uuid4().hex[:8]}.example.com"
    schema = {"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": f"widgets.{group}"},
           "spec": {"group": group, "scope": "Namespaced",
                    "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": schema, "subresources": {"status": {}}}]}}
    await kube.create(crd)
    try:
        async with asyncio.timeout(30):  # a real API server establishes CRDs lazily
            while True:
                try:
                    await kube.list_all(f"{group}/v1", "Widget", namespace)
                    break
                except NotFound:
                    await asyncio.sleep(0.2)
        yield Widgets(kube, group, namespace)
    finally:
        await kube.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                          f"widgets.{group}")


class Spy:
    """A StatusClient that records its requests; ``before_patch`` runs ahead of each
    patch (another writer), and a closed ``gate`` holds patches in flight."""

    def __init__(self, kube: KubeClient, *,
                 before_patch: Callable[[], Awaitable[object]] | None = None) -> None:
        self.kube = kube
        self.calls: list[str] = []
        self.before_patch = before_patch
        self.gate = asyncio.Event()
        self.gate.set()
        self.in_flight = asyncio.Event()

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> Obj:
        self.calls.append("get")
        return await self.kube.get(api_version, kind, name, namespace)

    async def patch_status(self, api_version: str, kind: str, name: str, patch: Obj,
                           namespace: str | None = None) -> Obj:
        self.calls.append("patch")
        if self.before_patch is not None:
            await self.before_patch()
        self.in_flight.set()
        await self.gate.wait()
        return await self.kube.patch_status(api_version, kind, name, patch, namespace)


def patcher(client: Spy | KubeClient, obj: Obj, **options: Any) -> StatusPatcher:
    return StatusPatcher(client, obj, owned_conditions=OWNED, clock=SystemClock(), **options)


def ready(status: str = "True", reason: str = "Succeeded", message: str = "done",
          generation: int = 1) -> Obj:
    return {"type": "Ready", "status": status, "observedGeneration": generation,
            "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": reason, "message": message}


def foreign(message: str = "checked elsewhere") -> Obj:
    return {"type": "ExternallyVerified", "status": "True", "observedGeneration": 1,
            "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": "Verified",
            "message": message}


def types(obj: Obj) -> dict[str, str]:
    return {c["type"]: c["status"] for c in obj["status"].get("conditions", [])}


# --- conditions ------------------------------------------------------------------------


async def test_owned_conditions_are_replaced_and_a_foreign_one_written_meanwhile_is_kept(
        widgets: Widgets) -> None:
    reconciling = {"type": "Reconciling", "status": "True", "observedGeneration": 1,
                   "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": "Progressing",
                   "message": "working"}
    obj = await widgets.create("w", {"conditions": [
        reconciling, ready("Unknown", "Progressing", "working")]})
    # another writer adds its own condition after our read
    await widgets.write_status("w", {"conditions": [
        *obj["status"]["conditions"], foreign()]})

    status = patcher(widgets.kube, obj)
    status.summarize(ready_message="stored artifact for revision 'main@sha1:abc'")
    assert await status.patch() is not None

    live = await widgets.get("w")
    assert types(live) == {"Ready": "True", "ExternallyVerified": "True"}
    assert conds.get(live["status"]["conditions"], "ExternallyVerified") == foreign()
    assert conds.message_of(live["status"]["conditions"], "Ready") == \
        "stored artifact for revision 'main@sha1:abc'"
    assert [c["type"] for c in live["status"]["conditions"]] == ["Ready", "ExternallyVerified"]


async def test_a_foreign_condition_type_edited_locally_is_not_written(widgets: Widgets) -> None:
    obj = await widgets.create("w", {"conditions": [ready(), foreign()]})
    status = patcher(widgets.kube, obj)
    status.mark_false("ExternallyVerified", "NotMine", "the patcher does not own this")
    status.mark_true("ArtifactInStorage", "Succeeded", "stored")
    await status.patch()

    live = await widgets.get("w")
    assert conds.get(live["status"]["conditions"], "ExternallyVerified") == foreign()
    assert conds.is_true(live["status"]["conditions"], "ArtifactInStorage")


# --- concurrency -----------------------------------------------------------------------


async def test_a_status_write_between_read_and_patch_is_retried_and_both_survive(
        widgets: Widgets) -> None:
    obj = await widgets.create("w", {"conditions": [ready("Unknown", "Progressing", "")]})
    spy = Spy(widgets.kube)

    async def other_writer() -> None:
        spy.before_patch = None  # only once
        await widgets.write_status("w", {"url": "http://elsewhere/",
                                         "conditions": [ready("Unknown", "Progressing", ""),
                                                        foreign()]})

    spy.before_patch = other_writer
    status = patcher(spy, obj)
    status.set_field("lastAppliedRevision", "main@sha1:abc")
    status.mark_true("Ready", "Succeeded", "applied")
    patched = await status.patch()

    assert spy.calls == ["patch", "get", "patch"]
    live = await widgets.get("w")
    assert patched is not None and patched["metadata"]["resourceVersion"] == \
        live["metadata"]["resourceVersion"]
    assert live["status"]["url"] == "http://elsewhere/"
    assert live["status"]["lastAppliedRevision"] == "main@sha1:abc"
    assert types(live) == {"Ready": "True", "ExternallyVerified": "True"}


async def test_fields_the_reconciler_did_not_change_are_left_as_another_writer_set_them(
        widgets: Widgets) -> None:
    obj = await widgets.create("w", {"url": "http://old/", "lastAppliedRevision": "a"})
    await widgets.write_status("w", {"url": "http://new/"})
    status = patcher(widgets.kube, obj)
    status.set_field("lastAppliedRevision", "b")
    await status.patch()

    live = await widgets.get("w")
    assert live["status"] == {"url": "http://new/", "lastAppliedRevision": "b"}


async def test_conflicts_beyond_the_attempt_budget_are_raised(widgets: Widgets) -> None:
    obj = await widgets.create("w")
    writes = 0

    async def another_writer_every_time() -> None:
        nonlocal writes
        writes += 1
        await widgets.write_status("w", {"writes": writes})

    spy = Spy(widgets.kube, before_patch=another_writer_every_time)
    status = patcher(spy, obj, attempts=3, backoff=0.001)
    status.mark_true("Ready", "Succeeded", "done")
    with pytest.raises(Conflict):
        await status.patch()
    assert spy.calls == ["patch", "get", "patch", "get", "patch"]


# --- nothing to send -------------------------------------------------------------------


async def test_nothing_is_sent_when_nothing_changed(widgets: Widgets) -> None:
    obj = await widgets.create("w", {"lastAppliedRevision": "a", "conditions": [ready()]})
    spy = Spy(widgets.kube)
    status = patcher(spy, obj)
    status.set_field("lastAppliedRevision", "a")
    status.mark_true("Ready", "Succeeded", "done")
    assert not status.changed
    assert await status.patch() == obj
    assert spy.calls == []
    live = await widgets.get("w")
    assert live["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


async def test_a_second_patch_sends_only_what_changed_since_the_first(
        widgets: Widgets) -> None:
    obj = await widgets.create("w", {"conditions": [ready()]})
    spy = Spy(widgets.kube)
    status = patcher(spy, obj)
    status.progressive_status("Progressing", "building artifact")
    first = await status.patch()
    assert spy.calls == ["patch"]
    assert first is not None and conds.is_true(first["status"]["conditions"], "Reconciling")

    await status.patch()
    assert spy.calls == ["patch"]

    status.set_field("artifact", {"revision": "main@sha1:abc", "digest": "sha256:00"})
    status.summarize()
    second = await status.patch()
    assert spy.calls == ["patch", "patch"]
    assert second is not None and types(second) == {"Ready": "True"}
    assert second["status"]["artifact"]["revision"] == "main@sha1:abc"


async def test_the_patch_holds_only_changed_fields_and_the_conditions(
        widgets: Widgets) -> None:
    obj = await widgets.create("w", {"url": "http://x/", "conditions": [ready(), foreign()]})
    sent: list[Obj] = []

    class Recording(Spy):
        async def patch_status(self, api_version: str, kind: str, name: str, patch: Obj,
                               namespace: str | None = None) -> Obj:
            sent.append(patch)
            return await super().patch_status(api_version, kind, name, patch, namespace)

    status = patcher(Recording(widgets.kube), obj)
    status.set_field("lastAppliedRevision", "b")
    await status.patch()
    assert sent == [{"status": {"lastAppliedRevision": "b"},
                     "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}}]


# --- gone ------------------------------------------------------------------------------


async def test_a_deleted_object_is_left_quietly(widgets: Widgets) -> None:
    obj = await widgets.create("w")
    await widgets.delete("w")
    spy = Spy(widgets.kube)
    status = patcher(spy, obj)
    status.mark_true("Ready", "Succeeded", "done")
    assert await status.patch() is None
    assert status.gone
    assert await status.patch() is None
    assert spy.calls == ["patch"]


async def test_an_object_recreated_under_the_same_name_is_not_written(
        widgets: Widgets) -> None:
    obj = await widgets.create("w")
    await widgets.delete("w")
    await widgets.create("w")
    status = patcher(widgets.kube, obj)
    status.mark_true("Ready", "Succeeded", "done")
    assert await status.patch() is None
    assert status.gone
    assert "status" not in await widgets.get("w") or types(await widgets.get("w")) == {}


# --- requests and generations ----------------------------------------------------------


async def test_last_handled_reconcile_at_copies_the_request_annotation(
        widgets: Widgets) -> None:
    obj = await widgets.create("w", annotations={REQUESTED_AT: "2026-02-03T04:05:06Z"})
    status = patcher(widgets.kube, obj)
    assert status.handle_request() == "2026-02-03T04:05:06Z"
    await status.patch()
    live = await widgets.get("w")
    assert live["status"]["lastHandledReconcileAt"] == "2026-02-03T04:05:06Z"
    assert not conds.request_pending(live)


async def test_last_handled_reconcile_at_is_untouched_without_a_request(
        widgets: Widgets) -> None:
    obj = await widgets.create("w", {"lastHandledReconcileAt": "earlier"})
    status = patcher(widgets.kube, obj)
    assert status.handle_request() is None
    assert not status.changed


async def test_observed_generation_stays_while_reconciling_or_failing(
        widgets: Widgets) -> None:
    await widgets.create("w", {"observedGeneration": 1, "conditions": [ready()]})
    await widgets.change_spec("w", "5m")
    obj = await widgets.get("w")
    assert obj["metadata"]["generation"] == 2

    status = patcher(widgets.kube, obj)
    status.progressive_status("Progressing", "reconciling generation 2", drift=True)
    assert status.observe_generation() == 1
    await status.patch()
    assert (await widgets.get("w"))["status"]["observedGeneration"] == 1

    status.summarize(outcome=Outcome.FAILED, reason="BuildFailed", message="kustomize failed")
    assert status.observe_generation() == 1
    await status.patch()
    live = await widgets.get("w")
    assert live["status"]["observedGeneration"] == 1
    assert conds.reason_of(live["status"]["conditions"], "Ready") == "BuildFailed"


async def test_observed_generation_moves_when_ready_or_stalled(widgets: Widgets) -> None:
    await widgets.create("w")
    await widgets.change_spec("w", "5m")
    status = patcher(widgets.kube, await widgets.get("w"))
    status.summarize()
    assert status.observe_generation() == 2
    await status.patch()
    assert (await widgets.get("w"))["status"]["observedGeneration"] == 2

    await widgets.change_spec("w", "10m")
    status = patcher(widgets.kube, await widgets.get("w"))
    status.summarize(outcome=Outcome.STALLED, reason="InvalidURL", message="bad URL")
    assert status.observe_generation() == 3
    await status.patch()
    live = await widgets.get("w")
    assert live["status"]["observedGeneration"] == 3
    assert types(live) == {"Stalled": "True", "Ready": "False"}


# --- cancellation ----------------------------------------------------------------------


async def test_a_cancelled_reconcile_still_writes_its_status_with_patch_shielded(
        widgets: Widgets) -> None:
    obj = await widgets.create("w", {"conditions": [ready()]})
    spy = Spy(widgets.kube)
    spy.gate.clear()
    working = asyncio.Event()

    async def reconcile() -> None:
        status = patcher(spy, obj)
        try:
            status.progressive_status("Progressing", "building")
            working.set()
            await asyncio.sleep(3600)
        finally:
            status.summarize(outcome=Outcome.FAILED, reason="ReconciliationFailed",
                             message="interrupted")
            await status.patch_shielded(timeout=10)

    task = asyncio.create_task(reconcile())
    await working.wait()
    task.cancel()  # ends the work: the finally starts the write
    await spy.in_flight.wait()
    task.cancel()  # and again while the write is in flight
    await asyncio.sleep(0.05)
    assert not task.done()
    spy.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task

    live = await widgets.get("w")
    assert types(live) == {"Reconciling": "True", "Ready": "False"}
    assert conds.reason_of(live["status"]["conditions"], "Reconciling") == \
        "ProgressingWithRetry"
    assert conds.message_of(live["status"]["conditions"], "Ready") == "interrupted"


async def test_patch_shielded_gives_up_after_its_timeout(widgets: Widgets) -> None:
    obj = await widgets.create("w")
    spy = Spy(widgets.kube)
    spy.gate.clear()
    status = patcher(spy, obj)
    status.mark_true("Ready", "Succeeded", "done")
    with pytest.raises(TimeoutError):
        await status.patch_shielded(timeout=0.05)


async def test_patch_shielded_returns_the_patched_object(widgets: Widgets) -> None:
    obj = await widgets.create("w")
    status = patcher(widgets.kube, obj)
    status.mark_true("Ready", "Succeeded", "done")
    patched = await status.patch_shielded()
    assert patched is not None and types(patched) == {"Ready": "True"}


async def test_a_final_write_inside_a_cancelled_anyio_scope_still_lands(
        widgets: Widgets) -> None:
    obj = await widgets.create("w")
    spy = Spy(widgets.kube)
    spy.gate.clear()

    async def open_gate_later() -> None:
        await spy.in_flight.wait()
        await asyncio.sleep(0.05)  # while the scope keeps cancelling the reconcile
        spy.gate.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(open_gate_later)
        with anyio.move_on_after(0.01) as scope:
            status = patcher(spy, obj)
            try:
                await anyio.sleep(3600)
            finally:
                status.mark_false("Ready", "ReconciliationFailed", "deadline exceeded")
                await status.patch_shielded(timeout=10)
    assert scope.cancelled_caught
    assert types(await widgets.get("w")) == {"Ready": "False"}


async def test_a_final_write_failing_under_cancellation_is_logged_and_the_cancel_wins(
        widgets: Widgets, caplog: pytest.LogCaptureFixture) -> None:
    obj = await widgets.create("w")

    class Failing(Spy):
        async def patch_status(self, api_version: str, kind: str, name: str, patch: Obj,
                               namespace: str | None = None) -> Obj:
            self.in_flight.set()
            await self.gate.wait()
            raise ServerError(500, "etcd is on holiday")

    spy = Failing(widgets.kube)
    spy.gate.clear()
    status = patcher(spy, obj)
    status.mark_true("Ready", "Succeeded", "done")
    task = asyncio.create_task(status.patch_shielded())
    await spy.in_flight.wait()
    task.cancel()
    await asyncio.sleep(0)
    spy.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "Final status patch failed" in caplog.text
    assert "status" not in await widgets.get("w")
