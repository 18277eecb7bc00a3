"""Receivers end to end: the real manager (source, kustomize and the Receiver controller),
the cluster fixture, webhook requests over HTTP — and a Gitea push that reaches a
GitRepository's artifact without waiting for its interval."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import gzip
import hashlib
import hmac
import json
import re
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from fluxd import logging as fluxlog
from fluxd.clock import FakeClock, SystemClock
from fluxd.config import Settings
from fluxd.controllers import kustomize, source
from fluxd.controllers.context import Contribution, ControllerContext
from fluxd.controllers.notification import receiver, receiver_server
from fluxd.controllers.notification.receiver_server import (
    ReceiverMetrics,
    ReceiverServer,
    go_time_string,
    signature_matches,
    webhook_path,
)
from fluxd.kube import KubeClient, NotFound
from tests.conftest import Cluster
from tests.controllers.conftest import Flux, condition, install_crds, running_flux
from tests.support.gitserver import GitServer, commit, head
from tests.support.rawhttp import Connection, chunk
from tests.support.rawhttp import head as raw_head

pytestmark = pytest.mark.anyio

NOTIFICATION = "notification.toolkit.fluxcd.io/v1"
SOURCE = "source.toolkit.fluxcd.io/v1"
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
TOKEN = "s3cr3t-t0ken"
GO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,9})? \+0000 UTC "
                     r"m=\+\d+\.\d{9}$")


# --------------------------------------------------------------------------- harness


async def until(check: Callable[[], object], *, within: float = 10) -> None:
    """Poll ``check`` until it holds (the informer cache catches up on its own)."""
    for _ in range(int(within / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {within}s")


@dataclass
class Hub:
    """The manager running the Receiver controller, and ways to talk to its server."""

    flux: Flux
    receivers: receiver.Receivers
    registry: CollectorRegistry
    namespace: str
    session: aiohttp.ClientSession

    @property
    def client(self) -> KubeClient:
        return self.flux.client

    async def url(self) -> str:
        listeners = self.flux.listeners
        await until(lambda: "webhook receiver" in listeners, within=30)
        return listeners["webhook receiver"]

    async def secret(self, name: str, data: Mapping[str, str], *,
                     labels: Mapping[str, str] | None = None) -> None:
        await self.client.create({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": self.namespace, "labels": dict(labels or {})},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})

    async def receiver(self, name: str, type_: str, resources: list[dict[str, Any]], *,
                       secret: str | None = "token", wait: bool = True, **spec: Any) -> str:
        """Create a Receiver; with ``wait``, its webhook path once it is Ready."""
        body: dict[str, Any] = {"type": type_, "resources": resources, **spec}
        if secret is not None:
            body["secretRef"] = {"name": secret}
        await self.client.create({"apiVersion": NOTIFICATION, "kind": "Receiver",
                                  "metadata": {"name": name, "namespace": self.namespace},
                                  "spec": body})
        if not wait:
            return ""
        obj = await self.flux.wait(NOTIFICATION, "Receiver", name, self.namespace, ready)
        # the server reads the cache: wait until the path is there
        path = str(obj["status"]["webhookPath"])
        await until(lambda: self.receivers.reconciler.informer.by_index("webhookPath", path))
        return path

    async def gitrepo(self, name: str, *, namespace: str | None = None,
                      labels: Mapping[str, str] | None = None) -> None:
        """A suspended GitRepository: something to annotate that nothing else touches."""
        await self.client.create({
            "apiVersion": SOURCE, "kind": "GitRepository",
            "metadata": {"name": name, "namespace": namespace or self.namespace,
                         "labels": dict(labels or {})},
            "spec": {"interval": "10m", "url": "http://127.0.0.1:9/none.git",
                     "ref": {"branch": "main"}, "suspend": True}})

    async def requested_at(self, name: str, *, kind: str = "GitRepository",
                           api_version: str = SOURCE, namespace: str | None = None
                           ) -> str | None:
        obj = await self.client.get(api_version, kind, name, namespace or self.namespace)
        value = (obj["metadata"].get("annotations") or {}).get(REQUESTED_AT)
        return None if value is None else str(value)

    async def post(self, path: str, body: bytes | str = b"{}",
                   headers: Mapping[str, str] | None = None) -> tuple[int, str]:
        data = body.encode() if isinstance(body, str) else body
        async with self.session.post(await self.url() + path, data=data,
                                     headers=dict(headers or {})) as resp:
            return resp.status, await resp.text()


def ready(obj: dict[str, Any]) -> bool:
    return condition(obj, "Ready").get("status") == "True"


def gitrepo_ref(name: str, **more: Any) -> dict[str, Any]:
    return {"kind": "GitRepository", "name": name, **more}


@pytest.fixture
def hub_overrides(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    """Settings groups laid over the ``hub`` fixture's (indirect parametrize)."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
async def hub(cluster: Cluster, tmp_path: Path, namespace: str,
              hub_overrides: dict[str, dict[str, Any]]) -> AsyncIterator[Hub]:
    groups: dict[str, dict[str, Any]] = {
        "kube": {"kubeconfig": str(cluster.kubeconfig)},
        "leader_election": {"enabled": False},
        "server": {"metrics_address": "127.0.0.1:0"},
        "storage": {"path": str(tmp_path / "storage"), "address": "127.0.0.1:0"},
        "reconcile": {"min_retry_delay": "100ms", "max_retry_delay": "1s"},
        "shutdown": {"grace_period": "5s"},
        "notification": {"receiver_address": "127.0.0.1:0",
                         "receiver_rate_limit_burst": 100_000},
    }
    for group, values in hub_overrides.items():
        groups[group] = {**groups.get(group, {}), **values}
    settings_ = Settings.model_validate(groups)
    clock = SystemClock()
    registry = CollectorRegistry()
    built: list[receiver.Receivers] = []

    def controllers(context: ControllerContext) -> list[Contribution]:
        built.append(receiver.build(context, registry=registry))
        return [*source.controllers(context), *kustomize.controllers(context),
                built[-1].spec, built[-1].service]

    async with await KubeClient.connect(clock=clock, kubeconfig=str(cluster.kubeconfig),
                                        field_manager="fluxd-tests") as client:
        await install_crds(client)
        async with running_flux(settings_, client, clock, tmp_path / "storage",
                                controllers=controllers) as flux, \
                aiohttp.ClientSession() as session:
            yield Hub(flux, built[0], registry, namespace, session)


def sign(token: str, body: bytes, algorithm: str = "sha256") -> str:
    return hmac.new(token.encode(), body, algorithm).hexdigest()


# --------------------------------------------------------------------------- pure parts


def test_signatures_and_tokens_are_compared_in_constant_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    constant_time = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return constant_time(a, b)

    monkeypatch.setattr(receiver_server.hmac, "compare_digest", spy)
    body = b'{"ref": "refs/heads/main"}'
    assert signature_matches("sha256=" + sign(TOKEN, body), [body], TOKEN.encode())
    assert not signature_matches("sha256=" + sign("other", body), [body], TOKEN.encode())
    assert receiver_server._same(TOKEN, TOKEN.encode())
    assert not receiver_server._same("guess", TOKEN.encode())
    assert len(compared) == 4  # every comparison went through hmac.compare_digest


