"""Alert matching, metadata merge, provider gates and the rate limiter, as tables."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from fluxd.api.notification import AlertSpec
from fluxd.clock import FakeClock, SystemClock
from fluxd.controllers.notification.dispatch import (
    Dispatcher,
    ParsedSpecs,
    RateLimiter,
    Refused,
    alert_matches,
    clean_metadata,
    event_key,
    event_source_index,
    merged_metadata,
    provider_takes,
)
from fluxd.kube import KubeClient, NotFound
from fluxd.regex import RegexCache
from fluxd.runtime.events import Event, EventBus, EventRecorder, ObjectReference
from fluxd.runtime.informer import InformerCache
from tests.controllers.conftest import install_crds
from tests.support.loopback import loop_stalls

pytestmark = pytest.mark.anyio

KS = "kustomize.toolkit.fluxcd.io"


def event(*, kind: str = "Kustomization", name: str = "app", namespace: str = "apps",
          severity: str = "info", message: str = "Applied revision: main@sha1:abc",
          metadata: Mapping[str, str] | None = None) -> Event:
    api = f"{KS}/v1" if kind == "Kustomization" else "source.toolkit.fluxcd.io/v1"
    return Event(involved_object=ObjectReference(kind=kind, name=name, namespace=namespace,
                                                 api_version=api),
                 severity=severity,
                 timestamp=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
                 message=message, reason="ReconciliationSucceeded",
                 reporting_controller="kustomize-controller", metadata=dict(metadata or {}))


def alert(*sources: dict[str, Any], namespace: str = "apps", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "a", "namespace": namespace},
            "spec": {"providerRef": {"name": "p"}, "eventSources": list(sources), **spec}}


async def no_labels(ev: Event) -> Mapping[str, str] | None:
    return None


def labels_of(found: Mapping[str, str]) -> Any:
    async def read(ev: Event) -> Mapping[str, str] | None:
        return found
    return read


@pytest.mark.parametrize("the_alert, the_event, matched", [
    (alert({"kind": "Kustomization", "name": "app"}), event(), True),
    (alert({"kind": "Kustomization", "name": "*"}), event(), True),
    (alert({"kind": "Kustomization", "name": "other"}), event(), False),
    (alert({"kind": "GitRepository", "name": "*"}), event(), False),
    (alert({"kind": "Kustomization", "name": "*", "namespace": "elsewhere"}), event(), False),
    (alert({"kind": "Kustomization", "name": "*"}, namespace="flux-system"), event(), False),
    (alert({"kind": "Kustomization", "name": "*", "namespace": "apps"},
           namespace="flux-system"), event(), True),
    (alert({"kind": "Kustomization", "name": "*"}, eventSeverity="error"), event(), False),
    (alert({"kind": "Kustomization", "name": "*"}, eventSeverity="error"),
     event(severity="error"), True),
    (alert({"kind": "Kustomization", "name": "*"}, eventSeverity="info"),
     event(severity="error"), True),
    (alert({"kind": "Kustomization", "name": "*"}, suspend=True), event(), False),
    (alert({"kind": "Kustomization", "name": "*"}, inclusionList=["^Applied"]), event(), True),
    (alert({"kind": "Kustomization", "name": "*"}, inclusionList=["^Health"]), event(), False),
    (alert({"kind": "Kustomization", "name": "*"}, exclusionList=["sha1"]), event(), False),
    (alert({"kind": "Kustomization", "name": "*"}, inclusionList=["Applied"],
           exclusionList=["main@"]), event(), False),
    (alert({"kind": "Kustomization", "name": "*"}, exclusionList=["[invalid"]), event(), True),
    # as in Flux: an inclusion list whose patterns do not compile lets nothing through
    (alert({"kind": "Kustomization", "name": "*"}, inclusionList=["[invalid"]), event(), False),
    (alert({"kind": "Kustomization", "name": "*"}, inclusionList=["[invalid", "Applied"]),
     event(), True),
    # Go's syntax and semantics, not Python's
    (alert({"kind": "Kustomization", "name": "*"}, inclusionList=["abc$"]),
     event(message="Applied revision: main@sha1:abc\n"), False),
    (alert({"kind": "Kustomization", "name": "*"}, inclusionList=[r"\pL+ revision"]),
     event(), True),
    (alert({"kind": "Kustomization", "name": "*"}, exclusionList=["(?!x)main"]), event(),
     True),
])
async def test_alert_matching(the_alert: dict[str, Any], the_event: Event,
                              matched: bool) -> None:
    assert await alert_matches(the_alert, the_event, labels=no_labels) is matched


async def test_patterns_go_cannot_compile_are_reported_each_time_they_are_met() -> None:
    reported: list[str] = []

    async def invalid(message: str) -> None:
        reported.append(message)

    cache = RegexCache()
    the_alert = alert({"kind": "Kustomization", "name": "*"}, inclusionList=[r"(a)\1"],
                      exclusionList=["(?=x)"])
    for _ in range(2):
        assert not await alert_matches(the_alert, event(), labels=no_labels, patterns=cache,
                                       invalid=invalid)
    # the exclusion list is not read once the inclusion list has refused the event
    assert reported == [r"failed to compile inclusion regex: (a)\1: error parsing regexp: "
                        r"invalid escape sequence: \1"] * 2
    reported.clear()
    assert not await alert_matches(alert({"kind": "Kustomization", "name": "*"},
                                         exclusionList=["(?=x)", "sha1"]),
                                   event(), labels=no_labels, invalid=invalid)
    assert reported == ["failed to compile exclusion regex: (?=x): error parsing regexp: "
                        "invalid perl operator: (?="]


async def test_a_long_message_is_matched_off_the_event_loop() -> None:
    # Flux's documented example; Python's re needs seconds for a 150 KB message
    the_alert = alert({"kind": "Kustomization", "name": "*"},
                      inclusionList=[".*succeeded.*"], exclusionList=[".*uninstall.*"])
    async with loop_stalls() as stalls:
        for size in (150_000, 60_000, 100_000):
            long = "x" * size
            assert not await alert_matches(the_alert, event(message=long), labels=no_labels)
            assert await alert_matches(the_alert, event(message=long + " succeeded"),
                                       labels=no_labels)
    assert max(stalls, default=0.0) < 0.25


async def test_match_labels_are_read_from_the_object() -> None:
    source = {"kind": "Kustomization", "name": "*", "matchLabels": {"team": "a"}}
    assert await alert_matches(alert(source), event(), labels=labels_of({"team": "a"}))
    assert not await alert_matches(alert(source), event(), labels=labels_of({"team": "b"}))
    assert not await alert_matches(alert(source), event(), labels=no_labels)


async def test_labels_are_read_only_when_no_other_source_takes_the_event() -> None:
    reads: list[Event] = []

    async def team_b(ev: Event) -> Mapping[str, str] | None:
        reads.append(ev)
        return {"team": "b"}

    by_label = {"kind": "Kustomization", "name": "*", "matchLabels": {"team": "a"}}
    assert await alert_matches(alert(by_label, {"kind": "Kustomization", "name": "app"}),
                               event(), labels=team_b)
    assert reads == []
    assert not await alert_matches(alert(by_label), event(), labels=team_b)
    assert len(reads) == 1


async def test_cross_namespace_events_are_refused_when_locked_down() -> None:
    cross = alert({"kind": "Kustomization", "name": "*", "namespace": "apps"},
                  namespace="flux-system")
    assert not await alert_matches(cross, event(), labels=no_labels,
                                   no_cross_namespace_refs=True)


def test_metadata_is_cleaned_to_the_emitter_s_and_flux_s_keys() -> None:
    ev = clean_metadata(event(metadata={
        f"{KS}/revision": "r", f"{KS}/checksum": "c", f"{KS}/digest": "d",
        "event.toolkit.fluxcd.io/team": "a", "other.io/x": "y", "plain": "z"}))
    assert ev.metadata == {f"{KS}/revision": "r", "event.toolkit.fluxcd.io/team": "a"}


def test_metadata_merge_follows_rfc_0008_precedence() -> None:
    ev = event(metadata={f"{KS}/revision": "r1", f"{KS}/token": "secret",
                         "event.toolkit.fluxcd.io/cluster": "from-object",
                         "event.toolkit.fluxcd.io/revision": "object-says"})
    merged, conflicts = merged_metadata(ev, alert(
        {"kind": "Kustomization", "name": "*"},
        eventMetadata={"cluster": "from-alert", "env": "prod"}, summary="eu-west down"))
    assert merged == {"cluster": "from-alert", "env": "prod", "summary": "eu-west down",
                      "revision": "r1"}
    assert sorted(conflicts) == ["cluster", "revision"]


@pytest.mark.parametrize("provider_type, metadata, severity, takes", [
    ("slack", {f"{KS}/revision": "r"}, "info", True),
    ("slack", {f"{KS}/commit_status": "update"}, "info", False),
    ("generic", {f"{KS}/commit_status": "update"}, "info", True),
    ("gitea", {f"{KS}/revision": "r"}, "info", False),
    ("gitea", {f"{KS}/commit_status": "update"}, "info", True),
    ("gitea", {f"{KS}/revision": "r"}, "error", True),
    ("gitea", {f"{KS}/commit": "abc"}, "info", True),
    ("githubpullrequestcomment", {f"{KS}/revision": "r"}, "info", False),
    ("githubpullrequestcomment", {f"{KS}/change_request": "42"}, "info", True),
])
def test_providers_take_the_events_flux_gives_them(
        provider_type: str, metadata: dict[str, str], severity: str, takes: bool) -> None:
    ev = event(metadata=metadata, severity=severity)
    merged, _ = merged_metadata(ev, alert({"kind": "Kustomization", "name": "*"}))
    assert provider_takes(provider_type, ev, merged) is takes


def test_the_rate_limit_key_is_the_object_message_and_revisions() -> None:
    base = event(metadata={f"{KS}/revision": "r1"})
    assert event_key(base) == event_key(event(metadata={f"{KS}/revision": "r1"}))
    assert event_key(base) != event_key(event(metadata={f"{KS}/revision": "r2"}))
    assert event_key(base) != event_key(event(message="other"))
    assert event_key(base) != event_key(event(name="other"))
    assert event_key(base) == event_key(event(metadata={f"{KS}/revision": "r1",
                                                        f"{KS}/other": "x"}))


def test_a_duplicate_is_refused_within_the_window_only() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, window=300)
    assert limiter.allow("k")
    assert not limiter.allow("k")
    assert limiter.allow("other")
    clock.advance(299)
    assert not limiter.allow("k")
    clock.advance(2)
    assert limiter.allow("k")


def test_the_limiter_forgets_old_keys_and_stays_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, window=10, size=100)
    for i in range(1000):
        limiter.allow(f"k{i}")
        clock.advance(1)
    assert len(limiter._seen) <= 100 + 16


# --------------------------------------------------------------------------- secrets


def _secret(name: str, namespace: str, **data: str) -> dict[str, Any]:
    import base64
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


async def test_provider_settings_come_from_the_spec_and_its_secrets(
        cluster: Any, namespace: str) -> None:
    from fluxd.clock import SystemClock
    from fluxd.controllers.notification.dispatch import Dispatcher
    from fluxd.kube import KubeClient
    from fluxd.runtime.informer import InformerCache

    async with await KubeClient.connect(clock=SystemClock(),
                                        kubeconfig=str(cluster.kubeconfig)) as client:
        for secret in (
                _secret("creds", namespace, token=" t0ken \n", address="https://hooks/x",
                        username="bot", headers="X-Team: a\nX-Env: prod\n"),
                _secret("tls", namespace, **{"ca.crt": "CA", "tls.crt": "CRT",
                                             "tls.key": "KEY"}),
                _secret("proxy", namespace, address="http://proxy:3128", username="u",
                        password="p w")):
            await client.create(secret)
        cache = InformerCache(client, clock=SystemClock())
        dispatcher = Dispatcher(
            client=client, alerts=cache.informer("notification.toolkit.fluxcd.io/v1beta3",
                                                 "Alert"),
            provider_objects=cache.informer("notification.toolkit.fluxcd.io/v1beta3",
                                            "Provider"),
            recorder=None, clock=SystemClock())
        provider = {"metadata": {"name": "p", "namespace": namespace,
                                 "uid": "1234-5678"},
                    "spec": {"type": "gitea", "address": "https://spec/address",
                             "channel": "general", "timeout": "3s",
                             "secretRef": {"name": "creds"},
                             "certSecretRef": {"name": "tls"},
                             "proxySecretRef": {"name": "proxy"},
                             "commitStatusExpr": "event.involvedObject.name + '/' + "
                                                 "provider.metadata.name + '/' + "
                                                 "alert.metadata.name"}}
        settings = await dispatcher.settings_for(provider, event(), alert(
            {"kind": "Kustomization", "name": "*"}))
    assert settings.address == "https://hooks/x"  # the Secret wins
    assert settings.token == "t0ken"
    assert settings.username == "bot"
    assert settings.channel == "general"
    assert settings.headers == {"X-Team": "a", "X-Env": "prod"}
    assert (settings.ca_pem, settings.cert_pem, settings.key_pem) == (b"CA", b"CRT", b"KEY")
    assert settings.proxy == "http://u:p%20w@proxy:3128"
    assert settings.timeout == 3.0
    assert settings.commit_status == "app/p/a"
    assert settings.uid == "1234-5678"


async def test_a_missing_provider_secret_is_a_config_error(
        cluster: Any, namespace: str) -> None:
    from fluxd.clock import SystemClock
    from fluxd.controllers.notification.dispatch import Dispatcher
    from fluxd.controllers.notification.notifier import ConfigError
    from fluxd.kube import KubeClient
    from fluxd.runtime.informer import InformerCache

    async with await KubeClient.connect(clock=SystemClock(),
                                        kubeconfig=str(cluster.kubeconfig)) as client:
        cache = InformerCache(client, clock=SystemClock())
        dispatcher = Dispatcher(
            client=client, alerts=cache.informer("notification.toolkit.fluxcd.io/v1beta3",
                                                 "Alert"),
            provider_objects=cache.informer("notification.toolkit.fluxcd.io/v1beta3",
                                            "Provider"),
            recorder=None, clock=SystemClock())
        provider = {"metadata": {"name": "p", "namespace": namespace},
                    "spec": {"type": "slack", "secretRef": {"name": "absent"}}}
        with pytest.raises(ConfigError, match=f"secret '{namespace}/absent' not found"):
            await dispatcher.settings_for(provider, event(), alert())


# --------------------------------------------------------------------------- specs


def stored(name: str, version: str, **spec: Any) -> dict[str, Any]:
    """An Alert as the informer holds it: with its uid and resourceVersion."""
    return {"apiVersion": "notification.toolkit.fluxcd.io/v1beta3", "kind": "Alert",
            "metadata": {"name": name, "namespace": "apps", "uid": f"uid-{name}",
                         "resourceVersion": version},
            "spec": {"providerRef": {"name": "p"},
                     "eventSources": [{"kind": "Kustomization", "name": "*"}], **spec}}


def test_each_stored_version_of_a_spec_is_parsed_once_with_the_model_s_defaults() -> None:
    specs: ParsedSpecs[AlertSpec] = ParsedSpecs(AlertSpec)
    first_version = stored("a", "1")
    specs.on_add(first_version, initial=True)
    first = specs.of(first_version)
    assert isinstance(first, AlertSpec)
    assert first.event_severity == "info"  # the model's default, stated nowhere else
    assert specs.of(first_version) is first
    # the informer stores a new object for each version
    second_version = stored("a", "2", eventSeverity="error")
    specs.on_update(first_version, second_version)
    second = specs.of(second_version)
    assert isinstance(second, AlertSpec) and second.event_severity == "error"
    assert len(specs) == 1
    specs.on_delete(stored("a", "3"))
    assert len(specs) == 0


def test_only_accepted_objects_are_matched_and_a_refusal_is_said_once_per_version() -> None:
    specs: ParsedSpecs[AlertSpec] = ParsedSpecs(AlertSpec)
    good, bad = stored("good", "1"), stored("bad", "1", eventSeverity="fatal")
    for obj in (good, bad):
        specs.on_add(obj, initial=True)
    assert specs.accepted([good, bad]) == [(good, specs.of(good))]
    refused = specs.of(bad)
    assert isinstance(refused, Refused)
    assert refused.message.startswith("invalid spec: spec.eventSeverity: ")
    assert specs.take_unreported() == [(bad, refused)]
    assert specs.take_unreported() == []
    # a version the model takes withdraws a refusal not said yet
    worse = stored("bad", "2", eventSeverity="fatal")
    specs.on_update(bad, worse)
    fixed = stored("bad", "3")
    specs.on_update(worse, fixed)
    assert specs.take_unreported() == []
    assert [obj for obj, _ in specs.accepted([good, fixed])] == [good, fixed]


def test_alerts_are_indexed_by_each_event_source_and_refused_ones_by_none() -> None:
    obj = stored("a", "1", eventSources=[{"kind": "Kustomization", "name": "*"},
                                         {"kind": "GitRepository", "name": "x",
                                          "namespace": "flux-system"}])
    assert event_source_index(obj, AlertSpec.model_validate(obj["spec"])) == [
        "apps/Kustomization", "flux-system/GitRepository"]
    assert event_source_index(obj, Refused("invalid spec: …")) == []


async def test_an_alert_or_provider_the_model_refuses_is_skipped_and_warned_about_once(
        cluster: Any, namespace: str) -> None:
    """Alert- and Provider-shaped objects of a CRD without a schema: what a looser or
    older API server could hold. The Alerts that select by labels read the object's."""
    group = f"n{uuid.uuid4().hex[:8]}.fluxd.test"
    api = f"{group}/v1"
    crd_api = "apiextensions.k8s.io/v1"
    clock = SystemClock()

    def crd(kind: str, plural: str) -> dict[str, Any]:
        schema = {"openAPIV3Schema": {"type": "object", "properties": {
            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}
        return {"apiVersion": crd_api, "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.{group}"},
                "spec": {"group": group, "scope": "Namespaced",
                         "names": {"kind": kind, "plural": plural,
                                   "singular": kind.lower()},
                         "versions": [{"name": "v1", "served": True, "storage": True,
                                       "schema": schema}]}}

    def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": api, "kind": kind,
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}

    def watching(name: str) -> dict[str, Any]:
        return {"providerRef": {"name": name},
                "eventSources": [{"kind": "Kustomization", "name": "*"}]}

    async with await KubeClient.connect(clock=clock,
                                        kubeconfig=str(cluster.kubeconfig)) as client:
        await install_crds(client)
        await client.create({
            "apiVersion": f"{KS}/v1", "kind": "Kustomization",
            "metadata": {"name": "app", "namespace": namespace, "labels": {"team": "a"}},
            "spec": {"interval": "1h", "prune": True,
                     "sourceRef": {"kind": "GitRepository", "name": "repo"}}})
        for kind, plural in (("Alert", "alerts"), ("Provider", "providers")):
            await client.create(crd(kind, plural))
        try:
            async with asyncio.timeout(30):  # a real API server establishes CRDs lazily
                while True:
                    try:
                        await client.refresh_mapping()
                        await client.list_all(api, "Alert", namespace)
                        await client.list_all(api, "Provider", namespace)
                        break
                    except NotFound:
                        await asyncio.sleep(0.2)
            await client.create(obj("Provider", "hook", {
                "type": "generic", "address": "http://127.0.0.1:9/"}))
            await client.create(obj("Provider", "pigeon", {"type": "carrier-pigeon"}))
            await client.create(obj("Alert", "good", watching("hook")))
            await client.create(obj("Alert", "bad", {**watching("hook"),
                                                     "eventSeverity": "fatal"}))
            await client.create(obj("Alert", "by-pigeon", watching("pigeon")))
            for name, team in (("team-a", "a"), ("team-b", "b")):
                await client.create(obj("Alert", name, {
                    "providerRef": {"name": "hook"},
                    "eventSources": [{"kind": "Kustomization", "name": "*",
                                      "matchLabels": {"team": team}}]}))
            cache = InformerCache(client, clock=clock)
            alerts, providers = cache.informer(api, "Alert"), cache.informer(api, "Provider")
            dispatcher = Dispatcher(
                client=client, alerts=alerts, provider_objects=providers,
                recorder=EventRecorder(client, EventBus(), controller="notification-controller",
                                       instance="test", clock=clock),
                clock=clock)
            async with asyncio.TaskGroup() as running:
                tasks = [running.create_task(i.run()) for i in (alerts, providers)]
                try:
                    async with asyncio.timeout(10):
                        await cache.wait_for_sync()
                    for _ in range(2):
                        found = await dispatcher.matches(event(namespace=namespace))
                        assert [alert["metadata"]["name"] for alert, *_ in found] == [
                            "good", "team-a"]
                    warned = [e for e in (await client.list_all("v1", "Event",
                                                                namespace)).items
                              if e.get("reason") == "InvalidConfig"]
                    assert sorted((e["involvedObject"]["kind"], e["involvedObject"]["name"],
                                   e["type"], e.get("count", 1)) for e in warned) == [
                        ("Alert", "bad", "Warning", 1), ("Provider", "pigeon", "Warning", 1)]
                    messages = {e["involvedObject"]["name"]: e["message"] for e in warned}
                    assert messages["bad"].startswith("invalid spec: spec.eventSeverity: ")
                    assert messages["pigeon"].startswith("invalid spec: spec.type: ")

                    # once the model takes it, the Alert is matched by its sources
                    fixed = await client.merge_patch(api, "Alert", "bad",
                                                     {"spec": {"eventSeverity": "info"}},
                                                     namespace)
                    version = fixed["metadata"]["resourceVersion"]
                    async with asyncio.timeout(10):
                        while (alerts.get(namespace, "bad") or {}).get(  # noqa: ASYNC110
                                "metadata", {}).get("resourceVersion") != version:
                            await asyncio.sleep(0.02)
                    found = await dispatcher.matches(event(namespace=namespace))
                    assert [alert["metadata"]["name"] for alert, *_ in found] == [
                        "bad", "good", "team-a"]
                finally:
                    for task in tasks:
                        task.cancel()
        finally:
            for plural in ("alerts", "providers"):
                await client.delete(crd_api, "CustomResourceDefinition", f"{plural}.{group}")