def test_the_webhook_path_is_the_sha256_of_token_name_and_namespace() -> None:
    digest = hashlib.sha256(b"tokenappflux-system").hexdigest()
    assert webhook_path("token", "app", "flux-system") == f"/hook/{digest}"


def test_the_requested_at_value_is_printed_as_go_prints_metav1_now() -> None:
    moment = datetime.datetime(2024, 5, 6, 7, 8, 9, 123450, tzinfo=datetime.UTC)
    assert go_time_string(moment, 12.5) == \
        "2024-05-06 07:08:09.12345 +0000 UTC m=+12.500000000"
    whole = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    assert go_time_string(whole, 0.000000001) == \
        "2024-05-06 07:08:09 +0000 UTC m=+0.000000001"


# --------------------------------------------------------------------------- reconciler


async def test_a_receiver_gets_its_webhook_path_and_becomes_ready(hub: Hub) -> None:
    await hub.secret("token", {"token": TOKEN})
    path = await hub.receiver("hook", "generic", [gitrepo_ref("app")])
    obj = await hub.client.get(NOTIFICATION, "Receiver", "hook", hub.namespace)
    digest = hashlib.sha256(f"{TOKEN}hook{hub.namespace}".encode()).hexdigest()
    assert path == f"/hook/{digest}"
    assert condition(obj, "Ready")["reason"] == "Succeeded"
    assert condition(obj, "Ready")["message"] == f"Receiver initialized for path: {path}"
    assert condition(obj, "Reconciling") == {}
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert "finalizers.fluxcd.io" in obj["metadata"]["finalizers"]
    events = await hub.client.list_all("v1", "Event", hub.namespace)
    assert "Reconciliation finished, next run in 10m0s" in [
        e["message"] for e in events.items if e["reason"] == "Succeeded"]


async def test_a_receiver_without_its_secret_is_not_ready_until_the_secret_appears(
        hub: Hub) -> None:
    await hub.receiver("hook", "generic", [gitrepo_ref("app")], wait=False)
    obj = await hub.flux.wait(NOTIFICATION, "Receiver", "hook", hub.namespace,
                              lambda o: condition(o, "Ready").get("status") == "False")
    ready_ = condition(obj, "Ready")
    assert ready_["reason"] == "TokenNotFound"
    assert ready_["message"].startswith(
        f"unable to read token from secret '{hub.namespace}/token' error:")
    assert "not found" in ready_["message"]
    assert condition(obj, "Reconciling")["reason"] == "ProgressingWithRetry"
    assert "webhookPath" not in obj["status"]
    await hub.secret("token", {"token": TOKEN}, labels={"reconcile.fluxcd.io/watch": "Enabled"})
    obj = await hub.flux.wait(NOTIFICATION, "Receiver", "hook", hub.namespace, ready)
    assert obj["status"]["webhookPath"] == webhook_path(TOKEN, "hook", hub.namespace)


async def test_a_secret_without_a_token_key_is_token_not_found(hub: Hub) -> None:
    await hub.secret("token", {"password": TOKEN})
    await hub.receiver("hook", "generic", [gitrepo_ref("app")], wait=False)
    obj = await hub.flux.wait(NOTIFICATION, "Receiver", "hook", hub.namespace,
                              lambda o: condition(o, "Ready").get("status") == "False")
    assert condition(obj, "Ready")["reason"] == "TokenNotFound"
    assert condition(obj, "Ready")["message"] == (
        f"invalid '{hub.namespace}/token' secret data: required fields 'token'")


async def test_an_invalid_resource_filter_stalls_the_receiver(hub: Hub) -> None:
    await hub.secret("token", {"token": TOKEN})
    await hub.receiver("hook", "generic", [gitrepo_ref("app")], wait=False,
                       resourceFilter="requrest.body == 'x'")
    obj = await hub.flux.wait(NOTIFICATION, "Receiver", "hook", hub.namespace,
                              lambda o: condition(o, "Stalled").get("status") == "True")
    assert condition(obj, "Stalled")["reason"] == "InvalidCELExpression"
    assert condition(obj, "Ready")["reason"] == "InvalidCELExpression"
    assert condition(obj, "Ready")["message"].startswith(
        "Reconciliation failed terminally due to configuration error: invalid "
        "resourceFilter:")
    assert "undeclared reference to 'requrest'" in condition(obj, "Ready")["message"]
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]


def reconcile_errors(hub: Hub, metric: str) -> float:
    registry = hub.flux.context.registry
    assert registry is not None
    return registry.get_sample_value(metric, {"controller": "receiver"}) or 0.0


async def test_a_stalled_receiver_counts_a_terminal_error_and_says_why(
        hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    await hub.secret("token", {"token": TOKEN})
    await hub.receiver("hook", "generic", [gitrepo_ref("app")], wait=False,
                       resourceFilter="requrest.body == 'x'")
    await hub.flux.wait(NOTIFICATION, "Receiver", "hook", hub.namespace,
                        lambda o: condition(o, "Stalled").get("status") == "True")
    terminal = "controller_runtime_terminal_reconcile_errors_total"
    await until(lambda: reconcile_errors(hub, terminal) >= 1)
    # a stall is an error, and every one counted is terminal (none retried with backoff)
    assert reconcile_errors(hub, "controller_runtime_reconcile_errors_total") == \
        reconcile_errors(hub, terminal)
    events = await hub.client.list_all("v1", "Event", hub.namespace)
    warnings = [e for e in events.items if e["reason"] == "InvalidCELExpression"]
    assert warnings and warnings[0]["type"] == "Warning"
    assert warnings[0]["message"].startswith(
        "Reconciliation failed terminally due to configuration error: invalid "
        "resourceFilter:")
    lines = [json.loads(fluxlog.JSONFormatter().format(r)) for r in caplog.records
             if r.getMessage() == "Reconciliation failed terminally due to configuration "
                                  "error"]
    assert lines and lines[0]["level"] == "error"
    assert lines[0]["error"].startswith("invalid resourceFilter:")


async def test_a_receiver_without_its_token_is_retried_with_backoff_not_stalled(
        hub: Hub) -> None:
    await hub.receiver("hook", "generic", [gitrepo_ref("app")], wait=False)
    await hub.flux.wait(NOTIFICATION, "Receiver", "hook", hub.namespace,
                        lambda o: condition(o, "Ready").get("reason") == "TokenNotFound")
    await until(lambda: reconcile_errors(hub, "controller_runtime_reconcile_errors_total")
                >= 2)  # retried
    assert reconcile_errors(hub, "controller_runtime_terminal_reconcile_errors_total") == 0
    obj = await hub.client.get(NOTIFICATION, "Receiver", "hook", hub.namespace)
    assert condition(obj, "Stalled") == {}
    events = await hub.client.list_all("v1", "Event", hub.namespace)
    assert any(e["type"] == "Warning" and e["reason"] == "Failed"
               and e["message"].startswith("unable to read token from secret")
               for e in events.items)


async def test_a_changed_token_moves_the_webhook_path_at_once(hub: Hub) -> None:
    await hub.secret("token", {"token": TOKEN}, labels={"reconcile.fluxcd.io/watch": "Enabled"})
    await hub.gitrepo("app")
    old = await hub.receiver("hook", "generic", [gitrepo_ref("app")])
    await hub.client.merge_patch("v1", "Secret", "token", {"data": {
        "token": base64.b64encode(b"rotated").decode()}}, hub.namespace)
    new = webhook_path("rotated", "hook", hub.namespace)
    await hub.flux.wait(NOTIFICATION, "Receiver", "hook", hub.namespace,
                        lambda o: o["status"].get("webhookPath") == new, within=10)
    await until(lambda: hub.receivers.reconciler.informer.by_index("webhookPath", new))
    assert (await hub.post(old))[0] == 404
    assert (await hub.post(new))[0] == 200


# --------------------------------------------------------------------------- HTTP answers


async def test_an_unknown_path_is_404_and_says_nothing_more_than_any_other_404(
        hub: Hub) -> None:
    status, text = await hub.post("/hook/" + "0" * 64)
    assert (status, text) == (404, "404: Not Found")
    status_elsewhere, text_elsewhere = await hub.post("/elsewhere")
    assert (status_elsewhere, text_elsewhere) == (status, text)


async def test_a_suspended_receiver_answers_503_and_annotates_nothing(hub: Hub) -> None:
    await hub.secret("token", {"token": TOKEN})
    await hub.gitrepo("app")
    path = await hub.receiver("hook", "generic", [gitrepo_ref("app")])
    await hub.client.merge_patch(NOTIFICATION, "Receiver", "hook",
                                 {"spec": {"suspend": True}}, hub.namespace)
    await until(lambda: (hub.receivers.reconciler.informer.get(hub.namespace, "hook")
                         or {}).get("spec", {}).get("suspend"))
    assert await hub.post(path) == (503, "receiver unavailable")
    assert await hub.requested_at("app") is None


class FixedIndex:
    """A stand-in for the Receiver informer: the given objects under their paths."""

    def __init__(self, *objs: dict[str, Any]) -> None:
        self.objs = objs

    def by_index(self, name: str, value: str) -> list[dict[str, Any]]:
        return [o for o in self.objs if o["status"]["webhookPath"] == value]


async def test_a_receiver_that_is_not_ready_answers_503(cluster: Cluster) -> None:
    obj = {"metadata": {"name": "hook", "namespace": "default"},
           "spec": {"type": "generic", "resources": [gitrepo_ref("app")],
                    "secretRef": {"name": "token"}},
           "status": {"webhookPath": "/hook/abc", "conditions": [
               {"type": "Ready", "status": "False", "reason": "TokenNotFound",
                "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}}
    clock = SystemClock()
    async with await KubeClient.connect(clock=clock,
                                        kubeconfig=str(cluster.kubeconfig)) as client:
        server = ReceiverServer(client=client, receivers=FixedIndex(obj), clock=clock,
                                settings=Settings())
        async with server.serve("127.0.0.1:0") as listener, aiohttp.ClientSession() as s, \
                s.post(listener.url + "/hook/abc", data=b"{}") as resp:
            assert resp.status == 503


@pytest.mark.parametrize("hub_overrides", [{"notification": {
    "receiver_max_body_size": 1024}}], indirect=True)
async def test_a_body_over_the_limit_is_413_whether_announced_or_streamed(hub: Hub) -> None:
    await hub.secret("token", {"token": TOKEN})
    await hub.gitrepo("app")
    path = await hub.receiver("hook", "generic", [gitrepo_ref("app")])
    assert (await hub.post(path, b"x" * 1025))[0] == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"y" * 512

    async with hub.session.post(await hub.url() + path, data=chunks()) as resp:
        assert resp.status == 413
    assert await hub.requested_at("app") is None
    assert (await hub.post(path, b"x" * 1024))[0] == 200


@pytest.mark.parametrize("hub_overrides", [{"notification": {
    "receiver_rate_limit_burst": 2, "receiver_rate_limit_qps": 0.01}}], indirect=True)
async def test_a_path_called_faster_than_its_rate_limit_gets_429(hub: Hub) -> None:
    await hub.secret("token", {"token": TOKEN})
    await hub.gitrepo("app")
    path = await hub.receiver("hook", "generic", [gitrepo_ref("app")])
    answers = [(await hub.post(path))[0] for _ in range(4)]
    assert answers == [200, 200, 429, 429]
    # the limit is per path: an unknown path is still a plain 404
    assert (await hub.post("/hook/" + "f" * 64))[0] == 404


async def test_answers_are_counted_by_code_in_flux_receiver_metrics(hub: Hub) -> None:
    await hub.secret("token", {"token": TOKEN})
    await hub.gitrepo("app")
    path = await hub.receiver("hook", "generic-hmac", [gitrepo_ref("app")])
    await hub.post(path, b"{}", {"X-Signature": "sha256=" + sign(TOKEN, b"{}")})
    await hub.post(path, b"{}", {"X-Signature": "sha256=00"})
    await hub.post("/hook/nothing")

    def count(code: str) -> float | None:
        return hub.registry.get_sample_value(
            "gotk_receiver_http_request_duration_seconds_count",
            {"handler": "/hook/", "method": "POST", "code": code})

    assert (count("200"), count("400"), count("404")) == (1.0, 1.0, 1.0)


# --------------------------------------------------------------------------- every type


@dataclass
class Case:
    type: str
    good_headers: dict[str, str]
    good_body: bytes
    bad_headers: dict[str, str]
    bad_body: bytes
    spec: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.type


def hmac_case(type_: str, header: str, prefix: str, algorithm: str,
              extra: dict[str, str], body: bytes, spec: dict[str, Any] | None = None
              ) -> Case:
    good = {header: prefix + sign(TOKEN, body, algorithm), **extra}
    bad = {header: prefix + sign("not-the-token", body, algorithm), **extra}
    return Case(type_, good, body, bad, body, spec or {})


PUSH = json.dumps({"ref": "refs/heads/main", "after": "a" * 40}).encode()
CDEVENT = json.dumps({
    "context": {"version": "0.4.1", "id": str(uuid.uuid4()), "source": "/tekton/ci",
                "type": "dev.cdevents.pipelinerun.finished.0.2.0",
                "timestamp": "2024-05-06T07:08:09.123Z"},
    "subject": {"id": "run-1", "source": "/tekton/ci", "type": "pipelineRun",
                "content": {"pipelineName": "build", "outcome": "success"}}}).encode()
JSON = {"Content-Type": "application/json"}

CASES = [
    Case("generic", {}, b"anything", {}, b"", {}),
    hmac_case("generic-hmac", "X-Signature", "sha512=", "sha512", {}, b"payload"),
    hmac_case("github", "X-Hub-Signature-256", "sha256=", "sha256",
              {**JSON, "X-GitHub-Event": "push"}, PUSH, {"events": ["push"]}),
    Case("gitlab", {"X-Gitlab-Token": TOKEN, "X-Gitlab-Event": "Push Hook"}, PUSH,
         {"X-Gitlab-Token": TOKEN + "x", "X-Gitlab-Event": "Push Hook"}, PUSH,
         {"events": ["Push Hook"]}),
    hmac_case("bitbucket", "X-Hub-Signature", "sha256=", "sha256",
              {**JSON, "X-Event-Key": "repo:refs_changed"}, PUSH,
              {"events": ["repo:refs_changed"]}),
    Case("harbor", {"Authorization": TOKEN}, b"{}", {"Authorization": "Bearer " + TOKEN},
         b"{}"),
    Case("dockerhub", {}, json.dumps({"push_data": {"tag": "v1"}, "repository": {
        "repo_url": "https://hub.docker.com/r/acme/app"}}).encode(), {},
         json.dumps({"push_data": "v1"}).encode()),
    Case("quay", {}, json.dumps({"docker_url": "quay.io/acme/app",
                                 "updated_tags": ["v1"]}).encode(),
         {}, json.dumps({"updated_tags": "v1"}).encode()),
    Case("nexus", {"X-Nexus-Webhook-Signature": sign(TOKEN, b'{"action":"CREATED"}', "sha1")},
         b'{"action":"CREATED"}',
         {"X-Nexus-Webhook-Signature": sign("other", b'{"action":"CREATED"}', "sha1")},
         b'{"action":"CREATED"}'),
    Case("acr", {}, json.dumps({"action": "push", "target": {
        "repository": "acme/app", "tag": "v1"}}).encode(), {}, b"[]"),
    Case("cdevents", {"Ce-Type": "dev.cdevents.pipelinerun.finished.0.2.0"}, CDEVENT,
         {"Ce-Type": "dev.cdevents.pipelinerun.finished.0.2.0"},
         json.dumps({"subject": {"id": "x"}}).encode(),
         {"events": ["dev.cdevents.pipelinerun.finished.0.2.0"]}),
]


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_each_receiver_type_accepts_its_senders_and_rejects_forgeries(
        hub: Hub, case: Case) -> None:
    await hub.secret("token", {"token": TOKEN})
    await hub.gitrepo("app")
    path = await hub.receiver("hook", case.type, [gitrepo_ref("app")], **case.spec)
    if case.type != "generic":  # the path is a generic receiver's only secret
        status, text = await hub.post(path, case.bad_body, case.bad_headers)
        assert status == 400
        assert text in ("invalid signature", "invalid payload")
        assert await hub.requested_at("app") is None
    assert await hub.post(path, case.good_body, case.good_headers) == (200, "ok")
    value = await hub.requested_at("app")
    assert value is not None and GO_TIME.match(value), value


async def test_an_empty_token_authenticates_nothing(hub: Hub) -> None:
    await hub.secret("token", {"token": TOKEN}, labels={"reconcile.fluxcd.io/watch": "Enabled"})
    await hub.gitrepo("app")
    path = await hub.receiver("hook", "gitlab", [gitrepo_ref("app")])
    await hub.client.merge_patch("v1", "Secret", "token", {"data": {"token": ""}},
                                 hub.namespace)
    obj = await hub.flux.wait(NOTIFICATION, "Receiver", "hook", hub.namespace,
                              lambda o: condition(o, "Ready").get("status") == "False")
    assert condition(obj, "Ready")["message"].endswith("'token' is empty")
    # even while the cache still serves the old path, a request without the token fails
    status, _ = await hub.post(path, PUSH, {"X-Gitlab-Event": "Push Hook"})
    assert status in (400, 404)
    assert await hub.requested_at("app") is None


# --------------------------------------------------------------------------- GitHub, Gitea


def gitea_headers(body: bytes, token: str, event: str = "push") -> dict[str, str]:
    """The headers Gitea's webhook sender puts on a delivery."""
    delivery = str(uuid.uuid4())
    sha256 = sign(token, body)
    return {
        "Content-Type": "application/json", "User-Agent": "Go-http-client/1.1",
        "X-Gitea-Delivery": delivery, "X-Gitea-Event": event, "X-Gitea-Event-Type": event,
        "X-Gitea-Signature": sha256,
        "X-Gogs-Delivery": delivery, "X-Gogs-Event": event, "X-Gogs-Event-Type": event,
        "X-Gogs-Signature": sha256,
        "X-Hub-Signature": "sha1=" + sign(token, body, "sha1"),
        "X-Hub-Signature-256": "sha256=" + sha256,
        "X-GitHub-Delivery": delivery, "X-GitHub-Event": event, "X-GitHub-Event-Type": event,
    }


def gitea_push(before: str, after: str, *, ref: str = "refs/heads/main",
               repo: str = "app") -> bytes:
    """A Gitea push payload, shaped as Gitea 1.2x sends it."""
    user = {"id": 1, "login": "dev", "login_name": "", "full_name": "", "email":
            "dev@example.com", "avatar_url": "https://gitea.example.com/avatars/1",
            "username": "dev"}
    repository = {
        "id": 7, "owner": user, "name": repo, "full_name": f"dev/{repo}", "description": "",
        "empty": False, "private": True, "fork": False, "template": False, "parent": None,
        "mirror": False, "size": 42, "language": "", "languages_url":
        f"https://gitea.example.com/api/v1/repos/dev/{repo}/languages",
        "html_url": f"https://gitea.example.com/dev/{repo}",
        "url": f"https://gitea.example.com/api/v1/repos/dev/{repo}",
        "ssh_url": f"git@gitea.example.com:dev/{repo}.git",
        "clone_url": f"https://gitea.example.com/dev/{repo}.git", "default_branch": "main",
        "archived": False, "created_at": "2024-05-01T10:00:00Z",
        "updated_at": "2024-05-06T07:08:09Z"}
    head_commit = {
        "id": after, "message": "bump to v2\n", "url":
        f"https://gitea.example.com/dev/{repo}/commit/{after}",
        "author": {"name": "dev", "email": "dev@example.com", "username": "dev"},
        "committer": {"name": "dev", "email": "dev@example.com", "username": "dev"},
        "verification": None, "timestamp": "2024-05-06T07:08:09Z",
        "added": [], "removed": [], "modified": ["a.yaml"]}
    return json.dumps({
        "ref": ref, "before": before, "after": after,
        "compare_url": f"https://gitea.example.com/dev/{repo}/compare/{before}...{after}",
        "commits": [head_commit], "total_commits": 1, "head_commit": head_commit,
        "repository": repository, "pusher": user, "sender": user}, indent=2).encode()


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitServer]:
    with GitServer(tmp_path / "repos") as srv:
        yield srv


async def test_a_gitea_push_to_a_github_receiver_gets_the_new_commit_into_storage_at_once(
        hub: Hub, git_server: GitServer) -> None:
    repo = git_server.make_repo("app", {"a.yaml": "v: 1\n"})
    first = head(repo, "main")
    await hub.client.create({
        "apiVersion": SOURCE, "kind": "GitRepository",
        "metadata": {"name": "app", "namespace": hub.namespace},
        "spec": {"interval": "10m", "url": git_server.repo_url("app"),
                 "ref": {"branch": "main"}}})
    await hub.flux.wait(SOURCE, "GitRepository", "app", hub.namespace, lambda o: (
        (o.get("status") or {}).get("artifact", {}).get("revision") == f"main@sha1:{first}"))
    await hub.secret("gitea-token", {"token": TOKEN})
    path = await hub.receiver("gitea", "github", [gitrepo_ref("app")],
                              secret="gitea-token", events=["push"])

    commit(repo, {"a.yaml": "v: 2\n"}, "bump to v2")
    second = head(repo, "main")
    body = gitea_push(first, second)
    started = time.monotonic()
    assert await hub.post(path, body, gitea_headers(body, TOKEN)) == (200, "ok")
    # the interval is ten minutes: only the webhook can have asked for this
    obj = await hub.flux.wait(SOURCE, "GitRepository", "app", hub.namespace, lambda o: (
        o["status"].get("artifact", {}).get("revision") == f"main@sha1:{second}"), within=20)
    assert time.monotonic() - started < 20
    requested = obj["metadata"]["annotations"][REQUESTED_AT]
    assert GO_TIME.match(requested)
    assert obj["status"]["lastHandledReconcileAt"] == requested


async def test_gitea_deliveries_are_accepted_as_form_posts_and_with_only_its_own_signature(
        hub: Hub) -> None:
    await hub.secret("token", {"token": TOKEN})
    await hub.gitrepo("app")
    path = await hub.receiver("hook", "github", [gitrepo_ref("app")], events=["push"])
    payload = gitea_push("a" * 40, "b" * 40)
    # form posts: Gitea signs the payload parameter, not the form body
    form = urllib.parse.urlencode({"payload": payload.decode()}).encode()
    headers = {**gitea_headers(payload, TOKEN),
               "Content-Type": "application/x-www-form-urlencoded"}
    assert (await hub.post(path, form, headers))[0] == 200
    # a proxy that keeps only Gitea's own headers
    only = {k: v for k, v in gitea_headers(payload, TOKEN).items()
            if not k.startswith(("X-Hub", "X-GitHub", "X-Gogs"))}
    assert (await hub.post(path, payload, only))[0] == 200
    forged = {**only, "X-Gitea-Signature": sign("guess", payload)}
    assert (await hub.post(path, payload, forged))[0] == 400


async def test_events_are_filtered_case_insensitively_and_others_are_refused(
        hub: Hub) -> None:
    await hub.secret("token", {"token": TOKEN})
    await hub.gitrepo("app")
    path = await hub.receiver("hook", "github", [gitrepo_ref("app")], events=["ping", "push"])
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    headers = {**JSON, "X-Hub-Signature-256": "sha256=" + sign(TOKEN, body)}
    assert await hub.post(path, body, {**headers, "X-GitHub-Event": "issues"}) == (
        400, "event not accepted")
    assert await hub.requested_at("app") is None
    assert (await hub.post(path, body, {**headers, "X-GitHub-Event": "PUSH"}))[0] == 200
    # ping is an event like any other (Flux annotates on it when it is listed)
    assert (await hub.post(path, body, {**headers, "X-GitHub-Event": "ping"}))[0] == 200


async def test_a_github_request_without_a_known_content_type_is_refused(hub: Hub) -> None:
    await hub.secret("token", {"token": TOKEN})
    await hub.gitrepo("app")
    path = await hub.receiver("hook", "github", [gitrepo_ref("app")])
    headers = {"X-Hub-Signature-256": "sha256=" + sign(TOKEN, PUSH), "X-GitHub-Event": "push",
               "Content-Type": "text/plain"}
    assert await hub.post(path, PUSH, headers) == (400, "invalid payload")


# --------------------------------------------------------------------------- resources


async def test_a_wildcard_with_match_labels_annotates_every_labelled_object(hub: Hub) -> None:
    await hub.secret("token", {"token": TOKEN})
    for name, labels in (("web-1", {"app": "web"}), ("web-2", {"app": "web"}),
                         ("db", {"app": "db"})):
        await hub.gitrepo(name, labels=labels)
    path = await hub.receiver("hook", "generic", [
        {"apiVersion": SOURCE, "kind": "GitRepository", "name": "*",
         "matchLabels": {"app": "web"}}])
    assert (await hub.post(path))[0] == 200
    assert await hub.requested_at("web-1") is not None
    assert await hub.requested_at("web-2") is not None
    assert await hub.requested_at("db") is None


async def test_entries_that_cannot_be_resolved_answer_500_and_the_rest_are_annotated(
        hub: Hub) -> None:
    await hub.secret("token", {"token": TOKEN})
    await hub.gitrepo("app")
    path = await hub.receiver("hook", "generic", [
        {"kind": "Kustomization", "name": "apps"},        # apiVersion is required
        {"kind": "GitRepository", "name": "*"},           # '*' needs matchLabels
        {"kind": "GitRepository", "name": "missing"},     # not found
        gitrepo_ref("app")])
    assert await hub.post(path) == (500, "failed to request reconciliation")
    assert await hub.requested_at("app") is not None


@pytest.mark.parametrize("hub_overrides", [{"access": {"no_cross_namespace_refs": True}}],
                         indirect=True)
async def test_cross_namespace_entries_are_refused_when_cross_namespace_refs_are_off(
        hub: Hub) -> None:
    other = f"t-{uuid.uuid4().hex[:10]}"
    await hub.client.create({"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": other}})
    try:
        await hub.secret("token", {"token": TOKEN})
        await hub.gitrepo("app", namespace=other)
        await hub.gitrepo("app")
        path = await hub.receiver("hook", "generic", [
            gitrepo_ref("app", namespace=other), gitrepo_ref("app", namespace=hub.namespace)])
        assert (await hub.post(path))[0] == 500
        assert await hub.requested_at("app", namespace=other) is None
        assert await hub.requested_at("app") is not None
    finally:
        await hub.client.delete("v1", "Namespace", other)


async def test_filters_choose_the_objects_from_the_request_body(hub: Hub) -> None:
    await hub.secret("token", {"token": TOKEN})
    for name in ("app", "web"):
        await hub.gitrepo(name, labels={"team": "a"})
    path = await hub.receiver(
        "hook", "generic",
        [{"kind": "GitRepository", "name": "*", "matchLabels": {"team": "a"},
          "filter": "req.ref == 'refs/heads/main'"}],
        resourceFilter="res.metadata.name == req.repository.name")
    other_branch = json.dumps({"ref": "refs/heads/dev", "repository": {"name": "web"}})
    assert (await hub.post(path, other_branch, JSON))[0] == 200
    assert await hub.requested_at("web") is None
    main = json.dumps({"ref": "refs/heads/main", "repository": {"name": "web"}})
    assert (await hub.post(path, main, JSON))[0] == 200
    assert await hub.requested_at("web") is not None
    assert await hub.requested_at("app") is None
    # not JSON: req is {} and the filter cannot be evaluated
    assert (await hub.post(path, main, {"Content-Type": "text/plain"}))[0] == 500


# --------------------------------------------------------------------------- OIDC, GCR


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_b64(value: int, size: int | None = None) -> str:
    return b64url(value.to_bytes(size or (value.bit_length() + 7) // 8, "big"))


@dataclass
class Issuer:
    """An OIDC issuer on loopback: discovery, JWKS, and tokens signed by its keys."""

    url: str
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey

    def token(self, claims: Mapping[str, Any], *, alg: str = "RS256",
              key: Any = None) -> str:
        kid = "rsa-1" if alg == "RS256" else "ec-1"
        header = b64url(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}).encode())
        body = b64url(json.dumps(dict(claims)).encode())
        data = f"{header}.{body}".encode()
        if alg == "RS256":
            signer = key or self.rsa_key
            signature = signer.sign(data, padding.PKCS1v15(), hashes.SHA256())
        else:
            signer = key or self.ec_key
            r, s = decode_dss_signature(signer.sign(data, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{header}.{body}.{b64url(signature)}"

    def claims(self, **more: Any) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self.url, "aud": "fluxd-test", "sub": "repo:acme/app:ref:main",
                "iat": now, "exp": now + 300, **more}


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    state: dict[str, str] = {}

    async def discovery(request: web.Request) -> web.Response:
        return web.json_response({"issuer": state["url"], "jwks_uri": state["url"] + "/jwks",
                                  "id_token_signing_alg_values_supported": ["RS256", "ES256"]})

    async def jwks(request: web.Request) -> web.Response:
        rn = rsa_key.public_key().public_numbers()
        en = ec_key.public_key().public_numbers()
        return web.json_response({"keys": [
            {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig",
             "n": int_b64(rn.n), "e": int_b64(rn.e)},
            {"kty": "EC", "kid": "ec-1", "crv": "P-256", "use": "sig",
             "x": int_b64(en.x, 32), "y": int_b64(en.y, 32)}]})

    application = web.Application()
    application.router.add_get("/.well-known/openid-configuration", discovery)
    application.router.add_get("/jwks", jwks)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state["url"] = f"http://127.0.0.1:{port}"
    try:
        yield Issuer(state["url"], rsa_key, ec_key)
    finally:
        await runner.cleanup()


async def test_a_generic_oidc_receiver_takes_verified_tokens_that_pass_its_validations(
        hub: Hub, issuer: Issuer) -> None:
    await hub.gitrepo("app")
    path = await hub.receiver("oidc", "generic-oidc", [gitrepo_ref("app")], secret=None,
                              oidcProviders=[{
                                  "issuerURL": issuer.url, "audience": "fluxd-test",
                                  "variables": [{"name": "repo",
                                                 "expression": "claims.sub.split(':')[1]"}],
                                  "validations": [{"expression": "vars.repo == 'acme/app'",
                                                   "message": "only acme/app may call"}]}],
                              resourceFilter="claims.sub.endsWith(':ref:main')")
    assert path == webhook_path("", "oidc", hub.namespace)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    refused = [
        {},
        bearer("not.a.jwt"),
        bearer(issuer.token(issuer.claims(aud="someone-else"))),
        bearer(issuer.token(issuer.claims(exp=int(time.time()) - 10))),
        bearer(issuer.token(issuer.claims(), key=other_key)),
        bearer(issuer.token(issuer.claims(sub="repo:evil/app:ref:main"))),
        bearer(issuer.token(issuer.claims(iss="http://127.0.0.1:1"))),
    ]
    for headers in refused:
        assert await hub.post(path, b"{}", headers) == (400, "invalid signature"), headers
    assert await hub.requested_at("app") is None
    # the resource filter sees the claims: another ref is accepted but selects nothing
    other_ref = issuer.claims(sub="repo:acme/app:ref:dev")
    assert (await hub.post(path, b"{}", bearer(issuer.token(other_ref))))[0] == 200
    assert await hub.requested_at("app") is None
    assert (await hub.post(path, b"{}", bearer(issuer.token(issuer.claims()))))[0] == 200
    first = await hub.requested_at("app")
    assert first is not None
    es256 = issuer.token(issuer.claims(), alg="ES256")
    assert (await hub.post(path, b"{}", bearer(es256)))[0] == 200
    assert await hub.requested_at("app") != first


async def test_a_gcr_receiver_checks_the_push_subscription_token_and_its_email(
        hub: Hub, issuer: Issuer) -> None:
    hub.receivers.server.google_issuer = issuer.url
    await hub.secret("token", {"token": TOKEN, "email": "push@acme.iam.gserviceaccount.com",
                               "audience": "fluxd-test"})
    await hub.gitrepo("app")
    path = await hub.receiver("gcr", "gcr", [gitrepo_ref("app")],
                              resourceFilter="req.tag == 'v1.2.3'")
    data = base64.b64encode(json.dumps({"action": "INSERT", "digest":
                                        "gcr.io/acme/app@sha256:" + "1" * 64,
                                        "tag": "gcr.io/acme/app:v1.2.3"}).encode()).decode()
    body = json.dumps({"message": {"data": data, "messageId": "1",
                                   "publishTime": "2024-05-06T07:08:09Z"},
                       "subscription": "projects/acme/subscriptions/flux"}).encode()
    good = issuer.claims(email="push@acme.iam.gserviceaccount.com", email_verified=True)
    unverified = {**good, "email_verified": False}
    stranger = {**good, "email": "someone@example.com"}
    for claims in (unverified, stranger):
        headers = {**JSON, "Authorization": "Bearer " + issuer.token(claims)}
        assert (await hub.post(path, body, headers))[0] == 400
    headers = {**JSON, "Authorization": "Bearer " + issuer.token(good)}
    assert (await hub.post(path, body, headers))[0] == 200
    # the filter saw the unwrapped message: its tag is not v1.2.3
    assert await hub.requested_at("app") is None


# --------------------------------------------------------------------------- fuzz

SIGNATURE_HEADERS = ("X-Hub-Signature-256", "X-Hub-Signature", "X-Gitea-Signature",
                     "X-Signature", "X-Gitlab-Token", "Authorization",
                     "X-Nexus-Webhook-Signature")
HEADER_NAMES = (*SIGNATURE_HEADERS, "X-GitHub-Event", "X-Gitlab-Event", "X-Event-Key",
                "Content-Type", "Ce-Type")
signature_value = st.builds(lambda a, h: f"{a}={h}",
                            st.sampled_from(["sha1", "sha256", "sha512", "md5"]),
                            st.text("0123456789abcdef", max_size=130))
header_value = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=80),
    signature_value, signature_value,
    st.builds(lambda t: f"Bearer {t}", st.text(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.", max_size=200)),
    st.sampled_from(["application/json", "application/x-www-form-urlencoded", "push",
                     TOKEN[:-1], "Bearer " + TOKEN]),
)
#: every request carries some credential header (mostly signature-shaped), and more
request_headers = st.builds(
    lambda credentials, rest: {**rest, **credentials},
    st.dictionaries(st.sampled_from(SIGNATURE_HEADERS),
                    st.one_of(signature_value, signature_value, header_value),
                    min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(HEADER_NAMES), header_value, max_size=5))
AUTHENTICATING = ("generic-hmac", "github", "gitlab", "bitbucket", "harbor", "nexus", "gcr",
                  "generic-oidc")


@pytest.fixture
async def fuzz_paths(hub: Hub, issuer: Issuer) -> dict[str, str]:
    await hub.secret("token", {"token": TOKEN, "audience": "fluxd-test"})
    await hub.gitrepo("app")
    hub.receivers.server.google_issuer = issuer.url
    paths = {}
    for type_ in (*AUTHENTICATING, "dockerhub", "quay", "acr", "cdevents"):
        extra: dict[str, Any] = {}
        if type_ == "generic-oidc":
            extra = {"secret": None, "oidcProviders": [{
                "issuerURL": issuer.url, "audience": "fluxd-test",
                "validations": [{"expression": "true", "message": "never"}]}]}
        target = gitrepo_ref("app") if type_ in AUTHENTICATING else gitrepo_ref("other")
        paths[type_] = await hub.receiver(type_, type_, [target], **extra)
    return paths


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None,
          max_examples=60)
@given(body=st.binary(max_size=2048),
       headers=request_headers,
       json_body=st.booleans())
async def test_random_requests_never_crash_the_handler_nor_annotate_without_a_signature(
        hub: Hub, fuzz_paths: dict[str, str], body: bytes, headers: dict[str, str],
        json_body: bool) -> None:
    if json_body:
        body = json.dumps({"ref": body.hex(), "push_data": {"tag": body[:8].hex()}}).encode()
    for type_, path in fuzz_paths.items():
        status, text = await hub.post(path, body, headers)
        assert status in (200, 400, 500) if type_ not in AUTHENTICATING else status == 400, \
            (type_, status, text)
        assert text in ("ok", "invalid signature", "invalid payload", "invalid request",
                        "event not accepted", "failed to request reconciliation")
    assert await hub.requested_at("app") is None


async def test_receiver_fuzz_harness_would_notice_an_accepted_forgery(
        hub: Hub, fuzz_paths: dict[str, str]) -> None:
    # the property above is only worth something if a signed request does get through
    body = b"{}"
    headers = {"X-Signature": "sha1=" + sign(TOKEN, body, "sha1")}
    assert (await hub.post(fuzz_paths["generic-hmac"], body, headers))[0] == 200
    assert await hub.requested_at("app") is not None


async def test_a_deleted_receiver_lets_go_of_its_finalizer_and_its_path(hub: Hub) -> None:
    await hub.secret("token", {"token": TOKEN})
    path = await hub.receiver("hook", "generic", [gitrepo_ref("app")])
    await hub.client.delete(NOTIFICATION, "Receiver", "hook", hub.namespace)
    await until(lambda: hub.receivers.reconciler.informer.get(hub.namespace, "hook") is None,
                within=15)
    with pytest.raises(NotFound):
        await hub.client.get(NOTIFICATION, "Receiver", "hook", hub.namespace)
    assert not hub.receivers.reconciler.informer.by_index("webhookPath", path)
    assert (await hub.post(path))[0] == 404


# --------------------------------------------------------------------------- hostile clients


@pytest.mark.parametrize("hub_overrides", [{"notification": {
    "receiver_rate_limit_burst": 20, "receiver_rate_limit_qps": 0.01}}], indirect=True)
async def test_unsigned_requests_cannot_spend_the_rate_limit_of_signed_deliveries(
        hub: Hub) -> None:
    await hub.secret("token", {"token": TOKEN})
    await hub.gitrepo("app")
    path = await hub.receiver("hook", "github", [gitrepo_ref("app")], events=["push"])
    forged = {**JSON, "X-GitHub-Event": "push",
              "X-Hub-Signature-256": "sha256=" + sign("a guess", PUSH)}
    answers = [(await hub.post(path, PUSH, forged))[0] for _ in range(25)]
    assert answers == [400] * 20 + [429] * 5
    signed = {**forged, "X-Hub-Signature-256": "sha256=" + sign(TOKEN, PUSH)}
    assert await hub.post(path, PUSH, signed) == (200, "ok")
    assert await hub.requested_at("app") is not None


class SecretReads:
    """The cluster client, counting the Secrets read through it."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.count = 0

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> dict[str, Any]:
        if kind == "Secret":
            self.count += 1
        return await self.client.get(api_version, kind, name, namespace)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@dataclass
class Standalone:
    """A ReceiverServer on a fake clock (buckets refill and deadlines pass only when the
    test says), serving one Ready ``generic-hmac`` Receiver for the GitRepository
    ``app``."""

    server: ReceiverServer
    url: str
    path: str
    clock: FakeClock
    client: KubeClient
    secrets: SecretReads
    registry: CollectorRegistry
    namespace: str

    def held(self) -> float:
        value = self.registry.get_sample_value("fluxd_receiver_request_body_bytes_inflight")
        assert value is not None
        assert value == self.server.bodies.inflight
        return value

    async def post(self, body: bytes, headers: Mapping[str, str] | None = None
                   ) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, \
                session.post(self.url + self.path, data=body,
                             headers=dict(headers or {})) as resp:
            return resp.status, await resp.text()

    async def requested_at(self) -> str | None:
        obj = await self.client.get(SOURCE, "GitRepository", "app", self.namespace)
        value = (obj["metadata"].get("annotations") or {}).get(REQUESTED_AT)
        return None if value is None else str(value)


@contextlib.asynccontextmanager
async def standalone(cluster: Cluster, namespace: str, *, spec: dict[str, Any] | None = None,
                     **notification: Any) -> AsyncIterator[Standalone]:
    settings_ = Settings.model_validate({"notification": notification})
    async with await KubeClient.connect(clock=SystemClock(),
                                        kubeconfig=str(cluster.kubeconfig),
                                        field_manager="fluxd-tests") as client:
        await install_crds(client)
        await client.create({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "token", "namespace": namespace},
            "data": {"token": base64.b64encode(TOKEN.encode()).decode()}})
        await client.create({
            "apiVersion": SOURCE, "kind": "GitRepository",
            "metadata": {"name": "app", "namespace": namespace},
            "spec": {"interval": "10m", "url": "http://127.0.0.1:9/none.git",
                     "ref": {"branch": "main"}, "suspend": True}})
        path = webhook_path(TOKEN, "hook", namespace)
        obj = {"metadata": {"name": "hook", "namespace": namespace},
               "spec": {"type": "generic-hmac", "resources": [gitrepo_ref("app")],
                        "secretRef": {"name": "token"}, **(spec or {})},
               "status": {"webhookPath": path, "conditions": [
                   {"type": "Ready", "status": "True", "reason": "Succeeded",
                    "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}}
        clock = FakeClock()
        registry = CollectorRegistry()
        secrets = SecretReads(client)
        server = ReceiverServer(client=secrets, receivers=FixedIndex(obj),  # type: ignore[arg-type]
                                clock=clock, settings=settings_,
                                metrics=ReceiverMetrics(registry))
        async with server.serve("127.0.0.1:0") as listener:
            yield Standalone(server, listener.url, path, clock, client, secrets, registry,
                             namespace)


def hmac_headers(body: bytes, token: str = TOKEN) -> dict[str, str]:
    return {"X-Signature": "sha256=" + sign(token, body)}


async def test_a_flood_of_failures_reads_the_secret_once_per_refill_and_lets_pushes_through(
        cluster: Cluster, namespace: str) -> None:
    async with standalone(cluster, namespace, receiver_rate_limit_burst=3,
                          receiver_rate_limit_qps=1.0) as s:
        forged = hmac_headers(b"{}", "a guess")
        assert [(await s.post(b"{}", forged))[0] for _ in range(3)] == [400] * 3
        assert s.secrets.count == 3
        # the failure bucket is empty: the flood is still checked, one Secret read shared
        assert [(await s.post(b"{}", forged))[0] for _ in range(20)] == [429] * 20
        assert s.secrets.count == 4
        assert await s.post(b"{}", hmac_headers(b"{}")) == (200, "ok")
        assert await s.requested_at() is not None
        assert s.secrets.count == 4
        # a refill interval later the Secret is read again
        s.clock.advance(1.0)
        assert (await s.post(b"{}", forged))[0] == 400
        assert s.secrets.count == 5
        assert (await s.post(b"{}", forged))[0] == 429
        assert s.secrets.count == 6
        assert (await s.post(b"{}", forged))[0] == 429
        assert s.secrets.count == 6


async def test_request_bodies_in_flight_never_hold_more_than_the_budget(
        cluster: Cluster, namespace: str) -> None:
    part = 200 << 10
    async with standalone(cluster, namespace, receiver_max_body_size=256 << 10,
                          receiver_max_inflight_bytes=1 << 20) as s:
        budget = s.server.bodies.max_inflight
        stalled: list[Connection] = []
        try:
            # bodies announced at 256 KiB, stalled after 200 KiB: each is held
            while s.held() + (256 << 10) <= budget:
                before = s.held()
                conn = await Connection.open(s.url)
                stalled.append(conn)
                await conn.send(raw_head(s.path, content_length=256 << 10) + b"x" * part)
                await until(lambda before=before: s.held() == before + part)
            assert len(stalled) >= 4
            # those that cannot fit are refused at once, nothing read
            for _ in range(3):
                conn = await Connection.open(s.url)
                try:
                    await conn.send(raw_head(s.path, content_length=256 << 10))
                    answer = await conn.response(within=2)
                finally:
                    await conn.close()
                assert (answer.status, answer.body) == (503, b"server busy")
                assert answer.headers.get("connection") == "close"
            # one that does not say its length is refused when its bytes do not fit
            free = int(budget - s.held())
            conn = await Connection.open(s.url)
            try:
                answer = await conn.send_until_answered(
                    [raw_head(s.path, chunked=True),
                     *[chunk(b"y" * (16 << 10))] * (free // (16 << 10) + 4)])
            finally:
                await conn.close()
            assert answer.status == 503
            assert s.held() <= budget
        finally:
            for conn in stalled:
                await conn.close()
        # the stalled clients went away: their bytes are let go, and pushes come in again
        await until(lambda: s.held() == 0)
        assert await s.post(b"{}", hmac_headers(b"{}")) == (200, "ok")
        assert await s.requested_at() is not None


async def test_a_body_slower_than_the_deadline_is_408(cluster: Cluster,
                                                      namespace: str) -> None:
    async with standalone(cluster, namespace) as s:
        conn = await Connection.open(s.url)
        try:
            await conn.send(raw_head(s.path, content_length=100) + b"{" * 10)
            await until(lambda: s.held() == 10)
            s.clock.advance(29)
            await asyncio.sleep(0.1)
            assert s.held() == 10, "still waiting for the rest"
            s.clock.advance(2)
            answer = await conn.response()
        finally:
            await conn.close()
        assert (answer.status, answer.body) == (408, b"request timeout")
        await until(lambda: s.held() == 0)


async def test_a_signed_request_whose_body_is_not_the_gzip_it_claims_is_400(
        cluster: Cluster, namespace: str) -> None:
    async with standalone(cluster, namespace) as s:
        body = b"this is not gzip"
        headers = {**hmac_headers(body), "Content-Encoding": "gzip"}
        assert await s.post(body, headers) == (400, "invalid request")
        assert await s.requested_at() is None
        # what aiohttp inflates is what the signature covers
        payload = b'{"ref": "refs/heads/main"}'
        headers = {**hmac_headers(payload), "Content-Encoding": "gzip"}
        assert await s.post(gzip.compress(payload), headers) == (200, "ok")


async def test_a_gzip_bomb_is_413_and_nothing_is_kept(cluster: Cluster,
                                                     namespace: str) -> None:
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
    async with standalone(cluster, namespace) as s:
        headers = {**hmac_headers(bomb), "Content-Encoding": "gzip"}
        assert await s.post(bomb, headers) == (413, "request body too large")
        await until(lambda: s.held() == 0)
        assert await s.requested_at() is None


async def test_an_unreadable_chunked_body_is_400(cluster: Cluster, namespace: str) -> None:
    async with standalone(cluster, namespace) as s:
        conn = await Connection.open(s.url)
        try:
            answer = await conn.send_until_answered(
                [raw_head(s.path, chunked=True), b"zz\r\nnot a chunk size\r\n"])
        finally:
            await conn.close()
        assert answer.status == 400


async def test_a_json_body_the_filters_cannot_read_is_a_handled_failure_not_a_crash(
        cluster: Cluster, namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    async with standalone(cluster, namespace, spec={
            "resourceFilter": "req.ref.lowerAscii() == 'refs/heads/main'"}) as s:
        body = b'{"ref": "refs/heads/\\ud800"}'
        assert json.loads(body)["ref"].endswith("\ud800")
        answer = await s.post(body, {**JSON, **hmac_headers(body)})
        assert answer == (500, "failed to request reconciliation")
        assert "webhook request failed" not in caplog.text
        assert await s.requested_at() is None
        body = b'{"ref": "refs/heads/MAIN"}'
        assert await s.post(body, {**JSON, **hmac_headers(body)}) == (200, "ok")
        assert await s.requested_at() is not None
